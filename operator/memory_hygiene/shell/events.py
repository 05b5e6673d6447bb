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
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import metrics
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


def _now_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(event: Any) -> float:
    t = event.last_timestamp or event.first_timestamp
    return t.timestamp() if t is not None else 0.0


def event_names(target: Target, identity: str) -> tuple[str, str]:
    """(started, ended) Event names for one violation on one object."""
    digest = hashlib.sha256(f"{target.uid}\0{identity}".encode()).hexdigest()[:16]
    base = target.name[:200]
    return f"{base}.mh{digest}s", f"{base}.mh{digest}e"


class EventSink:
    def __init__(
        self,
        api: Any,
        instance: str,
        burst: int = 25,
        refill_seconds: float = 300.0,
        qps: float = 50.0,
        queue_size: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.api = api
        self.instance = instance
        self.qps = qps
        self.clock = clock or time.time
        self.buckets = TokenBuckets(burst, refill_seconds)
        self.queue_size = queue_size
        self.live: collections.deque[Announcement] = collections.deque()
        self.backlog: collections.deque[Announcement] = collections.deque()
        self.in_flight = 0
        self._wakeup = asyncio.Event()
        self._next_slot = 0.0
        self.ledger: dict[tuple[str, str], float] = {}
        """(namespace, event name) -> when it was last posted."""

    # --- the ledger ------------------------------------------------------------------------

    async def preload(self) -> int:
        """Read the Events this operator posted before (any replica, any earlier run)."""
        from ..core.snapshot import parse_time

        def list_all() -> list[dict[str, Any]]:
            import json

            out, cont = [], None
            while True:
                resp = self.api.list_event_for_all_namespaces(
                    field_selector=f"source={COMPONENT}", limit=500, _continue=cont, _preload_content=False
                )
                body = json.loads(resp.data)
                out.extend(body.get("items") or [])
                cont = (body.get("metadata") or {}).get("continue")
                if not cont:
                    return out

        items = await asyncio.to_thread(list_all)
        for ev in items:
            meta = ev.get("metadata") or {}
            t = parse_time(ev.get("lastTimestamp")) or parse_time(ev.get("firstTimestamp")) or 0.0
            self.ledger[(meta.get("namespace", ""), meta.get("name", ""))] = t
        return len(items)

    def _announced(self, a: Announcement) -> bool:
        ns = a.target.event_namespace
        mine = self.ledger.get((ns, a.name))
        other = self.ledger.get((ns, a.other_name))
        return mine is not None and (other is None or mine >= other)

    # --- announcing ------------------------------------------------------------------------

    def announce(self, target: Target, identity: str, reason: str, message: str, started: bool,
                 backlog: bool = False) -> bool:
        """Queue an Event for a transition; False when it was a duplicate or was dropped.
        ``backlog``: from a first evaluation, posted after what happens meanwhile."""
        start_name, end_name = event_names(target, identity)
        name, other = (start_name, end_name) if started else (end_name, start_name)
        a = Announcement(
            target, reason, "Warning" if started else "Normal", message[:MAX_MESSAGE], name, other,
            time.monotonic(), backlog,
        )
        if self._announced(a):
            return False
        if not self.buckets.allow(target.uid, self.clock()):
            metrics.EVENTS_DROPPED.labels(cause="object_rate_limit").inc()
            return False
        if len(self.live) + len(self.backlog) >= self.queue_size:
            metrics.EVENTS_DROPPED.labels(cause="queue_full").inc()
            return False
        (self.backlog if backlog else self.live).append(a)
        self._wakeup.set()
        # Mark it now, so a second pass before the worker posts it does not queue it twice.
        self.ledger[(target.event_namespace, name)] = self.clock()
        return True

    def pending(self) -> int:
        return len(self.live) + len(self.backlog) + self.in_flight

    async def drained(self) -> None:
        """Wait until everything queued was posted (or failed)."""
        while self.pending():
            await asyncio.sleep(0.01)

    async def run(self, workers: int = 4) -> None:
        """Post queued Events with a few workers (the API calls block), at most ``qps`` a second."""
        await asyncio.gather(*(self._worker() for _ in range(workers)))

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
                metrics.EVENT_QUEUE_SECONDS.labels(queue="backlog" if a.backlog else "live").observe(posting - a.queued)
                await asyncio.to_thread(self._post, a)
                metrics.EVENT_POST_SECONDS.observe(time.monotonic() - posting)
                metrics.EVENTS_POSTED.labels(reason=a.reason).inc()
            except Exception as err:  # noqa: BLE001 - an Event is not worth crashing for
                metrics.EVENTS_DROPPED.labels(cause="api_error").inc()
                log.warning("could not post %s event %s/%s: %s", a.reason, a.target.event_namespace, a.name, err)
            finally:
                self.in_flight -= 1

    def _post(self, a: Announcement) -> None:
        from kubernetes.client import ApiException

        now = _now_iso(self.clock())
        ns = a.target.event_namespace
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": a.name, "namespace": ns},
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
        try:
            self.api.create_namespaced_event(ns, body)
            return
        except ApiException as err:
            if err.status != 409:
                raise
        # The Event exists. Whoever posted it (this operator before a restart, or another replica
        # during a rollout), the API server tells whether this is news: it is only if the opposite
        # announcement came after it (the violation ended, and now started again).
        old = self.api.read_namespaced_event(a.name, ns)
        try:
            other = self.api.read_namespaced_event(a.other_name, ns)
        except ApiException as err:
            if err.status != 404:
                raise
            other = None
        if other is None or _stamp(other) <= _stamp(old):
            return
        # It happened again: count it, as client-go's event correlator does.
        self.api.patch_namespaced_event(
            a.name, ns, {"count": (old.count or 1) + 1, "lastTimestamp": now, "message": a.message}
        )
