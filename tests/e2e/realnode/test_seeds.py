"""The seeds' experiments on real containers (shared/seeds, examples/seed*.yaml), end to end.

A real kubelet runs the pods, the kernel kills their processes, the node agent reads the
kernel's report from /dev/kmsg and posts it, the operator attributes it: nothing in between
is simulated. Each test creates its pods, waits (polling, with deadlines) for what the kernel
and kubelet do, then for what the operator reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memory_hygiene.core.quantity import parse_bytes as parse_memory
from devcluster import realnode
from tests.e2e.conftest import wait_for
from tests.e2e.realnode.conftest import NAMESPACE, container, pod_manifest

POLICY = "real-node"
SELF_KILL = ["/bin/sh", "-c",
             "i=0; while true; do i=$((i+1)); echo round $i; /bin/memhog 200 4 10 0; "
             "echo memhog exited rc=$?; sleep 30; done"]
"""Seed 000 case 1-1: PID 1 (a shell) lives on while its child memhog is OOM-killed."""


def _get(node, path: str) -> dict:
    body = node.get_json(path)
    assert body is not None, path
    return body


def _pod(node, name: str) -> dict:
    return _get(node, f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")


def _status(node) -> dict:
    return _get(node, f"/apis/memoryhygiene.io/v1alpha1/memorypolicies/{POLICY}").get("status") or {}


def _violations(node, rule: str, name: str | None = None) -> list[dict]:
    return [v for v in _status(node).get("violations") or []
            if v["rule"] == rule and (name is None or v["name"] == name)]


def _events(node, namespace: str, **fields: str) -> list[dict]:
    sel = ",".join(f"{k}={v}" for k, v in fields.items())
    return _get(node, f"/api/v1/namespaces/{namespace}/events?fieldSelector={sel}")["items"]


def _agent_events(node) -> list[dict]:
    return [e for e in _events(node, "default", reason="OOMKilling")
            if e.get("source", {}).get("component") == "memory-hygiene-node-agent"]


def _audit(node) -> dict:
    exe = Path(sys.executable).parent / "memory-hygiene"
    proc = subprocess.run([str(exe), "audit", "--kubeconfig", str(node.kubeconfig), "-o", "json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def _running(node, name: str) -> bool:
    st = _pod(node, name).get("status", {})
    return st.get("phase") == "Running" and all("running" in c.get("state", {})
                                                for c in st.get("containerStatuses") or [{}])


@pytest.fixture(scope="module")
def policy(node, ncrd, noperator, agent, apply):
    # test_install deleted the CRD and applied it again: the host operator may have exited then
    # (kopf's watch of MemoryPolicies got 404, which stops kopf; in a cluster kubelet restarts it)
    if noperator.proc is None or noperator.proc.poll() is not None:
        noperator.start()
    apply({"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy", "metadata": {"name": POLICY},
           "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}})
    wait_for(lambda: _status(node).get("summary"), timeout=60, what="the policy's first status")
    return POLICY


def test_node_is_real(node, nkubectl):
    n = _get(node, f"/api/v1/nodes/{realnode.NODE_NAME}")
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    mem_total = int(meminfo["MemTotal"].split()[0]) * 1024
    capacity = parse_memory(n["status"]["capacity"]["memory"])
    allocatable = parse_memory(n["status"]["allocatable"]["memory"])
    assert capacity == mem_total
    assert allocatable == capacity - 100 * 2**20  # evictionHard memory.available 100Mi, no reservations
    assert n["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
    assert {"type": "InternalIP", "address": realnode.GATEWAY} in n["status"]["addresses"]


def test_silent_child_kill_is_reported_on_the_pod_and_container(node, policy, apply):
    """Seed 000 case 1-1: a child OOM-killed, PID 1 lives: SilentOOMKill, attributed by memcg."""
    apply(pod_manifest("oom-child", SELF_KILL, requests={"memory": "32Mi"}, limits={"memory": "100Mi"}))
    wait_for(lambda: _running(node, "oom-child"), timeout=60, what="oom-child running")
    pod = _pod(node, "oom-child")
    uid = pod["metadata"]["uid"]
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("//", 1)[1]

    mine = lambda: [e for e in _agent_events(node) if uid in e["message"]]  # noqa: E731
    events = wait_for(mine, timeout=90, what="the agent's OOMKilling Event for oom-child")
    # the kernel's own lines, verbatim: the memcg paths name the pod and the container
    assert "oom-kill:constraint=CONSTRAINT_MEMCG" in events[0]["message"]
    assert f"task_memcg=/{realnode.CGROUP_ROOT}/kubepods/burstable/pod{uid}/{cid}" in events[0]["message"]
    assert "Killed process" in events[0]["message"] and "(memhog)" in events[0]["message"]
    assert events[0]["involvedObject"]["kind"] == "Node" and events[0]["involvedObject"]["name"] == realnode.NODE_NAME

    v = wait_for(lambda: _violations(node, "SilentOOMKill", "oom-child"), timeout=60,
                 what="SilentOOMKill for oom-child")[0]
    assert (v["kind"], v["namespace"], v["container"]) == ("Pod", NAMESPACE, "app")
    assert "memcg" in v["message"] and "memhog" in v["message"]
    ev = wait_for(lambda: [e for e in _events(node, NAMESPACE, reason="SilentOOMKill")
                           if e["involvedObject"]["name"] == "oom-child"], timeout=30,
                  what="the SilentOOMKill Event on the pod")
    assert ev[0]["involvedObject"]["uid"] == uid
    # and Kubernetes itself recorded nothing: no restart, no lastState, no OOM event from kubelet
    cs = _pod(node, "oom-child")["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 0 and not cs.get("lastState")
    kubelet_events = _events(node, NAMESPACE, **{"involvedObject.name": "oom-child"})
    assert not [e for e in kubelet_events if "OOM" in e["reason"] and e["source"].get("component") == "kubelet"]
    # one Event per kill: no two agent Events tell of the same pid
    pids = [e["message"].split("Killed process ", 1)[1].split()[0] for e in mine()]
    assert len(pids) == len(set(pids)), pids


def test_pid1_kill_is_a_visible_oomkilled_restart(node, policy, apply):
    """Seed 000 case 1-2: PID 1 killed: kubelet restarts it, OOMKilled: not silent."""
    apply(pod_manifest("oom-pid1", ["/bin/memhog", "200", "4", "10", "1"], requests={"memory": "32Mi"},
                       limits={"memory": "100Mi"}))

    def restarted() -> dict | None:
        cs = (_pod(node, "oom-pid1")["status"].get("containerStatuses") or [{}])[0]
        last = cs.get("lastState", {}).get("terminated") or {}
        return cs if cs.get("restartCount", 0) >= 1 and last.get("reason") == "OOMKilled" else None
    cs = wait_for(restarted, timeout=90, what="an OOMKilled restart of oom-pid1")
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    uid = _pod(node, "oom-pid1")["metadata"]["uid"]
    wait_for(lambda: [e for e in _agent_events(node) if uid in e["message"]], timeout=60,
             what="the agent's OOMKilling Event for oom-pid1")

    def judged() -> list[dict]:
        # judged: a kill is pending for rules.SETTLE_SECONDS (kubelet's time to report it)
        return [k for k in _audit(node)["oomKills"] if k["pod"] == "oom-pid1" and not k["pending"]]
    kills = wait_for(judged, timeout=60, what="the audit to see oom-pid1's kills")
    assert all(k["attribution"] == "memcg" and k["container"] == "app" for k in kills), kills
    assert not any(k["silent"] for k in kills), kills
    # the operator agrees (same rules, its own caches)
    wait_for(lambda: _status(node).get("summary", {}).get("oomKills", 0) >= 2, timeout=60,
             what="the operator to count the kills")
    assert not _violations(node, "SilentOOMKill", "oom-pid1")


def test_missing_requests_on_besteffort_pods(node, policy, apply):
    """Seed 001: BestEffort pods have no memory request: MissingMemoryRequest for each."""
    for name in ("besteffort-a", "besteffort-b"):
        apply(pod_manifest(name, ["/bin/sleep", "100000"]))
    for name in ("besteffort-a", "besteffort-b"):
        wait_for(lambda: _running(node, name), timeout=60, what=f"{name} running")
        assert _pod(node, name)["status"]["qosClass"] == "BestEffort"
        v = wait_for(lambda: _violations(node, "MissingMemoryRequest", name), timeout=60,
                     what=f"MissingMemoryRequest for {name}")
        assert v[0]["container"] == "app"
        wait_for(lambda: [e for e in _events(node, NAMESPACE, reason="MissingMemoryRequest")
                          if e["involvedObject"]["name"] == name], timeout=30, what=f"the Event on {name}")


def test_overcommit_against_the_real_allocatable(node, policy, apply):
    """Seed 000 case 2 / seed 003: limits add up past what the node has; requests fit."""
    n = _get(node, f"/api/v1/nodes/{realnode.NODE_NAME}")
    allocatable = parse_memory(n["status"]["allocatable"]["memory"])
    limit = allocatable // 2 // 2**20  # MiB: three of these are 150 % of the node
    for i in range(3):
        apply(pod_manifest(f"overcommit-{i}", ["/bin/sleep", "100000"], requests={"memory": "16Mi"},
                           limits={"memory": f"{limit}Mi"}))
    for i in range(3):
        wait_for(lambda: _running(node, f"overcommit-{i}"), timeout=60, what=f"overcommit-{i} running")
    v = wait_for(lambda: _violations(node, "NodeOvercommitted", realnode.NODE_NAME), timeout=60,
                 what="NodeOvercommitted")[0]
    assert v["kind"] == "Node"
    report = next(r for r in _audit(node)["nodes"] if r["name"] == realnode.NODE_NAME)
    assert report["allocatableBytes"] == allocatable
    pods = _get(node, f"/api/v1/pods?fieldSelector=spec.nodeName={realnode.NODE_NAME}")["items"]
    limits = sum(parse_memory(c["resources"].get("limits", {}).get("memory", "0"))
                 for p in pods if p["status"].get("phase") in ("Running", "Pending")
                 for c in p["spec"]["containers"])
    assert report["limitsBytes"] == limits
    assert report["limitsPercent"] == pytest.approx(100 * limits / allocatable, abs=0.1)
    assert report["limitsPercent"] > 149
    ev = wait_for(lambda: [e for e in _events(node, "default", reason="NodeOvercommitted")
                           if e["involvedObject"]["name"] == realnode.NODE_NAME], timeout=30,
                  what="the NodeOvercommitted Event on the Node (namespace default)")
    assert ev[0]["involvedObject"].get("namespace", "") == ""
    for i in range(3):
        node.kubectl("delete", "pod", "-n", NAMESPACE, f"overcommit-{i}", "--wait=false", "--ignore-not-found")
    wait_for(lambda: not _violations(node, "NodeOvercommitted", realnode.NODE_NAME), timeout=90,
             what="NodeOvercommitted to end")


def test_child_kill_then_clean_exit(node, policy, apply):
    """A child OOM-killed, then PID 1 exits 0 by itself: kubelet reports `OOMKilled` with exit
    code 0 once the container ends (the runtime saw an OOM in its memory cgroup).

    Decided (docs/design.md, "Silent or visible"): that termination was not the kill (PID 1 was
    not killed: exit code 0), so it does not make the kill visible: a SilentOOMKill, and it
    stays after the pod has completed. The audit, which reads completed pods, says the same.
    """
    apply(pod_manifest("oom-child-exit0", ["/bin/sh", "-c", "/bin/memhog 200 4 10 0; echo rc=$?; sleep 5; exit 0"],
                       requests={"memory": "32Mi"}, limits={"memory": "100Mi"}, restart="Never"))

    def done() -> dict | None:
        st = _pod(node, "oom-child-exit0")["status"]
        return st if st.get("phase") == "Succeeded" else None
    st = wait_for(done, timeout=90, what="oom-child-exit0 to succeed")
    term = st["containerStatuses"][0]["state"]["terminated"]
    assert (term["reason"], term["exitCode"]) == ("OOMKilled", 0)
    uid = _pod(node, "oom-child-exit0")["metadata"]["uid"]
    wait_for(lambda: [e for e in _agent_events(node) if uid in e["message"]], timeout=60,
             what="the agent's OOMKilling Event for oom-child-exit0")

    def judged() -> list[dict]:
        # judged: a kill is pending for rules.SETTLE_SECONDS (kubelet's time to report it)
        return [k for k in _audit(node)["oomKills"] if k["pod"] == "oom-child-exit0" and not k["pending"]]
    kills = wait_for(judged, timeout=60, what="the audit to judge the kill")
    assert [(k["silent"], k["container"]) for k in kills] == [(True, "app")], kills
    v = wait_for(lambda: _violations(node, "SilentOOMKill", "oom-child-exit0"), timeout=60,
                 what="SilentOOMKill for oom-child-exit0 in the operator's status")
    assert v[0]["container"] == "app"


def test_memory_pressure_eviction_names_the_evicted_pods(node, policy, apply, nkubectl):
    """Seed 000 case 2: kubelet evicts under memory pressure: NodeMemoryPressure names them.

    kubelet's threshold is raised to 1 GiB below what it sees free, then a BestEffort pod
    holds 2.5 GiB. Runs last: kubelet restarts twice.
    """
    node.kubectl("delete", "pods", "--all", "-n", NAMESPACE, "--wait=false", "--ignore-not-found")
    wait_for(lambda: not _get(node, f"/api/v1/namespaces/{NAMESPACE}/pods")["items"], timeout=90,
             what="the namespace's pods to be gone")
    avail = node.stats_summary()["node"]["memory"]["availableBytes"]
    threshold = (avail - 2**30) // 2**20
    try:
        node.start_kubelet(eviction_hard=f"{threshold}Mi")
        apply(pod_manifest("evict-bystander", ["/bin/sleep", "100000"]))
        apply(pod_manifest("evict-hog", ["/bin/memhog", "2560", "16", "10", "1"], restart="Never"))

        def evicted() -> list[str]:
            pods = _get(node, f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
            return [p["metadata"]["name"] for p in pods if p["status"].get("reason") == "Evicted"]
        wait_for(lambda: "evict-hog" in evicted(), timeout=120, what="kubelet to evict the hog")
        msg = _pod(node, "evict-hog")["status"]["message"]
        assert "low on resource: memory" in msg

        def naming_every_evicted_pod() -> dict | None:
            found = _violations(node, "NodeMemoryPressure", realnode.NODE_NAME)
            names = evicted()  # kubelet may evict more than the hog (the bystander, when the machine is busy)
            return found[0] if found and all(n in found[0]["message"] for n in names) else None
        v = wait_for(naming_every_evicted_pod, timeout=60, what="NodeMemoryPressure naming every evicted pod")
        assert "evict-hog" in v["message"]
        n = _get(node, f"/api/v1/nodes/{realnode.NODE_NAME}")
        cond = next(c for c in n["status"]["conditions"] if c["type"] == "MemoryPressure")
        assert cond["status"] == "True"
    finally:
        node.start_kubelet(eviction_hard="100Mi")
    wait_for(lambda: not _violations(node, "NodeMemoryPressure", realnode.NODE_NAME), timeout=120,
             what="NodeMemoryPressure to end after the threshold is back")
