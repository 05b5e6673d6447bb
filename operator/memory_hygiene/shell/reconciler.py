"""The reconcile loop: one pass evaluates every MemoryPolicy over what changed in the caches
(``core/engine.py``: rules evaluated once per object and shared by the policies), announces
the violations that started or ended (``shell/events.py``), keeps when each was first seen,
exports the gauges and hands the policies whose status may have changed to ``shell/status.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core import policy as P
from ..core import ruletable
from ..core.engine import ClusterView, PolicyEngine
from ..core.rules import SILENT_OOM, Violation
from ..core.snapshot import format_time
from . import metrics
from .events import Target

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("memory_hygiene.reconciler")


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
            entry[2] = format_time(entry[0])
        return entry[2]

    def __contains__(self, key: tuple) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)


FIRST_PASS_BUDGET_SECONDS = 0.3
"""A pass evaluates new policies (a first pass reads the whole cluster) for about this long (at
least one of them), after the policies already evaluated; the rest wait for the next passes, so that news from the cluster is never
held up behind hundreds of policies created at once."""

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


YIELD_SECONDS = 0.02
"""A pass lets the event loop run (the watches, Event posts, status writes, /metrics) after
about this much evaluating: 300 policies' pass held it for a second."""


async def reconcile_once(rt: Runtime, dirty: set[str] | None, now: float) -> float:
    """One pass: every policy over the buckets in ``dirty`` (all when None). Returns the
    seconds spent evaluating news (the pass's wall time less what others ran meanwhile, and
    less the first passes of new policies, which ``FIRST_PASS_BUDGET_SECONDS`` bounds): the
    pause after it is as long."""
    view = rt.view()
    shared = rt.shared
    shared.new_pass(dirty)
    new_since: float | None = None
    """When this pass began the first passes of new policies."""
    # the policies already evaluated first (what changed, for each: the news), then new ones
    states = sorted(rt.policies.values(), key=lambda s: not s.evaluated)
    writes: list[PolicyState] = []
    deferred = False
    busy = first_busy = 0.0
    slice_began = time.perf_counter()
    for state in states:
        if time.perf_counter() - slice_began > YIELD_SECONDS:
            busy += time.perf_counter() - slice_began
            await asyncio.sleep(0)
            slice_began = time.perf_counter()
        if rt.policies.get(state.name) is not state:
            continue  # deleted or changed meanwhile (what it held was let go: policies.observe)
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
        try:
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
                    log.warning("%s on node %s: %s (%s; MemoryPolicy %s)", what, sk.node, sk.detail, sk.cause,
                                state.name)
            announce_transitions(rt, state, prior, now, view, backlog=first_pass)
            export_gauges(state, whole)
            if rt.reports is not None:
                rt.reports.observe(state.name, state.engine, whole, lambda v: rt.first_seen.get(v.key))
            writes.append(state)
        finally:
            if first_pass:  # a new policy's first pass: not news, and budgeted (above)
                first_busy += time.perf_counter() - started
    shared.end_pass()
    shared.retain({s.engine.keys.oom for s in rt.policies.values() if s.engine is not None})
    if deferred:
        rt.changed.set()  # the next pass takes the next new policies
    for state in writes:  # their status is built and written by status.writer, when due
        rt.pending_status[state.name] = state
    if writes:
        rt.status_wakeup.set()
    return busy + time.perf_counter() - slice_began - first_busy


def export_gauges(state: PolicyState, whole: bool = True) -> None:
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


def next_wakeup(rt: Runtime, now: float) -> float:
    """Seconds until a pass is due with no change in the cluster: when a result changes with
    time alone (an OOM event leaves a lookback, a pending kill is judged), at most
    ``--resync-seconds``."""
    soonest = min((t for s in rt.policies.values() if s.engine is not None
                   for t in (s.engine.next_expiry(),) if t is not None), default=None)
    wait = rt.config.resync_seconds
    if soonest is not None:
        wait = min(wait, max(0.0, soonest - now) + 0.01)
    return wait


async def reconcile_loop(rt: Runtime) -> None:
    await rt.ready.wait()
    last_pass = 0.0
    while True:
        try:
            await asyncio.wait_for(rt.changed.wait(), timeout=next_wakeup(rt, time.time()))
        except asyncio.TimeoutError:
            pass
        # Let a burst of watch events coalesce; and after a long pass, wait as long as it evaluated
        # (but never longer than the status interval), so that evaluating takes about half of the
        # CPU at most however fast the cluster changes.
        await asyncio.sleep(max(rt.config.debounce_seconds, min(last_pass, rt.config.status_interval)))
        rt.changed.clear()
        marked, full = rt.dirty, rt.full
        rt.dirty, rt.full = {}, False
        started = time.monotonic()
        busy = 0.0
        try:
            busy = await reconcile_once(rt, None if full else set(marked), time.time())
        except Exception:  # noqa: BLE001 - keep the loop alive; the next pass evaluates everything
            log.exception("reconcile pass failed")
            rt.full = True
        if not rt.orphans_checked:
            try:
                await resolve_orphans(rt)
            except Exception:  # noqa: BLE001 - tried again after the next pass
                log.exception("resolving Events of violations that ended while no operator ran failed")
        ended = time.monotonic()
        last_pass = busy
        metrics.PASS_SECONDS.observe(ended - started)
        if not full:
            for t in marked.values():
                metrics.CHANGE_EVALUATED.observe(ended - t)


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
    if time.monotonic() - rt.orphans_tried < retry_seconds:
        return 0
    rt.orphans_tried = time.monotonic()
    assert rt.session is not None
    uids = {(i.get("metadata") or {}).get("uid", "") for i in await rt.session.list_all(P.API_PATH)}
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
