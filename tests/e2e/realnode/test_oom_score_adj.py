"""oom_score_adj ground truth: what kubelet really gave each container process, read from
/proc, against the core's formula (memory_hygiene.core.qos), which the fingerprint attribution
of OOM kills relies on."""

from __future__ import annotations

from pathlib import Path

from memory_hygiene.core import qos
from memory_hygiene.core.quantity import parse_bytes
from devcluster import realnode
from tests.e2e.conftest import wait_for
from tests.e2e.realnode.conftest import NAMESPACE, container, pod_manifest

SLEEP = ["/bin/sleep", "100000"]

PODS = [
    pod_manifest("adj-burstable", SLEEP, containers=[
        container("app", SLEEP, requests={"memory": "4Gi"}),
        container("side", SLEEP, requests={"memory": "1Gi"}, limits={"memory": "2Gi"})]),
    pod_manifest("adj-mixed", SLEEP, containers=[
        container("withreq", SLEEP, requests={"memory": "12Gi"}),
        container("noreq", SLEEP)]),
    # pod-level resources (beta, on in 1.37): the unassigned pod request is split evenly
    pod_manifest("adj-podlevel", SLEEP, pod_resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "3Gi"}},
                 containers=[container("app", SLEEP), container("app2", SLEEP, requests={"memory": "512Mi"})]),
    pod_manifest("adj-besteffort", SLEEP),
    pod_manifest("adj-guaranteed", SLEEP, requests={"memory": "128Mi", "cpu": "100m"},
                 limits={"memory": "128Mi", "cpu": "100m"}),
]
# a restartable init container (sidecar) next to an app container
_sidecar = pod_manifest("adj-sidecar", SLEEP, containers=[container("app", SLEEP, requests={"memory": "1Gi"})])
_sidecar["spec"]["initContainers"] = [{**container("proxy", SLEEP, requests={"memory": "64Mi"}),
                                       "restartPolicy": "Always"}]
PODS.append(_sidecar)


def _real_scores(node, pod: dict) -> dict[str, set[int]]:
    """oom_score_adj of every process of each container, and of the sandbox ("(sandbox)")."""
    out: dict[str, set[int]] = {}
    ids = {}
    for cs in (pod["status"].get("containerStatuses") or []) + (pod["status"].get("initContainerStatuses") or []):
        if "running" in cs.get("state", {}):
            ids[cs["containerID"].split("//", 1)[1]] = cs["name"]
    level = {"Guaranteed": "", "Burstable": "burstable", "BestEffort": "besteffort"}[pod["status"]["qosClass"]]
    pod_cg = node.memory_cgroup_root / "kubepods" / level / f"pod{pod['metadata']['uid']}"
    for d in pod_cg.iterdir():
        if not d.is_dir():
            continue
        name = ids.get(d.name, "(sandbox)")
        for pid in (d / "cgroup.procs").read_text().split():
            try:
                out.setdefault(name, set()).add(int(Path(f"/proc/{pid}/oom_score_adj").read_text()))
            except OSError:
                pass  # exited meanwhile
    return out


def test_real_oom_score_adj_equals_the_formula(node, ncrd, apply):
    for p in PODS:
        apply(p)
    capacity = parse_bytes(node.get_json(f"/api/v1/nodes/{realnode.NODE_NAME}")["status"]["capacity"]["memory"])

    def all_running() -> list[dict] | None:
        pods = [node.get_json(f"/api/v1/namespaces/{NAMESPACE}/pods/{p['metadata']['name']}") for p in PODS]
        for pod in pods:
            cs = (pod["status"].get("containerStatuses") or []) + (pod["status"].get("initContainerStatuses") or [])
            if pod["status"].get("phase") != "Running" or not cs or not all("running" in c.get("state", {}) for c in cs):
                return None
        return pods
    pods = wait_for(all_running, timeout=120, what="the oom_score_adj pods to run")

    checked = 0
    for pod in pods:
        real = _real_scores(node, pod)
        expected = qos.expected_scores(pod, capacity)
        for name, scores in real.items():
            if name == "(sandbox)":
                # kubelet asks -998 for the pause container; containerd's restrict_oom_score_adj
                # clamps it to its own 0 here (no CAP_SYS_RESOURCE: runc cannot set a negative value).
                assert scores == {0}, (pod["metadata"]["name"], scores)
                continue
            want = expected[name]
            if want < 0:
                # Guaranteed: kubelet's -997 is clamped the same way on these VMs.
                assert pod["status"]["qosClass"] == "Guaranteed"
                want = 0
            assert scores == {want}, (pod["metadata"]["name"], name, scores, expected[name])
            checked += 1
    # every app and sidecar container was read: 2 + 2 + 2 + 1 + 1 + 2
    assert checked == 10
    # the values the formula gives, spelled out for the record (capacity = MemTotal)
    by_name = {p["metadata"]["name"]: qos.expected_scores(p, capacity) for p in pods}
    assert by_name["adj-besteffort"]["app"] == 1000
    assert by_name["adj-mixed"]["noreq"] == 999  # a Burstable container without request: 1000 -> 999
    assert 3 <= by_name["adj-burstable"]["app"] < by_name["adj-burstable"]["side"] <= 999
    assert by_name["adj-podlevel"]["app"] > by_name["adj-podlevel"]["app2"]
    for p in PODS:
        node.kubectl("delete", "pod", "-n", NAMESPACE, p["metadata"]["name"], "--wait=false", "--ignore-not-found")
