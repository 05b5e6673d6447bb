"""Incremental evaluation of one MemoryPolicy.

The cluster is cut into *buckets*, one per node name (plus ``""`` for pods not bound to any
node). A bucket's result depends only on that node, the pods bound to it and the OOM events
about it, so when something changes only the buckets it touches are evaluated again; the
report is the union of the buckets' results. Pure: the caller hands in read-only views of the
cluster (the operator's list+watch caches, or a snapshot) and says which buckets are dirty.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from .policy import MemoryPolicySpec
from .rules import (
    NodeReport,
    OOMIncident,
    Report,
    Violation,
    evaluate_node,
    evaluate_oom,
    evaluate_pod,
    node_selected,
    pod_selected,
    sort_violations,
    summarize,
)
from .types import NodeInfo, OOMEventInfo, PodInfo

UNSCHEDULED = ""


@dataclass(frozen=True)
class ClusterView:
    """What the engine reads. Callables, so the operator can pass its caches."""

    node: Callable[[str], NodeInfo | None]
    pods_on: Callable[[str], Collection[PodInfo]]
    events_on: Callable[[str], Collection[OOMEventInfo]]
    namespaces: Mapping[str, Mapping[str, str]] | None
    buckets: Callable[[], Iterable[str]]
    """Every bucket that may hold something: node names with a Node, pods or events, and ""."""


@dataclass(frozen=True)
class BucketResult:
    node: NodeReport | None
    violations: tuple[Violation, ...]
    oom_kills: tuple[OOMIncident, ...]
    evaluated_pods: int
    unparsed: tuple[OOMEventInfo, ...]
    has_oom_events: bool
    """Whether this bucket must be looked at again as OOM events age out of the lookback."""


def evaluate_bucket(spec: MemoryPolicySpec, name: str, view: ClusterView, now: float) -> BucketResult:
    pods = list(view.pods_on(name))
    node = view.node(name) if name != UNSCHEDULED else None
    selected_node = node is not None and node_selected(spec, node)
    violations: list[Violation] = []
    node_report = None
    if selected_node:
        node_report, node_violations = evaluate_node(spec, node, pods)
        violations.extend(node_violations)
    evaluated = 0
    for pod in pods:
        if pod_selected(spec, pod, view.namespaces):
            evaluated += 1
            violations.extend(evaluate_pod(spec, pod))
    events = list(view.events_on(name)) if name != UNSCHEDULED else []
    incidents: list[OOMIncident] = []
    unparsed: list[OOMEventInfo] = []
    if events and (selected_node or (node is None and spec.node_selector is None)):
        nodes = {name: node} if node is not None else {}
        by_uid = {p.uid: p for p in pods}
        incidents, oom_violations, unparsed = evaluate_oom(
            spec, events, nodes, {name: pods}, by_uid, now, view.namespaces
        )
        violations.extend(oom_violations)
    return BucketResult(
        node=node_report,
        violations=tuple(violations),
        oom_kills=tuple(incidents),
        evaluated_pods=evaluated,
        unparsed=tuple(unparsed),
        has_oom_events=bool(events),
    )


@dataclass
class PolicyEngine:
    """The cached, per-bucket evaluation of one policy."""

    name: str
    spec: MemoryPolicySpec
    results: dict[str, BucketResult] = field(default_factory=dict)

    def refresh(self, view: ClusterView, dirty: Iterable[str] | None, now: float) -> list[OOMEventInfo]:
        """Evaluate the dirty buckets again (all of them when ``dirty`` is None), and those whose
        OOM events may have aged out. Returns OOM events newly found unparseable."""
        if dirty is None:
            names = set(view.buckets()) | set(self.results)
        else:
            names = set(dirty) | {n for n, r in self.results.items() if r.has_oom_events}
        unparsed: list[OOMEventInfo] = []
        for name in names:
            before = self.results.get(name)
            result = evaluate_bucket(self.spec, name, view, now)
            if result.node is None and not result.violations and not result.oom_kills and not result.evaluated_pods \
                    and not result.has_oom_events:
                self.results.pop(name, None)
            else:
                self.results[name] = result
            if result.unparsed and (before is None or before.unparsed != result.unparsed):
                unparsed.extend(e for e in result.unparsed if before is None or e not in before.unparsed)
        return unparsed

    # --- the assembled picture -------------------------------------------------------------

    def violations(self) -> Iterable[Violation]:
        for r in self.results.values():
            yield from r.violations

    def worst(self, n: int) -> list[Violation]:
        """The n most severe violations, in report order."""
        return heapq.nsmallest(
            n, self.violations(), key=lambda v: (v.severity, v.namespace or "", v.name, v.container or "", v.incident)
        )

    def oom_kills(self) -> list[OOMIncident]:
        return sorted((k for r in self.results.values() for k in r.oom_kills), key=lambda k: (k.time or 0, k.node))

    def nodes(self) -> list[NodeReport]:
        return sorted((r.node for r in self.results.values() if r.node is not None), key=lambda n: n.name)

    def summary(self) -> dict[str, int]:
        return summarize(
            self.violations(),
            (k for r in self.results.values() for k in r.oom_kills),
            sum(1 for r in self.results.values() if r.node is not None),
            sum(r.evaluated_pods for r in self.results.values()),
        )


def snapshot_view(
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    events: Iterable[OOMEventInfo],
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> ClusterView:
    """A ClusterView over plain lists (a snapshot file, or a one-shot read of the cluster)."""
    by_name = {n.name: n for n in nodes}
    pods_by_bucket: dict[str, list[PodInfo]] = {}
    for p in pods:
        pods_by_bucket.setdefault(p.node or UNSCHEDULED, []).append(p)
    events_by_node: dict[str, list[OOMEventInfo]] = {}
    for e in events:
        events_by_node.setdefault(e.node, []).append(e)
    buckets = set(by_name) | set(pods_by_bucket) | set(events_by_node)
    return ClusterView(
        node=by_name.get,
        pods_on=lambda b: pods_by_bucket.get(b, ()),
        events_on=lambda b: events_by_node.get(b, ()),
        namespaces=namespaces,
        buckets=lambda: buckets,
    )


def evaluate(
    name: str,
    spec: MemoryPolicySpec,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    events: Iterable[OOMEventInfo],
    now: float,
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> Report:
    """The whole report of one policy over a snapshot: the operator's engine, run once."""
    engine = PolicyEngine(name, spec)
    unparsed = engine.refresh(snapshot_view(nodes, pods, events, namespaces), None, now)
    summary = engine.summary()
    return Report(
        policy=name,
        nodes=engine.nodes(),
        oom_kills=engine.oom_kills(),
        violations=sort_violations(engine.violations()),
        evaluated_nodes=summary["evaluatedNodes"],
        evaluated_pods=summary["evaluatedPods"],
        unparsed_events=unparsed,
    )
