// dashlint checks Grafana dashboard JSON files against the dashboard schema of Grafana's
// foundation SDK (github.com/grafana/grafana-foundation-sdk/go): a strict decode (an unknown
// field anywhere, panel options included, is an error) followed by the schema's Validate().
// grafana/dashboard-linter is refused by the Go module proxy; this is the schema check it also
// starts from. Usage: dashlint FILE...; exit 1 naming the file and the field on an error.
package main

import (
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashlint FILE...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins() // the panel types' options and field configs, strictly
	failed := false
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var d dashboard.Dashboard
		if err := d.UnmarshalJSONStrict(raw); failure(err) {
			fmt.Printf("%s: %v\n", path, err)
			failed = true
			continue
		}
		if err := d.Validate(); failure(err) {
			fmt.Printf("%s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("%s: ok (%d panels)\n", path, len(d.Panels))
	}
	if failed {
		os.Exit(1)
	}
}

// failure: the SDK returns its error list (cog.BuildErrors) as an error even when it is empty.
func failure(err error) bool {
	if errs, ok := err.(cog.BuildErrors); ok {
		return len(errs) > 0
	}
	return err != nil
}
