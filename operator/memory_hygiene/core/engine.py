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
from typing import Any
from dataclasses import dataclass, field

from . import ruletable
from .policy import MemoryPolicySpec
from .rules import (
    NodeReport,
    OOMIncident,
    Report,
    Skipped,
    Violation,
    evaluate_node,
    evaluate_pod,
    namespace_labels,
    node_selected,
    oom_incidents,
    select_incidents,
    settles_at,
    silent_violation,
    sort_violations,
    violation_order,
)
from .selectors import matches
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
    skipped: tuple[Skipped, ...] = ()
    """OOM Events not believed, kills and incidents past the caps (rules.Skipped)."""
    expires: float | None = None
    """When an OOM event of this bucket leaves the lookback (the result then changes with time
    alone, so the bucket is evaluated again); None when nothing here ages."""


@dataclass(frozen=True)
class PolicyKeys:
    """What of a policy's spec each shared evaluation depends on (``Shared``): policies with the
    same key share that evaluation. Over-keyed on purpose: a field that does not matter only costs
    a little sharing, a missing one would be a wrong result."""

    pods: str
    nodes: str
    oom: str
    namespace_selector: str
    node_selector: str

    @classmethod
    def of(cls, spec: MemoryPolicySpec) -> PolicyKeys:
        rules = spec.rules
        pod_rules = {"missing_requests", "limit_ratio"}
        return cls(
            pods=rules.model_dump_json(include=pod_rules),
            nodes=rules.model_dump_json(exclude=pod_rules | {"silent_oom"}),
            oom=rules.silent_oom.model_dump_json(),
            namespace_selector=spec.namespace_selector.model_dump_json() if spec.namespace_selector else "",
            node_selector=spec.node_selector.model_dump_json() if spec.node_selector else "",
        )


class Shared:
    """The evaluations every policy shares: reading a pod or a node, and parsing and attributing
    the OOM kills of a node, are done once per bucket for each distinct setting (``PolicyKeys``),
    not once per policy; a policy then only selects. What is read from a bucket's pods and node
    is kept until the bucket changes (``new_pass`` is told which did), so a policy evaluated in a
    later pass gets the same objects; the OOM evaluation (which depends on the time) lasts one
    pass. Kept across passes too: each bucket's last OOM incidents, for each OOM setting (who a
    kill was attributed to outlives the pod)."""

    def __init__(self) -> None:
        self.incidents: dict[tuple[str, str], tuple[OOMIncident, ...]] = {}
        self._memo: dict[str, dict[Any, Any]] = {}
        """bucket -> its pods ("pods"), and for each key ("groups"/"node"/"node selected", key)."""
        self._namespace_selected: dict[tuple[str, str], bool] = {}
        self.new_pass(None)

    def new_pass(self, dirty: Collection[str] | None) -> None:
        """A pass begins: forget what was read from the ``dirty`` buckets (all: None; also when the
        namespaces changed, as the operator passes then)."""
        if dirty is None:
            self._memo = {}
            self._namespace_selected = {}
        else:
            for b in dirty:
                self._memo.pop(b, None)
        self._oom: dict[tuple[str, str], tuple[list[OOMIncident], list[OOMEventInfo], list[Skipped]]] = {}
        self._silent: dict[OOMIncident, Violation] = {}

    def end_pass(self) -> None:
        """The pass is over: what lasts a pass goes (and the memory it held)."""
        self._oom, self._silent = {}, {}

    def retain(self, oom_keys: Collection[str]) -> None:
        """Forget the incidents of OOM settings no policy has any more."""
        for k in [k for k in self.incidents if k[1] not in oom_keys]:
            del self.incidents[k]

    def _of(self, bucket: str) -> dict[Any, Any]:
        memo = self._memo.get(bucket)
        if memo is None:
            memo = self._memo[bucket] = {}
        return memo

    def pods(self, bucket: str, view: ClusterView) -> list[PodInfo]:
        memo = self._of(bucket)
        pods = memo.get("pods")
        if pods is None:
            pods = memo["pods"] = list(view.pods_on(bucket))
        return pods

    def pod_groups(self, bucket: str, key: str, spec: MemoryPolicySpec, view: ClusterView
                   ) -> dict[str, tuple[list[tuple[PodInfo, tuple[Violation, ...]]], list[Violation]]]:
        """The bucket's pods by namespace: each group's (pod, its violations) and all of its
        violations (evaluate_pod)."""
        memo = self._of(bucket)
        groups = memo.get(("groups", key))
        if groups is None:
            groups = {}
            for pod in self.pods(bucket, view):
                found = tuple(evaluate_pod(spec, pod))
                pairs, violations = groups.setdefault(pod.namespace, ([], []))
                pairs.append((pod, found))
                violations.extend(found)
            memo[("groups", key)] = groups
        return groups

    def node(self, bucket: str, key: str, spec: MemoryPolicySpec, node: NodeInfo,
             view: ClusterView) -> tuple[NodeReport, list[Violation]]:
        memo = self._of(bucket)
        found = memo.get(("node", key))
        if found is None:
            found = memo[("node", key)] = evaluate_node(spec, node, self.pods(bucket, view))
        return found

    def namespace_selected(self, key: str, spec: MemoryPolicySpec, namespace: str,
                           namespaces: Mapping[str, Mapping[str, str]] | None) -> bool:
        found = self._namespace_selected.get((key, namespace))
        if found is None:
            found = self._namespace_selected[(key, namespace)] = matches(
                spec.namespace_selector, namespace_labels(namespace, namespaces))
        return found

    def node_selected(self, key: str, spec: MemoryPolicySpec, bucket: str, node: NodeInfo) -> bool:
        memo = self._of(bucket)
        found = memo.get(("node selected", key))
        if found is None:
            found = memo[("node selected", key)] = node_selected(spec, node)
        return found

    def oom(self, bucket: str, key: str, spec: MemoryPolicySpec, node: NodeInfo | None,
            events: list[OOMEventInfo], view: ClusterView,
            now: float) -> tuple[list[OOMIncident], list[OOMEventInfo], list[Skipped]]:
        found = self._oom.get((bucket, key))
        if found is None:
            pods = self.pods(bucket, view)
            by_uid = {p.uid: p for p in pods}
            by_uid.update((p.kubelet_uid, p) for p in pods if p.kubelet_uid)  # static pods' cgroups
            nodes = {bucket: node} if node is not None else {}
            found = self._oom[(bucket, key)] = oom_incidents(
                spec.rules.silent_oom, events, nodes, {bucket: pods}, by_uid, now, self.incidents.get((bucket, key), ()))
            if found[0]:
                self.incidents[(bucket, key)] = tuple(found[0])
            else:
                self.incidents.pop((bucket, key), None)
        return found

    def forget_oom(self, bucket: str, key: str) -> None:
        self.incidents.pop((bucket, key), None)

    def silent(self, incident: OOMIncident, node: NodeInfo | None) -> Violation:
        v = self._silent.get(incident)
        if v is None:
            v = self._silent[incident] = silent_violation(incident, node)
        return v


def evaluate_bucket(spec: MemoryPolicySpec, keys: PolicyKeys, name: str, view: ClusterView, now: float,
                    shared: Shared) -> BucketResult:
    """One bucket's result for one policy; ``shared`` holds what other policies computed already
    (and the bucket's earlier OOM incidents: rules.oom_incidents, a victim's pod may be gone)."""
    node = view.node(name) if name != UNSCHEDULED else None
    selected_node = node is not None and shared.node_selected(keys.node_selector, spec, name, node)
    violations: list[Violation] = []
    node_report = None
    if selected_node:
        assert node is not None
        node_report, node_violations = shared.node(name, keys.nodes, spec, node, view)
        violations.extend(node_violations)
    evaluated = 0
    groups = shared.pod_groups(name, keys.pods, spec, view)
    for namespace, (pairs, found) in groups.items():
        if not shared.namespace_selected(keys.namespace_selector, spec, namespace, view.namespaces):
            continue
        if spec.pod_selector is None:
            evaluated += len(pairs)
            violations.extend(found)
            continue
        for pod, of_pod in pairs:
            if matches(spec.pod_selector, dict(pod.labels)):
                evaluated += 1
                violations.extend(of_pod)
    events = list(view.events_on(name)) if name != UNSCHEDULED else []
    incidents: list[OOMIncident] = []
    unparsed: list[OOMEventInfo] = []
    skipped: list[Skipped] = []
    expires = None
    oom_rule = spec.rules.silent_oom
    if events and oom_rule.enabled and (selected_node or (node is None and spec.node_selector is None)):
        expires = _next_expiry(spec, events, now)
        everyone, shared_unparsed, shared_skipped = shared.oom(name, keys.oom, spec, node, events, view, now)
        unparsed, skipped = list(shared_unparsed), list(shared_skipped)
        incidents = select_incidents(spec, everyone, view.namespaces, skipped)
        violations.extend(shared.silent(i, node) for i in incidents if i.silent)
        settle = settles_at(incidents)  # a pending kill is judged then
        if settle is not None and (expires is None or settle < expires):
            expires = settle
    elif not events:
        shared.forget_oom(name, keys.oom)
    return BucketResult(
        node=node_report,
        violations=tuple(violations),
        oom_kills=tuple(incidents),
        evaluated_pods=evaluated,
        unparsed=tuple(unparsed),
        has_oom_events=bool(events),
        expires=expires,
        skipped=tuple(skipped),
    )


def _next_expiry(spec: MemoryPolicySpec, events: Iterable[OOMEventInfo], now: float) -> float | None:
    """The time after which the first of these events is out of the lookback (the rules drop
    an event once ``now - lookback`` is past its time)."""
    if not spec.rules.silent_oom.enabled:
        return None
    lookback = spec.rules.silent_oom.lookback_seconds
    ends = [t + lookback for e in events
            if (t := e.last_time if e.last_time is not None else e.first_time) is not None and t + lookback >= now]
    return min(ends) if ends else None


@dataclass
class PolicyEngine:
    """The cached, per-bucket evaluation of one policy.

    A pass costs what changed, not the cluster: ``refresh`` evaluates only the buckets it is
    given (and those whose OOM events just left the lookback), keeps the summary's counts up to
    date from each bucket's before and after, and leaves in ``changed`` the buckets whose result
    changed, so the caller can find the violations that started and ended from those alone."""

    name: str
    spec: MemoryPolicySpec
    results: dict[str, BucketResult] = field(default_factory=dict)
    changed: dict[str, tuple[BucketResult | None, BucketResult | None]] = field(default_factory=dict)
    """The last refresh's buckets whose result changed: bucket -> (before, after); None is none."""
    skipped: list[Skipped] = field(default_factory=list)
    """What the last refresh newly skipped (rules.Skipped): to count and log once."""
    _counts: dict[str, int] = field(default_factory=dict)
    _worst: list[Violation] | None = None
    _worst_n: int = 0
    keys: PolicyKeys = field(init=False)
    _own: Shared = field(init=False)
    _expiring: dict[str, float] = field(default_factory=dict)
    """bucket -> its result's ``expires`` (only the buckets with OOM events have one)."""

    def __post_init__(self) -> None:
        self.keys = PolicyKeys.of(self.spec)
        self._own = Shared()

    def refresh(self, view: ClusterView, dirty: Iterable[str] | None, now: float,
                shared: Shared | None = None) -> list[OOMEventInfo]:
        """Evaluate the dirty buckets again (all of them when ``dirty`` is None), and those whose
        OOM events have aged out since. ``shared``: the evaluations shared with other policies
        (the caller calls its ``new_pass`` with what changed before each pass, ``end_pass``
        after); None: this engine's own.
        Returns OOM events newly found unparseable."""
        if shared is None:
            shared = self._own
            shared.new_pass(None)
        if dirty is None:
            names = set(view.buckets()) | set(self.results)
        else:
            names = set(dirty) | {n for n, t in self._expiring.items() if t <= now}
        unparsed: list[OOMEventInfo] = []
        self.changed = {}
        self.skipped = []
        for name in names:
            before = self.results.get(name)
            result: BucketResult | None = evaluate_bucket(self.spec, self.keys, name, view, now, shared)
            assert result is not None
            if result.unparsed and (before is None or before.unparsed != result.unparsed):
                unparsed.extend(e for e in result.unparsed if before is None or e not in before.unparsed)
            if result.skipped and (before is None or before.skipped != result.skipped):
                self.skipped.extend(s for s in result.skipped if before is None or s not in before.skipped)
            if result.node is None and not result.violations and not result.oom_kills and not result.evaluated_pods \
                    and not result.has_oom_events:
                self.results.pop(name, None)
                result = None
            else:
                self.results[name] = result
            if result is not None and result.expires is not None:
                self._expiring[name] = result.expires
            else:
                self._expiring.pop(name, None)
            if before != result:
                self.changed[name] = (before, result)
                self._count(before, -1)
                self._count(result, +1)
        self._update_worst()
        if shared is self._own:
            shared.new_pass(None)  # nothing of it is kept between refreshes but the incidents
        return unparsed

    def next_expiry(self) -> float | None:
        """When a bucket's result next changes with time alone (an OOM event leaving the
        lookback, a pending kill to judge): ``refresh`` should run by then."""
        return min(self._expiring.values(), default=None)

    def _count(self, r: BucketResult | None, sign: int) -> None:
        if r is None:
            return
        c = self._counts
        for v in r.violations:
            c[v.rule] = c.get(v.rule, 0) + sign
        c[" nodes"] = c.get(" nodes", 0) + (sign if r.node is not None else 0)
        c[" pods"] = c.get(" pods", 0) + sign * r.evaluated_pods
        c[" oom"] = c.get(" oom", 0) + sign * len(r.oom_kills)
        c[" all"] = c.get(" all", 0) + sign * len(r.violations)
        for k in r.oom_kills:
            key = f" oom {k.attribution} {k.silent}"
            c[key] = c.get(key, 0) + sign

    def _update_worst(self) -> None:
        """Keep the cached most severe violations: merge what started, unless one of them ended."""
        if self._worst is None or not self.changed:
            return
        shown = set(self._worst)
        started: list[Violation] = []
        for before, after in self.changed.values():
            old = set(before.violations) if before is not None else set()
            new = set(after.violations) if after is not None else set()
            if not shown.isdisjoint(old - new):
                self._worst = None  # one of them is gone: assembled again when asked
                return
            started.extend(new - old)
        if started:
            self._worst = heapq.nsmallest(self._worst_n, self._worst + started, key=violation_order)

    def _before_after(self) -> tuple[dict[tuple, Violation], dict[tuple, Violation]]:
        """The last refresh's changed buckets' violations, by key: (before, after). A violation's
        key is in one bucket only (a pod's or a node's), so the changed buckets tell it all."""
        before = {v.key: v for b, _ in self.changed.values() if b is not None for v in b.violations}
        after = {v.key: v for _, a in self.changed.values() if a is not None for v in a.violations}
        return before, after

    def changes(self) -> tuple[list[Violation], list[Violation]]:
        """Of the last refresh: (violations that started, violations that ended)."""
        before, after = self._before_after()
        return [v for k, v in after.items() if k not in before], [v for k, v in before.items() if k not in after]

    def transitions(self) -> tuple[dict[tuple, Violation], dict[tuple, Violation]]:
        """Of the last refresh's changed buckets: (violations now, by key; violations before that
        are no longer, by key)."""
        before, after = self._before_after()
        return after, {k: v for k, v in before.items() if k not in after}

    # --- the assembled picture -------------------------------------------------------------

    def violations(self) -> Iterable[Violation]:
        for r in self.results.values():
            yield from r.violations

    def worst(self, n: int) -> list[Violation]:
        """The n most severe violations, in report order."""
        if self._worst is None or self._worst_n != n:
            self._worst = heapq.nsmallest(n, self.violations(), key=violation_order)
            self._worst_n = n
        return list(self._worst)

    def oom_kills(self) -> list[OOMIncident]:
        return sorted((k for r in self.results.values() for k in r.oom_kills), key=lambda k: (k.time or 0, k.node))

    def nodes(self) -> list[NodeReport]:
        return sorted((r.node for r in self.results.values() if r.node is not None), key=lambda n: n.name)

    def oom_count(self, attribution: str, silent: bool) -> int:
        """Current OOM incidents by attribution ("memcg", "oomScoreAdj", "none"), silent or not."""
        return self._counts.get(f" oom {attribution} {silent}", 0)

    def count(self, rule: str) -> int:
        """Current violations of one rule."""
        return self._counts.get(rule, 0)

    def summary(self) -> dict[str, int]:
        c = self._counts
        return ruletable.summary(self.count, c.get(" oom", 0), c.get(" all", 0), c.get(" nodes", 0),
                                 c.get(" pods", 0))


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
        skipped=list(engine.skipped),
    )
