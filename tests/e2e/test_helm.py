"""`helm install` of charts/memory-hygiene on the real API server (helm built from the Go module
proxy: tests/tools/build.py), then the operator run with the token of the ServiceAccount the chart
created, under the RBAC the chart installed: the seed scenarios are reported. The local control
plane has no kubelet, so the chart's Deployment is stored but never runs (as in test_rbac.py,
which does the same for `kubectl apply -k manifests/`); tests/e2e/realnode/ runs images on a node.

The release stays installed (a deleted namespace stays Terminating without a namespace controller).
test_rbac.py may have applied the same objects with `kubectl apply -k` first: the install then
adopts them as docs/install.md says to move from kustomize to Helm (`--take-ownership`, and
`--force-conflicts` for the fields kubectl's client-side apply owns).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import OperatorProcess
from tests.e2e.test_operator import reports_seeds

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "memory-hygiene"
sys.path.insert(0, str(ROOT / "tests" / "tools"))


@pytest.fixture(scope="module")
def helm(cluster):
    import build as tools

    binary = str(tools.build("helm"))  # raises (the test errors) when it cannot be built

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, "--kubeconfig", str(cluster.kubeconfig), *args],
                              capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture(scope="module")
def release(helm, crd, kubectl):
    out = helm("upgrade", "--install", "memory-hygiene", str(CHART), "--namespace", "default",
               "--take-ownership", "--force-conflicts", "--set", "enforcement.enabled=true")
    assert out.returncode == 0, out.stderr
    status = helm("status", "memory-hygiene", "--namespace", "default", "-o", "json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def test_helm_install_creates_the_objects(release, kubectl):
    assert release["info"]["status"] == "deployed"
    for args in (("get", "namespace", "memory-hygiene", "-o", "json"),
                 ("get", "namespace", "memory-hygiene-node-agent", "-o", "json"),
                 ("-n", "memory-hygiene", "get", "deployment", "memory-hygiene", "-o", "json"),
                 ("-n", "memory-hygiene-node-agent", "get", "daemonset", "memory-hygiene-node-agent", "-o", "json"),
                 ("get", "clusterrole", "memory-hygiene-enforcement", "-o", "json"),
                 ("get", "crd", "memorypolicies.memoryhygiene.io", "-o", "json")):
        out = kubectl(*args)
        assert out.returncode == 0, f"{args}: {out.stderr}"
        obj = json.loads(out.stdout)
        if obj["kind"] not in ("CustomResourceDefinition",):
            assert obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == "memory-hygiene"
    ns = json.loads(kubectl("get", "namespace", "memory-hygiene", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_operator_with_the_charts_service_account_reports_the_seeds(release, cluster, operator_process, sim, kube,
                                                                     tmp_path):
    operator_process.stop()  # the admin operator must not do the work for it
    kubeconfig = cluster.service_account_kubeconfig("memory-hygiene", "memory-hygiene", create=False)
    op = OperatorProcess(kubeconfig, tmp_path / "helm-operator.log").start()
    try:
        reports_seeds(sim, kube, ("seed000-case1-1-silent-oom.yaml", "seed000-case2-memory-pressure.yaml"), "helm",
                      "the chart's RBAC")
        assert "Forbidden" not in op.logs(400), op.logs()
    finally:
        op.stop()


def test_helm_upgrade_with_policy_reports_adds_only_their_rbac(release, helm, kubectl):
    out = helm("upgrade", "memory-hygiene", str(CHART), "--namespace", "default", "--reuse-values",
               "--set", "policyReports.enabled=true", "--dry-run=server", "-o", "json")
    assert out.returncode == 0, out.stderr
    manifest = json.loads(out.stdout)["manifest"]
    assert "name: memory-hygiene-policyreports" in manifest and "- --policy-reports" in manifest
