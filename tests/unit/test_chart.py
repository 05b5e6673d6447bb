"""The Helm chart (charts/memory-hygiene/): one source of truth with manifests/, linted, validated.

helm and kubeconform are built from the Go module proxy (tests/tools/build.py; scripts/test builds
them first, cached afterwards). kubeconform's schemas are made offline from the pinned
k8s.io/kubernetes module and the CRDs (tests/tools/schemas.py). A tool that cannot be built FAILS
these tests, it never skips them.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "memory-hygiene"
sys.path.insert(0, str(ROOT / "tests" / "tools"))

import build as tools  # noqa: E402
import schemas  # noqa: E402

KUBECTL = str(Path(sys.executable).parent / "kubectl")
RELEASE = "memory-hygiene"


def tool(name: str) -> str:
    try:
        return str(tools.build(name))
    except Exception as e:  # noqa: BLE001 - any failure to build is a test failure, with its reason
        pytest.fail(f"cannot build {name} (python tests/tools/build.py {name}): {e}", pytrace=False)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def helm_template(*args: str) -> list[dict[str, Any]]:
    out = run([tool("helm"), "template", RELEASE, str(CHART), "--include-crds", *args])
    assert out.returncode == 0, f"helm template {' '.join(args)} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kustomize(path: str) -> list[dict[str, Any]]:
    assert Path(KUBECTL).exists(), f"{KUBECTL} missing: pip install -e '.[test]'"
    out = run([KUBECTL, "kustomize", str(ROOT / path)])
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def key(d: dict[str, Any]) -> tuple[str, str, str, str]:
    return (d["apiVersion"], d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])


def without_labels(d: dict[str, Any]) -> dict[str, Any]:
    """The object with its labels (metadata.labels and the pod template's) removed: the chart adds
    Helm's own (managed-by, helm.sh/chart, instance). Selectors stay compared."""
    d = copy.deepcopy(d)
    d["metadata"].pop("labels", None)
    tmpl = d.get("spec", {}).get("template", {})
    if isinstance(tmpl, dict) and "metadata" in tmpl:
        tmpl["metadata"].pop("labels", None)
        if not tmpl["metadata"]:
            tmpl.pop("metadata")
    return d


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    out = {key(d): without_labels(d) for d in docs}
    assert len(out) == len(docs), "two objects with the same apiVersion, kind, namespace and name"
    return out


def test_defaults_render_exactly_the_kustomize_install() -> None:
    """One source of truth: `helm template` with the defaults and `kubectl kustomize manifests/`
    are the same objects, field for field, but for labels."""
    chart, kust = by_key(helm_template()), by_key(kustomize("manifests"))
    assert sorted(chart) == sorted(kust)
    for k in kust:
        assert chart[k] == kust[k], f"{k} differs between the chart and manifests/"


@pytest.mark.parametrize("overlay,values", [
    ("manifests/overlays/servicemonitor", "serviceMonitor.enabled=true"),
    ("manifests/overlays/policyreports", "policyReports.enabled=true"),
    ("manifests/overlays/enforcement", "enforcement.enabled=true"),
])
def test_toggles_render_the_overlays(overlay: str, values: str) -> None:
    chart, kust = by_key(helm_template("--set", values)), by_key(kustomize(overlay))
    assert sorted(chart) == sorted(kust)
    for k in kust:
        assert chart[k] == kust[k], f"{k} differs between the chart ({values}) and {overlay}"


def test_labels_keep_the_uninstall_selector() -> None:
    """docs/install.md's `-l app.kubernetes.io/name=memory-hygiene` finds every object but the CRD
    in the chart's output too, and the pod template labels match manifests/."""
    chart = {key(d): d for d in helm_template()}
    kust = {key(d): d for d in kustomize("manifests")}
    for k, d in chart.items():
        labels = d["metadata"].get("labels") or {}
        assert (labels.get("app.kubernetes.io/name") == "memory-hygiene") == (k[1] != "CustomResourceDefinition")
        kl = kust[k]["metadata"].get("labels") or {}
        assert kl.items() <= labels.items(), f"{k}: the chart drops or changes labels of manifests/"
        if "template" in d.get("spec", {}):
            assert d["spec"]["template"]["metadata"]["labels"] == kust[k]["spec"]["template"]["metadata"]["labels"]


def test_chart_crd_is_the_generated_crd() -> None:
    assert (CHART / "crds" / "memorypolicies.memoryhygiene.io.yaml").read_bytes() == \
        (ROOT / "crds" / "memorypolicies.memoryhygiene.io.yaml").read_bytes(), \
        "cp crds/memorypolicies.memoryhygiene.io.yaml charts/memory-hygiene/crds/"


def test_chart_versions_follow_the_project() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert meta["appVersion"] == version


def test_helm_lint_strict() -> None:
    for extra in ([], ["--set", "enforcement.enabled=true,serviceMonitor.enabled=true,nodeAgent.enabled=false"]):
        out = run([tool("helm"), "lint", "--strict", str(CHART), *extra])
        assert out.returncode == 0, f"helm lint {extra}:\n{out.stdout}\n{out.stderr}"
        assert "0 chart(s) failed" in out.stdout, out.stdout


def test_values_schema_refuses_a_typo() -> None:
    out = run([tool("helm"), "template", RELEASE, str(CHART), "--set", "nodeAgent.enable=false"])
    assert out.returncode != 0 and "enable" in out.stderr, out.stderr


ALL_ON = ["--set", "enforcement.enabled=true,serviceMonitor.enabled=true,policyReports.enabled=true,"
          "prometheusRule.enabled=true,grafanaDashboard.enabled=true"]


@pytest.fixture(scope="module")
def schema_location(tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        return schemas.write_schemas(tmp_path_factory.mktemp("schemas"))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"cannot make kubeconform's schemas (python tests/tools/schemas.py DIR): {e}", pytrace=False)


@pytest.mark.parametrize("source", ["chart:defaults", "chart:all-on", "chart:no-agent",
                                    "kustomize:manifests", "kustomize:manifests/overlays/servicemonitor",
                                    "kustomize:manifests/overlays/policyreports",
                                    "kustomize:manifests/overlays/enforcement",
                                    "kustomize:manifests/overlays/monitoring"])
def test_kubeconform_strict(source: str, schema_location: str, tmp_path: Path) -> None:
    """Every object the chart or kustomize renders is valid against the Kubernetes v1.37 API and the
    CRDs' schemas, with no unknown field (kubeconform -strict, no kind skipped)."""
    kind, what = source.split(":", 1)
    if kind == "chart":
        args = {"defaults": [], "all-on": ALL_ON, "no-agent": ["--set", "nodeAgent.enabled=false"]}[what]
        docs = helm_template(*args)
    else:
        docs = kustomize(what)
    f = tmp_path / "objects.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    out = run([tool("kubeconform"), "-strict", "-summary", "-output", "json",
               "-schema-location", schema_location, str(f)])
    result = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert result["summary"] == {"valid": len(docs), "invalid": 0, "errors": 0, "skipped": 0}, result


def test_kubeconform_catches_an_unknown_field(schema_location: str, tmp_path: Path) -> None:
    """The check above has teeth: a misspelt field in a Deployment is refused."""
    docs = helm_template()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(dep))
    out = run([tool("kubeconform"), "-strict", "-schema-location", schema_location, str(f)])
    assert out.returncode == 1 and "imagePullPolicyy" in out.stdout, out.stdout


def test_toggles() -> None:
    kinds = lambda docs: sorted((d["kind"], d["metadata"]["name"]) for d in docs)  # noqa: E731
    defaults = helm_template()
    no_agent = helm_template("--set", "nodeAgent.enabled=false")
    assert kinds(no_agent) == kinds(kustomize("manifests/base"))
    on = helm_template(*ALL_ON)
    added = set(kinds(on)) - set(kinds(defaults))
    assert added == {("ClusterRole", "memory-hygiene-enforcement"),
                     ("ClusterRoleBinding", "memory-hygiene-enforcement"),
                     ("ClusterRole", "memory-hygiene-policyreports"),
                     ("ClusterRoleBinding", "memory-hygiene-policyreports"),
                     ("ServiceMonitor", "memory-hygiene"), ("PrometheusRule", "memory-hygiene"),
                     ("ConfigMap", "memory-hygiene-dashboard")}
    role = next(d for d in on if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "memory-hygiene-enforcement")
    overlay_role = next(d for d in kustomize("manifests/overlays/enforcement") if d["kind"] == "ClusterRole"
                        and d["metadata"]["name"] == "memory-hygiene-enforcement")
    assert role["rules"] == overlay_role["rules"]
    binding = next(d for d in on if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "memory-hygiene-enforcement")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "memory-hygiene", "namespace": "memory-hygiene"}]
    dep = next(d for d in on if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["--http-port=8080", "--policy-reports"]
    default_roles = [d for d in defaults if d["kind"] == "ClusterRole"]
    assert [r["metadata"]["name"] for r in default_roles] == ["memory-hygiene"]
    assert not any(rule["apiGroups"] == ["wgpolicyk8s.io"] for rule in default_roles[0]["rules"])


def test_image_and_extra_args() -> None:
    digest = "sha256:" + "ab" * 32
    docs = helm_template("--set", f"image.repository=registry.example/mh,image.digest={digest}",
                         "--set-json", 'operator.extraArgs=["--event-qps=20"]',
                         "--set-json", 'nodeAgent.extraArgs=["--settle-seconds=2"]',
                         "--set", "operator.resources.limits.memory=2Gi,nodeAgent.resources.limits.memory=256Mi")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    c, a = dep["spec"]["template"]["spec"]["containers"][0], ds["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == a["image"] == f"registry.example/mh@{digest}"
    assert c["args"] == ["--http-port=8080", "--event-qps=20"]
    assert a["args"][-1] == "--settle-seconds=2"
    assert c["resources"]["limits"]["memory"] == "2Gi"
    assert a["resources"]["limits"]["memory"] == "256Mi"
