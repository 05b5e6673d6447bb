"""EventSink: transitions only, dedupe across restarts through the API server, rate limits."""

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest

from memory_hygiene.shell import metrics
from memory_hygiene.shell.events import EventSink, Target, event_names
from memory_hygiene.shell.ratelimit import TokenBuckets


class FakeApi:
    """The three Event calls EventSink makes, kept in a dict like the API server would."""

    def __init__(self):
        self.events = {}
        self.calls = []

    def create_namespaced_event(self, ns, body):
        from kubernetes.client import ApiException

        key = (ns, body["metadata"]["name"])
        self.calls.append(("create", key))
        if key in self.events:
            raise ApiException(status=409, reason="AlreadyExists")
        self.events[key] = dict(body)

    def read_namespaced_event(self, name, ns):
        from kubernetes.client import ApiException

        if (ns, name) not in self.events:
            raise ApiException(status=404, reason="NotFound")
        e = self.events[(ns, name)]
        ts = dt.datetime.fromisoformat(e["lastTimestamp"].replace("Z", "+00:00"))
        return SimpleNamespace(count=e["count"], message=e["message"], last_timestamp=ts, first_timestamp=ts)

    def patch_namespaced_event(self, name, ns, body):
        self.calls.append(("patch", (ns, name)))
        self.events[(ns, name)].update(body)


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
        api.list_event_for_all_namespaces = lambda **kw: SimpleNamespace(data=__import__("json").dumps(
            {"items": [{"metadata": {"namespace": ns, "name": name}, **e} for (ns, name), e in api.events.items()],
             "metadata": {}}))
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
