"""The engine's passes cost what changed: after any sequence of changes, what it keeps up to date
(summary counts, the most severe violations, started/ended transitions, OOM events ageing out)
equals a from-scratch evaluation of the same cluster."""

import random

import pytest

from memory_hygiene.core.engine import UNSCHEDULED, PolicyEngine, evaluate, snapshot_view
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.core.snapshot import parse_time
from tests.unit.test_rules import T0, killed, node, oom_event, pod

SHAPES = [
    {"c": {}},                                             # missing request
    {"c": {"requests": "1Gi", "limits": "3Gi"}},
    {"c": {"requests": "512Mi", "limits": "512Mi"}},
    {"c": {"requests": "256Mi"}},                          # missing limit
    {"c": {"requests": "2Gi", "limits": "6Gi"}, "side": {}},
]


def _full(spec, nodes, pods, events, now):
    return evaluate("p", spec, nodes, pods, events, now)


@pytest.mark.parametrize("seed", range(8))
def test_random_changes_keep_the_incremental_picture_equal_to_a_full_evaluation(seed):
    rnd = random.Random(seed)
    spec = parse_spec({"rules": {"missingRequests": {"requireLimits": True}, "silentOOM": {"lookbackSeconds": 600}}})
    names = [f"n{i}" for i in range(6)]
    nodes = {n: node(n, allocatable=rnd.choice(["4Gi", "8Gi"]), pressure=rnd.random() < 0.2) for n in names}
    pods: dict[str, object] = {}
    events: dict[str, object] = {}
    now = parse_time(T0)
    engine = PolicyEngine("p", spec)
    engine.refresh(snapshot_view(nodes.values(), pods.values(), events.values()), None, now)
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
        full = _full(spec, nodes.values(), pods.values(), events.values(), now)
        assert engine.summary() == full.summary(), step
        assert sorted(v.key for v in engine.violations()) == sorted(v.key for v in full.violations), step
        assert engine.worst(7) == full.violations[:7], step
        # started/ended from the changed buckets alone == a diff of everything
        current = {v.key: v for v in full.violations}
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
