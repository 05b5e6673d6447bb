// Builds dashlint (main.go) for the dashboard test (tests/tools/build.py): the dashboard schema of
// Grafana's foundation SDK. The version in the require line is the single source of the version.
// To change version: edit it, then run `go mod tidy` in this directory.
module memoryhygiene.dev/tools-dashlint

go 1.26.0

require github.com/grafana/grafana-foundation-sdk/go v0.0.22
