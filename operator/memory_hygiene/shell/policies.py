"""The MemoryPolicies: each one as kopf's watch delivers it (``shell/operator.py``), and, every
resync, a list of all of them that repairs what that watch missed.

A policy's state (``reconciler.PolicyState``) is replaced when its generation changes; what
the generation before announced is kept until the new one's first pass, so that only real
changes are announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..core import policy as P
from ..core import ruletable
from ..core.engine import PolicyEngine
from . import metrics
from .reconciler import PolicyState, held
from .status import seen_from_status

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("memory_hygiene.policies")


def observe(rt: Runtime, type: str | None, name: str, body: Any, logger: logging.Logger | None = None) -> None:
    """A MemoryPolicy as kopf delivers it (``type`` "DELETED" when it is gone), or as the
    periodic list found it (``resync``)."""
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


def resync(rt: Runtime, items: list[dict], listed_since: float) -> list[str]:
    """Repair what kopf's watch missed, from a list of every MemoryPolicy begun at monotonic
    time ``listed_since``: a policy it never delivered, a newer generation, one deleted.

    kopf stops watching a resource whose CRD is deleted, and rescans when a CRD event comes; when
    the CRD is created again, the API server's discovery can lag behind its last event (Established),
    and kopf then never watches it again (seen here: 1 in 3 re-creations). A watch is also a little
    behind a list: what differs is repaired only when the list before this one (a resync earlier)
    differed the same way, and only what is certainly newer than what we hold is taken
    (generations only grow; a deleted UID never comes back). PolicyReports an earlier run wrote for
    a policy that is neither listed nor held are deleted. Returns what was repaired, to log."""
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
        observe(rt, "DELETED" if what == ("", 0) else None, name, listed.get(name, {}))
        repaired.append(name)
    rt.resync_differed = {n: w for n, w in differs.items() if n not in repaired}
    if rt.reports is not None:  # reports of a policy deleted while no operator ran: nothing else deletes them
        for name in rt.reports.forget_all_but(set(listed) | set(rt.policies)):
            log.info("MemoryPolicy %s is gone: deleting the PolicyReports an earlier run wrote for it", name)
    return repaired


async def resync_loop(rt: Runtime) -> None:
    """Every ``--resync-seconds``: list every MemoryPolicy and repair what the watch missed
    (``resync``). Counted in ``memory_hygiene_policy_resyncs_total``."""
    while True:
        await asyncio.sleep(rt.config.resync_seconds)
        try:
            assert rt.session is not None
            listed_since = time.monotonic()
            items = await rt.session.list_all(P.API_PATH)
        except Exception as err:  # noqa: BLE001 - tried again at the next resync
            log.warning("could not list the MemoryPolicies: %s", err)
            continue
        repaired = resync(rt, items, listed_since)
        if repaired:
            metrics.POLICY_RESYNCS.inc(len(repaired))
            log.warning("the watch of MemoryPolicies missed %s: taken from the periodic list",
                        ", ".join(sorted(repaired)))
