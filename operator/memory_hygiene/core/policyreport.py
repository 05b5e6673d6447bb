"""Violations as PolicyReports (``wgpolicyk8s.io/v1alpha2``, the Policy WG's format that Kyverno,
Trivy and Policy Reporter read): pure data, no I/O.

One report per MemoryPolicy and *scope*: a ``PolicyReport`` in each namespace with pod violations
(MissingMemoryRequest, MissingMemoryLimit, SilentOOMKill of a known pod, ...), a
``ClusterPolicyReport`` for the node violations (NodeOvercommitted, NodeMemoryPressure, an OOM kill
no pod could be named for, ...). Each result names the rule, its severity (core/ruletable.py), the
object and the message. A report holds at most ``cap`` results, most severe first; its summary
counts all of them (bounded like the status).

:class:`ScopeIndex` keeps a policy's violations by scope, updated from what a reconcile pass
changed, so that only the reports of the scopes that changed are built and written again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import ruletable
from .rules import Violation, violation_order

API_VERSION = "wgpolicyk8s.io/v1alpha2"
GROUP, VERSION = API_VERSION.split("/")
SOURCE = "memory-hygiene"
MANAGED_BY = {"app.kubernetes.io/managed-by": "memory-hygiene"}
POLICY_LABEL = "memoryhygiene.io/policy"
CLUSTER = ""
"""The scope of the ClusterPolicyReport (node violations)."""

SEVERITY = {r.name: r.severity for r in ruletable.TABLE}
"""Each rule's result severity, from the rule table (core/ruletable.py)."""


def scope_of(v: Violation) -> str:
    """A pod's namespace, or :data:`CLUSTER` for a violation about a Node."""
    return v.namespace if v.kind == "Pod" and v.namespace else CLUSTER


def report_name(policy: str) -> str:
    return f"memory-hygiene-{policy}"


def result(policy: str, v: Violation, first_seen: float | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"apiVersion": "v1", "kind": v.kind, "name": v.name}
    if v.kind == "Pod":
        resource["namespace"] = v.namespace
    if v.uid and v.uid != v.name:  # an OOM kill on an unknown node carries the node name as uid
        resource["uid"] = v.uid
    out: dict[str, Any] = {
        "policy": policy,
        "rule": v.rule,
        "result": "fail",
        "scored": True,
        "severity": SEVERITY[v.rule],
        "category": "memory",
        "source": SOURCE,
        "message": v.message,
        "resources": [resource],
    }
    props = {k: val for k, val in (("container", v.container), ("incident", v.incident)) if val}
    if props:
        out["properties"] = props
    if first_seen is not None:
        out["timestamp"] = {"seconds": int(first_seen), "nanos": 0}
    return out


def build_report(policy: str, scope: str, violations: Iterable[Violation], cap: int,
                 first_seen: Callable[[Violation], float | None]) -> dict[str, Any] | None:
    """The report of one scope; None when it has no violation (then there should be no report)."""
    all_v = sorted(violations, key=violation_order)
    if not all_v:
        return None
    meta: dict[str, Any] = {"name": report_name(policy), "labels": {**MANAGED_BY, POLICY_LABEL: policy}}
    if scope != CLUSTER:
        meta["namespace"] = scope
    return {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport" if scope != CLUSTER else "ClusterPolicyReport",
        "metadata": meta,
        "summary": {"pass": 0, "fail": len(all_v), "warn": 0, "error": 0, "skip": 0},
        "results": [result(policy, v, first_seen(v)) for v in all_v[:cap]],
    }


class ScopeIndex:
    """A policy's violations by scope; ``dirty`` holds the scopes changed since the last ``take``."""

    def __init__(self) -> None:
        self.scopes: dict[str, dict[tuple, Violation]] = {}
        self.dirty: set[str] = set()

    def replace(self, violations: Iterable[Violation]) -> None:
        """Every violation of the policy (a whole evaluation): every scope before and after is dirty."""
        new: dict[str, dict[tuple, Violation]] = {}
        for v in violations:
            new.setdefault(scope_of(v), {})[v.key] = v
        self.dirty |= set(self.scopes) | set(new)
        self.scopes = new

    def update(self, now: dict[tuple, Violation], gone: dict[tuple, Violation]) -> None:
        """What a pass changed (PolicyEngine.transitions()): violations now, and those that ended."""
        for k, v in gone.items():
            s = scope_of(v)
            bucket = self.scopes.get(s)
            if bucket is not None and bucket.pop(k, None) is not None:
                self.dirty.add(s)
                if not bucket:
                    del self.scopes[s]
        for k, v in now.items():
            s = scope_of(v)
            bucket = self.scopes.setdefault(s, {})
            if bucket.get(k) != v:
                bucket[k] = v
                self.dirty.add(s)

    def clear(self) -> None:
        """The policy is gone: every scope it had is dirty, and empty."""
        self.dirty |= set(self.scopes)
        self.scopes = {}

    def take(self) -> set[str]:
        out, self.dirty = self.dirty, set()
        return out
