// Pins the upstream CRDs the packaging tests need (tests/tools/schemas.py): downloaded as Go
// modules from the Go module proxy, their zip hashes checked against go.sum. Nothing is built.
// - github.com/prometheus-operator/prometheus-operator: ServiceMonitor and PrometheusRule
//   (example/prometheus-operator-crd/).
// - github.com/kyverno/kyverno: the wgpolicyk8s.io/v1alpha2 PolicyReport and ClusterPolicyReport
//   CRDs (config/crds/policyreport/), generated from kubernetes-sigs/wg-policy-prototypes' API
//   types, which are not published as a Go module of their own.
// To change a version: edit the require line and put the new `go mod download -json` hash in go.sum.
module memoryhygiene.dev/tools-crds

go 1.26.0

require (
	github.com/kyverno/kyverno v1.19.1
	github.com/prometheus-operator/prometheus-operator v0.85.0
)
