"""The operator: reflectors (list+watch caches) of Pods, Nodes, Namespaces and OOM Events, kopf
for the MemoryPolicies, and one reconcile loop that evaluates every policy incrementally.

House rule: the operator writes nothing but Events, MemoryPolicy status and the admission
policies a MemoryPolicy asks for (``shell/admission.py``). Pods, Nodes,
Namespaces and Events are read with LIST and WATCH only (``shell/reflector.py``; kopf's
per-object machinery costs too much at 150,000 pods, see docs/benchmarks.md). MemoryPolicies are
watched with ``@kopf.on.event``, so kopf keeps no progress or diff-base annotations on them.

Runnable as ``memory-hygiene run`` or as ``kopf run -m memory_hygiene.shell.operator -A``.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..core import policy as P
from ..core import ruletable, sources
from ..core.engine import UNSCHEDULED, ClusterView, PolicyEngine, Shared
from ..core.rules import SILENT_OOM, Violation
from . import admission, metrics, permissions
from .events import EventSink, Target
from .policyreports import ReportWriter
from .reflector import ApiSession, Buckets, Reflector
from .status import build_status, comparable, condition, invalid_status, iso, seen_from_status, status_key

log = logging.getLogger("memory_hygiene.operator")


@dataclass
class Options:
    max_status_violations: int = 100
    event_burst: int = 25
    event_refill_seconds: float = 300.0
    event_qps: float = 50.0
    debounce_seconds: float = 0.05
    resync_seconds: float = 30.0
    """How often buckets with OOM events are looked at again, as events age out of the lookback."""
    status_interval: float = 2.0
    """At most one status write per policy in this many seconds (under churn every pass changes
    the counts); the first write, and a new generation's, go at once."""
    policy_reports: bool = False
    """Also write PolicyReports (shell/policyreports.py); opt-in, with its own RBAC."""
    policy_report_max_results: int = 1000

    @classmethod
    def from_env(cls) -> Options:
        o = cls()
        for f, conv in (("max_status_violations", int), ("event_burst", int), ("event_refill_seconds", float),
                        ("event_qps", float), ("resync_seconds", float), ("status_interval", float)):
            value = os.environ.get(f"MEMORY_HYGIENE_{f.upper()}")
            if value:
                setattr(o, f, conv(value))
        return o


@dataclass
class PolicyState:
    name: str
    uid: str
    generation: int | None
    engine: PolicyEngine | None
    error: str | None = None
    previous: list[Violation] | None = None
    """Until this generation's first pass: the violations of the generation before (its Events
    were announced), to compare with; then None (the engine holds what is current)."""
    last_status: dict[str, Any] | None = None
    seeded_first_seen: dict[tuple, str] = field(default_factory=dict)
    needs_write: bool = True
    asked: int = 0
    """Bumped whenever something outside the engine changed its status (the Enforcing
    condition): a write of a status built before that does not clear ``needs_write``."""
    last_write: float = float("-inf")
    """time.monotonic() of the last status write."""
    write_due: bool = False
    """A newer status waits for the end of the interval (a pass is scheduled for then)."""
    exported_nodes: set[str] = field(default_factory=set)
    gauges: dict[tuple, float] = field(default_factory=dict)
    """(gauge, label values) -> the value last exported for this policy."""
    evaluated: bool = False
    """Its first pass is done: the engine holds every violation now."""
    seen_at: float = field(default_factory=time.monotonic)
    """When this generation was delivered (time.monotonic())."""


def held(state: PolicyState) -> Iterable[Violation]:
    """The violations a policy has announced and not yet ended."""
    if state.evaluated and state.engine is not None:
        return state.engine.violations()
    return state.previous or ()


class FirstSeen:
    """When each violation was first seen, one entry for every policy that holds it (with a
    count of them): a violation's Events, status and first-seen time cost each policy nothing
    but the engine's reference to it (300 policies held 2 dicts of every violation before)."""

    def __init__(self) -> None:
        self._seen: dict[tuple, list] = {}

    def add(self, key: tuple, now: float) -> None:
        entry = self._seen.get(key)
        if entry is None:
            self._seen[key] = [now, 1, None]
        else:
            entry[1] += 1

    def remove(self, key: tuple) -> None:
        entry = self._seen.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._seen[key]

    def get(self, key: tuple) -> float | None:
        entry = self._seen.get(key)
        return entry[0] if entry is not None else None

    def text(self, key: tuple) -> str | None:
        """``get`` as RFC 3339 (made once: every pass's status shows it)."""
        entry = self._seen.get(key)
        if entry is None:
            return None
        if entry[2] is None:
            entry[2] = iso(entry[0])
        return entry[2]

    def __contains__(self, key: tuple) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)


class Runtime:
    """Everything the handlers share. One per operator process."""

    def __init__(self) -> None:
        self.options = Options.from_env()
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self.dirty: dict[str, float] = {}
        """Buckets changed since the last pass -> when the first change was seen (monotonic)."""
        self.full = True
        self.policies: dict[str, PolicyState] = {}
        self.shared = Shared()
        """The evaluations every policy shares (core/engine.py)."""
        self.first_seen = FirstSeen()
        self.pending_status: dict[str, PolicyState] = {}
        """Policies whose status may have changed, for ``status_writer``."""
        self.status_wakeup = asyncio.Event()
        self.resync_differed: dict[str, tuple[str, int]] = {}
        """What the last list of MemoryPolicies showed that the watch had not told (resync_policies)."""
        self.deleted: collections.OrderedDict[str, None] = collections.OrderedDict()
        """UIDs of the MemoryPolicies seen deleted (the last 10,000): a list begun earlier brings none back."""
        self.stores: dict[str, Buckets] = {k: Buckets() for k in ("pods", "nodes", "events", "namespaces")}
        self.sink: EventSink | None = None
        self.reports: ReportWriter | None = None
        self.api: Any = None
        self.custom: Any = None
        self.tasks: list[asyncio.Task[Any]] = []
        """Run as long as the operator does: /healthz fails when one has ended."""
        self.oneshots: list[asyncio.Task[Any]] = []
        self.session: ApiSession | None = None
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
        self._orphans_tried = float("-inf")

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
        return uid in self.stores["pods"].where

    def mark_all(self) -> None:
        self.full = True
        self.changed.set()

    # --- the cluster, as the reflectors hold it ----------------------------------------------

    def view(self) -> ClusterView:
        pods, nodes, events, namespaces = (self.stores[k] for k in ("pods", "nodes", "events", "namespaces"))
        ns_labels = {name: dict(labels) for name, values in namespaces.items() for labels in values}
        return ClusterView(
            node=nodes.first,
            pods_on=pods.values,
            events_on=events.values,
            namespaces=ns_labels,
            buckets=lambda: set(nodes.buckets()) | set(pods.buckets()) | set(events.buckets()) | {UNSCHEDULED},
        )


RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    global RUNTIME
    if RUNTIME is None:
        RUNTIME = Runtime()
    return RUNTIME


# --- the caches: what is read is declared once, in core/sources.py ------------------------------


def reflectors(rt: Runtime, api: ApiSession, chunk: int, watch_list: bool = False) -> list[Reflector]:
    """One list+watch cache per ``core.sources.SOURCES`` (the live audit reads the same)."""
    def mark(old: str | None, new: str | None) -> None:
        rt.mark(*(b for b in (old, new) if b is not None))

    def mark_all(old: str | None, new: str | None) -> None:
        rt.mark_all()

    # A namespace's labels decide which pods a policy selects, on every node: all is evaluated again.
    on_change = {sources.NAMESPACES.name: mark_all}
    return [Reflector(api, s.path, convert=s.convert, store=rt.stores[s.name], on_change=on_change.get(s.name, mark),
                      field_selector=s.field_selector, chunk=chunk, watch_list=watch_list)
            for s in sources.SOURCES]


@kopf.on.event(P.GROUP, P.VERSION, P.PLURAL)
def policy_event(type: str | None, name: str, body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    observe_policy(runtime(), type, name, body, logger)


def observe_policy(rt: Runtime, type: str | None, name: str, body: Any, logger: logging.Logger | None = None) -> None:
    """A MemoryPolicy as kopf delivers it (``type`` "DELETED" when it is gone), or as the
    periodic list found it (``resync_policies``)."""
    logger = logger or log
    meta = body.get("metadata") or {}
    if type == "DELETED":
        rt.admission_changed.set()
        gone = rt.policies.pop(name, None)
        if gone is not None:
            for v in held(gone):
                rt.first_seen.remove(v.key)
            rt.deleted[gone.uid] = None
            while len(rt.deleted) > 10_000:
                rt.deleted.popitem(last=False)
        if rt.reports is not None:
            rt.reports.forget(name)
        for node in gone.exported_nodes if gone is not None else ():
            try:
                metrics.NODE_LIMITS_RATIO.remove(name, node)
            except KeyError:
                pass
        for rule in ruletable.TABLE:
            try:
                metrics.VIOLATIONS.remove(name, rule.metric_label)
            except KeyError:
                pass
        return
    generation = meta.get("generation")
    uid = meta.get("uid", "")
    state = rt.policies.get(name)
    if state is not None and state.uid == uid and state.generation == generation:
        return  # our own status write, or a label change: nothing to evaluate again
    previous_status = dict(body.get("status") or {})
    try:
        spec = P.parse_spec(dict(body.get("spec") or {}))
        engine, error = PolicyEngine(name, spec), None
    except P.PolicyError as err:
        engine, error = None, str(err)
        logger.error("invalid MemoryPolicy %s: %s", name, err)
    new = PolicyState(name=name, uid=uid, generation=generation, engine=engine, error=error)
    if state is not None and state.uid == uid:
        new.previous, new.last_status = list(held(state)), state.last_status
    else:
        if state is not None:  # the same name, another object: what the old one held ends here
            for v in held(state):
                rt.first_seen.remove(v.key)
        new.last_status = previous_status or None
        new.seeded_first_seen = seen_from_status(previous_status)
    rt.policies[name] = new
    rt.changed.set()
    rt.admission_changed.set()


def resync_policies(rt: Runtime, items: list[dict], listed_since: float) -> list[str]:
    """Repair what kopf's watch missed, from a list of every MemoryPolicy begun at monotonic
    time ``listed_since``: a policy it never delivered, a newer generation, one deleted.

    kopf stops watching a resource whose CRD is deleted, and rescans when a CRD event comes; when
    the CRD is created again, the API server's discovery can lag behind its last event (Established),
    and kopf then never watches it again (seen here: 1 in 3 re-creations). A watch is also a little
    behind a list: what differs is repaired only when the list before this one (a resync earlier)
    differed the same way, and only what is certainly newer than what we hold is taken
    (generations only grow; a deleted UID never comes back). Returns what was repaired, to log."""
    listed: dict[str, dict] = {}
    for item in items:
        meta = item.get("metadata") or {}
        if meta.get("name") and meta.get("uid") not in rt.deleted:
            listed[meta["name"]] = item
    differs: dict[str, tuple[str, int]] = {}
    for name, item in listed.items():
        meta = item["metadata"]
        state = rt.policies.get(name)
        uid, generation = meta.get("uid", ""), meta.get("generation") or 0
        if (state is None or (state.uid != uid and state.seen_at < listed_since)
                or (state.uid == uid and generation > (state.generation or 0))):
            differs[name] = (uid, generation)
    for name, state in rt.policies.items():
        if name not in listed and state.seen_at < listed_since:
            differs[name] = ("", 0)  # gone
    repaired: list[str] = []
    for name, what in differs.items():
        if rt.resync_differed.get(name) != what:
            continue  # the watch may just not have told it yet
        observe_policy(rt, "DELETED" if what == ("", 0) else None, name, listed.get(name, {}))
        repaired.append(name)
    rt.resync_differed = {n: w for n, w in differs.items() if n not in repaired}
    return repaired


# --- the reconcile loop ------------------------------------------------------------------------


def _target_of(v: Violation) -> Target:
    if v.kind == "Pod":
        return Target("v1", "Pod", v.name, v.uid, v.namespace)
    return Target("v1", "Node", v.name, v.uid)


def _policy_target(state: PolicyState) -> Target:
    return Target(f"{P.GROUP}/{P.VERSION}", P.KIND, state.name, state.uid)


def _object_text(v: Violation) -> str:
    return _key_text(v.kind, v.namespace, v.name, v.container)


def _key_text(kind: str, namespace: str | None, name: str, container: str | None) -> str:
    text = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    return text + (f" container {container}" if container else "")


def announce_transitions(rt: Runtime, state: PolicyState, prior: Iterable[Violation] | None, now: float,
                         view: ClusterView, backlog: bool = False) -> None:
    """Events for violations that started or ended since the last pass (``backlog``: the first
    pass of a policy, whose Events go after the news of later passes).

    ``prior``: every violation before this pass, compared with every one now; None: only the
    buckets the engine's last refresh changed are compared (a pass then costs what changed)."""
    sink = rt.sink
    assert state.engine is not None
    if prior is None:
        started, ended = state.engine.changes()
    else:
        before = {v.key: v for v in prior}
        current = {v.key: v for v in state.engine.violations()}
        started = [v for k, v in current.items() if k not in before]
        ended = [v for k, v in before.items() if k not in current]
    policy_target = _policy_target(state)
    for v in started:
        rt.first_seen.add(v.key, now)
        if sink is not None:
            identity = "\0".join(v.key)
            sink.announce(_target_of(v), identity, v.rule, v.message, started=True, backlog=backlog)
            sink.announce(policy_target, identity, v.rule, f"{_object_text(v)}: {v.message}",
                          started=True, backlog=backlog)
    for v in ended:
        rt.first_seen.remove(v.key)
        reason = ruletable.BY_NAME[v.rule].resolved_reason
        if sink is None or reason is None:
            continue  # an OOM kill does not "end": it ages out of the lookback
        text = f"{_object_text(v)} no longer violates {v.rule}"
        identity = "\0".join(v.key)
        exists = view.node(v.name) is not None if v.kind == "Node" else rt.pod_exists(v.uid)
        if exists:  # no Event on a deleted object; the policy still tells it
            sink.announce(_target_of(v), identity, reason, text, started=False)
        sink.announce(_policy_target(state), identity, reason, text, started=False)


async def resolve_orphans(rt: Runtime, retry_seconds: float = 2.0) -> int:
    """After a restart: a "started" Event of ours (found by ``EventSink.preload``) whose violation
    is gone now gets its "…Resolved" (the violation ended while no operator ran, or its Resolved
    was never posted). Done once, when every MemoryPolicy the API server holds has had its first
    pass here (so ``active`` is complete); the API server stays the ledger, so a peer doing the
    same posts nothing twice. Returns how many were announced."""
    sink = rt.sink
    if sink is None or not sink.open:
        rt.orphans_checked = True
        return 0
    if time.monotonic() - rt._orphans_tried < retry_seconds:
        return 0
    rt._orphans_tried = time.monotonic()

    def listed() -> set[str]:
        body = rt.custom.list_cluster_custom_object(P.GROUP, P.VERSION, P.PLURAL, _request_timeout=30)
        return {(i.get("metadata") or {}).get("uid", "") for i in body.get("items") or []}

    uids = await asyncio.to_thread(listed)
    by_uid = {s.uid: s for s in rt.policies.values()}
    if any(u not in by_uid or (by_uid[u].engine is not None and not by_uid[u].evaluated) for u in uids):
        return 0  # not every policy evaluated yet: next pass
    valid = [s for s in rt.policies.values() if s.engine is not None]
    all_valid = len(valid) == len(rt.policies)
    keys: dict[str, set[tuple]] = {}

    def holds(state: PolicyState, key: tuple) -> bool:
        if state.uid not in keys:
            keys[state.uid] = {v.key for v in held(state)}
        return key in keys[state.uid]

    view = rt.view()
    resolved = 0
    for (ns, name), o in list(sink.open.items()):
        if o.key is None or o.key[0] == SILENT_OOM or not sink.still_open((ns, name)):
            continue  # no annotation (an older Event): cannot tell which violation it was
        rule, kind, namespace, obj, container, _ = o.key
        if o.target.kind == P.KIND:
            state = by_uid.get(o.target.uid)
            if state is None or state.engine is None or holds(state, o.key):
                continue
        else:
            exists = view.node(o.target.name) is not None if o.target.kind == "Node" else rt.pod_exists(o.target.uid)
            if not all_valid or not exists or o.key in rt.first_seen:
                continue
        text = f"{_key_text(kind, namespace or None, obj, container or None)} no longer violates {rule}"
        if sink.announce_named(o.target, name, o.end_name, f"{rule}Resolved", text, started=False,
                               identity="\0".join(o.key)):
            resolved += 1
    sink.open.clear()
    rt.orphans_checked = True
    if resolved:
        log.info("%d violations ended while no operator ran: their Resolved Events are queued", resolved)
    return resolved


def status_due_in(rt: Runtime, state: PolicyState, now: float) -> float:
    """Seconds until the policy's next status write may go (at most one per
    ``--status-interval``; at once when ``needs_write``); 0 or less: now."""
    return 0.0 if state.needs_write else state.last_write + rt.options.status_interval - now


async def write_status(rt: Runtime, state: PolicyState, status: dict[str, Any], asked: int | None = None) -> None:
    """Write a status built when ``state.asked`` was ``asked`` (None: now), at most once per
    ``--status-interval`` unless ``needs_write``."""
    if asked is None:
        asked = state.asked
    if comparable(status) == comparable(state.last_status) and not state.needs_write:
        return
    wait = status_due_in(rt, state, time.monotonic())
    if wait > 0:
        if not state.write_due:  # a pass then writes what is newest by that time
            state.write_due = True
            asyncio.get_running_loop().call_later(wait, rt.changed.set)
        return
    state.write_due = False
    state.last_write = time.monotonic()
    try:
        assert rt.session is not None
        code, answer = await rt.session.patch_json(
            f"/apis/{P.GROUP}/{P.VERSION}/{P.PLURAL}/{state.name}/status", {"status": status})
        if code != 200:
            raise RuntimeError(f"HTTP {code}: {str(answer)[:300]}")
        state.last_status = status
        if state.asked == asked:  # else asked for again while this one was on its way
            state.needs_write = False
        metrics.STATUS_WRITES.labels(result="ok").inc()
    except Exception as err:  # noqa: BLE001 - logged, retried on the next pass
        metrics.STATUS_WRITES.labels(result="error").inc()
        log.warning("could not write the status of MemoryPolicy %s: %s", state.name, err)


FIRST_PASS_BUDGET_SECONDS = 0.3
"""A pass evaluates new policies (a first pass reads the whole cluster) for about this long (at
least one of them), after the policies already evaluated; the rest wait for the next passes, so that news from the cluster is never
held up behind hundreds of policies created at once."""

STATUS_WRITERS = 8
"""Status writes in flight at once (``status_writer``)."""


async def reconcile_once(rt: Runtime, dirty: set[str] | None, now: float) -> None:
    view = rt.view()
    shared = rt.shared
    shared.new_pass(dirty)
    new_since: float | None = None
    """When this pass began the first passes of new policies."""
    # the policies already evaluated first (what changed, for each: the news), then new ones
    states = sorted(rt.policies.values(), key=lambda s: not s.evaluated)
    writes: list[PolicyState] = []
    deferred = False
    for state in states:
        if state.engine is None:
            writes.append(state)
            continue
        first_pass = not state.evaluated
        if first_pass:
            if new_since is None:
                new_since = time.perf_counter()
            elif time.perf_counter() - new_since > FIRST_PASS_BUDGET_SECONDS:
                deferred = True
                continue
        started = time.perf_counter()
        whole = first_pass or dirty is None  # compare everything; else only what changed
        prior = (state.previous or []) if first_pass else list(state.engine.violations()) if whole else None
        unparsed = state.engine.refresh(view, None if whole else dirty, now, shared)
        state.evaluated, state.previous = True, None
        metrics.RECONCILE_SECONDS.labels(policy=state.name).observe(time.perf_counter() - started)
        if not whole and not state.engine.changed and not unparsed and not state.engine.skipped \
                and not state.needs_write and not state.write_due:
            continue  # none of its buckets changed: nor did its Events, gauges or status
        for ev in unparsed:
            metrics.UNPARSED_OOM_EVENTS.inc()
            log.warning("skipped %s event %s on node %s: no kernel OOM line in %r", ev.reason, ev.uid, ev.node,
                        ev.message[:200])
        for sk in state.engine.skipped:  # once over every policy and pass: a counter and one warning
            if rt.once((sk.cause, sk.node, sk.event.uid if sk.event is not None else "")):
                metrics.OOM_SKIPPED.labels(cause=sk.cause).inc()
                what = (f"{sk.event.reason} event {sk.event.namespace}/{sk.event.name or sk.event.uid}"
                        if sk.event is not None else "OOM incidents")
                log.warning("%s on node %s: %s (%s; MemoryPolicy %s)", what, sk.node, sk.detail, sk.cause, state.name)
        announce_transitions(rt, state, prior, now, view, backlog=first_pass)
        _export_metrics(state, whole)
        if rt.reports is not None:
            rt.reports.observe(state.name, state.engine, whole, lambda v: rt.first_seen.get(v.key))
        writes.append(state)
    shared.end_pass()
    shared.retain({s.engine.keys.oom for s in rt.policies.values() if s.engine is not None})
    if deferred:
        rt.changed.set()  # the next pass takes the next new policies
    for state in writes:  # their status is built and written by status_writer, when due
        rt.pending_status[state.name] = state
    if writes:
        rt.status_wakeup.set()


def policy_status(rt: Runtime, state: PolicyState, now: float) -> dict[str, Any]:
    """The status of one policy now, from its engine (or its error)."""
    if state.engine is None:
        return invalid_status(state.error or "invalid spec", state.generation, state.last_status, now)

    def first_seen(v: Violation) -> str | None:
        seeded = state.seeded_first_seen.get(status_key(v.rule, v.kind, v.namespace, v.name, v.container))
        return seeded or rt.first_seen.text(v.key)

    status = build_status(state.engine, state.generation, first_seen, state.last_status,
                          rt.options.max_status_violations, now)
    enforcing = rt.enforcing.get(state.name)
    if enforcing is not None:
        status["conditions"].append(condition("Enforcing", *enforcing[1], enforcing[0], state.last_status, now))
    return status


async def status_writer(rt: Runtime) -> None:
    """Builds and writes the status of the policies the passes changed, when each one's is due
    (at most one write per policy every ``--status-interval``; the first, and a new generation's,
    at once), ``STATUS_WRITERS`` at a time. Apart from the passes: 300 policies' statuses, built
    and written every pass, held up the next pass and the news it brings."""
    writers = asyncio.Semaphore(STATUS_WRITERS)
    busy: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def write(state: PolicyState, status: dict[str, Any], asked: int) -> None:
        try:
            async with writers:
                if rt.policies.get(state.name) is state:  # not deleted or changed meanwhile
                    await write_status(rt, state, status, asked)
        finally:
            busy.discard(state.name)
            if state.name in rt.pending_status:
                rt.status_wakeup.set()

    while True:
        await rt.status_wakeup.wait()
        rt.status_wakeup.clear()
        now = time.monotonic()
        soonest: float | None = None
        built = 0
        for name in list(rt.pending_status):
            state = rt.pending_status.get(name)  # (a pass may have run at the sleep below)
            if state is None or name in busy:
                continue
            if rt.policies.get(name) is not state:  # deleted, or a new generation (pending itself)
                del rt.pending_status[name]
                continue
            wait = status_due_in(rt, state, now)
            if wait > 0:
                soonest = wait if soonest is None else min(soonest, wait)
                continue
            del rt.pending_status[name]
            busy.add(name)
            task = asyncio.create_task(write(state, policy_status(rt, state, time.time()), state.asked))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            built += 1
            if built % 20 == 0:
                await asyncio.sleep(0)  # hundreds due at once: let the watches and passes in between
        if soonest is not None:
            loop.call_later(soonest, rt.status_wakeup.set)


def _export_metrics(state: PolicyState, whole: bool = True) -> None:
    """The policy's gauges; ``whole``: every node's, else only those of the buckets that changed."""
    assert state.engine is not None
    engine = state.engine
    last = state.gauges

    def put(gauge: Any, labels: tuple[str, ...], value: float) -> None:
        # labels() takes a lock and builds a child each time: only for a value that changed
        if last.get((gauge, labels)) != value:
            gauge.labels(*labels).set(value)
            last[(gauge, labels)] = value

    for rule in ruletable.TABLE:
        put(metrics.VIOLATIONS, (state.name, rule.metric_label), engine.count(rule.name))
    if whole:
        reports = [r.node for r in engine.results.values() if r.node is not None]
        gone = set(state.exported_nodes)
    else:
        reports = [a.node for _, a in engine.changed.values() if a is not None and a.node is not None]
        gone = {b.node.name for b, _ in engine.changed.values() if b is not None and b.node is not None}
    for n in reports:
        if n.limits_percent is not None:
            put(metrics.NODE_LIMITS_RATIO, (state.name, n.name), n.limits_percent / 100.0)
            state.exported_nodes.add(n.name)
            gone.discard(n.name)
    for name in gone & state.exported_nodes:
        state.exported_nodes.discard(name)
        last.pop((metrics.NODE_LIMITS_RATIO, (state.name, name)), None)
        try:
            metrics.NODE_LIMITS_RATIO.remove(state.name, name)
        except KeyError:
            pass
    for attribution in ("memcg", "oomScoreAdj", "none"):
        for silent in (True, False):
            put(metrics.OOM_KILLS, (state.name, attribution, str(silent).lower()), engine.oom_count(attribution, silent))


async def reconcile_loop(rt: Runtime) -> None:
    await rt.ready.wait()
    last_pass = 0.0
    while True:
        try:
            await asyncio.wait_for(rt.changed.wait(), timeout=rt.options.resync_seconds)
        except asyncio.TimeoutError:
            pass
        # Let a burst of watch events coalesce; and after a long pass, wait as long again (but never
        # longer than the status interval), so that evaluating takes about half of the CPU at most
        # however fast the cluster changes.
        await asyncio.sleep(max(rt.options.debounce_seconds, min(last_pass, rt.options.status_interval)))
        rt.changed.clear()
        marked, full = rt.dirty, rt.full
        rt.dirty, rt.full = {}, False
        started = time.monotonic()
        try:
            await reconcile_once(rt, None if full else set(marked), time.time())
        except Exception:  # noqa: BLE001 - keep the loop alive; the next pass evaluates everything
            log.exception("reconcile pass failed")
            rt.full = True
        if not rt.orphans_checked:
            try:
                await resolve_orphans(rt)
            except Exception:  # noqa: BLE001 - tried again after the next pass
                log.exception("resolving Events of violations that ended while no operator ran failed")
        ended = time.monotonic()
        last_pass = ended - started
        metrics.PASS_SECONDS.observe(last_pass)
        if not full:
            for t in marked.values():
                metrics.CHANGE_EVALUATED.observe(ended - t)


async def admission_loop(rt: Runtime) -> None:
    """Keep every MemoryPolicy's admission objects in step with it (``shell/admission.py``): on
    each policy change, and every resync (to read the API server's type-checking warnings, and
    to repair what someone else changed or deleted). The policies are listed afresh each time,
    so none is taken for deleted because kopf has not delivered it yet."""
    namespace = admission.operator_namespace()
    while True:
        try:
            await asyncio.wait_for(rt.admission_changed.wait(), timeout=rt.options.resync_seconds)
        except asyncio.TimeoutError:
            pass
        rt.admission_changed.clear()
        try:
            listed_since = time.monotonic()
            listed = await asyncio.to_thread(rt.custom.list_cluster_custom_object, P.GROUP, P.VERSION, P.PLURAL)
            items = listed.get("items") or []
            repaired = resync_policies(rt, items, listed_since)
            if repaired:
                metrics.POLICY_RESYNCS.inc(len(repaired))
                log.warning("the watch of MemoryPolicies missed %s: taken from the periodic list",
                            ", ".join(sorted(repaired)))
            policies = admission.live_policies(items)
            result = await asyncio.to_thread(admission.sync, rt.admission_writer, policies, namespace,
                                             rt.admission_may_list)
        except Exception:  # noqa: BLE001 - keep the loop alive; tried again on the next resync
            log.exception("admission pass failed")
            continue
        rt.admission_may_list = result.listed or (rt.admission_may_list and not result.conditions)
        generations = {(i.get("metadata") or {}).get("name"): (i.get("metadata") or {}).get("generation")
                       for i in items}
        enforcing = {name: (generations.get(name), cond) for name, cond in result.conditions.items()}
        if enforcing != rt.enforcing:
            rt.enforcing = enforcing
            for name in enforcing.keys() | rt.policies.keys():
                if name in rt.policies:
                    rt.policies[name].needs_write = True
                    rt.policies[name].asked += 1
            rt.changed.set()


async def loop_lag_probe(period: float = 0.25) -> None:
    """Measure how late the event loop runs a timer (a pass or a page parsed in the loop blocks it)."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(period)
        metrics.LOOP_LAG.observe(max(0.0, time.monotonic() - t - period))


# --- lifecycle ---------------------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    from kubernetes import client, config

    rt = runtime()
    configure(settings)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await asyncio.to_thread(config.load_kube_config, os.environ.get("KUBECONFIG"))
    o = rt.options
    lacking = await asyncio.to_thread(permissions.missing, client.ApiClient(), policy_reports=o.policy_reports)
    if lacking:
        for need in lacking:
            logger.error("RBAC: this service account may not %s, needed for %s", need, need.why)
        raise kopf.PermanentError(
            f"missing {len(lacking)} RBAC permissions (see manifests/base/clusterrole.yaml); stopping"
        )
    rt.api = client.CoreV1Api()
    rt.custom = client.CustomObjectsApi()
    rt.admission_may_list = await asyncio.to_thread(admission.may_list, client.ApiClient())
    rt.admission_writer = admission.Writer(client.ApiClient())
    logger.info("admission enforcement RBAC (%s): %s", admission.OVERLAY,
                "present" if rt.admission_may_list else "absent: a MemoryPolicy that asks for enforcement will say so")
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    rt.sink = EventSink(rt.api, instance, o.event_burst, o.event_refill_seconds, o.event_qps)
    n = await rt.sink.preload()
    logger.info("found %d events posted by earlier runs", n)
    rt.session = ApiSession()
    sink = rt.sink
    rt.session.on_up.append(sink.retry_now)  # failed Event POSTs go again as soon as it answers
    chunk = int(os.environ.get("MEMORY_HYGIENE_CHUNK_SIZE", "500"))
    watch_list = os.environ.get("MEMORY_HYGIENE_WATCH_LIST", "true").lower() not in ("0", "false", "no", "off")
    refl = rt.reflectors = reflectors(rt, rt.session, chunk, watch_list)
    for r in refl:
        rt.tasks.append(asyncio.create_task(r.run(), name=f"memory-hygiene reflector {r.resource}"))

    async def synced() -> None:
        started = time.monotonic()
        # The caches grow by millions of small acyclic objects while they fill: the cyclic garbage
        # collector would scan them again and again (15-20 % of the CPU of a 150,000-pod sync).
        # Off until they are full, then what they hold is frozen out of its reach for good; what
        # comes later is collected as usual (and the acyclic rest by reference counting anyway).
        gc.disable()
        try:
            await asyncio.gather(*(r.synced.wait() for r in refl))
        finally:
            gc.freeze()
            gc.enable()
        logger.info("caches filled in %.1fs: %d pods, %d nodes, %d OOM events, %d namespaces",
                    time.monotonic() - started, *(len(rt.stores[k]) for k in ("pods", "nodes", "events", "namespaces")))
        rt.ready.set()

    rt.oneshots.append(asyncio.create_task(synced(), name="memory-hygiene synced"))
    rt.tasks.append(asyncio.create_task(rt.sink.run(), name="memory-hygiene events"))
    if o.policy_reports:
        rt.reports = ReportWriter(rt.custom, o.policy_report_max_results, o.status_interval)
        logger.info("found %d PolicyReports written by earlier runs", await rt.reports.preload())
        rt.tasks.append(asyncio.create_task(rt.reports.run(), name="memory-hygiene policy reports"))
    rt.tasks.append(asyncio.create_task(reconcile_loop(rt), name="memory-hygiene reconcile"))
    rt.tasks.append(asyncio.create_task(status_writer(rt), name="memory-hygiene status"))
    rt.tasks.append(asyncio.create_task(loop_lag_probe(), name="memory-hygiene loop lag"))
    rt.tasks.append(asyncio.create_task(admission_loop(rt), name="memory-hygiene admission"))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    rt = runtime()
    for t in rt.tasks + rt.oneshots:
        t.cancel()
    await asyncio.gather(*rt.tasks, *rt.oneshots, return_exceptions=True)
    rt.tasks.clear()
    rt.oneshots.clear()
    if rt.session is not None:
        await rt.session.close()
        rt.session = None


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf watches only MemoryPolicies (and CRDs, for discovery)."""
    settings.watching.chunk_size = int(os.environ.get("MEMORY_HYGIENE_CHUNK_SIZE", "500"))
    settings.posting.enabled = False  # kopf's own per-handler Events: we post our own
    # kopf removes its finalizer from any watched object that carries it (e.g. left by another
    # kopf operator): a name of our own, which nothing ever sets, means it never patches one.
    settings.persistence.finalizer = "memoryhygiene.io/never-set"
