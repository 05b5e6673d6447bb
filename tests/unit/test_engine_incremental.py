"""The engine's passes cost what changed: after any sequence of changes, what it keeps up to date
(summary counts, the most severe violations, started/ended transitions, OOM events ageing out)
equals an evaluation of every bucket of the same cluster (by an engine that has seen the same
history: who an OOM kill was attributed to outlives the victim's pod), and, without OOM kills
whose pod has gone, a from-scratch evaluation."""

import random

import pytest

from memory_hygiene.core.engine import UNSCHEDULED, PolicyEngine, evaluate, snapshot_view
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.core.rules import SETTLE_SECONDS, sort_violations
from memory_hygiene.core.snapshot import parse_time
from tests.unit.test_rules import T0, killed, node, oom_event, pod

SHAPES = [
    {"c": {}},                                             # missing request
    {"c": {"requests": "1Gi", "limits": "3Gi"}},
    {"c": {"requests": "512Mi", "limits": "512Mi"}},
    {"c": {"requests": "256Mi"}},                          # missing limit
    {"c": {"requests": "2Gi", "limits": "6Gi"}, "side": {}},
]


def _full(reference, nodes, pods, events, now):
    """Every bucket evaluated again, by an engine with the same history."""
    reference.refresh(snapshot_view(nodes, pods, events), None, now)
    return reference


@pytest.mark.parametrize("seed", range(8))
def test_random_changes_keep_the_incremental_picture_equal_to_a_full_evaluation(seed):
    rnd = random.Random(seed)
    spec = parse_spec({"rules": {"missingRequests": {"requireLimits": True}, "silentOOM": {"lookbackSeconds": 600}}})
    names = [f"n{i}" for i in range(6)]
    nodes = {n: node(n, allocatable=rnd.choice(["4Gi", "8Gi"]), pressure=rnd.random() < 0.2) for n in names}
    pods: dict[str, object] = {}
    events: dict[str, object] = {}
    now = parse_time(T0)
    engine, reference = PolicyEngine("p", spec), PolicyEngine("p", spec)
    engine.refresh(snapshot_view(nodes.values(), pods.values(), events.values()), None, now)
    reference.refresh(snapshot_view(nodes.values(), pods.values(), events.values()), None, now)
    active = {v.key: v for v in engine.violations()}
    seen = {"oom": 0, "aged": 0, "started": 0, "ended": 0}
    for step in range(60):
        dirty: set[str] = set()
        for _ in range(rnd.randint(1, 4)):
            what = rnd.random()
            if what < 0.45:  # a pod comes (or is replaced), maybe unscheduled
                name = f"p{rnd.randint(0, 25)}"
                where = rnd.choice([*names, UNSCHEDULED])
                old = pods.get(name)
                if old is not None:
                    dirty.add(old.node or UNSCHEDULED)
                pods[name] = pod(name, rnd.choice(SHAPES), node=where or "", uid=f"u-{name}")
                dirty.add(where)
            elif what < 0.7 and pods:  # a pod goes
                gone = pods.pop(rnd.choice(sorted(pods)))
                dirty.add(gone.node or UNSCHEDULED)
            elif what < 0.85:  # a node's pressure flips
                n = rnd.choice(names)
                nodes[n] = node(n, allocatable="4Gi", pressure=not nodes[n].memory_pressure)
                dirty.add(n)
            else:  # an OOM kill on a node, now
                n = rnd.choice(names)
                uid = f"ev{step}-{len(events)}"
                t = now - 1
                stamp = f"2026-11-20T{10 + int(t - parse_time(T0)) // 3600:02d}:" \
                        f"{(int(t - parse_time(T0)) // 60) % 60:02d}:{int(t - parse_time(T0)) % 60:02d}Z"
                events[uid] = oom_event(killed(1000 + step, score=rnd.choice([-997, 999, 875])), node=n, t=stamp,
                                        uid=uid)
                dirty.add(n)
        kills_before = engine.summary()["oomKills"] + sum(1 for e in events.values() if e.node in dirty)
        now += rnd.choice([1, 5, 120])  # OOM events leave the 600 s lookback as time goes by
        engine.refresh(snapshot_view(nodes.values(), pods.values(), events.values()), dirty, now)
        full = _full(reference, nodes.values(), pods.values(), events.values(), now)
        full_violations = sort_violations(full.violations())
        assert engine.summary() == full.summary(), step
        assert sorted(v.key for v in engine.violations()) == sorted(v.key for v in full_violations), step
        assert engine.worst(7) == full_violations[:7], step
        scratch = evaluate("p", spec, nodes.values(), pods.values(), events.values(), now)
        where = {(p.uid, p.node) for p in pods.values()}
        if not any(k.pod_uid and (k.pod_uid, k.node) not in where for k in engine.oom_kills()):
            # (else an OOM kill is remembered on a pod that has gone: test_*_outlives_its_pod)
            assert sorted(v.key for v in scratch.violations) == sorted(v.key for v in full_violations), step
        # started/ended from the changed buckets alone == a diff of everything
        current = {v.key: v for v in full_violations}
        now_in_changed, gone = engine.transitions()
        started = {k for k in now_in_changed if k not in active}
        assert started == {k for k in current if k not in active}, step
        assert set(gone) == {k for k in active if k not in current}, step
        active = current
        seen["oom"] += full.summary()["oomKills"] > 0
        seen["aged"] += full.summary()["oomKills"] < kills_before
        seen["started"] += bool(started)
        seen["ended"] += bool(gone)
    assert all(seen.values()), f"the sequence did not exercise everything: {seen}"


def test_buckets_with_oom_events_are_evaluated_again_only_once_one_leaves_the_lookback():
    spec = parse_spec({"rules": {"silentOOM": {"lookbackSeconds": 600}}})
    nodes = [node("n1"), node("n2")]
    pods = [pod("a", {"c": {"requests": "1Gi", "limits": "1Gi"}})]
    events = [oom_event(killed(10, score=-997), t=T0)]
    t0 = parse_time(T0)
    engine = PolicyEngine("p", spec)
    view = snapshot_view(nodes, pods, events)
    engine.refresh(view, None, t0 + 10)
    assert engine.results["n1"].expires == t0 + 600
    engine.refresh(view, {"n2"}, t0 + 300)
    assert set(engine.changed) <= {"n2"}, "n1 not evaluated again before its event ages out"
    before = engine.summary()["oomKills"]
    engine.refresh(view, set(), t0 + 601)
    assert "n1" in engine.changed and engine.summary()["oomKills"] == before - 1 == 0


def _engine_over_time(spec, steps):
    """An engine refreshed over a sequence of (nodes, pods, events, now); its last state."""
    engine = PolicyEngine("p", spec)
    for nodes, pods, events, now in steps:
        engine.refresh(snapshot_view(nodes, pods, events), None, now)
    return engine


@pytest.mark.parametrize("how", ["silent, fingerprint", "visible, PID 1"])
def test_who_an_oom_kill_was_attributed_to_outlives_its_pod(how):
    """A victim's pod deleted (or completed, which the operator no longer watches) after the
    kill: the kill stays its own, silent or not, instead of turning into an unattributed kill
    that blames the node (and posts a second, misleading Event there)."""
    spec = parse_spec({})
    t0 = parse_time(T0)
    statuses = None
    if how == "visible, PID 1":
        statuses = {"c": {"restartCount": 1, "lastState": {"terminated": {
            "reason": "OOMKilled", "exitCode": 137, "finishedAt": T0}}}}
    # capacity 8Gi: a request of 1Gi -> oom_score_adj 875, 512Mi -> 938
    victim = pod("a", {"c": {"requests": "1Gi", "limits": "1Gi"}}, uid="u-a", statuses=statuses)
    other = pod("b", {"c": {"requests": "512Mi", "limits": "2Gi"}}, uid="u-b")
    events = [oom_event(killed(10, score=875), t=T0), oom_event(killed(11, score=875), t=T0, uid="ev2")]
    nodes = [node("n1")]
    engine = _engine_over_time(spec, [(nodes, [victim, other], events, t0 + SETTLE_SECONDS)])
    [incident] = engine.oom_kills()
    assert (incident.pod, incident.kills, incident.pids) == ("a", 2, (10, 11)), "one group incident"
    keys_before = sorted(v.key for v in engine.violations())

    engine.refresh(snapshot_view(nodes, [other], events), {"n1"}, t0 + 20)  # the pod is deleted
    assert engine.oom_kills() == [incident]
    assert sorted(v.key for v in engine.violations()) == keys_before
    now_in_changed, gone = engine.transitions()
    assert not gone and all(k in keys_before for k in now_in_changed), "nothing started or ended"
    scratch = evaluate("p", spec, nodes, [other], events, t0 + 20)
    assert [(k.pod, k.silent, k.kills) for k in scratch.oom_kills] == [(None, True, 2)], "kills blamed on the node"

    engine.refresh(snapshot_view(nodes, [other], events), {"n1"}, t0 + 3601)  # out of the lookback
    assert engine.oom_kills() == [] and not list(engine.violations())


SPECS = [
    {},
    {"rules": {"missingRequests": {"requireLimits": True}, "silentOOM": {"lookbackSeconds": 600}}},
    {"namespaceSelector": {"matchLabels": {"team": "a"}}, "rules": {"overcommit": {"maxLimitsPercent": 150}}},
    {"podSelector": {"matchLabels": {"app": "web"}}, "rules": {"limitRatio": {"maxLimitToRequestRatio": 2}}},
    {"nodeSelector": {"matchLabels": {"zone": "z1"}}, "rules": {"silentOOM": {"maxIncidentsPerNode": 2}}},
    {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
     "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
    {"rules": {"silentOOM": {"enabled": False}, "memoryPressure": {"enabled": False}}},
    {},  # the same settings as the first: shares everything with it
]


@pytest.mark.parametrize("seed", range(6))
def test_policies_sharing_one_pass_equal_each_policy_alone(seed):
    """Rules evaluated once per object and shared by every policy (engine.Shared): over random
    changes, each policy's picture equals that of an engine of its own with the same history."""
    from memory_hygiene.core.engine import Shared

    rnd = random.Random(seed)
    specs = [parse_spec(s) for s in SPECS]
    names = [f"n{i}" for i in range(5)]
    nodes = {n: node(n, allocatable=rnd.choice(["4Gi", "8Gi"]), labels={"zone": f"z{i % 2}"})
             for i, n in enumerate(names)}
    namespaces = {"ns-a": {"team": "a", "kubernetes.io/metadata.name": "ns-a"},
                  "ns-b": {"team": "b", "kubernetes.io/metadata.name": "ns-b"}}
    pods: dict[str, object] = {}
    events: dict[str, object] = {}
    now = parse_time(T0)
    shared = Shared()
    together = [PolicyEngine(f"p{i}", s) for i, s in enumerate(specs)]
    alone = [PolicyEngine(f"p{i}", s) for i, s in enumerate(specs)]
    seen = {"violations": 0, "oom": 0, "gone": 0}
    for step in range(40):
        dirty: set[str] = set()
        for _ in range(rnd.randint(1, 4)):
            what = rnd.random()
            if what < 0.5:
                name = f"p{rnd.randint(0, 20)}"
                where = rnd.choice([*names, UNSCHEDULED])
                old = pods.get(name)
                if old is not None:
                    dirty.add(old.node or UNSCHEDULED)
                pods[name] = pod(name, rnd.choice(SHAPES), node=where or "", uid=f"u-{name}",
                                 ns=rnd.choice(["ns-a", "ns-b"]), labels=rnd.choice([{}, {"app": "web"}, {"app": "db"}]))
                dirty.add(where)
            elif what < 0.7 and pods:
                gone = pods.pop(rnd.choice(sorted(pods)))
                seen["gone"] += 1
                dirty.add(gone.node or UNSCHEDULED)
            elif what < 0.8:
                n = rnd.choice(names)
                nodes[n] = node(n, allocatable="4Gi", pressure=not nodes[n].memory_pressure,
                                labels={"zone": f"z{names.index(n) % 2}"})
                dirty.add(n)
            else:
                n = rnd.choice(names)
                uid = f"ev{step}-{len(events)}"
                events[uid] = oom_event(killed(1000 + step, score=rnd.choice([-997, 999, 875, 938])), node=n,
                                        uid=uid, t=f"2026-11-20T10:{(int(now - parse_time(T0)) // 60) % 60:02d}:00Z")
                dirty.add(n)
        now += rnd.choice([1, 5, 60])
        view = snapshot_view(nodes.values(), pods.values(), events.values(), namespaces)
        shared.new_pass(dirty if step else None)
        for a, b in zip(together, alone):
            a.refresh(view, dirty if step else None, now, shared)
            b.refresh(view, dirty if step else None, now)
            assert a.summary() == b.summary(), (step, a.name)
            assert sorted(v.key for v in a.violations()) == sorted(v.key for v in b.violations()), (step, a.name)
            assert [(v.key, v.message) for v in a.worst(20)] == [(v.key, v.message) for v in b.worst(20)], step
            assert a.oom_kills() == b.oom_kills(), (step, a.name)
            assert a.transitions() == b.transitions(), (step, a.name)
        shared.end_pass()
        shared.retain({e.keys.oom for e in together})
        seen["violations"] += sum(e.summary()["violations"] for e in together)
        seen["oom"] += sum(e.summary()["oomKills"] for e in together)
    assert all(seen.values()), seen
    summaries = {str(e.summary()) for e in together}
    assert len(summaries) > 3, "the policies should differ"


def test_a_pod_is_read_once_per_pass_for_every_policy_with_its_settings(monkeypatch):
    from memory_hygiene.core import engine as engine_module
    from memory_hygiene.core.engine import Shared

    calls = []
    real = engine_module.evaluate_pod
    monkeypatch.setattr(engine_module, "evaluate_pod", lambda spec, p: calls.append(p.uid) or real(spec, p))
    pods = [pod(f"p{i}", {"c": {}}, uid=f"u{i}") for i in range(10)]
    view = snapshot_view([node("n1")], pods, [])
    shared = Shared()
    engines = [PolicyEngine(f"p{i}", parse_spec({"rules": {"overcommit": {"maxLimitsPercent": 100 + i}}}))
               for i in range(30)]
    for e in engines:
        e.refresh(view, None, parse_time(T0), shared)
    assert sorted(calls) == sorted(p.uid for p in pods), "each pod once, for 30 policies"
    assert all(e.summary()["missingRequests"] == 10 for e in engines)
