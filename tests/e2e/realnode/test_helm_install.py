"""`helm install` of charts/memory-hygiene on the real node (issue 16): the project's image (built
without Docker, devcluster/image.py) imported into the node's containerd, the chart
installed with helm (tests/tools/build.py), and the operator and the node agent it deploys
running as real pods that report what the cluster holds. tests/e2e/test_helm.py checks the
chart's objects and RBAC on the plain control plane, where no pod runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT, wait_for
from tests.e2e.realnode.conftest import pod_manifest
from tests.e2e.realnode.test_install import AGENT_NS, NS, _diagnostics, _running_pod

CHART = ROOT / "charts" / "memory-hygiene"
APPS = "helm-apps"


@pytest.fixture(scope="module")
def helm(node):
    sys.path.insert(0, str(ROOT / "tests" / "tools"))
    import build as tools

    binary = str(tools.build("helm"))  # raises (the test errors) when it cannot be built

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([binary, "--kubeconfig", str(node.kubeconfig), *args], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
        return out
    return run


def test_helm_install_runs_a_working_operator(node, nkubectl, apply, built_image, helm):
    node.import_image(built_image["archive"])
    repository, tag = built_image["image"].rsplit(":", 1)
    env = json.dumps([{"name": k, "value": v} for k, v in sorted(node.api_env().items())])
    # the agent looks back to the node's start only (test_install.py says why)
    lookback = json.dumps([f"--lookback={time.time() - node.started_at + 60:.0f}"])
    helm("install", "memory-hygiene", str(CHART), "--namespace", "default",
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set-json", f"operator.extraEnv={env}", "--set-json", f"nodeAgent.extraEnv={env}",
         "--set-json", f"nodeAgent.extraArgs={lookback}")
    try:
        try:
            op = wait_for(lambda: _running_pod(node, NS, "app.kubernetes.io/component=operator"), timeout=180,
                          what="the operator's pod to be Ready")
            wait_for(lambda: _running_pod(node, AGENT_NS, "app.kubernetes.io/component=node-agent"),
                     timeout=120, what="the node agent's pod to be Ready")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_diagnostics(node, NS)}\n{_diagnostics(node, AGENT_NS)}") from None
        assert op["spec"]["containers"][0]["image"].endswith(tag)
        dep = node.get_json(f"/apis/apps/v1/namespaces/{NS}/deployments/memory-hygiene")
        assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

        nkubectl("create", "namespace", APPS)
        wait_for(lambda: node.get_json(f"/api/v1/namespaces/{APPS}/serviceaccounts/default"), timeout=60,
                 what="the default ServiceAccount")
        apply({"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy", "metadata": {"name": "helm-check"},
               "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": APPS}}}})
        apply(pod_manifest("besteffort", ["/bin/sleep", "100000"], namespace=APPS))

        def reported() -> list | None:
            st = (node.get_json("/apis/memoryhygiene.io/v1alpha1/memorypolicies/helm-check") or {}).get("status") or {}
            found = [v for v in st.get("violations") or [] if v["rule"] == "MissingMemoryRequest"]
            return found or None
        try:
            found = wait_for(reported, timeout=120, what="the Helm-installed operator to report the pod")
        except AssertionError as e:
            logs = nkubectl("logs", "-n", NS, "deployment/memory-hygiene", "--tail=40", check=False)
            raise AssertionError(f"{e}\n{logs.stdout}{logs.stderr}") from None
        assert [(v["namespace"], v["name"], v["container"]) for v in found] == [(APPS, "besteffort", "app")]
        events = node.get_json(f"/api/v1/namespaces/{APPS}/events?fieldSelector=reason=MissingMemoryRequest")
        assert any(e["involvedObject"]["name"] == "besteffort" for e in events["items"])
    finally:
        nkubectl("delete", "memorypolicy", "helm-check", "--ignore-not-found", check=False)
        nkubectl("delete", "namespace", APPS, "--wait=false", check=False)
        helm("uninstall", "memory-hygiene", "--namespace", "default", "--wait")
        # the namespaces the chart made must be gone before test_install applies the same objects
        wait_for(lambda: all(node.get_json(f"/api/v1/namespaces/{n}") is None for n in (NS, AGENT_NS)),
                 timeout=120, what="the chart's namespaces to be deleted")


@pytest.fixture(scope="module")
def built_image():
    from devcluster import image as image_build

    return image_build.build_image()


