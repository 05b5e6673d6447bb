"""A MemoryPolicy's status: built from its engine as plain dicts, compared with the last one
written, and written (a JSON merge patch of the status subresource, through ``shell/api.py``)
at most once per ``--status-interval`` per policy and ``--status-qps`` over all, by its own task
(``writer``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.engine import PolicyEngine
from ..core.rules import Violation
from ..core import policy as P
from ..core.snapshot import format_time
from . import metrics
from .api import status_message
from .ratelimit import TokenBuckets

if TYPE_CHECKING:
    from .reconciler import PolicyState
    from .runtime import Runtime

log = logging.getLogger("memory_hygiene.status")


def status_key(v: Violation) -> tuple:
    """What a status entry says of a violation's key (``Violation.key``, the one identity of a
    violation: of its Events too, NUL-joined): all of it but the OOM incident, which the
    status does not show."""
    return v.key[:5]


def seen_from_status(status: dict[str, Any] | None) -> dict[tuple, str]:
    """firstSeen of the violations an earlier run wrote (by ``status_key``), so a restart keeps them."""
    out: dict[tuple, str] = {}
    for v in (status or {}).get("violations") or []:
        if isinstance(v, dict) and v.get("firstSeen"):
            key = (v.get("rule", ""), v.get("kind", ""), v.get("namespace") or "", v.get("name", ""),
                   v.get("container") or "")
            out[key] = v["firstSeen"]
    return out


def ready_condition(status: str, reason: str, message: str, generation: int | None,
                    previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    return condition("Ready", status, reason, message, generation, previous, now)


def condition(type_: str, status: str, reason: str, message: str, generation: int | None,
              previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    prev = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == type_), None)
    changed = prev is None or prev.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now) if changed else prev.get("lastTransitionTime") or format_time(now),
        "observedGeneration": generation,
    }


def violation_status(v: Violation, first_seen: str, last_seen: str) -> dict[str, Any]:
    return {
        "rule": v.rule,
        "kind": v.kind,
        "namespace": v.namespace,
        "name": v.name,
        "container": v.container,
        "message": v.message,
        "firstSeen": first_seen,
        "lastSeen": last_seen,
    }


def comparable(status: dict[str, Any] | None) -> Any:
    """What must change for a status to be worth writing: not the timestamps of the pass."""
    if not status:
        return None
    s = dict(status)
    s.pop("lastEvaluationTime", None)
    s["violations"] = [{k: v for k, v in x.items() if k != "lastSeen"} for x in s.get("violations") or []]
    s["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s.get("conditions") or []]
    return s


def build_status(
    engine: PolicyEngine,
    generation: int | None,
    first_seen: Callable[[Violation], str | None],
    previous: dict[str, Any] | None,
    cap: int,
    now: float,
) -> dict[str, Any]:
    summary = engine.summary()
    worst = engine.worst(cap)
    stamp = format_time(now)
    violations = []
    for v in worst:
        violations.append(violation_status(v, first_seen(v) or stamp, stamp))
    shown = len(violations)
    total = summary["violations"]
    message = f"{total} violations" + (f" ({shown} shown, most severe first)" if shown < total else "")
    message += f" on {summary['evaluatedNodes']} nodes and {summary['evaluatedPods']} pods"
    return {
        "observedGeneration": generation,
        "conditions": [ready_condition("True", "Evaluated", message, generation, previous, now)],
        "summary": summary,
        "violations": violations,
        "lastEvaluationTime": stamp,
    }


def invalid_status(message: str, generation: int | None, previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": [ready_condition("False", "InvalidSpec", message, generation, previous, now)],
        "summary": None,
        "violations": [],
        "lastEvaluationTime": format_time(now),
    }


# --- writing ----------------------------------------------------------------------------------


def status_due_in(rt: Runtime, state: PolicyState, now: float) -> float:
    """Seconds until the policy's next status write may go (at most one per
    ``--status-interval``; at once when ``needs_write``); 0 or less: now."""
    return 0.0 if state.needs_write else state.last_write + rt.config.status_interval - now


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
            f"{P.API_PATH}/{state.name}/status", {"status": status})
        if code != 200:
            raise RuntimeError(f"HTTP {code}: {status_message(answer)}")
        state.last_status = status
        if state.asked == asked:  # else asked for again while this one was on its way
            state.needs_write = False
        metrics.STATUS_WRITES.labels(result="ok").inc()
    except Exception as err:  # noqa: BLE001 - logged, retried on the next pass
        metrics.STATUS_WRITES.labels(result="error").inc()
        log.warning("could not write the status of MemoryPolicy %s: %s", state.name, err)


YIELD_SECONDS = 0.02
"""The writer lets the event loop run after about this much building (as a pass does)."""

STATUS_WRITERS = 8
"""Status writes in flight at once (``writer``)."""


def policy_status(rt: Runtime, state: PolicyState, now: float) -> dict[str, Any]:
    """The status of one policy now, from its engine (or its error)."""
    if state.engine is None:
        return invalid_status(state.error or "invalid spec", state.generation, state.last_status, now)

    def first_seen(v: Violation) -> str | None:
        seeded = state.seeded_first_seen.get(status_key(v))
        return seeded or rt.first_seen.text(v.key)

    status = build_status(state.engine, state.generation, first_seen, state.last_status,
                          rt.config.max_status_violations, now)
    enforcing = rt.enforcing.get(state.name)
    if enforcing is not None:
        status["conditions"].append(condition("Enforcing", *enforcing[1], enforcing[0], state.last_status, now))
    return status


async def writer(rt: Runtime) -> None:
    """Builds and writes the status of the policies the passes changed, when each one's is due
    (at most one write per policy every ``--status-interval``; the first, and a new generation's,
    at once and before the others), ``STATUS_WRITERS`` at a time, at most ``--status-qps`` a
    second over all policies (a token bucket, a second's worth of burst). Apart from the passes:
    300 policies' statuses, built and written every pass, held up the next pass and the news it
    brings."""
    writers = asyncio.Semaphore(STATUS_WRITERS)
    qps = rt.config.status_qps
    budget = TokenBuckets(max(1, round(qps)), 1.0 / qps) if qps > 0 else None
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
        slice_began = time.perf_counter()
        # first writes (a new policy, a new spec) before refreshes; else the order they came in
        for name in sorted(rt.pending_status, key=lambda n: not rt.pending_status[n].needs_write):
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
            if budget is not None and not budget.allow("", time.monotonic()):
                wait = budget.wait_seconds("", time.monotonic())
                soonest = wait if soonest is None else min(soonest, wait)
                break
            del rt.pending_status[name]
            busy.add(name)
            task = asyncio.create_task(write(state, policy_status(rt, state, time.time()), state.asked))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.perf_counter() - slice_began > YIELD_SECONDS:
                # hundreds due at once (a status of thousands of violations takes ms to build):
                # let the watches, Event posts and passes in between
                await asyncio.sleep(0)
                slice_began = time.perf_counter()
        if soonest is not None:
            loop.call_later(soonest, rt.status_wakeup.set)
