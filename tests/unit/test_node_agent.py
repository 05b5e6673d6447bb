"""shell/node_agent.py without a cluster: the Event body, the poster's rate limit, batching and
409 ledger, the memcg counter source. A fake API session stands in for the API server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from memory_hygiene.core import kmsg
from memory_hygiene.shell import node_agent as na

BOOT = "7e9a7af3-a748-4763-beff-9c50723c3188"
CG = "/kubepods/besteffort/pod0aa4b5b0-9b63-4a7e-8c3f-0d3a1f5b9e11/" + "ab" * 32
KILLED = ("Memory cgroup out of memory: Killed process {pid} (worker) total-vm:100kB, anon-rss:90kB, "
          "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:1000")


class FakeApi:
    def __init__(self, existing: dict[str, dict] | None = None) -> None:
        self.existing = dict(existing or {})
        self.posted: list[dict] = []

    async def post_json(self, path, body):
        name = body["metadata"]["name"]
        if name in self.existing:
            return 409, {"reason": "AlreadyExists"}
        self.existing[name] = body
        self.posted.append(body)
        return 201, body

    async def get_json(self, path, params):
        name = path.rsplit("/", 1)[1]
        return (200, self.existing[name]) if name in self.existing else (404, {})


def item(seq: int, t: float = 1000.0) -> na.Item:
    return na.Item("kmsg", seq, t, (KILLED.format(pid=seq),), kmsg.kill_event_name("n1", BOOT, seq))


def test_event_body_is_npd_compatible():
    ev = na.build_event("n1", BOOT, [item(465, 1796486971.123456)])
    assert ev["metadata"]["namespace"] == "default"
    assert ev["metadata"]["name"] == "n1.oom.7e9a7af3a7484763beff9c50723c3188.465"
    assert ev["involvedObject"] == {"kind": "Node", "name": "n1", "uid": "n1", "apiVersion": "v1"}
    assert (ev["reason"], ev["type"], ev["count"]) == ("OOMKilling", "Warning", 1)
    assert ev["source"] == {"component": "memory-hygiene-node-agent", "host": "n1"}
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2026-12-05T16:09:31Z"
    assert ev["metadata"]["annotations"]["memoryhygiene.io/kernel-time"] == "2026-12-05T16:09:31.123456Z"
    assert ev["message"] == KILLED.format(pid=465)
    assert "eventTime" not in ev  # with it the API server caps the message at 1 KiB


def _drive(poster: na.Poster, timeout: float = 10.0) -> None:
    """Run the poster until its queue is empty (deadline: ``timeout``)."""
    async def main():
        task = asyncio.create_task(poster.run())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.sleep(0)
        while not poster.idle():
            assert loop.time() < deadline, "the poster did not empty its queue"
            await asyncio.sleep(0.005)
        task.cancel()

    asyncio.run(main())


def test_rate_limit_batches_what_waits_and_loses_nothing():
    api = FakeApi()
    poster = na.Poster(api, "n1", BOOT, burst=2, refill_seconds=0.05, max_kills_per_event=3, max_pending=100)
    before = na.RATE_LIMITED._value.get()
    for seq in range(10, 17):
        poster.add(item(seq))
    _drive(poster)
    counts = [e["count"] for e in api.posted]
    assert counts == [1, 1, 3, 2]
    assert na.RATE_LIMITED._value.get() - before == 5
    batch = api.posted[2]
    assert batch["metadata"]["annotations"]["memoryhygiene.io/kmsg-first-seq"] == "12"
    assert batch["metadata"]["annotations"]["memoryhygiene.io/kmsg-last-seq"] == "14"
    assert batch["message"].split("\n") == [KILLED.format(pid=s) for s in (12, 13, 14)]


def test_restart_skips_what_an_earlier_batch_carried():
    """An Event named after kill 12 exists and says it carried kills up to 14: a restarted agent
    posts only 15 and 16, and the 409 costs no token."""
    earlier = na.build_event("n1", BOOT, [item(12), item(13), item(14)])
    api = FakeApi({earlier["metadata"]["name"]: earlier})
    poster = na.Poster(api, "n1", BOOT, burst=2, refill_seconds=1000, max_kills_per_event=10, max_pending=100)
    before = na.KILLS_ALREADY._value.get()
    for seq in range(12, 17):
        poster.add(item(seq))
    _drive(poster)
    assert [e["metadata"]["annotations"]["memoryhygiene.io/kmsg-first-seq"] for e in api.posted] == ["15", "16"]
    assert poster.covered_seq == 14
    assert na.KILLS_ALREADY._value.get() - before == 3

    async def again():
        return poster.add(item(13))

    assert not asyncio.run(again())  # known posted


def test_queue_full_is_counted():
    poster = na.Poster(FakeApi(), "n1", BOOT, burst=1, refill_seconds=1, max_kills_per_event=1, max_pending=2)
    before = na.DROPPED.labels(cause="queue_full")._value.get()

    async def main():
        return [poster.add(item(s)) for s in range(3)]

    assert asyncio.run(main()) == [True, True, False]
    assert na.DROPPED.labels(cause="queue_full")._value.get() - before == 1


def _agent() -> tuple[na.Agent, FakeApi]:
    api = FakeApi()
    poster = na.Poster(api, "n1", BOOT, burst=25, refill_seconds=300, max_kills_per_event=10, max_pending=100)
    return na.Agent("n1", BOOT, poster, lookback=3600, boot=0.0, fixed_boot=True), api


def test_counter_rise_explained_by_the_kernel_log_is_not_posted_again(monkeypatch):
    agent, _ = _agent()
    now = [1_000_000.0]
    monkeypatch.setattr(na.time, "time", lambda: now[0])
    agent.counters_poll({CG: (0, "memory.oom_control")}, grace=5)
    kill = kmsg.Kill(465, int(now[0] * 1e6), ("oom-kill:...",), (7,), CG, None, True, 465)
    agent.kmsg_kills.append((now[0], kill))
    now[0] += 1
    agent.counters_poll({CG: (1, "memory.oom_control")}, grace=5)
    now[0] += 10
    agent.counters_poll({CG: (1, "memory.oom_control")}, grace=5)
    assert not [i for i in agent.poster.queue if i.source == "memcg"]


def test_counter_rise_the_log_missed_is_posted_after_the_grace_even_if_the_cgroup_is_gone(monkeypatch):
    agent, _ = _agent()
    now = [1_000_000.0]
    monkeypatch.setattr(na.time, "time", lambda: now[0])

    async def main():
        agent.counters_poll({CG: (2, "memory.oom_control")}, grace=5)  # baseline: 2 before the start
        now[0] += 1
        agent.counters_poll({CG: (4, "memory.oom_control")}, grace=5)
        assert not agent.poster.queue  # the kernel log may still come
        now[0] += 6
        agent.counters_poll({}, grace=5)  # the container's cgroup was removed meanwhile
        return list(agent.poster.queue)

    items = asyncio.run(main())
    assert [(i.source, i.seq) for i in items] == [("memcg", 3), ("memcg", 4)]
    assert items[0].lines[0] == f"oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg={CG},task=?,pid=0,uid=0"
    assert "memory.oom_control oom_kill 2 -> 3" in items[0].lines[1]
    assert items[0].name == kmsg.counter_event_name("n1", BOOT, CG, 3)


def test_scan_counters_v1_and_v2(tmp_path: Path):
    v1 = tmp_path / "v1"
    leaf = v1 / "realnode" / "kubepods" / "burstable" / "podx" / ("ab" * 32)
    leaf.mkdir(parents=True)
    (leaf / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (leaf.parent / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    (v1 / "memory").mkdir()
    got = na.scan_counters(1, v1, ["/realnode"])
    assert got == {"/realnode/kubepods/burstable/podx/" + "ab" * 32: (3, "memory.oom_control"),
                   "/realnode/kubepods/burstable/podx": (0, "memory.oom_control")}
    v2 = tmp_path / "v2"
    pod = v2 / "kubepods.slice" / "kubepods-pod1.slice"
    c = pod / "cri-containerd-1.scope"
    c.mkdir(parents=True)
    (pod / "memory.events").write_text("oom 5\noom_kill 5\n")  # hierarchical: not read on a parent
    (c / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 5\noom_kill 5\n")
    assert na.scan_counters(2, v2, ["/"]) == {"/kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope":
                                              (5, "memory.events")}
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert na.memory_mount(v2) == (2, v2)
    assert na.memory_mount(v1) == (1, v1 / "memory")


def test_long_message_is_cut_at_a_line():
    items = [na.Item("kmsg", s, 1000.0, (KILLED.format(pid=s),) * 200, f"x{s}") for s in range(10)]
    ev = na.build_event("n1", BOOT, items)
    assert len(ev["message"]) <= na.MAX_MESSAGE
    *lines, last = ev["message"].split("\n")
    assert all(line.startswith("Memory cgroup out of memory: Killed process") for line in lines)
    assert last.startswith("memory-hygiene-node-agent: message cut at ")
    from memory_hygiene.core import kernel
    assert kernel.parse_oom_text(last) == []


def test_counter_rise_taken_as_a_ratelimited_report_is_not_posted_twice(monkeypatch):
    """In a burst the kernel prints the oom-kill: line of 10 reports per 5 s only: the other kills
    are in the log with their Killed process line alone (no memcg). Their counter rises are theirs."""
    agent, _ = _agent()
    now = [1_000_000.0]
    monkeypatch.setattr(na.time, "time", lambda: now[0])

    async def main():
        agent.counters_poll({CG: (0, "memory.oom_control")}, grace=5)
        agent.kmsg_kills.append((now[0] + 0.5, kmsg.Kill(9, 0, (), (77,), None, None, True, 9)))
        now[0] += 1
        agent.counters_poll({CG: (2, "memory.oom_control")}, grace=5)
        now[0] += 6
        agent.counters_poll({CG: (2, "memory.oom_control")}, grace=5)
        now[0] += 6
        agent.counters_poll({CG: (2, "memory.oom_control")}, grace=5)
        return list(agent.poster.queue)

    items = asyncio.run(main())
    assert [(i.source, i.seq) for i in items] == [("memcg", 2)]  # one was the log's, one was not


def test_kills_the_ring_buffer_held_at_start_are_posted_within_the_lookback_once():
    """The agent was down while two kills happened; the ring buffer still holds both reports (the
    real records of tests/unit/data/kernel/kmsg-6.18.44-fc-v1252-cgroupv1.txt, the second copy
    with later sequence numbers and times). At start the kill within --lookback is posted, the older
    one counted too_old; restarted again, the agent posts neither (409: the API server's ledger)."""
    import time

    data = Path(__file__).parent / "data" / "kernel" / "kmsg-6.18.44-fc-v1252-cgroupv1.txt"
    records = list(kmsg.split_records(data.read_text()))
    first = [kmsg.parse_record(r) for r in records]
    shift_seq, shift_usec = 1000, 4000 * 1_000_000  # the second kill: 4000 s after the first
    second = [f"{r.prio},{r.seq + shift_seq},{r.usec + shift_usec},{r.flags};{r.text}\n" for r in first]
    killed_seq = next(r.seq for r in first if "Killed process" in r.text)
    killed_usec = next(r.usec for r in first if "Killed process" in r.text)
    api = FakeApi()

    def start_agent() -> na.Poster:
        poster = na.Poster(api, "n1", BOOT, burst=25, refill_seconds=300, max_kills_per_event=10, max_pending=100)
        # boot set so that the first kill is 5000 s old, the second 1000 s: --lookback 3600
        boot = time.time() - 5000 - killed_usec / 1e6
        agent = na.Agent("n1", BOOT, poster, lookback=3600, boot=boot, fixed_boot=True)
        follower = na.KmsgFollower(agent)
        for raw in records + second:
            follower.feed_raw(raw)
        follower.caught_up()
        for k in follower.grouper.flush():
            agent.kmsg_kill(k)
        assert agent.ready
        return poster

    too_old = na.DROPPED.labels(cause="too_old")._value.get()
    seen = na.KILLS_SEEN.labels(source="kmsg")._value.get()
    _drive(start_agent())
    assert na.KILLS_SEEN.labels(source="kmsg")._value.get() - seen == 2
    assert na.DROPPED.labels(cause="too_old")._value.get() - too_old == 1
    [ev] = api.posted
    assert ev["metadata"]["name"] == kmsg.kill_event_name("n1", BOOT, killed_seq + shift_seq)
    assert any(line.startswith("oom-kill:") for line in ev["message"].split("\n"))

    already = na.KILLS_ALREADY._value.get()
    _drive(start_agent())
    assert len(api.posted) == 1  # nothing posted twice
    assert na.KILLS_ALREADY._value.get() - already == 1
    assert na.DROPPED.labels(cause="too_old")._value.get() - too_old == 2


def test_a_sequence_gap_is_counted_as_lost_records_and_the_cut_report_still_posted():
    """The ring buffer overran between two reads: the follower counts the records it never saw
    (kmsg_records_lost_total) and posts the report it was reading as incomplete."""
    data = Path(__file__).parent / "data" / "kernel" / "kmsg-6.18.44-fc-v1252-cgroupv1.txt"
    records = list(kmsg.split_records(data.read_text()))
    summary = next(i for i, r in enumerate(records) if ";oom-kill:" in r)
    r = kmsg.parse_record(records[summary])
    # everything after the oom-kill: record was overwritten; the next record read is 50 further
    after = f"6,{r.seq + 51},{r.usec + 10_000_000},-;eth0: link up\n"
    agent, _ = _agent()
    agent.lookback = 1e12  # the fixture's kill is old: keep it
    follower = na.KmsgFollower(agent)
    lost, incomplete = na.RECORDS_LOST._value.get(), na.INCOMPLETE._value.get()
    for raw in records[:summary + 1] + [after]:
        follower.feed_raw(raw)
    assert na.RECORDS_LOST._value.get() - lost == 50
    assert na.INCOMPLETE._value.get() - incomplete == 1
    [it] = agent.poster.queue
    assert it.seq == r.seq and it.lines[0].startswith("oom-kill:")  # named by its oom-kill: record
