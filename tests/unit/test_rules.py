"""The rules on small hand-made clusters: the edge cases the seed scenarios do not reach."""

import pytest

from memory_hygiene.core.engine import PolicyEngine, evaluate, snapshot_view
from memory_hygiene.core.events import oom_event_info
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.core.rules import SETTLE_SECONDS
from memory_hygiene.core.snapshot import node_info, parse_time, pod_info

GI = 2**30
T0 = "2026-11-20T10:00:00Z"


def node(name="n1", capacity="8Gi", allocatable="7Gi", pressure=False, labels=None):
    return node_info({
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
        "status": {
            "capacity": {"memory": capacity},
            "allocatable": {"memory": allocatable},
            "conditions": [{"type": "MemoryPressure", "status": "True" if pressure else "False",
                            "message": "kubelet has insufficient memory available" if pressure else ""}],
        },
    })


def pod(name, containers, node="n1", ns="default", phase="Running", labels=None, statuses=None, uid=None, **status):
    spec_containers = [
        {"name": c, "resources": {k: {"memory": v} for k, v in res.items() if v is not None}}
        for c, res in containers.items()
    ]
    statuses = statuses or {}
    return pod_info({
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "labels": labels or {}},
        "spec": {"nodeName": node, "containers": spec_containers},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": c, "containerID": f"containerd://{name}-{c}", "restartCount": 0,
                 "state": {"running": {"startedAt": T0}}, **statuses.get(c, {})}
                for c in containers
            ],
            **status,
        },
    })


def oom_event(message, node="n1", t=T0, uid="ev1", reason="OOMKilling"):
    return oom_event_info({
        "kind": "Event", "metadata": {"name": uid, "namespace": "default", "uid": uid},
        "involvedObject": {"kind": "Node", "name": node, "uid": node}, "reason": reason,
        "source": {"component": "kernel-monitor", "host": node}, "message": message,
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
    })


def killed(pid, comm="worker", score=None, rss_kb=100_000):
    line = (f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:900000kB, "
            f"anon-rss:{rss_kb}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:400kB")
    return line + (f" oom_score_adj:{score}" if score is not None else "")


def run(nodes, pods, events=(), spec=None, now=T0, namespaces=None):
    """Evaluated once a kill at ``now`` is settled (rules.SETTLE_SECONDS: kubelet's report had the time)."""
    return evaluate("p", parse_spec(spec or {}), nodes, pods, events, parse_time(now) + SETTLE_SECONDS, namespaces)


def keys(report):
    return [(v.rule, v.name, v.container) for v in report.violations]


# --- overcommit ---------------------------------------------------------------------------


def test_limits_exactly_at_the_threshold_are_not_overcommitted():
    r = run([node(allocatable="4Gi")], [pod("a", {"c": {"requests": "1Gi", "limits": "2Gi"}}),
                                         pod("b", {"c": {"requests": "1Gi", "limits": "2Gi"}})])
    assert r.nodes[0].limits_percent == 100.0 and r.nodes[0].overcommitted is False and r.violations == []
    r = run([node(allocatable="4Gi")], [pod("a", {"c": {"requests": "1Gi", "limits": "2Gi"}}),
                                         pod("b", {"c": {"requests": "1Gi", "limits": "2049Mi"}})])
    assert keys(r) == [("NodeOvercommitted", "n1", None)]


def test_pods_without_limit_are_counted_apart_not_summed():
    r = run([node(allocatable="4Gi")], [pod("a", {"c": {"requests": "1Gi", "limits": "3Gi"}, "d": {"requests": "1Gi"}}),
                                         pod("b", {"c": {"requests": "1Gi", "limits": "3Gi"}})])
    n = r.nodes[0]
    assert (n.limits, n.pods_without_limit, n.requests) == (3 * GI, 1, 3 * GI)
    assert n.overcommitted is False


def test_finished_pods_hold_no_memory():
    r = run([node(allocatable="4Gi")], [pod("a", {"c": {"requests": "1Gi", "limits": "3Gi"}}, phase="Succeeded"),
                                         pod("b", {"c": {"requests": "1Gi", "limits": "3Gi"}})])
    assert r.nodes[0].limits == 3 * GI and r.violations == []


def test_basis_and_percent_follow_the_policy():
    pods = [pod("a", {"c": {"requests": "1Gi", "limits": "6Gi"}})]
    assert keys(run([node()], pods)) == []
    spec = {"rules": {"overcommit": {"maxLimitsPercent": 80}}}
    assert keys(run([node()], pods, spec=spec)) == [("NodeOvercommitted", "n1", None)]
    spec = {"rules": {"overcommit": {"basis": "Capacity", "maxLimitsPercent": 80}}}
    assert run([node()], pods, spec=spec).nodes[0].limits_percent == 75.0
    assert keys(run([node()], pods, spec={"rules": {"overcommit": {"enabled": False, "maxLimitsPercent": 1}}})) == []


def test_unknown_allocatable_gives_null_not_a_guess():
    n = node_info({"kind": "Node", "metadata": {"name": "n1", "uid": "u"}, "status": {}})
    r = run([n], [pod("a", {"c": {"requests": "1Gi", "limits": "3Gi"}})])
    assert r.nodes[0].limits_percent is None and r.nodes[0].overcommitted is None
    assert r.as_dict()["nodes"][0]["allocatableBytes"] is None


def test_node_selector_scopes_node_rules():
    pods = [pod("a", {"c": {"requests": "1Gi", "limits": "30Gi"}}),
            pod("b", {"c": {"requests": "1Gi", "limits": "30Gi"}}, node="n2")]
    nodes = [node(labels={"pool": "batch"}), node("n2", labels={"pool": "web"})]
    r = run(nodes, pods, spec={"nodeSelector": {"matchLabels": {"pool": "web"}}})
    assert keys(r) == [("NodeOvercommitted", "n2", None)]
    assert r.evaluated_nodes == 1


# --- pressure -------------------------------------------------------------------------------


def test_memory_pressure_lists_memory_evictions_only():
    evicted = dict(phase="Failed", reason="Evicted",
                   message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 90Mi.")
    disk = dict(phase="Failed", reason="Evicted", message="The node was low on resource: ephemeral-storage.")
    pods = [pod("a", {"c": {"requests": "1Gi", "limits": "1Gi"}}, **evicted),
            pod("b", {"c": {"requests": "1Gi", "limits": "1Gi"}}, **disk),
            pod("c", {"c": {"requests": "1Gi", "limits": "1Gi"}})]
    r = run([node(pressure=True)], pods)
    assert r.nodes[0].memory_evictions == ("default/a",)
    [v] = r.violations
    assert v.rule == "NodeMemoryPressure" and "default/a" in v.message and "default/b" not in v.message
    assert "overcommitted" not in v.message
    assert keys(run([node(pressure=True)], pods, spec={"rules": {"memoryPressure": {"enabled": False}}})) == []


# --- missing requests -------------------------------------------------------------------------


def test_missing_request_and_limit_per_container():
    pods = [pod("a", {"app": {"limits": None, "requests": None}, "side": {"requests": "10Mi"}})]
    assert keys(run([node()], pods)) == [("MissingMemoryRequest", "a", "app")]
    r = run([node()], pods, spec={"rules": {"missingRequests": {"requireLimits": True}}})
    assert keys(r) == [("MissingMemoryRequest", "a", "app"), ("MissingMemoryLimit", "a", "app"),
                       ("MissingMemoryLimit", "a", "side")]


def test_pending_pods_are_checked_too_and_selectors_apply():
    pods = [pod("a", {"c": {}}, node=None, phase="Pending", labels={"team": "x"}),
            pod("b", {"c": {}}, ns="kube-system")]
    namespaces = {"default": {"kubernetes.io/metadata.name": "default", "env": "prod"},
                  "kube-system": {"kubernetes.io/metadata.name": "kube-system"}}
    r = run([node()], pods, namespaces=namespaces)
    assert keys(r) == [("MissingMemoryRequest", "a", "c"), ("MissingMemoryRequest", "b", "c")]
    r = run([node()], pods, spec={"namespaceSelector": {"matchLabels": {"env": "prod"}}}, namespaces=namespaces)
    assert keys(r) == [("MissingMemoryRequest", "a", "c")]
    r = run([node()], pods, spec={"podSelector": {"matchLabels": {"team": "y"}}}, namespaces=namespaces)
    assert keys(r) == [] and r.evaluated_pods == 0


# --- OOM kills --------------------------------------------------------------------------------


def burstable(name, request, limit="1Gi", **kw):
    return pod(name, {"c": {"requests": request, "limits": limit}}, **kw)


def test_fingerprint_needs_exactly_one_running_container_with_that_score():
    # capacity 8Gi: request 1Gi -> 1000 - 125 = 875; 512Mi -> 938
    pods = [burstable("a", "1Gi"), burstable("b", "512Mi")]
    r = run([node()], pods, [oom_event(killed(10, score=875))])
    [k] = r.oom_kills
    assert (k.attribution, k.pod, k.container, k.silent) == ("oomScoreAdj", "a", "c", True)
    assert keys(r) == [("SilentOOMKill", "a", "c")]
    # two containers share the score: ambiguous, no pod is named
    pods.append(burstable("c", "1Gi"))
    r = run([node()], pods, [oom_event(killed(10, score=875))])
    [k] = r.oom_kills
    assert (k.attribution, k.pod) == ("none", None)
    assert keys(r) == [("SilentOOMKill", "n1", None)] and r.violations[0].kind == "Node"


def test_fingerprint_ignores_pods_created_after_the_kill():
    def created(name, t):
        p = burstable(name, "1Gi")
        return p._replace(created=parse_time(t))

    pods = [created("old", "2026-11-20T09:00:00Z"), created("new", "2026-11-20T10:00:30Z")]
    r = run([node()], pods, [oom_event(killed(10, score=875))], now="2026-11-20T10:01:00Z")
    assert (r.oom_kills[0].attribution, r.oom_kills[0].pod) == ("oomScoreAdj", "old")


def test_fingerprint_requires_a_limit_that_held_the_anon_rss():
    pods = [burstable("a", "1Gi", limit="100Mi"), burstable("b", "1Gi", limit="2Gi")]
    r = run([node()], pods, [oom_event(killed(10, score=875, rss_kb=500_000))])
    assert (r.oom_kills[0].attribution, r.oom_kills[0].pod) == ("oomScoreAdj", "b")


def test_fingerprint_ignores_containers_not_running():
    waiting = {"c": {"state": {"waiting": {"reason": "CrashLoopBackOff"}}}}
    pods = [burstable("a", "1Gi", statuses=waiting)]
    r = run([node()], pods, [oom_event(killed(10, score=875))])
    assert r.oom_kills[0].attribution == "none"


def test_memcg_path_wins_over_fingerprint():
    text = ("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/kubepods/burstable/pod0b0b0b0b-0000-4000-8000-00000000000b/containerd-b-c,task_memcg=/kubepods/burstable/pod0b0b0b0b-0000-4000-8000-00000000000b/containerd-b-c,"
            "task=worker,pid=10,uid=0\n" + killed(10, score=875))
    pods = [burstable("a", "1Gi"), burstable("b", "512Mi", uid="0b0b0b0b-0000-4000-8000-00000000000b")]
    r = run([node()], pods, [oom_event(text)])
    [k] = r.oom_kills
    assert (k.attribution, k.pod) == ("memcg", "b")


def test_memcg_path_of_a_static_pod_names_its_mirror_pod():
    """kubelet runs a static pod (etcd, kube-apiserver on kubeadm nodes) under the hash of its
    manifest, which the cgroup path carries; the API server's mirror pod has a UID of its own
    and the hash in kubernetes.io/config.mirror."""
    digest = "9f3c2a1b4d5e6f708192a3b4c5d6e7f8"
    cgroup = ("/kubepods.slice/kubepods-burstable.slice/"
              f"kubepods-burstable-pod{digest}.slice/cri-containerd-{'e' * 64}.scope")
    text = (f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={cgroup},"
            f"task_memcg={cgroup},task=etcd,pid=10,uid=0\n" + killed(10, comm="etcd", score=998))
    mirror = pod_info({
        "kind": "Pod",
        "metadata": {"name": "etcd-n1", "namespace": "kube-system", "uid": "0c0c0c0c-0000-4000-8000-00000000000c",
                     "annotations": {"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": digest,
                                     "kubernetes.io/config.mirror": digest}},
        "spec": {"nodeName": "n1", "priorityClassName": "system-node-critical",
                 "containers": [{"name": "etcd", "resources": {"requests": {"memory": "100Mi"}}}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "etcd", "containerID": f"containerd://{'e' * 64}", "restartCount": 0,
             "state": {"running": {"startedAt": T0}}}]},
    })
    assert mirror.kubelet_uid == digest
    r = run([node()], [mirror, burstable("a", "1Gi")], [oom_event(text)])
    [k] = r.oom_kills
    assert (k.attribution, k.namespace, k.pod, k.container, k.silent) == ("memcg", "kube-system", "etcd-n1", "etcd", True)
    [v] = [v for v in r.violations if v.rule == "SilentOOMKill"]
    assert (v.kind, v.name, v.uid) == ("Pod", "etcd-n1", "0c0c0c0c-0000-4000-8000-00000000000c")
    assert burstable("b", "1Gi").kubelet_uid is None


def test_visible_when_the_container_terminated_oomkilled_within_the_window():
    def with_oom(finished):
        return {"c": {"restartCount": 1, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                                                       "finishedAt": finished}}}}
    near = [burstable("a", "1Gi", statuses=with_oom("2026-11-20T10:00:30Z"))]
    far = [burstable("a", "1Gi", statuses=with_oom("2026-11-20T09:50:00Z"))]
    ev = [oom_event(killed(10, score=875))]
    assert run([node()], near, ev).oom_kills[0].silent is False
    assert run([node()], far, ev).oom_kills[0].silent is True
    spec = {"rules": {"silentOOM": {"correlationWindowSeconds": 900}}}
    assert run([node()], far, ev, spec=spec).oom_kills[0].silent is False


def test_visibility_is_judged_on_the_container_when_known():
    """A PID-1 OOMKilled restart of container c says nothing about a worker killed in container d."""
    statuses = {"c": {"restartCount": 1, "lastState": {"terminated": {"reason": "OOMKilled",
                                                                       "finishedAt": "2026-11-20T10:00:02Z"}}}}
    p = pod("a", {"c": {"requests": "1Gi", "limits": "1Gi"}, "d": {"requests": "512Mi", "limits": "1Gi"}},
            statuses=statuses)
    r = run([node()], [p], [oom_event(killed(10, "worker", 938), uid="e1"),
                            oom_event(killed(11, "server", 875), uid="e2")])
    by_container = {k.container: k.silent for k in r.oom_kills}
    assert by_container == {"d": True, "c": False}


def test_unattributed_kill_is_visible_if_any_container_on_the_node_was_oomkilled():
    statuses = {"c": {"lastState": {"terminated": {"reason": "OOMKilled", "finishedAt": "2026-11-20T10:00:01Z"}}}}
    pods = [burstable("a", "1Gi", statuses=statuses), burstable("b", "1Gi")]
    r = run([node()], pods, [oom_event(killed(10))])
    assert (r.oom_kills[0].attribution, r.oom_kills[0].silent) == ("none", False)


def test_group_kill_within_a_second_is_one_incident():
    pods = [burstable("a", "1Gi")]
    events = [oom_event(killed(10, "w1", 875), uid="e1"), oom_event(killed(11, "w2", 875), uid="e2"),
              oom_event(killed(12, "w3", 875), uid="e3", t="2026-11-20T10:00:01Z"),
              oom_event(killed(13, "w4", 875), uid="e4", t="2026-11-20T10:05:00Z")]
    r = run([node()], pods, events, now="2026-11-20T10:05:00Z")
    assert [(k.pid, k.kills) for k in r.oom_kills] == [(10, 3), (13, 1)]
    assert r.summary()["oomKills"] == 2 and r.summary()["silentOOMKills"] == 2


def test_the_same_kill_reported_twice_is_one_kill():
    pods = [burstable("a", "1Gi")]
    events = [oom_event(killed(10, "w1", 875), uid="e1"),
              oom_event("System OOM encountered, victim process: w1, pid: 10", uid="e2", reason="SystemOOM")]
    r = run([node()], pods, events)
    assert len(r.oom_kills) == 1 and r.oom_kills[0].oom_score_adj == 875


def test_lookback_drops_old_events_and_unparseable_ones_are_reported_not_raised():
    pods = [burstable("a", "1Gi")]
    events = [oom_event(killed(10, score=875), t="2026-11-20T08:00:00Z"), oom_event("garbage (((", uid="bad")]
    r = run([node()], pods, events)
    assert r.oom_kills == [] and [e.uid for e in r.unparsed_events] == ["bad"]


def test_kills_on_unknown_nodes_are_reported_unless_a_node_selector_is_set():
    ev = [oom_event(killed(10, score=875), node="gone")]
    assert [k.node for k in run([node()], [], ev).oom_kills] == ["gone"]
    assert run([node()], [], ev, spec={"nodeSelector": {"matchLabels": {"a": "b"}}}).oom_kills == []


def test_silent_rule_off():
    r = run([node()], [burstable("a", "1Gi")], [oom_event(killed(10, score=875))],
            spec={"rules": {"silentOOM": {"enabled": False}}})
    assert r.oom_kills == [] and r.violations == []


# --- the engine: incremental == from scratch ---------------------------------------------------


def test_incremental_refresh_equals_full_evaluation():
    spec = parse_spec({})
    nodes = [node("n1", allocatable="4Gi"), node("n2", allocatable="4Gi")]
    pods = [pod("a", {"c": {"requests": "1Gi", "limits": "3Gi"}}), pod("b", {"c": {}}, node="n2")]
    engine = PolicyEngine("p", spec)
    now = parse_time(T0)
    engine.refresh(snapshot_view(nodes, pods, []), None, now)
    assert engine.summary()["overcommittedNodes"] == 0
    pods.append(pod("c", {"c": {"requests": "1Gi", "limits": "3Gi"}}))
    engine.refresh(snapshot_view(nodes, pods, []), {"n1"}, now)
    full = evaluate("p", spec, nodes, pods, [], now)
    assert sorted(v.key for v in engine.violations()) == sorted(v.key for v in full.violations)
    assert engine.summary() == full.summary()
    pods = [p for p in pods if p.name != "b"]
    engine.refresh(snapshot_view(nodes, pods, []), {"n2"}, now)
    assert engine.summary()["missingRequests"] == 0
    assert engine.summary() == evaluate("p", spec, nodes, pods, [], now).summary()


@pytest.mark.parametrize("n", [0, 1, 5])
def test_worst_is_capped_and_most_severe_first(n):
    engine = PolicyEngine("p", parse_spec({}))
    nodes = [node(allocatable="1Gi", pressure=True)]
    pods = [pod(f"p{i}", {"c": {}}) for i in range(3)] + [pod("big", {"c": {"requests": "1Gi", "limits": "9Gi"}})]
    engine.refresh(snapshot_view(nodes, pods, []), None, parse_time(T0))
    worst = engine.worst(n)
    assert len(worst) == min(n, 5)
    assert [v.rule for v in worst] == ["NodeMemoryPressure", "NodeOvercommitted", "MissingMemoryRequest",
                                       "MissingMemoryRequest", "MissingMemoryRequest"][:n]


# --- limit/request ratio ------------------------------------------------------------------------


def test_limit_ratio_is_off_unless_set_and_judges_app_and_sidecar_containers():
    pods = [pod("a", {"tight": {"requests": "1Gi", "limits": "2Gi"}, "loose": {"requests": "1Gi", "limits": "5Gi"},
                      "bare": {}, "zero": {"requests": "0", "limits": "1Gi"}})]
    assert [k for k in keys(run([node()], pods)) if k[0] == "MemoryLimitRatioExceeded"] == []
    r = run([node()], pods, spec={"rules": {"limitRatio": {"maxLimitToRequestRatio": 2}}})
    ratio = [k for k in keys(r) if k[0] == "MemoryLimitRatioExceeded"]
    # exactly 2x passes; no limit is MissingMemoryLimit's business; a zero request is over any ratio
    assert ratio == [("MemoryLimitRatioExceeded", "a", "loose"), ("MemoryLimitRatioExceeded", "a", "zero")]
    loose = next(v for v in r.violations if v.container == "loose")
    assert "5x its memory request" in loose.message and "policy allows 2x" in loose.message
    assert r.summary()["limitRatioExceeded"] == 2
    assert run([node()], pods, spec={"rules": {"limitRatio": {"maxLimitToRequestRatio": 1.5}}}).summary()[
        "limitRatioExceeded"] == 3


def test_limit_ratio_uses_the_pod_level_limit_and_skips_init_containers():
    raw = {
        "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u"},
        "spec": {"nodeName": "n1", "resources": {"limits": {"memory": "4Gi"}},
                 "initContainers": [{"name": "init", "resources": {"requests": {"memory": "1Mi"},
                                                                   "limits": {"memory": "1Gi"}}},
                                    {"name": "side", "restartPolicy": "Always",
                                     "resources": {"requests": {"memory": "1Gi"}}}],
                 "containers": [{"name": "app", "resources": {"requests": {"memory": "3Gi"}}}]},
        "status": {"phase": "Running"},
    }
    r = run([node()], [pod_info(raw)], spec={"rules": {"limitRatio": {"maxLimitToRequestRatio": 2}}})
    assert [k for k in keys(r) if k[0] == "MemoryLimitRatioExceeded"] == [("MemoryLimitRatioExceeded", "p", "side")]
