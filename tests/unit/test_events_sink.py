"""EventSink: transitions only, dedupe across restarts through the API server, rate limits."""

import asyncio
from types import SimpleNamespace

import pytest

from memory_hygiene.shell import metrics
from memory_hygiene.shell.events import EventSink, Target, event_names
from memory_hygiene.shell.ratelimit import TokenBuckets


class FakeApi:
    """The Event requests EventSink makes (``shell/api.py`` ApiSession's get_json, post_json,
    patch_json), answered from a dict as the API server would."""

    def __init__(self):
        self.events = {}
        self.calls = []

    @staticmethod
    def _key(path):
        parts = path.strip("/").split("/")  # api v1 namespaces NS events [NAME]
        return parts[3], (parts[5] if len(parts) > 5 else None)

    async def post_json(self, path, body, **_):
        ns, _name = self._key(path)
        key = (ns, body["metadata"]["name"])
        self.calls.append(("create", key))
        if key in self.events:
            return 409, {"kind": "Status", "reason": "AlreadyExists", "message": "exists"}
        self.events[key] = dict(body)
        return 201, body

    async def list_all(self, path, params=None):  # the ledger (preload)
        assert path == "/api/v1/events" and params["fieldSelector"] == "source=memory-hygiene"
        return [{**e} for e in self.events.values()]

    async def get_json(self, path, params=None, **_):
        key = self._key(path)
        if key not in self.events:
            return 404, {"kind": "Status", "reason": "NotFound", "message": "not found"}
        return 200, self.events[key]

    async def patch_json(self, path, body, **_):
        key = self._key(path)
        self.calls.append(("patch", key))
        e = self.events[key]
        body = dict(body)
        meta = body.pop("metadata", None)
        e.update(body)
        if meta:  # a merge patch of the annotations
            e["metadata"] = {**e["metadata"], "annotations": {**(e["metadata"].get("annotations") or {}),
                                                               **meta["annotations"]}}
        return 200, e


POD = Target("v1", "Pod", "p", "uid-p", "ns")
NODE = Target("v1", "Node", "n", "uid-n")


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


async def drain(sink):
    task = asyncio.create_task(sink.run())
    await asyncio.wait_for(sink.drained(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def run(coro):
    return asyncio.run(coro)


def test_event_names_are_stable_and_distinct():
    s1, e1 = event_names(POD, "MissingMemoryRequest\0c")
    assert (s1, e1) == event_names(POD, "MissingMemoryRequest\0c")
    assert s1 != e1 and s1.startswith("p.mh") and len(s1) <= 253
    assert event_names(POD, "MissingMemoryRequest\0d")[0] != s1
    long = Target("v1", "Pod", "x" * 253, "u", "ns")
    assert all(len(n) <= 253 for n in event_names(long, "r"))


def test_start_end_restart_and_recurrence():
    async def go():
        api, clock = FakeApi(), Clock()
        sink = EventSink(api, "test", qps=0, clock=clock)
        assert sink.announce(POD, "id", "MissingMemoryRequest", "no request", started=True)
        assert not sink.announce(POD, "id", "MissingMemoryRequest", "no request", started=True), "already said"
        await drain(sink)
        clock.t += 10
        assert sink.announce(POD, "id", "MissingMemoryRequestResolved", "ok now", started=False)
        await drain(sink)
        start, end = event_names(POD, "id")
        assert api.events[("ns", start)]["type"] == "Warning" and api.events[("ns", end)]["type"] == "Normal"

        # a restarted operator: a fresh sink reads the ledger back from the API server
        restarted = EventSink(api, "test", qps=0, clock=clock)
        assert await restarted.preload() == 2
        assert not restarted.announce(POD, "id", "MissingMemoryRequestResolved", "ok now", started=False)

        # the violation comes back after it ended: the started Event counts it again
        clock.t += 120
        assert restarted.announce(POD, "id", "MissingMemoryRequest", "no request", started=True)
        await drain(restarted)
        assert api.events[("ns", start)]["count"] == 2

    run(go())


def test_a_peer_that_just_posted_the_same_is_not_counted_twice():
    async def go():
        api, clock = FakeApi(), Clock()
        a = EventSink(api, "replica-a", qps=0, clock=clock)
        b = EventSink(api, "replica-b", qps=0, clock=clock)
        a.announce(NODE, "id", "NodeOvercommitted", "3 pods", started=True)
        b.announce(NODE, "id", "NodeOvercommitted", "4 pods: the other replica saw it a bit later", started=True)
        await drain(a)
        await drain(b)
        [event] = api.events.values()
        assert event["count"] == 1 and event["metadata"]["namespace"] == "default"
        assert "namespace" not in event["involvedObject"]

    run(go())


def test_per_object_burst_then_refill_like_client_go():
    buckets = TokenBuckets(burst=25, refill_seconds=300)
    assert sum(buckets.allow("obj", 0.0) for _ in range(100)) == 25
    assert not buckets.allow("obj", 299.0)
    assert buckets.allow("obj", 301.0)
    assert buckets.allow("other", 301.0), "per object"
    with pytest.raises(ValueError):
        TokenBuckets(burst=0, refill_seconds=1)


def test_ten_thousand_new_violations_do_not_flood():
    async def go():
        api, clock = FakeApi(), Clock()
        before = metrics.EVENTS_DROPPED.labels(cause="object_rate_limit")._value.get()
        sink = EventSink(api, "test", qps=0, queue_size=20_000, clock=clock)
        policy = Target("memoryhygiene.io/v1alpha1", "MemoryPolicy", "pol", "uid-pol")
        queued = 0
        for i in range(10_000):
            pod = Target("v1", "Pod", f"p{i}", f"uid-{i}", "ns")
            queued += sink.announce(pod, "r", "MissingMemoryRequest", "m", started=True)
            queued += sink.announce(policy, f"r{i}", "MissingMemoryRequest", "m", started=True)
        # every pod gets its one Event; the policy only its burst of 25
        assert queued == 10_000 + 25
        dropped = metrics.EVENTS_DROPPED.labels(cause="object_rate_limit")._value.get() - before
        assert dropped == 10_000 - 25

    run(go())


def test_full_queue_drops_and_counts():
    async def go():
        sink = EventSink(FakeApi(), "test", qps=0, queue_size=3, clock=Clock())
        before = metrics.EVENTS_DROPPED.labels(cause="queue_full")._value.get()
        results = [sink.announce(Target("v1", "Pod", f"p{i}", f"u{i}", "ns"), "r", "X", "m", True) for i in range(5)]
        assert results == [True, True, True, False, False]
        assert metrics.EVENTS_DROPPED.labels(cause="queue_full")._value.get() - before == 2

    run(go())


def test_a_full_queue_of_backlog_makes_room_for_news():
    """Hundreds of policies created at once fill the queue with their first evaluations'
    backlog: a new violation's Event still goes (the newest of the backlog is dropped for it)."""
    async def go():
        api = FakeApi()
        sink = EventSink(api, "test", qps=0, queue_size=3, clock=Clock())
        before = metrics.EVENTS_DROPPED.labels(cause="queue_full")._value.get()
        for i in range(4):
            sink.announce(Target("v1", "Pod", f"old{i}", f"o{i}", "ns"), "r", "X", "m", True, backlog=True)
        assert sink.announce(Target("v1", "Pod", "new", "n", "ns"), "r", "X", "m", True)
        assert metrics.EVENTS_DROPPED.labels(cause="queue_full")._value.get() - before == 2
        await drain(sink)
        created = [key[1].split(".")[0] for op, key in api.calls if op == "create"]
        assert created == ["new", "old0", "old1"]

    run(go())


def test_news_goes_before_the_backlog_of_a_first_evaluation():
    async def go():
        api = FakeApi()
        sink = EventSink(api, "test", qps=0, clock=Clock())
        for i in range(5):
            sink.announce(Target("v1", "Pod", f"old{i}", f"o{i}", "ns"), "r", "X", "m", True, backlog=True)
        sink.announce(Target("v1", "Pod", "new", "n", "ns"), "r", "X", "m", True)
        await drain(sink)
        created = [key[1].split(".")[0] for op, key in api.calls if op == "create"]
        assert created[0] == "new" and sorted(created[1:]) == [f"old{i}" for i in range(5)]

    run(go())


def test_global_rate_is_kept_with_several_workers():
    async def go():
        api = FakeApi()
        sink = EventSink(api, "test", qps=20, clock=Clock())
        for i in range(10):
            sink.announce(Target("v1", "Pod", f"p{i}", f"u{i}", "ns"), "r", "X", "m", True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await drain(sink)
        assert len(api.events) == 10
        assert loop.time() - started >= 9 / 20 - 0.01, "10 Events at 20/s take at least 0.45 s"

    run(go())


def _hist_count(h, **labels):
    m = h.labels(**labels) if labels else h
    return next(s.value for s in m.collect()[0].samples if s.name.endswith("_count"))


def test_time_in_queue_and_posting_are_measured_per_queue():
    async def go():
        live0, backlog0 = (_hist_count(metrics.EVENT_QUEUE_SECONDS, queue=q) for q in ("live", "backlog"))
        posts0 = _hist_count(metrics.EVENT_POST_SECONDS)
        sink = EventSink(FakeApi(), "test", qps=0, clock=Clock())
        sink.announce(Target("v1", "Pod", "old", "o", "ns"), "r", "X", "m", True, backlog=True)
        sink.announce(Target("v1", "Pod", "a", "a", "ns"), "r", "X", "m", True)
        sink.announce(Target("v1", "Pod", "b", "b", "ns"), "r", "X", "m", True)
        await drain(sink)
        assert _hist_count(metrics.EVENT_QUEUE_SECONDS, queue="live") - live0 == 2
        assert _hist_count(metrics.EVENT_QUEUE_SECONDS, queue="backlog") - backlog0 == 1
        assert _hist_count(metrics.EVENT_POST_SECONDS) - posts0 == 3

    run(go())


# --- at least once (issue 13) --------------------------------------------------------------------


class FlakyApi(FakeApi):
    """The API server down (connection refused) while ``down``; ``lose_answer``: the next POST
    is stored but its answer never arrives (a timeout after the server committed it)."""

    def __init__(self):
        super().__init__()
        self.down = False
        self.lose_answer = 0
        self.refuse = {}

    async def post_json(self, path, body, **kw):
        if self.down:
            raise ConnectionRefusedError("connection refused")
        if body["metadata"]["namespace"] in self.refuse:
            return self.refuse[body["metadata"]["namespace"]], {"kind": "Status", "reason": "Forbidden"}
        answer = await super().post_json(path, body, **kw)
        if self.lose_answer:
            self.lose_answer -= 1
            raise TimeoutError("read timed out")
        return answer

    async def get_json(self, path, params=None, **kw):
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return await super().get_json(path, params, **kw)


async def wait_until(pred, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def pods(n):
    return [Target("v1", "Pod", f"p{i}", f"u{i}", "ns") for i in range(n)]


def test_events_failed_while_the_api_server_is_down_are_posted_once_when_it_is_back():
    async def go():
        api, clock = FlakyApi(), Clock()
        retried0 = metrics.EVENTS_RETRIED._value.get()
        sink = EventSink(api, "test", qps=0, clock=clock)
        task = asyncio.create_task(sink.run())
        api.down = True
        for t in pods(20):
            assert sink.announce(t, "id", "MissingMemoryRequest", "m", started=True)
        await wait_until(lambda: len(sink.retries) == 20)
        assert api.events == {} and sink.ledger == {}, "nothing counts as posted before the API server took it"
        # said again meanwhile (the next pass): still one Event each
        assert not any(sink.announce(t, "id", "MissingMemoryRequest", "m", started=True) for t in pods(20))
        api.down = False
        sink.retry_now()
        await asyncio.wait_for(sink.drained(), 5)
        assert len(api.events) == 20 and all(e["count"] == 1 for e in api.events.values())
        assert metrics.EVENTS_RETRIED._value.get() - retried0 == 20
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(go())


def test_failed_posts_back_off_and_go_out_without_being_told():
    async def go(monkeypatch_first):
        api = FlakyApi()
        sink = EventSink(api, "test", qps=0, clock=Clock())
        task = asyncio.create_task(sink.run())
        api.down = True
        sink.announce(POD, "id", "X", "m", started=True)
        await wait_until(lambda: sink.retries and sink.retries[0][2].attempts >= 2, timeout=5)
        api.down = False
        await asyncio.wait_for(sink.drained(), 5)
        assert len(api.events) == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    import memory_hygiene.shell.events as ev

    first = ev.RETRY_FIRST_SECONDS
    ev.RETRY_FIRST_SECONDS = 0.05
    try:
        run(go(None))
    finally:
        ev.RETRY_FIRST_SECONDS = first


def test_a_post_whose_answer_was_lost_is_not_counted_twice():
    async def go():
        api = FlakyApi()
        api.lose_answer = 1
        sink = EventSink(api, "test", qps=0, clock=Clock())
        task = asyncio.create_task(sink.run())
        sink.announce(POD, "id", "X", "m", started=True)
        await wait_until(lambda: sink.retries)
        sink.retry_now()
        await asyncio.wait_for(sink.drained(), 5)
        [e] = api.events.values()
        assert e["count"] == 1
        assert [op for op, _ in api.calls] == ["create", "create"]  # the second got 409: it was there
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(go())


def test_resolved_waits_for_its_started_and_a_flap_cancels_out():
    async def go():
        api, clock = FlakyApi(), Clock()
        sink = EventSink(api, "test", qps=0, clock=clock)
        task = asyncio.create_task(sink.run())
        start, end = event_names(POD, "id")
        api.down = True
        assert sink.announce(POD, "id", "X", "started", started=True)
        await wait_until(lambda: sink.retries)
        clock.t += 1
        assert sink.announce(POD, "id", "XResolved", "ended", started=False)  # waits behind the start
        assert not sink.announce(POD, "id", "XResolved", "ended", started=False)
        api.down = False
        sink.retry_now()
        await asyncio.wait_for(sink.drained(), 5)
        creates = [key[1] for op, key in api.calls if op == "create"]
        assert creates == [start, end], "the start lands first"
        # down again: ended -> started -> ended -> started while nothing can be posted
        api.down = True
        clock.t += 1
        assert sink.announce(POD, "id", "X", "again", started=True)
        await wait_until(lambda: sink.retries)
        assert sink.announce(POD, "id", "XResolved", "ended", started=False)
        assert not sink.announce(POD, "id", "X", "again", started=True)  # cancels the waiting Resolved
        api.down = False
        sink.retry_now()
        await asyncio.wait_for(sink.drained(), 5)
        assert api.events[("ns", start)]["count"] == 2 and api.events[("ns", end)]["count"] == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(go())


def test_a_refused_post_is_dropped_and_counted_and_a_hopeless_one_given_up():
    async def go():
        api = FlakyApi()
        api.refuse = {"gone": 404}
        rejected0 = metrics.EVENTS_DROPPED.labels(cause="rejected")._value.get()
        sink = EventSink(api, "test", qps=0, clock=Clock())
        task = asyncio.create_task(sink.run())
        sink.announce(Target("v1", "Pod", "p", "u", "gone"), "id", "X", "m", started=True)
        await asyncio.wait_for(sink.drained(), 5)
        assert metrics.EVENTS_DROPPED.labels(cause="rejected")._value.get() - rejected0 == 1
        assert sink.retries == [] and api.events == {}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        errors0 = metrics.EVENTS_DROPPED.labels(cause="api_error")._value.get()
        api.down = True
        sink = EventSink(api, "test", qps=0, clock=Clock(), give_up_seconds=0.0)
        task = asyncio.create_task(sink.run())
        sink.announce(POD, "id", "X", "m", started=True)
        await asyncio.wait_for(sink.drained(), 5)
        assert metrics.EVENTS_DROPPED.labels(cause="api_error")._value.get() - errors0 == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(go())


def test_preload_finds_open_started_events_with_their_violation():
    async def go():
        api, clock = FakeApi(), Clock()
        sink = EventSink(api, "test", qps=0, clock=clock)
        key = ("MissingMemoryRequest", "Pod", "ns", "p", "c", "")
        sink.announce(POD, "\0".join(key), "MissingMemoryRequest", "m", started=True)
        other = ("NodeOvercommitted", "Node", "", "n", "", "")
        sink.announce(NODE, "\0".join(other), "NodeOvercommitted", "m", started=True)
        await drain(sink)
        clock.t += 5
        sink.announce(NODE, "\0".join(other), "NodeOvercommittedResolved", "ok", started=False)
        await drain(sink)
        restarted = EventSink(api, "test", qps=0, clock=clock)
        assert await restarted.preload() == 3
        start, _ = event_names(POD, "\0".join(key))
        assert set(restarted.open) == {("ns", start), ("default", event_names(NODE, "\0".join(other))[0])}
        assert restarted.open[("ns", start)].key == key and restarted.open[("ns", start)].target == POD
        assert restarted.still_open(("ns", start))
        assert not restarted.still_open(("default", event_names(NODE, "\0".join(other))[0])), "resolved already"

    run(go())


def test_after_a_restart_violations_that_ended_meanwhile_get_their_resolved():
    """Ten SIGKILLs during churn left "started" Events whose violation ended while no operator
    ran: the restarted operator resolves those (on the object and on the policy), once every
    policy had its first pass, and leaves the ones still going, the OOM kills and deleted objects."""
    from memory_hygiene.core.engine import PolicyEngine
    from memory_hygiene.core.policy import parse_spec
    from memory_hygiene.shell import reconciler as op
    from memory_hygiene.shell.runtime import Runtime

    async def go():
        api, clock = FakeApi(), Clock()
        policy = Target("memoryhygiene.io/v1alpha1", "MemoryPolicy", "pol", "uid-pol")
        gone_pod = Target("v1", "Pod", "deleted", "uid-deleted", "ns")
        keys = {
            "ended": ("MissingMemoryRequest", "Pod", "ns", "p", "c", ""),
            "going": ("MissingMemoryRequest", "Pod", "ns", "p", "d", ""),
            "oom": ("SilentOOMKill", "Pod", "ns", "p", "c", "n/1/2"),
            "deleted": ("MissingMemoryRequest", "Pod", "ns", "deleted", "c", ""),
        }
        first = EventSink(api, "before", qps=0, clock=clock)
        for what, key in keys.items():
            target = gone_pod if what == "deleted" else POD
            first.announce(target, "\0".join(key), key[0], "m", started=True)
            first.announce(policy, "\0".join(key), key[0], "m", started=True)
        await drain(first)
        assert len(api.events) == 8
        clock.t += 60  # SIGKILL; the violation "ended" ends meanwhile; then a new operator

        rt = Runtime()
        rt.sink = EventSink(api, "after", qps=0, clock=clock)
        await rt.sink.preload()
        assert len(rt.sink.open) == 8
        async def list_policies(path, params=None):
            assert path == "/apis/memoryhygiene.io/v1alpha1/memorypolicies"
            return [{"metadata": {"uid": "uid-pol"}}]

        rt.session = SimpleNamespace(list_all=list_policies)
        from memory_hygiene.core.types import PodInfo

        rt.stores["pods"].put("uid-p", "n", PodInfo("uid-p", "ns", "p", "n", "Running", (), "Burstable", 0, None, (), "", ""))
        assert await op.resolve_orphans(rt) == 0 and not rt.orphans_checked, "the policy was not evaluated yet"
        state = op.PolicyState(name="pol", uid="uid-pol", generation=1, engine=PolicyEngine("pol", parse_spec({})))
        from memory_hygiene.core.rules import Violation

        holding = [Violation(k[0], k[1], k[2], k[3], k[4], "m", "uid-p", k[5]) for k in (keys["going"], keys["oom"])]
        state.engine.violations = lambda: iter(holding)  # what its first pass found
        for v in holding:
            rt.first_seen.add(v.key, 1.0)
        state.evaluated = True
        rt.policies["pol"] = state
        rt.orphans_tried = float("-inf")
        assert await op.resolve_orphans(rt) == 3  # "ended" on the pod and the policy; "deleted" on the policy
        assert rt.orphans_checked and rt.sink.open == {}
        await drain(rt.sink)
        ended = {key for key, e in api.events.items() if e["type"] == "Normal"}
        assert ended == {("ns", event_names(POD, "\0".join(keys["ended"]))[1]),
                         ("default", event_names(policy, "\0".join(keys["ended"]))[1]),
                         ("default", event_names(policy, "\0".join(keys["deleted"]))[1])}
        [resolved] = [e for e in api.events.values() if e["type"] == "Normal" and e["involvedObject"]["kind"] == "Pod"]
        assert resolved["reason"] == "MissingMemoryRequestResolved"
        assert resolved["message"] == "Pod ns/p container c no longer violates MissingMemoryRequest"
        # a second operator (a rollout's overlap) doing the same posts nothing twice
        again = Runtime()
        again.sink = EventSink(api, "peer", qps=0, clock=clock)
        await again.sink.preload()
        again.session, again.stores, again.policies, again.first_seen = rt.session, rt.stores, rt.policies, rt.first_seen
        assert await op.resolve_orphans(again) == 0

    run(go())
