"""What the operator's jobs share: one ``Runtime`` per process, created by the kopf startup
handler (``shell/operator.py``) and handed to the handlers in kopf's ``memo``; and the wiring
of the list+watch caches into it.

The jobs, each in the file named after it: the caches (``reflector.py``, reading what
``core/sources.py`` declares), the MemoryPolicies (``policies.py``), the reconcile loop
(``reconciler.py``), the status writes (``status.py``), the Events (``events.py``), the
admission objects (``admission.py``), the PolicyReports (``policyreports.py``) and the metrics
(``metrics.py``). The settings come from ``config.py``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from ..core import sources
from ..core.engine import UNSCHEDULED, ClusterView, Shared
from .api import ApiSession
from .config import Config
from .reconciler import FirstSeen, PolicyState
from .reflector import Buckets, Reflector

if TYPE_CHECKING:
    from .events import EventSink
    from .policyreports import ReportWriter


class Runtime:
    """Everything the operator's jobs share. One per operator process."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self.ready = asyncio.Event()
        """The caches are filled."""
        self.changed = asyncio.Event()
        """Something changed: the reconcile loop runs a pass."""
        self.dirty: dict[str, float] = {}
        """Buckets changed since the last pass -> when the first change was seen (monotonic)."""
        self.full = True
        """The next pass evaluates every bucket."""
        self.policies: dict[str, PolicyState] = {}
        self.shared = Shared()
        """The evaluations every policy shares (core/engine.py)."""
        self.first_seen = FirstSeen()
        self.pending_status: dict[str, PolicyState] = {}
        """Policies whose status may have changed, for ``status.writer``."""
        self.status_wakeup = asyncio.Event()
        self.resync_differed: dict[str, tuple[str, int]] = {}
        """What the last list of MemoryPolicies showed that the watch had not told (policies.resync)."""
        self.deleted: collections.OrderedDict[str, None] = collections.OrderedDict()
        """UIDs of the MemoryPolicies seen deleted (the last 10,000): a list begun earlier brings none back."""
        self.stores: dict[str, Buckets] = {s.name: Buckets() for s in sources.SOURCES}
        self.sink: EventSink | None = None
        self.reports: ReportWriter | None = None
        self.session: ApiSession | None = None
        """The HTTP client of the caches, Events, status and policy lists (``shell/api.py``)."""
        self.tasks: list[asyncio.Task[Any]] = []
        """Run as long as the operator does: /healthz fails when one has ended."""
        self.oneshots: list[asyncio.Task[Any]] = []
        self.admission_changed = asyncio.Event()
        """A MemoryPolicy was created, changed or deleted: its admission objects may have to follow."""
        self.admission_may_list = False
        self.admission_writer: Any = None
        self.enforcing: dict[str, tuple[int | None, tuple[str, str, str]]] = {}
        """MemoryPolicy name -> (generation, its Enforcing condition), for those that enforce."""
        self.reflectors: list[Reflector] = []
        self._once: collections.OrderedDict[tuple, None] = collections.OrderedDict()
        self.orphans_checked = False
        """Our "started" Events whose violation ended while no operator ran were resolved."""
        self.orphans_tried = float("-inf")

    def once(self, key: tuple, keep: int = 50_000) -> bool:
        """True the first time ``key`` is seen (of the last ``keep``): one warning, one count."""
        if key in self._once:
            return False
        self._once[key] = None
        if len(self._once) > keep:
            self._once.popitem(last=False)
        return True

    def mark(self, *buckets: str) -> None:
        now = time.monotonic()
        for b in buckets:
            self.dirty.setdefault(b, now)
        self.changed.set()

    def mark_all(self) -> None:
        self.full = True
        self.changed.set()

    def stale(self, grace: float = 1.0) -> list[str]:
        """Why the caches are not up to date, for /readyz: the API server unreachable, or a
        reflector whose watch failed and whose list again has not completed (for more than
        ``grace`` seconds: a watch reopened at once is not worth a readiness flap)."""
        now = time.monotonic()
        out = []
        if self.session is not None and self.session.down_since is not None:
            out.append(f"the API server does not answer (for {now - self.session.down_since:.0f}s)")
        for r in self.reflectors:
            if r.stale_since is not None and now - r.stale_since > grace:
                out.append(f"{r.resource} not updated for {now - r.stale_since:.0f}s")
        return out

    def pod_exists(self, uid: str) -> bool:
        return uid in self.stores[sources.PODS.name].where

    def view(self) -> ClusterView:
        """The cluster as the caches hold it, for the engine."""
        pods, nodes, events, namespaces = (self.stores[s.name] for s in sources.SOURCES)
        ns_labels = {name: dict(labels) for name, values in namespaces.items() for labels in values}
        return ClusterView(
            node=nodes.first,
            pods_on=pods.values,
            events_on=events.values,
            namespaces=ns_labels,
            buckets=lambda: set(nodes.buckets()) | set(pods.buckets()) | set(events.buckets()) | {UNSCHEDULED},
        )


def reflectors(rt: Runtime, api: ApiSession) -> list[Reflector]:
    """One list+watch cache per ``core.sources.SOURCES`` (the live audit reads the same); a
    change marks the buckets it touched for the next pass."""
    def mark(old: str | None, new: str | None) -> None:
        rt.mark(*(b for b in (old, new) if b is not None))

    def mark_all(old: str | None, new: str | None) -> None:
        rt.mark_all()

    # A namespace's labels decide which pods a policy selects, on every node: all is evaluated again.
    on_change = {sources.NAMESPACES.name: mark_all}
    c = rt.config
    return [Reflector(api, s.path, convert=s.convert, store=rt.stores[s.name], on_change=on_change.get(s.name, mark),
                      field_selector=s.field_selector, chunk=c.chunk_size, watch_list=c.watch_list)
            for s in sources.SOURCES]
