"""Posting Kubernetes Events: on transitions only, deduplicated across restarts, rate-limited.

Dedupe: every (policy, violation) has two Event names, one for "it started" and one for "it
ended", derived from a hash of the violation's identity. The API server is the ledger: at start
the operator lists its own Events once, and an announcement is skipped when its Event exists and
is newer than the opposite one (the operator restarted while the violation went on). A violation
that comes back after it ended bumps the existing Event's count, as kubectl shows "(x2 over ...)".

Rate limits: per involved object a token bucket as client-go's (burst 25, one more every 5
minutes); over all objects, at most ``qps`` a second, posted by a few workers; what does not fit
in the queue is dropped and counted. Transitions seen while running go before the backlog of a
first evaluation (a new operator or policy may find thousands of violations at once): news first.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import heapq
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..core.snapshot import format_time, parse_time
from . import metrics
from .api import REQUEST_TIMEOUT, ApiError, status_message, unreachable
from .ratelimit import TokenBuckets

log = logging.getLogger("memory_hygiene.events")

COMPONENT = "memory-hygiene"
CLUSTER_SCOPED_EVENT_NAMESPACE = "default"
"""Events about Nodes and MemoryPolicies go here, with an empty involvedObject.namespace, so that
``kubectl describe node`` / ``describe memorypolicy`` find them."""
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Target:
    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str | None = None

    @property
    def event_namespace(self) -> str:
        return self.namespace or CLUSTER_SCOPED_EVENT_NAMESPACE

    def involved(self) -> dict[str, Any]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid}
        if self.namespace:
            ref["namespace"] = self.namespace
        return ref


@dataclass(frozen=True)
class Announcement:
    target: Target
    reason: str
    type: str
    message: str
    name: str
    other_name: str
    queued: float = 0.0
    """When it was queued (time.monotonic())."""
    backlog: bool = False
    identity: str = ""
    """The violation's key joined with NUL (written on the Event as an annotation)."""
    attempts: int = 0
    """Failed POSTs so far."""
    first_failure: float | None = None
    """time.monotonic() of the first failed POST."""


POSTED_ANNOTATION = "memoryhygiene.io/posted"
"""On our own Events: when this transition was last posted, in microseconds (lastTimestamp has
whole seconds: a violation may end and start again within one)."""


def _stamp(event: dict[str, Any]) -> float:
    """When an Event (as the API server returns it) was last posted."""
    meta = event.get("metadata") or {}
    try:
        return float((meta.get("annotations") or {})[POSTED_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        try:
            return parse_time(event.get("lastTimestamp")) or parse_time(event.get("firstTimestamp")) or 0.0
        except ValueError:
            return 0.0


def event_names(target: Target, identity: str) -> tuple[str, str]:
    """(started, ended) Event names for one violation on one object."""
    digest = hashlib.sha256(f"{target.uid}\0{identity}".encode()).hexdigest()[:16]
    base = target.name[:200]
    return f"{base}.mh{digest}s", f"{base}.mh{digest}e"


RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
"""A failed POST is tried again after 1, 2, 4, ... up to 30 s (at once when the API server is
seen back: ``retry_now``), under the same rate limits as a first POST."""
GIVE_UP_SECONDS = 900.0
"""An Event still failing this long after its first failure is dropped and counted."""
PERMANENT = (400, 403, 404, 422)
"""Refusals no retry changes (a namespace gone or terminating, an invalid body)."""
VIOLATION_ANNOTATION = "memoryhygiene.io/violation"
"""On our own Events: the violation's key (JSON list), so that after a restart a "started"
Event whose violation is gone can be resolved with the right words."""
_START_RE = re.compile(r".*\.mh[0-9a-f]{16}s")


@dataclass(frozen=True)
class Open:
    """A "started" Event of ours found at startup: what is needed to resolve it."""

    target: Target
    reason: str
    key: tuple[str, ...] | None
    """The violation's key from the annotation; None on Events posted before it existed."""
    end_name: str


class EventSink:
    """Queues Events and posts them at least once: an Event counts as posted only when the API
    server accepted it (or already held it); a POST that fails is tried again with backoff, under
    the same rate limits, for up to ``GIVE_UP_SECONDS``. While a transition's Event is not yet
    posted, the opposite one waits behind it (so "started" never lands after its "ended")."""

    def __init__(
        self,
        api: Any,
        instance: str,
        burst: int = 25,
        refill_seconds: float = 300.0,
        qps: float = 50.0,
        queue_size: int = 10_000,
        clock: Callable[[], float] | None = None,
        give_up_seconds: float = GIVE_UP_SECONDS,
    ) -> None:
        self.api = api
        self.instance = instance
        self.qps = qps
        self.clock = clock or time.time
        self.buckets = TokenBuckets(burst, refill_seconds)
        self.queue_size = queue_size
        self.give_up_seconds = give_up_seconds
        self.live: collections.deque[Announcement] = collections.deque()
        self.backlog: collections.deque[Announcement] = collections.deque()
        self.retries: list[tuple[float, int, Announcement]] = []
        """A heap of (due, sequence, announcement): failed POSTs waiting to be tried again."""
        self._retry_seq = 0
        self.in_flight = 0
        self._wakeup = asyncio.Event()
        self._retry_wakeup = asyncio.Event()
        self._next_slot = 0.0
        self.ledger: dict[tuple[str, str], float] = {}
        """(namespace, event name) -> when it was last posted (accepted by the API server)."""
        self.unposted: dict[tuple[str, str], Announcement] = {}
        """(namespace, event name) -> queued, in flight or waiting to be retried."""
        self.blocked: dict[tuple[str, str], Announcement] = {}
        """(namespace, pending event name) -> the opposite announcement, waiting for it."""
        self.open: dict[tuple[str, str], Open] = {}
        """Our "started" Events found at startup (``preload``): resolved by the operator once it
        knows their violation is gone (``shell/reconciler.py`` resolve_orphans)."""

    # --- the ledger ------------------------------------------------------------------------

    async def preload(self) -> int:
        """Read the Events this operator posted before (any replica, any earlier run)."""
        items = await self.api.list_all("/api/v1/events", {"fieldSelector": f"source={COMPONENT}"})
        for ev in items:
            meta = ev.get("metadata") or {}
            ns, name = meta.get("namespace", ""), meta.get("name", "")
            self.ledger[(ns, name)] = _stamp(ev)
            if _START_RE.fullmatch(name):
                self.open[(ns, name)] = _open_of(ev, name)
        return len(items)

    def _announced(self, a: Announcement) -> bool:
        ns = a.target.event_namespace
        mine = self.ledger.get((ns, a.name))
        other = self.ledger.get((ns, a.other_name))
        return mine is not None and (other is None or mine >= other)

    def still_open(self, key: tuple[str, str]) -> bool:
        """A "started" Event of the ledger is newer than its "ended" one, and none is pending."""
        o = self.open.get(key)
        if o is None or key in self.unposted or (key[0], o.end_name) in self.unposted:
            return False
        start, end = self.ledger.get(key), self.ledger.get((key[0], o.end_name))
        return start is not None and (end is None or start > end)

    # --- announcing ------------------------------------------------------------------------

    def announce(self, target: Target, identity: str, reason: str, message: str, started: bool,
                 backlog: bool = False) -> bool:
        """Queue an Event for a transition; False when it was a duplicate or was dropped.
        ``backlog``: from a first evaluation, posted after what happens meanwhile."""
        if backlog and started and not self.buckets.available(target.uid, self.clock()):
            # (a first evaluation's thousands on one policy, past its burst: not worth naming)
            metrics.EVENTS_DROPPED.labels(cause="object_rate_limit").inc()
            return False
        start_name, end_name = event_names(target, identity)
        return self.announce_named(target, start_name, end_name, reason, message, started, backlog, identity)

    def announce_named(self, target: Target, start_name: str, end_name: str, reason: str, message: str,
                       started: bool, backlog: bool = False, identity: str = "") -> bool:
        name, other = (start_name, end_name) if started else (end_name, start_name)
        a = Announcement(
            target, reason, "Warning" if started else "Normal", message[:MAX_MESSAGE], name, other,
            time.monotonic(), backlog, identity,
        )
        ns = target.event_namespace
        key, okey = (ns, name), (ns, other)
        if key in self.unposted:
            # Said already, not yet posted. The opposite waiting behind it is cancelled: the
            # violation ended and came back (or the reverse) before either Event went out.
            self.blocked.pop(key, None)
            return False
        if okey in self.unposted:
            if okey in self.blocked:  # this very transition waits already
                return False
            if not self._admit(a):
                return False
            self.blocked[okey] = a
            return True
        if self._announced(a) or not self._admit(a):
            return False
        self._enqueue(a)
        return True

    def _admit(self, a: Announcement) -> bool:
        if not self.buckets.allow(a.target.uid, self.clock()):
            metrics.EVENTS_DROPPED.labels(cause="object_rate_limit").inc()
            return False
        if len(self.live) + len(self.backlog) + len(self.retries) + len(self.blocked) >= self.queue_size:
            if a.backlog or not self.backlog:
                metrics.EVENTS_DROPPED.labels(cause="queue_full").inc()
                return False
            # News goes before the backlog of a first evaluation: the newest of that backlog
            # makes room (and whatever waits behind it).
            evicted = self.backlog.pop()
            key = (evicted.target.event_namespace, evicted.name)
            self.unposted.pop(key, None)
            behind = self.blocked.pop(key, None)
            metrics.EVENTS_DROPPED.labels(cause="queue_full").inc(1 + (behind is not None))
        return True

    def _enqueue(self, a: Announcement) -> None:
        self.unposted[(a.target.event_namespace, a.name)] = a
        (self.backlog if a.backlog else self.live).append(a)
        self._wakeup.set()

    def _done(self, a: Announcement) -> None:
        """Posted, or given up: the opposite announcement waiting for it may go."""
        key = (a.target.event_namespace, a.name)
        self.unposted.pop(key, None)
        waiting = self.blocked.pop(key, None)
        if waiting is not None and not self._announced(waiting):
            self._enqueue(waiting)

    def pending(self) -> int:
        return len(self.live) + len(self.backlog) + self.in_flight + len(self.retries) + len(self.blocked)

    async def drained(self) -> None:
        """Wait until everything queued was posted (or given up)."""
        while self.pending():
            await asyncio.sleep(0.01)

    def retry_now(self) -> None:
        """The API server is back: every failed POST is due now (still at the global rate)."""
        if self.retries:
            self.retries = [(0.0, seq, a) for _, seq, a in self.retries]
            heapq.heapify(self.retries)
            self._retry_wakeup.set()

    async def run(self, workers: int = 4) -> None:
        """Post queued Events with a few workers, at most ``qps`` a second."""
        await asyncio.gather(self._retrier(), *(self._worker() for _ in range(workers)))

    async def _retrier(self) -> None:
        """Moves failed POSTs back to the live queue when they are due."""
        while True:
            self._retry_wakeup.clear()
            now = time.monotonic()
            while self.retries and self.retries[0][0] <= now:
                _, _, a = heapq.heappop(self.retries)
                self.live.append(a)
                self._wakeup.set()
            timeout = self.retries[0][0] - now if self.retries else None
            try:
                await asyncio.wait_for(self._retry_wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _worker(self) -> None:
        interval = 1.0 / self.qps if self.qps > 0 else 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self.live and not self.backlog:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            a = self.live.popleft() if self.live else self.backlog.popleft()
            self.in_flight += 1
            try:
                if interval:  # take the next free slot of the global rate
                    now = loop.time()
                    slot = max(now, self._next_slot)
                    self._next_slot = slot + interval
                    if slot > now:
                        await asyncio.sleep(slot - now)
                posting = time.monotonic()
                if not a.attempts:
                    metrics.EVENT_QUEUE_SECONDS.labels(queue="backlog" if a.backlog else "live").observe(
                        posting - a.queued)
                ns = a.target.event_namespace
                # Strictly after the opposite Event: both may be posted within one clock tick.
                stamp = max(self.clock(), self.ledger.get((ns, a.other_name), 0.0) + 1e-3)
                await self._post(a, stamp)
                metrics.EVENT_POST_SECONDS.observe(time.monotonic() - posting)
                metrics.EVENTS_POSTED.labels(reason=a.reason).inc()
                self.ledger[(ns, a.name)] = stamp
                self._done(a)
            except Exception as err:  # noqa: BLE001 - an Event is not worth crashing for
                self._failed(a, err)
            finally:
                self.in_flight -= 1

    def _failed(self, a: Announcement, err: Exception) -> None:
        status = getattr(err, "status", None)
        if unreachable(err) and hasattr(self.api, "mark_down"):
            self.api.mark_down()  # probed until it answers; then every failed POST goes again (retry_now)
        now = time.monotonic()
        first = a.first_failure if a.first_failure is not None else now
        if status in PERMANENT:
            metrics.EVENTS_DROPPED.labels(cause="rejected").inc()
            log.warning("the API server refused %s event %s/%s: %s", a.reason, a.target.event_namespace, a.name,
                        _short(err))
            self._done(a)
        elif now - first >= self.give_up_seconds:
            metrics.EVENTS_DROPPED.labels(cause="api_error").inc()
            log.warning("gave up posting %s event %s/%s after %.0fs: %s", a.reason, a.target.event_namespace,
                        a.name, now - first, _short(err))
            self._done(a)
        else:
            delay = min(RETRY_FIRST_SECONDS * 2 ** a.attempts, RETRY_MAX_SECONDS)
            metrics.EVENTS_RETRIED.inc()
            if not a.attempts:
                log.warning("could not post %s event %s/%s (trying again): %s", a.reason, a.target.event_namespace,
                            a.name, _short(err))
            self._retry_seq += 1
            heapq.heappush(self.retries, (now + delay, self._retry_seq,
                                          replace(a, attempts=a.attempts + 1, first_failure=first)))
            self._retry_wakeup.set()

    async def _post(self, a: Announcement, stamp: float) -> None:
        """POST the Event; when it exists already, count it again if it is news. Raises
        ``ApiError`` for an answer that is not what was asked for, and whatever the client
        raises when the API server cannot be reached."""
        now = format_time(stamp)
        ns = a.target.event_namespace
        posted = f"{stamp:.6f}"
        meta: dict[str, Any] = {"name": a.name, "namespace": ns, "annotations": {POSTED_ANNOTATION: posted}}
        if a.identity:
            meta["annotations"][VIOLATION_ANNOTATION] = json.dumps(a.identity.split("\0"))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": meta,
            "involvedObject": a.target.involved(),
            "reason": a.reason,
            "message": a.message,
            "type": a.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        events = f"/api/v1/namespaces/{ns}/events"
        code, answer = await self.api.post_json(events, body, timeout=REQUEST_TIMEOUT)
        if code in (200, 201):
            return
        if code != 409:
            raise ApiError(f"POST {events}: HTTP {code}: {status_message(answer)}", code)
        # The Event exists. Whoever posted it (this operator before a restart, or another replica
        # during a rollout, or this one when the answer to its POST was lost), the API server
        # tells whether this is news: it is only if the opposite announcement came after it (the
        # violation ended, and now started again).
        old = await self._read(f"{events}/{a.name}")
        other = await self._read(f"{events}/{a.other_name}", missing_ok=True)
        if old is None or other is None or _stamp(other) <= _stamp(old):
            return
        # It happened again: count it, as client-go's event correlator does.
        patch = {"count": (old.get("count") or 1) + 1, "lastTimestamp": now, "message": a.message,
                 "metadata": {"annotations": {POSTED_ANNOTATION: posted}}}
        code, answer = await self.api.patch_json(f"{events}/{a.name}", patch, timeout=REQUEST_TIMEOUT)
        if code != 200:
            raise ApiError(f"PATCH {events}/{a.name}: HTTP {code}: {status_message(answer)}", code)

    async def _read(self, path: str, missing_ok: bool = False) -> dict[str, Any] | None:
        code, answer = await self.api.get_json(path, timeout=REQUEST_TIMEOUT)
        if code == 404 and missing_ok:
            return None
        if code != 200 or not isinstance(answer, dict):
            raise ApiError(f"GET {path}: HTTP {code}: {status_message(answer)}", code)
        return answer


def _short(err: Exception) -> str:
    text = str(getattr(err, "reason", None) or err) if getattr(err, "status", None) else str(err)
    return text.splitlines()[0][:200] if text else type(err).__name__


def _open_of(ev: dict[str, Any], name: str) -> Open:
    io = ev.get("involvedObject") or {}
    target = Target(io.get("apiVersion") or "v1", io.get("kind") or "", io.get("name") or "", io.get("uid") or "",
                    io.get("namespace") or None)
    raw = ((ev.get("metadata") or {}).get("annotations") or {}).get(VIOLATION_ANNOTATION)
    key: tuple[str, ...] | None = None
    try:
        parsed = json.loads(raw) if raw else None
        if isinstance(parsed, list) and len(parsed) == 6 and all(isinstance(x, str) for x in parsed):
            key = tuple(parsed)
    except ValueError:
        key = None
    return Open(target, str(ev.get("reason") or ""), key, name[:-1] + "e")
