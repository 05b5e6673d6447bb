"""The real install: the project's Dockerfile built into an image without a Docker engine
(devcluster/image.py), imported into the node's containerd, and `kubectl apply -k` of a
test overlay of manifests/ that changes only what this harness needs (the image's name, pull
policy Never: no registry; the API server's address: no kube-proxy). The operator's Deployment
and the node agent's DaemonSet then run as in production: their own ServiceAccount tokens,
non-root, read-only root filesystem, probes passing; and they report the seed scenarios.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from devcluster import image as image_build
from tests.e2e.conftest import CRD_FILE, ROOT, wait_for
from tests.e2e.realnode.conftest import pod_manifest

NS = "memory-hygiene"
AGENT_NS = "memory-hygiene-node-agent"
APPS = "install-seeds"


def _overlay(tmp: Path, image: str, api_env: dict[str, str], node_started_at: float) -> Path:
    name, tag = image.rsplit(":", 1)
    env = [{"name": k, "value": v} for k, v in sorted(api_env.items())]
    # The kernel log outlives the clusters before this one (and every test on this machine that
    # killed a process in the last hour, the default lookback): the agent looks back to the node's
    # start, as the agent run as a process does (conftest.py), or it posts that backlog first.
    lookback = {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
                "value": f"--lookback={time.time() - node_started_at + 60:.0f}"}
    patches = []
    for kind, wl in (("Deployment", "memory-hygiene"), ("DaemonSet", "memory-hygiene-node-agent")):
        patches.append({"target": {"kind": kind, "name": wl}, "patch": json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"},
            *({"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": e} for e in env),
            *([lookback] if kind == "DaemonSet" else [])])})
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "manifests", tmp)],
        "images": [{"name": "ghcr.io/memory-hygiene/memory-hygiene", "newName": name, "newTag": tag}],
        "patches": patches,
    }
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return tmp


def _proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def _root_read_only(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return "ro" in fields[5].split(",")
    return False


def _diagnostics(node, namespace: str) -> str:
    """What a failed wait shows: the namespace's pods with their container states, and its Events."""
    out = []
    for p in (node.get_json(f"/api/v1/namespaces/{namespace}/pods") or {}).get("items", []):
        states = [(c["name"], c.get("state"), c.get("restartCount")) for c in p["status"].get("containerStatuses") or []]
        out.append(f"pod {p['metadata']['name']}: phase {p['status'].get('phase')}, {states}, "
                   f"conditions {[(c['type'], c['status'], c.get('message')) for c in p['status'].get('conditions') or []]}")
    for e in (node.get_json(f"/api/v1/namespaces/{namespace}/events") or {}).get("items", []):
        out.append(f"event {e['involvedObject'].get('kind')}/{e['involvedObject'].get('name')}: "
                   f"{e.get('reason')}: {e.get('message')}")
    return "\n".join(out) or f"nothing in namespace {namespace}"


def _running_pod(node, namespace: str, selector: str) -> dict | None:
    pods = node.get_json(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]
    for p in pods:
        cs = p["status"].get("containerStatuses") or []
        if cs and all(c.get("ready") for c in cs):
            return p
    return None


@pytest.fixture(scope="module")
def built_image():
    return image_build.build_image()


def test_install_from_the_image_with_kubectl_apply_k(node, nkubectl, apply, built_image, tmp_path):
    node.import_image(built_image["archive"])
    overlay = _overlay(tmp_path, built_image["image"], node.api_env(), node.started_at)
    nkubectl("apply", "-k", str(overlay), "--server-side")
    try:
        # --- the operator: Deployment Available, probes passing, its own token, non-root, ro root fs
        try:
            op = wait_for(lambda: _running_pod(node, NS, "app.kubernetes.io/component=operator"), timeout=180,
                          what="the operator's pod to be Ready (readiness probe /readyz)")
            agent = wait_for(lambda: _running_pod(node, AGENT_NS, "app.kubernetes.io/component=node-agent"),
                             timeout=120, what="the node agent's pod to be Ready")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_diagnostics(node, NS)}\n{_diagnostics(node, AGENT_NS)}") from None
        # the operator: uid 65532, no capability; the agent: uid 0 with CAP_SYSLOG (bit 34) only
        expect = {"memory-hygiene": (["65532", "65532"], 0), "memory-hygiene-node-agent": (["0", "0"], 1 << 34)}
        for pod, sa in ((op, "memory-hygiene"), (agent, "memory-hygiene-node-agent")):
            assert pod["spec"]["serviceAccountName"] == sa
            vols = [v["name"] for v in pod["spec"]["volumes"]]
            assert any(v.startswith("kube-api-access-") for v in vols), vols  # ServiceAccount admission
            cid = pod["status"]["containerStatuses"][0]["containerID"].split("//", 1)[1]
            pids = node.container_pids(cid)
            assert pids, f"no process found for {pod['metadata']['name']}"
            status = _proc_status(pids[0])
            uids, caps = expect[sa]
            assert status["Uid"].split()[:2] == uids, (sa, status["Uid"])
            assert int(status["CapEff"], 16) == caps and int(status["CapBnd"], 16) == caps, (sa, status)
            assert status["NoNewPrivs"].strip() == "1", (sa, status["NoNewPrivs"])
            assert _root_read_only(pids[0]), sa
        cs = op["status"]["containerStatuses"][0]
        assert cs["restartCount"] == 0 and cs["image"].endswith(built_image["image"].rsplit("/", 1)[1])
        dep = node.get_json(f"/apis/apps/v1/namespaces/{NS}/deployments/memory-hygiene")
        assert dep["status"].get("availableReplicas") == 1

        # --- what it reports: a seed scenario through the installed operator and agent
        nkubectl("create", "namespace", APPS)
        wait_for(lambda: node.get_json(f"/api/v1/namespaces/{APPS}/serviceaccounts/default"), timeout=60,
                 what="the default ServiceAccount")
        apply({"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy",
               "metadata": {"name": "install-check"},
               "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": APPS}}}})
        apply(pod_manifest("besteffort", ["/bin/sleep", "100000"], namespace=APPS))
        apply(pod_manifest("silent", ["/bin/sh", "-c", "while true; do /bin/memhog 200 4 10 0; sleep 30; done"],
                           namespace=APPS, requests={"memory": "32Mi"}, limits={"memory": "100Mi"}))

        def violations() -> dict[str, list[dict]] | None:
            st = (node.get_json("/apis/memoryhygiene.io/v1alpha1/memorypolicies/install-check") or {}).get("status") or {}
            out: dict[str, list[dict]] = {}
            for v in st.get("violations") or []:
                out.setdefault(v["rule"], []).append(v)
            # The policy selects no nodes, so kills the kernel log keeps of pods already gone from
            # this node (earlier tests) are there too, as Node violations: wait for the Pod's.
            silent_pod = any(v["kind"] == "Pod" for v in out.get("SilentOOMKill", ()))
            return out if "MissingMemoryRequest" in out and silent_pod else None
        try:
            found = wait_for(violations, timeout=180, what="the installed operator to report both seeds")
        except AssertionError as e:
            logs = [nkubectl("logs", "-n", ns, f"{kind}/{name}", "--tail=40", check=False)
                    for ns, kind, name in ((NS, "deployment", "memory-hygiene"),
                                           (AGENT_NS, "daemonset", "memory-hygiene-node-agent"))]
            raise AssertionError(f"{e}\n" + "\n".join(r.stdout + r.stderr for r in logs)) from None
        assert [v["name"] for v in found["MissingMemoryRequest"]] == ["besteffort"]
        silent = [(v["name"], v.get("container")) for v in found["SilentOOMKill"] if v["kind"] == "Pod"]
        assert silent == [("silent", "app")], found["SilentOOMKill"]
        oom_events = node.get_json("/api/v1/namespaces/default/events?fieldSelector=reason=OOMKilling")["items"]
        uid = node.get_json(f"/api/v1/namespaces/{APPS}/pods/silent")["metadata"]["uid"]
        assert any(e["source"].get("component") == "memory-hygiene-node-agent" and uid in e["message"]
                   for e in oom_events)
    finally:
        nkubectl("delete", "-k", str(overlay), "--wait=true", "--timeout=120s", check=False)
        nkubectl("delete", "namespace", APPS, "--wait=false", check=False)
        nkubectl("delete", "memorypolicy", "install-check", "--ignore-not-found", check=False)
    # kube-controller-manager's garbage collector and namespace controller clean up after it
    for ns in (NS, AGENT_NS):
        wait_for(lambda: node.get_json(f"/api/v1/namespaces/{ns}") is None, timeout=120,
                 what=f"the namespace {ns} to be deleted")
    # `delete -k` took the CRD with it: the next tests (the operator on the host) need it back
    nkubectl("apply", "-f", str(CRD_FILE))
    wait_for(lambda: nkubectl("get", "crd/memorypolicies.memoryhygiene.io", "-o",
                              'jsonpath={.status.conditions[?(@.type=="Established")].status}').stdout == "True",
             timeout=60, what="the CRD to be Established again")
