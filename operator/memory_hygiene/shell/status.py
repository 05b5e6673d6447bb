"""A MemoryPolicy's status from its engine: plain dicts, compared before writing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.engine import PolicyEngine
from ..core.rules import Violation
from ..core.snapshot import format_time


def iso(t: float) -> str:
    return format_time(t)


def status_key(rule: str, kind: str, namespace: str | None, name: str, container: str | None) -> tuple:
    return (rule, kind, namespace or "", name, container or "")


def seen_from_status(status: dict[str, Any] | None) -> dict[tuple, str]:
    """firstSeen of the violations an earlier run wrote, so a restart keeps them."""
    out: dict[tuple, str] = {}
    for v in (status or {}).get("violations") or []:
        if isinstance(v, dict) and v.get("firstSeen"):
            key = status_key(v.get("rule", ""), v.get("kind", ""), v.get("namespace"), v.get("name", ""),
                             v.get("container"))
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
        "lastTransitionTime": iso(now) if changed else prev.get("lastTransitionTime") or iso(now),
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
    stamp = iso(now)
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
        "lastEvaluationTime": iso(now),
    }
