"""The operator as a real process against a real API server: status, Events, transitions.

Every test makes its own nodes and namespaces (unique names, labelled) and a policy that selects
only them, so the tests share one operator and one cluster without seeing each other.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from memory_hygiene.core.engine import evaluate
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.inputs import load_files
from tests.e2e.conftest import wait_for
from devcluster.sim.kube import load_snapshot, now_iso

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS = sorted(p.name for p in EXAMPLES.glob("seed*.yaml"))
API = ("memoryhygiene.io", "v1alpha1", "memorypolicies")


def scoped_spec(tag: str, **rules) -> dict:
    """A policy that sees only the objects labelled mh-test=<tag>."""
    sel = {"matchLabels": {"mh-test": tag}}
    return {"nodeSelector": sel, "namespaceSelector": sel, "rules": rules}


def violation_keys(status: dict) -> list[tuple]:
    return sorted((v["rule"], v["kind"], v.get("namespace"), v["name"], v.get("container"))
                  for v in status.get("violations") or [])


def settled_with(kube, name: str, predicate, timeout: float = 30, what: str = "status") -> dict:
    def check():
        s = kube.settled(name)
        return s if s is not None and predicate(s) else None

    return wait_for(check, timeout=timeout, what=f"{name}: {what}")


def reports_seeds(sim, kube, seeds, prefix: str, rights: str) -> None:
    """Each seed scenario loaded and selected by a policy of its own: the running operator reports
    it, and posts an Event for each violation (the proof that ``rights`` suffice)."""
    for seed in seeds:
        tag = uuid.uuid4().hex[:8]
        load_snapshot(sim, EXAMPLES / seed, tag, labels={"mh-test": tag})
        name = f"{prefix}-{tag}"
        kube.apply_policy(name, scoped_spec(tag))
        status = settled_with(kube, name, lambda s: s["summary"]["violations"] > 0, what=f"{seed} evaluated")
        for v in status["violations"]:
            ns = v.get("namespace") or "default"
            wait_for(lambda: kube.events(ns, **{"involvedObject.name": v["name"], "reason": v["rule"]}),
                     what=f"{v['rule']} event posted with {rights}")


def new_scenario(sim, tag: str, node_memory=("8Gi", "7Gi"), pressure=False):
    ns = f"ns-{tag}"
    node = f"node-{tag}"
    sim.namespace(ns, {"mh-test": tag})
    sim.node(node, node_memory[0], node_memory[1], labels={"mh-test": tag}, pressure=pressure)
    return ns, node


def killed_line(pid: int, comm: str, score: int, rss_kb: int = 200_000) -> str:
    return (f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:900000kB, anon-rss:{rss_kb}kB, "
            f"file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:400kB oom_score_adj:{score}")


# --- the seed scenarios: the operator agrees with the offline audit -----------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_scenario_status_and_events(seed, operator, sim, kube, kubectl):
    tag = uuid.uuid4().hex[:8]
    loaded = load_snapshot(sim, EXAMPLES / seed, tag, labels={"mh-test": tag})
    kube.apply_policy(f"seed-{tag}", scoped_spec(tag))

    # What the offline audit says about the same file (same code, no cluster).
    snap = load_files([str(EXAMPLES / seed)])
    expected = evaluate("x", parse_spec({}), snap.nodes, snap.pods, snap.events, snap.newest_time or 0,
                        snap.namespaces)
    rename_ns = loaded.namespaces
    rename_node = loaded.nodes

    def mapped(v):
        name = rename_node.get(v.name, v.name) if v.kind == "Node" else v.name
        return (v.rule, v.kind, rename_ns.get(v.namespace) if v.namespace else None, name, v.container)

    want = sorted(mapped(v) for v in expected.violations)
    status = settled_with(kube, f"seed-{tag}", lambda s: violation_keys(s) == want, what=f"violations {want}")
    assert status["summary"] == expected.summary()
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    # Each violation has its Event on the object (Nodes' in namespace default) and on the policy.
    for rule, kind, ns, name, container in want:
        event_ns = ns if kind == "Pod" else "default"

        def on_object():
            return [e for e in kube.events(event_ns, **{"involvedObject.name": name, "reason": rule})
                    if e["involvedObject"]["kind"] == kind and e["type"] == "Warning"]

        [event] = wait_for(on_object, what=f"{rule} event on {kind} {name}")
        if kind == "Node":
            assert not event["involvedObject"].get("namespace"), "cluster-scoped: empty involvedObject.namespace"
        assert event["source"]["component"] == "memory-hygiene"
    if want:
        policy_events = wait_for(lambda: len(e := kube.events("default", **{"involvedObject.name": f"seed-{tag}"}))
                                 >= len(want) and e, what="events on the policy")
        assert sorted(e["reason"] for e in policy_events) == sorted(w[0] for w in want)
    else:  # a clean scenario (e.g. a visible, restarted OOM kill): nothing to tell anyone
        assert kube.events("default", **{"involvedObject.name": f"seed-{tag}"}) == []


def test_initial_state_is_read_as_the_server_allows(operator, cluster):
    """Where the API server can stream initial events from its watch cache (etcd with
    RequestWatchProgress), the pod, node and namespace caches fill from one watch stream each;
    where it cannot, each falls back to paged LISTs, once, and says so. (Events have no watch
    cache in kube-apiserver by default, DefaultWatchCacheSizes: events 0, and are streamed from
    etcd either way.) The seed scenarios pass in both cases."""
    log = operator.log_path.read_text()
    fell_back = {r for r in ("pods", "nodes", "namespaces")
                 if f"/api/v1/{r}: the API server does not stream initial events" in log}
    if cluster.watch_list is None:  # a cluster we did not start: either way, the same for all
        assert fell_back in (set(), {"pods", "nodes", "namespaces"}), operator.logs()
    elif cluster.watch_list:
        assert fell_back == set(), operator.logs()
    else:
        assert fell_back == {"pods", "nodes", "namespaces"}, operator.logs()


# --- transitions ------------------------------------------------------------------------------


def test_violation_that_ends_leaves_status_and_emits_resolved(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "4Gi"))
    sim.pod(ns, "big-1", {"c": {"requests": "1Gi", "limits": "3Gi"}}, node=node)
    sim.pod(ns, "big-2", {"c": {"requests": "1Gi", "limits": "3Gi"}}, node=node)
    sim.pod(ns, "no-request", {"c": {}}, node=node)
    name = f"ends-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 1 and s["summary"]["missingRequests"] == 1)

    sim.core.delete_namespaced_pod("big-2", ns, grace_period_seconds=0)
    sim.core.delete_namespaced_pod("no-request", ns, grace_period_seconds=0)
    status = settled_with(kube, name, lambda s: s["summary"]["violations"] == 0, what="no violations")
    assert status["violations"] == []

    def resolved(reason, obj):
        return [e for e in kube.events("default", **{"involvedObject.name": obj, "reason": reason})
                if e["type"] == "Normal"]

    wait_for(lambda: resolved("NodeOvercommittedResolved", node), what="resolved event on the node")
    wait_for(lambda: resolved("NodeOvercommittedResolved", name), what="resolved event on the policy")
    wait_for(lambda: resolved("MissingMemoryRequestResolved", name), what="resolved event on the policy")
    # the pod is gone: no Event is posted about it
    assert kube.events(ns, **{"involvedObject.name": "no-request", "reason": "MissingMemoryRequestResolved"}) == []


def test_limit_lowered_in_place_ends_the_overcommit(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "4Gi"))
    sim.pod(ns, "big", {"c": {"requests": "1Gi", "limits": "6Gi"}}, node=node)
    name = f"resize-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 1)
    sim.resize_memory(ns, "big", "c", "1Gi", "3Gi")
    settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 0, what="overcommit resolved")
    wait_for(lambda: [e for e in kube.events("default", **{"involvedObject.name": node,
                                                           "reason": "NodeOvercommittedResolved"})],
             what="NodeOvercommittedResolved event")


def test_memory_pressure_with_evictions_then_cleared(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    for i in range(3):
        sim.pod(ns, f"p{i}", {"c": {"requests": "1Gi", "limits": "2Gi"}}, node=node)
    name = f"pressure-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["evaluatedPods"] == 3)

    sim.set_memory_pressure(node, True)
    sim.evict_for_memory(ns, "p1")
    status = settled_with(kube, name, lambda s: s["summary"]["nodesUnderMemoryPressure"] == 1)
    [v] = [v for v in status["violations"] if v["rule"] == "NodeMemoryPressure"]
    assert f"evicted for memory: {ns}/p1" in v["message"]
    wait_for(lambda: kube.events("default", **{"involvedObject.name": node, "reason": "NodeMemoryPressure"}),
             what="NodeMemoryPressure event on the node")

    sim.set_memory_pressure(node, False)
    settled_with(kube, name, lambda s: s["summary"]["nodesUnderMemoryPressure"] == 0)
    wait_for(lambda: kube.events("default", **{"involvedObject.name": node, "reason": "NodeMemoryPressureResolved"}),
             what="NodeMemoryPressureResolved event on the node")


def test_node_reservation_too_small_then_fixed(operator, sim, kube):
    """A rule added through the rule table alone: status summary, Events, metric and Resolved."""
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("16Gi", f"{16 * 1024 - 100}Mi"))  # only the eviction threshold
    name = f"reserve-{tag}"
    kube.apply_policy(name, scoped_spec(tag, nodeReservation={"enabled": True}))
    status = settled_with(kube, name, lambda s: s["summary"]["reservationTooSmall"] == 1)
    [v] = status["violations"]
    assert (v["rule"], v["kind"], v["name"]) == ("NodeReservationTooSmall", "Node", node)
    assert "reserve of 100Mi" in v["message"] and "--kube-reserved" in v["message"]
    wait_for(lambda: kube.events("default", **{"involvedObject.name": node, "reason": "NodeReservationTooSmall"}),
             what="NodeReservationTooSmall event on the node")
    text = wait_for(lambda: (t := operator.get("/metrics")) and name in t and t, what="metrics")
    assert f'memory_hygiene_violations{{policy="{name}",rule="NodeReservationTooSmall"}} 1.0' in text

    sim.node_status(node, {"allocatable": {"cpu": "4", "memory": "12Gi", "pods": "110"}})
    settled_with(kube, name, lambda s: s["summary"]["reservationTooSmall"] == 0 and s["summary"]["violations"] == 0,
                 what="reservation fixed")
    wait_for(lambda: [e for e in kube.events("default", **{"involvedObject.name": node,
                                                           "reason": "NodeReservationTooSmallResolved"})
                      if e["type"] == "Normal"],
             what="NodeReservationTooSmallResolved event on the node")


def test_oom_kills_silent_visible_fingerprint_and_ambiguous(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    # node capacity 8Gi: a Burstable container requesting 1Gi scores 875, 512Mi scores 938
    sim.pod(ns, "a", {"c": {"requests": "1Gi", "limits": "1Gi"}, "d": {"requests": "512Mi", "limits": "1Gi"}},
            node=node)
    sim.pod(ns, "b", {"c": {"requests": "256Mi", "limits": "1Gi"}}, node=node)
    name = f"oom-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["evaluatedPods"] == 2)

    # 1. a worker in container a/d dies; NPD names no pod, oom_score_adj 938 does: silent
    killed_at = time.time()
    sim.npd_oom_killing(node, killed_line(4242, "worker", 938))
    status = settled_with(kube, name, lambda s: s["summary"]["silentOOMKills"] == 1)
    [v] = status["violations"]
    assert (v["rule"], v["kind"], v["namespace"], v["name"], v["container"]) == ("SilentOOMKill", "Pod", ns, "a", "d")
    assert "worker (pid 4242)" in v["message"] and "did not restart" in v["message"]
    wait_for(lambda: kube.events(ns, **{"involvedObject.name": "a", "reason": "SilentOOMKill"}),
             what="SilentOOMKill event on the pod")

    # 2. PID 1 of a/c dies: kubelet restarts it OOMKilled; Kubernetes saw it: not silent
    sim.oom_killed_restart(ns, "a", "c")
    sim.npd_oom_killing(node, killed_line(4300, "server", 875))
    status = settled_with(kube, name, lambda s: s["summary"]["oomKills"] == 2, what="two incidents")
    assert status["summary"]["silentOOMKills"] == 1

    # 3. a pod created after kill 1 with the same fingerprint as a/d does not take kill 1 away
    wait_for(lambda: time.time() > killed_at + 2.5, what="the clock to pass the kill (whole-second timestamps)")
    sim.pod(ns, "late-twin", {"c": {"requests": "512Mi", "limits": "1Gi"}}, node=node)
    status = settled_with(kube, name, lambda s: s["summary"]["evaluatedPods"] == 3)
    assert [(v["kind"], v["name"], v["container"]) for v in status["violations"]] == [("Pod", "a", "d")]

    # 4. on another node two running containers share a fingerprint: the kill names no pod
    node2 = f"node2-{tag}"
    sim.node(node2, "8Gi", "7Gi", labels={"mh-test": tag})
    sim.pod(ns, "x", {"c": {"requests": "2Gi", "limits": "4Gi"}}, node=node2)
    sim.pod(ns, "y", {"c": {"requests": "2Gi", "limits": "4Gi"}}, node=node2)
    sim.npd_oom_killing(node2, killed_line(5000, "worker", 750), t=now_iso(2))
    status = settled_with(kube, name, lambda s: s["summary"]["silentOOMKills"] == 2)
    kinds = sorted((v["kind"], v["name"]) for v in status["violations"] if v["rule"] == "SilentOOMKill")
    assert kinds == [("Node", node2), ("Pod", "a")]
    wait_for(lambda: kube.events("default", **{"involvedObject.name": node2, "reason": "SilentOOMKill"}),
             what="SilentOOMKill event on the node")

    # 5. the victim's pod is deleted: its kill stays its own, not a new unattributed one on the node
    sim.core.delete_namespaced_pod("a", ns, grace_period_seconds=0)
    status = settled_with(kube, name, lambda s: s["summary"]["evaluatedPods"] == 4, what="pod a gone")
    assert status["summary"]["silentOOMKills"] == 2 and status["summary"]["oomKills"] == 3
    kinds = sorted((v["kind"], v["name"]) for v in status["violations"] if v["rule"] == "SilentOOMKill")
    assert kinds == [("Node", node2), ("Pod", "a")]
    sim.pod(ns, "marker", {"c": {}}, node=node)  # an Event queued after anything that pass queued
    wait_for(lambda: kube.events(ns, **{"involvedObject.name": "marker", "reason": "MissingMemoryRequest"}),
             what="the marker's Event")
    assert kube.events("default", **{"involvedObject.name": node, "reason": "SilentOOMKill"}) == []


def test_policy_edit_reevaluates(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "4Gi"))
    sim.pod(ns, "p", {"c": {"requests": "1Gi", "limits": "6Gi"}}, node=node)
    name = f"edit-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 1)  # 150% of allocatable
    kube.apply_policy(name, scoped_spec(tag, overcommit={"maxLimitsPercent": 200}))
    status = settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 0)
    assert status["observedGeneration"] == 2
    kube.apply_policy(name, scoped_spec(tag, overcommit={"basis": "Capacity", "maxLimitsPercent": 70}))
    settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 1)  # 75% of capacity


def test_two_policies_with_different_selectors(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag)
    other = f"ns-{tag}-team-b"
    sim.namespace(other, {"mh-test": tag, "team": "b"})
    sim.pod(ns, "a1", {"c": {}}, node=node)
    sim.pod(other, "b1", {"c": {}}, node=node)
    sim.pod(other, "b2", {"c": {}}, node=node, labels={"tier": "batch"})
    kube.apply_policy(f"all-{tag}", scoped_spec(tag))
    team_b = scoped_spec(tag)
    team_b["namespaceSelector"] = {"matchLabels": {"mh-test": tag, "team": "b"}}
    team_b["podSelector"] = {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]}]}
    kube.apply_policy(f"team-b-{tag}", team_b)
    a = settled_with(kube, f"all-{tag}", lambda s: s["summary"]["missingRequests"] == 3)
    b = settled_with(kube, f"team-b-{tag}", lambda s: s["summary"]["missingRequests"] == 1)
    assert [v["name"] for v in b["violations"]] == ["b1"]
    assert a["summary"]["evaluatedPods"] == 3 and b["summary"]["evaluatedPods"] == 1


def test_restart_posts_no_duplicate_events(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    load_snapshot(sim, EXAMPLES / "seed001-besteffort.yaml", tag, labels={"mh-test": tag})
    name = f"restart-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["violations"] == 2)

    def ours():
        return sorted((e["metadata"]["namespace"], e["metadata"]["name"], e["count"]) for e in kube.events()
                      if tag in json.dumps(e["involvedObject"]) or e["involvedObject"]["name"] == name)

    before = wait_for(lambda: len(e := ours()) == 4 and e, what="2 violations x (object + policy) events")
    for _ in range(2):
        restart_and_wait_for_evaluation(operator, kube, name)
        assert ours() == before


def restart_and_wait_for_evaluation(operator, kube, name):
    """Restart the operator; return once it wrote the policy's status again (it does once at start)."""
    last = kube.status(name)["lastEvaluationTime"]
    operator.restart()
    wait_for(lambda: kube.status(name)["lastEvaluationTime"] != last, timeout=30, what="a fresh evaluation")


def test_operator_never_writes_pods_or_nodes(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    loaded = load_snapshot(sim, EXAMPLES / "seed000-case1-1-silent-oom.yaml", tag, labels={"mh-test": tag})
    [node] = loaded.nodes.values()
    [(ns, pod)] = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in loaded.pods.values()]

    def versions():
        return (sim.core.read_node(node).metadata.resource_version,
                sim.core.read_namespaced_pod(pod, ns).metadata.resource_version,
                sim.core.read_namespace(ns).metadata.resource_version)

    before = versions()
    name = f"rv-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["silentOOMKills"] == 1)
    restart_and_wait_for_evaluation(operator, kube, name)
    assert versions() == before, "the operator changed a Pod, Node or Namespace"
    node_obj = sim.core.read_node(node)
    assert not (node_obj.metadata.finalizers or [])
    assert not any(k.startswith("kopf") for k in (node_obj.metadata.annotations or {}))


def test_kubectl_describe_and_get_tell_the_story(operator, sim, kube, kubectl):
    tag = uuid.uuid4().hex[:8]
    load_snapshot(sim, EXAMPLES / "seed000-case2-memory-pressure.yaml", tag, labels={"mh-test": tag})
    name = f"describe-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["violations"] == 2)
    wait_for(lambda: len(kube.events("default", **{"involvedObject.name": name})) == 2, what="policy events")
    out = kubectl("describe", "memorypolicy", name, check=True).stdout
    assert "NodeMemoryPressure" in out and "NodeOvercommitted" in out
    assert "evicted for memory" in out
    assert "Events:" in out and "memory-hygiene" in out.split("Events:")[1]
    table = kubectl("get", "mempol", name, check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "OVERCOMMITTED", "SILENTOOMS", "MISSINGREQUESTS", "READY", "AGE"]
    assert table[1].split()[:5] == [name, "1", "0", "0", "True"]


def test_new_violation_gets_its_event_promptly(operator, sim, kube):
    """Not a timing target (see docs/benchmarks.md): the Event must come, well within the poll deadline."""
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag)
    name = f"prompt-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: True)
    sim.pod(ns, "late", {"c": {}}, node=node)
    wait_for(lambda: kube.events(ns, **{"involvedObject.name": "late", "reason": "MissingMemoryRequest"}),
             timeout=15, what="MissingMemoryRequest event")


def test_metrics_endpoint(operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "4Gi"))
    sim.pod(ns, "p", {"c": {"requests": "1Gi", "limits": "6Gi"}}, node=node)
    name = f"metrics-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 1)
    text = wait_for(lambda: (t := operator.get("/metrics")) and f'node="{node}"' in t and t, what="node metric")
    assert f'memory_hygiene_violations{{policy="{name}",rule="NodeOvercommitted"}} 1.0' in text
    assert f'memory_hygiene_node_limits_ratio{{node="{node}",policy="{name}"}} 1.5' in text
    assert "memory_hygiene_events_posted_total" in text
    assert "memory_hygiene_reconcile_duration_seconds_bucket" in text
    # Where a change's time to its Event goes: every stage was measured at least once by now
    # (the pod above came through the watch, made its node dirty, and its policy posted Events).
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("memory_hygiene_") and "_count" in line.split()[0]}
    for stage in ('memory_hygiene_watch_delay_seconds_count{resource="pods"}',
                  "memory_hygiene_change_evaluated_seconds_count", "memory_hygiene_reconcile_pass_seconds_count",
                  "memory_hygiene_event_post_seconds_count", "memory_hygiene_event_loop_lag_seconds_count"):
        assert counts.get(stage, 0) >= 1, (stage, sorted(counts))
    assert sum(v for k, v in counts.items() if k.startswith("memory_hygiene_event_queue_seconds_count")) >= 1
    assert operator.get("/readyz").strip() == "ok"
    assert operator.get("/healthz").startswith("ok")
    assert now_iso()


def test_real_kernel_oom_kill_reported_by_npd_reaches_the_pod(operator, sim, kube):
    """A real OOM kill in a memory cgroup laid out as kubelet lays out the pod's container (a
    child process dies, its parent lives on: a silent kill). The kernel's own /dev/kmsg lines,
    the oom-kill: header and the Killed process line, go into an OOMKilling Event as a forwarder
    that keeps the header posts them; the operator names the pod and container by memcg path."""
    from devcluster.sim.kernel_oom import real_oom_kill

    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    pod = sim.pod(ns, "victim", {"app": {"requests": "512Mi", "limits": "1Gi"}}, node=node)
    uid = pod["metadata"]["uid"]
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    name = f"real-{tag}"
    kube.apply_policy(name, scoped_spec(tag))
    settled_with(kube, name, lambda s: s["summary"]["evaluatedPods"] == 1)

    oom = real_oom_kill(uid, container_id, qos="burstable")
    killed = [line for line in oom.lines if "Killed process" in line]
    header = [line for line in oom.lines if line.startswith("oom-kill:")]
    assert killed and header, oom.lines
    sim.npd_oom_killing(node, "\n".join(header + killed))
    status = settled_with(kube, name, lambda s: s["summary"]["silentOOMKills"] == 1)
    [v] = status["violations"]
    assert (v["kind"], v["namespace"], v["name"], v["container"]) == ("Pod", ns, "victim", "app")
    assert f"(pid {oom.killed_pid})" in v["message"] and "memcg path" in v["message"]
    wait_for(lambda: kube.events(ns, **{"involvedObject.name": "victim", "reason": "SilentOOMKill"}),
             what="SilentOOMKill event on the pod")
