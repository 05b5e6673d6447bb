"""``memory-hygiene node-agent``: posts the kernel's OOM kill reports as Node Events.

One per node (a DaemonSet). Two sources:

* the kernel log, ``/dev/kmsg``: every record, in sequence order, goes through
  ``core.kmsg.Grouper``; each OOM report becomes one kill, posted as one ``OOMKilling`` Event
  whose message is the kernel's own lines (node-problem-detector's format, richer);
* the memory cgroups' ``oom_kill`` counters under kubepods (cgroup v1
  ``memory.oom_control``, v2 ``memory.events.local``/``memory.events``): a rise the kernel log
  did not explain (lost in an overrun, ``callbacks suppressed``) is posted too, naming the
  container by its cgroup path.

Dedupe: Event names come from the boot id and the sequence number of the kill's first
``Killed process`` record; the API server is the ledger (409 AlreadyExists: posted before, by
this process before a restart). A rate-limited batch Event names its first kill and records
its last kill's sequence number in an annotation, which a restarted agent reads (GET) on 409.

Rate limit: a token bucket for the Node (client-go's burst 25, one more every 5 minutes).
Kills that find no token wait in the queue (counted as rate-limited) and go out together in
the next Event, up to ``--max-kills-per-event`` each: later-posted, never silently lost. What
does not fit in ``--max-pending`` is dropped and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from ..core import kmsg
from .ratelimit import TokenBuckets

log = logging.getLogger("memory_hygiene.node_agent")

COMPONENT = "memory-hygiene-node-agent"
EVENT_NAMESPACE = "default"
REASON = "OOMKilling"
ANNOTATION_SOURCE = "memoryhygiene.io/oom-source"
ANNOTATION_BOOT = "memoryhygiene.io/boot-id"
ANNOTATION_FIRST = "memoryhygiene.io/kmsg-first-seq"
ANNOTATION_LAST = "memoryhygiene.io/kmsg-last-seq"
ANNOTATION_KILLS = "memoryhygiene.io/kills"
ANNOTATION_TIME = "memoryhygiene.io/kernel-time"
MAX_MESSAGE = 256 * 1024

KILLS_SEEN = Counter("memory_hygiene_node_agent_kills_seen_total",
                     "OOM kills seen, by source (kmsg: the kernel log; memcg: a cgroup oom_kill counter "
                     "rise the kernel log did not report).", ["source"])
KILLS_POSTED = Counter("memory_hygiene_node_agent_kills_posted_total",
                       "OOM kills carried by an Event this agent created, by source.", ["source"])
KILLS_ALREADY = Counter("memory_hygiene_node_agent_kills_already_posted_total",
                        "OOM kills whose Event existed already (409: posted before a restart).")
EVENTS_POSTED = Counter("memory_hygiene_node_agent_events_posted_total", "OOMKilling Events created.")
RECORDS_LOST = Counter("memory_hygiene_node_agent_kmsg_records_lost_total",
                       "Kernel log records overwritten before the agent read them (sequence gaps while following).")
RATE_LIMITED = Counter("memory_hygiene_node_agent_kills_rate_limited_total",
                       "OOM kills that found the Node's token bucket empty: they wait and go out batched "
                       "in a later Event.")
DROPPED = Counter("memory_hygiene_node_agent_kills_dropped_total",
                  "OOM kills not posted: queue_full (more than --max-pending waiting), too_old (older "
                  "than --lookback at start), rejected (the API server refused the Event as invalid).",
                  ["cause"])
INCOMPLETE = Counter("memory_hygiene_node_agent_incomplete_reports_total",
                     "OOM reports cut short by lost records (posted with what was left).")
PENDING = Gauge("memory_hygiene_node_agent_kills_pending", "OOM kills waiting to be posted.")
SYSLOG_OVERRUNS = Counter("memory_hygiene_node_agent_syslog_overruns_total",
                          "syslog(2) reader: the kernel log had wrapped past the last record read (records lost).")
API_ERRORS = Counter("memory_hygiene_node_agent_api_errors_total",
                     "Failed Event POSTs (retried), by HTTP status (0: no answer).", ["status"])


@dataclass
class Item:
    """A kill waiting to be posted."""

    source: str
    """"kmsg" or "memcg"."""
    seq: int
    """kmsg: the kill's sequence number; memcg: the counter value."""
    time: float
    lines: tuple[str, ...]
    name: str
    group: bool = False
    rate_limited: bool = False


def _iso(t: float) -> str:
    from ..core.snapshot import format_time  # not at import: it loads the kubernetes client (see main.run)

    return format_time(t)


def _micro(t: float) -> str:
    from ..core.snapshot import format_time

    return format_time(t, micro=True)


def build_event(node: str, boot_id: str, items: list[Item]) -> dict[str, Any]:
    """The Event for one kill, or for a batch of rate-limited kills (named after the first)."""
    first, last = items[0], items[-1]
    message = "\n".join(line for it in items for line in it.lines)
    if len(message) > MAX_MESSAGE:  # cut at a line, and say so (in words no kernel-line pattern matches)
        cut = message.rfind("\n", 0, MAX_MESSAGE - 100)
        message = message[:cut] + f"\nmemory-hygiene-node-agent: message cut at {cut} of {len(message)} characters"
    annotations = {ANNOTATION_SOURCE: first.source, ANNOTATION_BOOT: boot_id, ANNOTATION_KILLS: str(len(items)),
                   ANNOTATION_TIME: _micro(first.time)}
    if first.source == "kmsg":
        annotations[ANNOTATION_FIRST] = str(first.seq)
        annotations[ANNOTATION_LAST] = str(last.seq)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": first.name, "namespace": EVENT_NAMESPACE, "annotations": annotations},
        # As node-problem-detector: the Node by name, its name as uid (what `kubectl describe node`
        # searches for), no namespace.
        "involvedObject": {"kind": "Node", "name": node, "uid": node, "apiVersion": "v1"},
        "reason": REASON,
        "type": "Warning",
        "message": message,
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node[:128],
        "action": "Killed",
        "firstTimestamp": _iso(first.time),
        "lastTimestamp": _iso(last.time),
        "count": len(items),
    }


class Poster:
    """The queue of kills, the Node's token bucket, and the POSTs."""

    def __init__(self, api: Any, node: str, boot_id: str, *, burst: int, refill_seconds: float,
                 max_kills_per_event: int, max_pending: int, clock: Any = time.time) -> None:
        self.api, self.node, self.boot_id = api, node, boot_id
        self.bucket = TokenBuckets(burst, refill_seconds)
        self.max_kills_per_event = max(1, max_kills_per_event)
        self.max_pending = max_pending
        self.clock = clock
        self.queue: collections.deque[Item] = collections.deque()
        self.wakeup = asyncio.Event()
        self.covered_seq = -1
        """kmsg kills up to this sequence number are known to be posted (an existing Event said so)."""
        self.in_flight = 0

    def add(self, item: Item) -> bool:
        if item.source == "kmsg" and item.seq <= self.covered_seq:
            KILLS_ALREADY.inc()
            return False
        if len(self.queue) >= self.max_pending:
            DROPPED.labels(cause="queue_full").inc()
            log.warning("dropped a kill (%s %s): %d kills are waiting already", item.source, item.seq,
                        len(self.queue))
            return False
        self.queue.append(item)
        PENDING.set(len(self.queue))
        self.wakeup.set()
        return True

    def idle(self) -> bool:
        return not self.queue and not self.in_flight

    def _batch(self) -> list[Item]:
        first = self.queue.popleft()
        batch = [first]
        if first.rate_limited and not first.group:
            while (self.queue and len(batch) < self.max_kills_per_event and self.queue[0].source == first.source
                   and self.queue[0].rate_limited):
                nxt = self.queue.popleft()
                batch.append(nxt)
                if nxt.group:  # a group kill's "Tasks in" applies to the lines after it: it ends a batch
                    break
        PENDING.set(len(self.queue))
        return batch

    async def run(self) -> None:
        delay = 0.5
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            now = self.clock()
            if not self.bucket.allow(self.node, now):
                for it in self.queue:
                    if not it.rate_limited:
                        it.rate_limited = True
                        RATE_LIMITED.inc()
                wait = self.bucket.wait_seconds(self.node, now)
                await asyncio.sleep(min(max(wait, 0.05), 60.0))
                continue
            batch = self._batch()
            self.in_flight = len(batch)
            try:
                ok = await self._post(batch)
            finally:
                self.in_flight = 0
            if ok:
                delay = 0.5
                continue
            self.bucket.refund(self.node)
            for it in reversed(batch):  # retried first
                self.queue.appendleft(it)
            PENDING.set(len(self.queue))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _post(self, batch: list[Item]) -> bool:
        """True when done with the batch (posted, known posted, or refused for good)."""
        body = build_event(self.node, self.boot_id, batch)
        path = f"/api/v1/namespaces/{EVENT_NAMESPACE}/events"
        try:
            status, answer = await self.api.post_json(path, body)
        except Exception as err:  # noqa: BLE001 - no answer: retry
            API_ERRORS.labels(status="0").inc()
            log.warning("could not post Event %s: %s; retrying", body["metadata"]["name"], err)
            return False
        if status in (200, 201):
            EVENTS_POSTED.inc()
            KILLS_POSTED.labels(source=batch[0].source).inc(len(batch))
            log.info("posted Event %s: %d %s kill(s)", body["metadata"]["name"], len(batch), batch[0].source)
            return True
        if status == 409:
            self.bucket.refund(self.node)
            KILLS_ALREADY.inc(len(batch))
            if batch[0].source == "kmsg":
                await self._learn_coverage(body["metadata"]["name"], batch)
            return True
        if status in (400, 422):
            DROPPED.labels(cause="rejected").inc(len(batch))
            log.error("the API server refused Event %s (HTTP %d): %s", body["metadata"]["name"], status,
                      (answer or {}).get("message") if isinstance(answer, dict) else answer)
            return True
        API_ERRORS.labels(status=str(status)).inc()
        log.warning("could not post Event %s: HTTP %d %s; retrying", body["metadata"]["name"], status,
                    (answer or {}).get("message") if isinstance(answer, dict) else answer)
        return False

    async def _learn_coverage(self, name: str, batch: list[Item]) -> None:
        """An Event of this name exists: up to which kill did it carry? (A batch posted before a
        restart may have covered more kills than this one.)"""
        last = batch[-1].seq
        try:
            status, ev = await self.api.get_json(f"/api/v1/namespaces/{EVENT_NAMESPACE}/events/{name}", {})
            if status == 200 and isinstance(ev, dict):
                ann = (ev.get("metadata") or {}).get("annotations") or {}
                last = max(last, int(ann.get(ANNOTATION_LAST, last)))
        except Exception as err:  # noqa: BLE001 - then we know it covered this batch at least
            log.warning("could not read Event %s: %s", name, err)
        if last > self.covered_seq:
            self.covered_seq = last
        before = len(self.queue)
        self.queue = collections.deque(it for it in self.queue if not (it.source == "kmsg" and it.seq <= last))
        if before != len(self.queue):
            KILLS_ALREADY.inc(before - len(self.queue))
        PENDING.set(len(self.queue))


# --- the kernel log ---------------------------------------------------------------------------------


class KmsgFollower:
    """Reads records, groups them, hands the kills on."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.grouper = kmsg.Grouper()
        self.last_activity = time.monotonic()
        self.records = 0
        self.startup_done = False

    def _records_lost(self, before: int) -> None:
        lost = self.grouper.lost_records - before
        if lost:
            RECORDS_LOST.inc(lost)
            log.warning("%d kernel log records were overwritten before they were read", lost)

    def feed_raw(self, raw: bytes | str) -> None:
        r = kmsg.parse_record(raw)
        if r is None:
            log.warning("skipped a kernel log record that is not in the /dev/kmsg format: %r", raw[:120])
            return
        self.records += 1
        before = self.grouper.lost_records
        if self.records == 1 and r.seq > 0:
            log.info("the kernel log starts at record %d: older records were overwritten", r.seq)
        kills = self.grouper.feed(r)
        self._records_lost(before)
        if kills or self.grouper.pending():
            self.last_activity = time.monotonic()
        for k in kills:
            self.agent.kmsg_kill(k)

    def idle(self, settle: float) -> None:
        if self.grouper.pending() and time.monotonic() - self.last_activity >= settle:
            for k in self.grouper.flush():
                self.agent.kmsg_kill(k)

    async def follow_device(self, path: str, settle: float) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                while True:
                    try:
                        raw = os.read(fd, 16384)
                    except BlockingIOError:
                        break
                    except OSError as err:
                        if err.errno == errno.EPIPE:  # overwritten: the next read goes on; the seq gap counts
                            continue
                        raise
                    if not raw:
                        break
                    self.feed_raw(raw)
                self.caught_up()
                self.idle(settle)
                readable.clear()
                try:
                    await asyncio.wait_for(readable.wait(), timeout=settle / 2 if self.grouper.pending() else 5.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def follow_file(self, path: str, settle: float) -> None:
        """The test input: a ``cat /dev/kmsg`` stream read once; then the agent goes on posting."""
        text = await asyncio.to_thread(Path(path).read_text, "utf-8", "replace")
        for i, raw in enumerate(kmsg.split_records(text)):
            self.feed_raw(raw)
            if i % 500 == 499:
                await asyncio.sleep(0)
        self.caught_up()
        for k in self.grouper.flush():
            self.agent.kmsg_kill(k)
        while True:
            await asyncio.sleep(3600)

    async def follow_syslog(self, interval: float, settle: float) -> None:
        """The kernel log through syslog(2) ``SYSLOG_ACTION_READ_ALL`` (``dmesg``'s way): needs
        CAP_SYSLOG where kernel.dmesg_restrict=1 but no device, so it works where a container's
        device cgroup refuses /dev/kmsg. No sequence numbers: records are told apart by their time,
        and a buffer that wrapped past the last record read counts as one overrun."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.klogctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        size = libc.klogctl(10, None, 0)  # SYSLOG_ACTION_SIZE_BUFFER
        if size <= 0:
            size = 1 << 20
        buf = ctypes.create_string_buffer(size)
        self.grouper = kmsg.Grouper(count_gaps=False)
        self.agent.by_time = True
        last_usec, last_count = -1, 0
        while True:
            n = await asyncio.to_thread(libc.klogctl, 3, buf, size)  # SYSLOG_ACTION_READ_ALL
            if n < 0:
                err = ctypes.get_errno()
                raise PermissionError(err, f"syslog(SYSLOG_ACTION_READ_ALL): {os.strerror(err)}") if err == errno.EPERM \
                    else OSError(err, os.strerror(err))
            lines = buf.raw[:n].decode("utf-8", "replace").split("\n")
            start = len(lines)
            while start > 0:  # the new part: from the end back to the last record read
                p = kmsg.parse_syslog_line(lines[start - 1])
                if p is not None and p[1] < last_usec:
                    break
                start -= 1
            fresh = [p for p in map(kmsg.parse_syslog_line, lines[start:]) if p is not None]
            if n > 0 and last_usec < 0 and not fresh:
                raise RuntimeError("syslog(2) gave kernel log lines without printk timestamps "
                                   "(printk.time=0?): they cannot be told apart; use --kernel-log=kmsg")
            if last_usec >= 0 and start == 0 and fresh and fresh[0][1] > last_usec:
                SYSLOG_OVERRUNS.inc()
                for k in self.grouper.lost(0):
                    self.agent.kmsg_kill(k)
            same = 0
            for prio, usec, text in fresh:
                if usec == last_usec:
                    same += 1
                    if same <= last_count:
                        continue
                self.records += 1
                kills = self.grouper.feed(kmsg.Record(usec, usec, prio, "-", None, text))
                if kills or self.grouper.pending():
                    self.last_activity = time.monotonic()
                for k in kills:
                    self.agent.kmsg_kill(k)
            if fresh:
                # fresh holds every record at or after last_usec: the ones at its last time are all read
                top = fresh[-1][1]
                last_usec, last_count = top, sum(1 for p in fresh if p[1] == top)
            self.caught_up()
            self.idle(settle)
            await asyncio.sleep(interval)

    def caught_up(self) -> None:
        if not self.startup_done:
            self.startup_done = True
            log.info("read the kernel log's %d records present at start", self.records)
            self.agent.kmsg_caught_up()


# --- the memcg counters -------------------------------------------------------------------------------


def memory_mount(cgroup_fs: Path) -> tuple[int, Path] | None:
    """(cgroup version, the memory hierarchy's directory) under the host's cgroup mount."""
    try:
        if "memory" in (cgroup_fs / "cgroup.controllers").read_text().split():
            return 2, cgroup_fs
    except OSError:
        pass
    if (cgroup_fs / "memory").is_dir():
        return 1, cgroup_fs / "memory"
    return None


def _read_oom_kill(path: Path) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
    except (OSError, ValueError):
        return None
    return None


def scan_counters(version: int, mount: Path, roots: list[str]) -> dict[str, tuple[int, str]]:
    """{kernel cgroup path: (local oom_kill count, counter file name)} for every memory cgroup under
    kubepods (cgroupfs ``kubepods``, systemd ``kubepods.slice``) of each kubelet cgroup root."""
    out: dict[str, tuple[int, str]] = {}
    for root in roots:
        base = mount / root.strip("/")
        for top in ("kubepods", "kubepods.slice"):
            start = base / top
            if not start.is_dir():
                continue
            for dirpath, dirnames, _ in os.walk(start):
                d = Path(dirpath)
                if version == 1:
                    name = "memory.oom_control"  # counts in the victim's own memcg only
                elif (d / "memory.events.local").exists():
                    name = "memory.events.local"
                elif not dirnames:
                    name = "memory.events"  # hierarchical: read on leaves only
                else:
                    continue
                n = _read_oom_kill(d / name)
                if n is not None:
                    out["/" + str(d.relative_to(mount))] = (n, name)
    return out


# --- the agent -----------------------------------------------------------------------------------------


@dataclass
class Agent:
    node: str
    boot_id: str
    poster: Poster
    lookback: float
    boot: float
    started: float = field(default_factory=time.time)
    kmsg_kills: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10_000))
    counters: dict[str, int] | None = None
    counter_rise: dict[str, int] = field(default_factory=dict)
    counter_posted: dict[str, int] = field(default_factory=dict)
    counter_first_unexplained: dict[str, float] = field(default_factory=dict)
    counter_last: dict[str, float] = field(default_factory=dict)
    counter_seen_max: dict[str, int] = field(default_factory=dict)
    counter_file: dict[str, str] = field(default_factory=dict)
    memcgless_used: int = 0
    """Kernel-log kills without a memcg path that explained a counter rise already."""
    fixed_boot: bool = False
    """Use ``boot`` as given (tests)."""
    ready: bool = False
    by_time: bool = False
    """Kills are keyed by their record's time (the syslog(2) reader has no sequence numbers)."""
    counters_ready: bool = True
    """False until the first read of the counters (when that source is on)."""

    def kmsg_kill(self, k: kmsg.Kill) -> None:
        if not k.complete:
            INCOMPLETE.inc()
        # boot time again at each kill: the wall clock may have been stepped (NTP) since the start
        boot = self.boot if self.fixed_boot else kmsg.boot_epoch(time.time(), time.clock_gettime(time.CLOCK_MONOTONIC))
        t = kmsg.record_time(k.usec, boot)
        KILLS_SEEN.labels(source="kmsg").inc()
        self.kmsg_kills.append((t, k._replace(lines=())))  # what the counters need: memcg, group, pids
        if t < time.time() - self.lookback:
            DROPPED.labels(cause="too_old").inc()
            log.info("kill at seq %d (%s) is older than the lookback: not posted", k.seq, _iso(t))
            return
        lines = k.lines if len(k.lines) <= 2000 else k.lines[:2000] + (
            f"memory-hygiene-node-agent: {len(k.lines) - 2000} more lines of this report not listed",)
        self.poster.add(Item("kmsg", k.seq, t, lines, kmsg.kill_event_name(self.node, self.boot_id, k.seq, self.by_time),
                             group=k.group is not None))

    def kmsg_caught_up(self) -> None:
        self.ready = True

    def counters_poll(self, found: dict[str, tuple[int, str]], grace: float) -> None:
        now = time.time()
        if self.counters is None:  # the baseline: kills before the agent started are the kernel log's
            self.counters = {p: n for p, (n, _) in found.items()}
            self.started = now
            self.counters_ready = True
            return
        for path, (n, fname) in found.items():
            before = self.counters.get(path, 0)
            if n > before:
                self.counter_rise[path] = self.counter_rise.get(path, 0) + n - before
                self.counter_last[path] = now
            self.counters[path] = n
            self.counter_seen_max[path] = max(n, self.counter_seen_max.get(path, 0))
            self.counter_file[path] = fname
        gone = [p for p in self.counters if p not in found]
        for path in gone:  # the cgroup was removed (container gone): what it counted is still judged below
            del self.counters[path]
        for path, rise in list(self.counter_rise.items()):
            seen = kmsg.explained((k for t, k in self.kmsg_kills if t >= self.started - 1), path)
            unexplained = rise - seen - self.counter_posted.get(path, 0)
            if unexplained <= 0:
                self.counter_first_unexplained.pop(path, None)
                if path not in self.counters and now - self.counter_last.get(path, now) > 10 * grace:
                    self._forget(path)
                continue
            first = self.counter_first_unexplained.setdefault(path, now)
            if now - first < grace:
                continue  # the kernel log may still be on its way
            self.counter_first_unexplained.pop(path, None)
            # A kill whose oom-kill: line the kernel ratelimited (10 reports per 5 s) is in the log
            # without its memcg: it may be this one. Such kills explain counter rises anywhere,
            # oldest first, so that no kill is posted twice (the kernel's Event names its pid; the
            # counter's could not).
            spare = sum(1 for t, k in self.kmsg_kills if t >= self.started - 1 and k.task_memcg is None
                        and k.group is None) - self.memcgless_used
            take = min(max(spare, 0), unexplained)
            if take:
                self.memcgless_used += take
                self.counter_posted[path] = self.counter_posted.get(path, 0) + take
                unexplained -= take
                log.info("memcg %s: %d OOM kill(s) taken as the kernel log's kills without a memcg path", path, take)
                if not unexplained:
                    continue
            n = self.counter_seen_max.get(path, rise)
            fname = self.counter_file.get(path, "oom_kill")
            for i in range(unexplained):
                count = n - unexplained + 1 + i
                KILLS_SEEN.labels(source="memcg").inc()
                msg = kmsg.counter_kill_message(path, fname, count - 1, count)
                self.poster.add(Item("memcg", count, now, tuple(msg.split("\n")),
                                     kmsg.counter_event_name(self.node, self.boot_id, path, count)))
            self.counter_posted[path] = self.counter_posted.get(path, 0) + unexplained
            log.info("memcg %s: %d OOM kill(s) the kernel log did not report", path, unexplained)

    def _forget(self, path: str) -> None:
        for d in (self.counter_rise, self.counter_posted, self.counter_first_unexplained, self.counter_last,
                  self.counter_seen_max, self.counter_file):
            d.pop(path, None)


async def _counters_loop(agent: Agent, cgroup_fs: Path, roots: list[str], interval: float, grace: float) -> None:
    found = memory_mount(cgroup_fs)
    if found is None:
        log.warning("no memory cgroup hierarchy under %s: the memcg counter source is off", cgroup_fs)
        agent.counters_ready = True
        while True:  # a task that ends would fail /healthz
            await asyncio.sleep(3600)
    version, mount = found
    log.info("memcg counters: cgroup v%d at %s, roots %s", version, mount, ", ".join(roots))
    while True:
        counts = await asyncio.to_thread(scan_counters, version, mount, roots)
        agent.counters_poll(counts, grace)
        await asyncio.sleep(interval)


async def _http(agent: Agent, tasks: list[asyncio.Task], host: str, port: int) -> Any:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        dead = [t.get_name() for t in tasks if t.done()]
        if dead:
            return web.Response(status=500, text=f"stopped: {', '.join(dead)}\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not agent.ready:
            return web.Response(status=503, text="reading the kernel log present at start\n")
        if not agent.counters_ready:
            return web.Response(status=503, text="reading the memcg counters for the first time\n")
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    from .reflector import ApiSession

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
    return ApiSession(cfg)


async def _main(args: argparse.Namespace, node: str, boot_id: str) -> None:
    api = _api(args.kubeconfig)
    poster = Poster(api, node, boot_id, burst=args.event_burst, refill_seconds=args.event_refill_seconds,
                    max_kills_per_event=args.max_kills_per_event, max_pending=args.max_pending)
    boot = kmsg.boot_epoch(time.time(), time.clock_gettime(time.CLOCK_MONOTONIC))
    agent = Agent(node, boot_id, poster, args.lookback, boot)
    follower = KmsgFollower(agent)
    tasks = [asyncio.create_task(poster.run(), name="poster")]
    source = args.kernel_log
    if args.kmsg_file:
        source = "file"
    elif source == "auto":
        try:
            os.close(os.open(args.kmsg, os.O_RDONLY | os.O_NONBLOCK))
            source = "kmsg"
        except OSError as err:
            log.warning("cannot open %s (%s): reading the kernel log with syslog(2) instead", args.kmsg, err)
            source = "syslog"
    log.info("kernel log: %s", {"file": args.kmsg_file, "kmsg": args.kmsg, "syslog": "syslog(2)"}[source])
    if source == "file":
        tasks.append(asyncio.create_task(follower.follow_file(args.kmsg_file, args.settle_seconds), name="kmsg"))
    elif source == "kmsg":
        tasks.append(asyncio.create_task(follower.follow_device(args.kmsg, args.settle_seconds), name="kmsg"))
    else:
        tasks.append(asyncio.create_task(follower.follow_syslog(args.syslog_interval, args.settle_seconds),
                                         name="kmsg"))
    if args.cgroup_interval > 0:
        agent.counters_ready = False
        grace = max(args.counter_grace_seconds, 2 * args.settle_seconds)
        tasks.append(asyncio.create_task(
            _counters_loop(agent, Path(args.cgroup_fs), args.cgroup_root or ["/"], args.cgroup_interval, grace),
            name="memcg counters"))
    runner = await _http(agent, tasks, args.http_host, args.http_port) if args.http_port else None
    log.info("node agent for node %s (boot %s) started", node, boot_id)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        if runner is not None:
            await runner.cleanup()
        await api.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), metavar="NAME",
                   help="the Node the Events are about (default: $NODE_NAME, from the downward API spec.nodeName)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG / ~/.kube/config)")
    p.add_argument("--kmsg", default="/dev/kmsg", metavar="PATH", help="the kernel log device (default /dev/kmsg)")
    p.add_argument("--kernel-log", choices=["auto", "kmsg", "syslog"], default="auto",
                   help="how to read the kernel log: kmsg (the device, with sequence numbers), syslog "
                   "(syslog(2), as dmesg: no device needed, records told apart by their time), auto (kmsg, "
                   "else syslog when the device cannot be opened, e.g. refused by the container's device "
                   "cgroup) (default auto)")
    p.add_argument("--syslog-interval", type=float, default=1.0, metavar="S",
                   help="with the syslog(2) reader, read the kernel log every S seconds (default 1)")
    p.add_argument("--kmsg-file", metavar="FILE",
                   help="test input: read a recorded `cat /dev/kmsg` stream from FILE instead of following "
                   "the device, then go on posting (and watching the counters) until stopped")
    p.add_argument("--boot-id-file", default="/proc/sys/kernel/random/boot_id", metavar="PATH",
                   help="the boot id the Event names carry (default /proc/sys/kernel/random/boot_id)")
    p.add_argument("--lookback", type=float, default=3600.0, metavar="S",
                   help="at start, post the kills still in the kernel log that are at most S seconds old (default 3600)")
    p.add_argument("--settle-seconds", type=float, default=1.0, metavar="S",
                   help="a report is complete once the kernel log has been quiet this long (default 1)")
    p.add_argument("--cgroup-fs", default="/sys/fs/cgroup", metavar="DIR",
                   help="the host's cgroup filesystem (default /sys/fs/cgroup)")
    p.add_argument("--cgroup-root", action="append", metavar="PATH",
                   help="kubelet's --cgroup-root, under which kubepods (cgroupfs) or kubepods.slice (systemd) "
                   "lies; repeatable (default /)")
    p.add_argument("--cgroup-interval", type=float, default=5.0, metavar="S",
                   help="read the memcg oom_kill counters every S seconds; 0 turns this source off (default 5)")
    p.add_argument("--counter-grace-seconds", type=float, default=5.0, metavar="S",
                   help="a counter rise the kernel log has not reported after S seconds is posted (default 5)")
    p.add_argument("--event-burst", type=int, default=25, metavar="N",
                   help="Events about the Node at once before rate limiting (client-go: 25)")
    p.add_argument("--event-refill-seconds", type=float, default=300.0, metavar="S",
                   help="one more Event every S seconds (client-go: 300)")
    p.add_argument("--max-kills-per-event", type=int, default=100, metavar="N",
                   help="kills one rate-limited (batched) Event carries at most (default 100)")
    p.add_argument("--max-pending", type=int, default=10_000, metavar="N",
                   help="kills waiting for a token at most; more are dropped and counted (default 10000)")
    p.add_argument("--http-port", type=int, default=8080, metavar="PORT",
                   help="serve /metrics, /healthz and /readyz on this port; 0 turns it off (default 8080)")
    p.add_argument("--http-host", default="0.0.0.0", metavar="ADDR", help="address to serve on (default 0.0.0.0)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs")


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for h in logging.getLogger().handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not args.node_name:
        log.error("no node name: pass --node-name or set NODE_NAME (downward API: spec.nodeName)")
        return 2
    if args.event_burst < 1 or args.event_refill_seconds <= 0 or args.max_pending < 1:
        log.error("--event-burst and --max-pending must be >= 1, --event-refill-seconds > 0")
        return 2
    try:
        boot_id = Path(args.boot_id_file).read_text().strip()
    except OSError as err:
        log.error("cannot read the boot id: %s", err)
        return 2
    try:
        asyncio.run(_main(args, args.node_name, boot_id))
    except KeyboardInterrupt:
        pass
    except PermissionError as err:
        log.error("memory-hygiene node-agent stopped: %s (reading /dev/kmsg needs CAP_SYSLOG where "
                  "kernel.dmesg_restrict=1, and the device allowed by the container's device cgroup)", err)
        return 1
    except Exception as err:  # noqa: BLE001
        log.error("memory-hygiene node-agent stopped: %s", err)
        return 1
    return 0
