"""The rules: pure functions of (policy, nodes, pods, OOM events, now).

They are split per object so the operator can re-evaluate only what a change touches:
``evaluate_node`` for one node and the pods bound to it, ``evaluate_pod`` for one pod,
``oom_incidents`` and ``select_incidents`` for the OOM events; ``evaluate`` composes them into a whole ``Report``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from typing import Any, NamedTuple

from . import kernel, ruletable
from .policy import ANY_REPORTER, Basis, MemoryPolicySpec, NodeReservationRule, SilentOOMRule
from .qos import expected_score
from .selectors import matches
from .snapshot import format_time
from .types import ContainerInfo, NodeInfo, OOMEventInfo, PodInfo

SILENT_OOM = "SilentOOMKill"
MEMORY_PRESSURE = "NodeMemoryPressure"
OVERCOMMITTED = "NodeOvercommitted"
MISSING_REQUEST = "MissingMemoryRequest"
MISSING_LIMIT = "MissingMemoryLimit"
ALLOCATABLE_ABOVE_CAPACITY = "NodeAllocatableAboveCapacity"
RESERVATION_TOO_SMALL = "NodeReservationTooSmall"
LIMIT_RATIO = "MemoryLimitRatioExceeded"
RULES = ruletable.NAMES
"""Every rule, most severe first: the order of ``violations`` (core/ruletable.py declares them)."""
assert {SILENT_OOM, MEMORY_PRESSURE, OVERCOMMITTED, MISSING_REQUEST, MISSING_LIMIT, ALLOCATABLE_ABOVE_CAPACITY,
        RESERVATION_TOO_SMALL, LIMIT_RATIO} == set(RULES), "a rule evaluated here is missing from the rule table"

MAX_CLOCK_SKEW_SECONDS = 120.0
"""An OOM Event dated further than this past ``now`` is not believed (a node's clock far
ahead, or a forged date: an Event of the year 2999 would otherwise count for ever)."""

REPORTER_NAMESPACES = ("default", "")
"""Where the reporters post their Node Events (client-go's recorder puts an Event about a
cluster-scoped object in ``default``); "" for a hand-written file without a namespace."""


class Skipped(NamedTuple):
    """An OOM Event (or a node's incidents) left out, and why: for a counter and one warning."""

    cause: str
    """"reporter" (source not among the policy's reporters), "namespace" (not in default),
    "future" (dated past now + MAX_CLOCK_SKEW_SECONDS), "kills_per_event" (kills past
    maxKillsPerEvent left out), "incidents_per_node" (incidents past maxIncidentsPerNode)."""
    node: str
    event: OOMEventInfo | None
    detail: str


GROUP_KILL_SECONDS = 1.0
"""Kills in the same container this close together are one incident (cgroup v2 memory.oom.group)."""


def fmt_bytes(n: int | None) -> str:
    """Bytes for people: 3Gi, 1.5Gi, 122Mi, 800Ki, 17B; "?" when unknown."""
    if n is None:
        return "?"
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if abs(n) >= size:
            value = n / size
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{n}B"


def fmt_time(t: float | None) -> str | None:
    if t is None:
        return None
    return format_time(t)


@dataclass(frozen=True)
class Violation:
    rule: str
    kind: str
    """"Pod" or "Node": the object the violation is about (and its Event goes on)."""
    namespace: str | None
    name: str
    container: str | None
    message: str
    uid: str
    """The involved object's uid (a Node's own uid; for an OOM kill not tied to a known Node
    object, the node name, as node-problem-detector does)."""
    incident: str = ""
    """Tells apart two OOM incidents in the same container; empty for the other rules."""

    @cached_property
    def key(self) -> tuple[str, str, str, str, str, str]:
        """Identity across evaluations: the same key is the same violation going on (made once:
        every policy that holds the violation holds this one tuple)."""
        return (self.rule, self.kind, self.namespace or "", self.name, self.container or "", self.incident)

    @property
    def severity(self) -> int:
        return ruletable.RANK[self.rule]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "container": self.container,
            "message": self.message,
        }


def violation_order(v: Violation) -> tuple:
    """Report order: most severe rule first, then by object."""
    return (v.severity, v.namespace or "", v.name, v.container or "", v.incident)


def sort_violations(violations: Iterable[Violation]) -> list[Violation]:
    return sorted(violations, key=violation_order)


@dataclass(frozen=True)
class NodeReport:
    name: str
    capacity: int | None
    allocatable: int | None
    requests: int
    limits: int
    pods_without_limit: int
    limits_percent: float | None
    overcommitted: bool | None
    memory_pressure: bool
    memory_evictions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacityBytes": self.capacity,
            "allocatableBytes": self.allocatable,
            "requestsBytes": self.requests,
            "limitsBytes": self.limits,
            "podsWithoutLimit": self.pods_without_limit,
            "limitsPercent": self.limits_percent,
            "overcommitted": self.overcommitted,
            "memoryPressure": self.memory_pressure,
            "memoryEvictions": list(self.memory_evictions),
        }


@dataclass(frozen=True)
class OOMIncident:
    node: str
    time: float | None
    pid: int
    process: str
    oom_score_adj: int | None
    scope: str
    namespace: str | None
    pod: str | None
    pod_uid: str | None
    container: str | None
    attribution: str
    """"memcg", "oomScoreAdj" or "none"."""
    silent: bool
    kills: int = 1
    """Processes killed in this incident (several for a cgroup v2 group kill)."""
    pending: bool = False
    """Younger than ``SETTLE_SECONDS`` and not seen by Kubernetes yet: not judged (not silent)
    until kubelet has had the time to report a visible kill."""
    anon_rss: int | None = None
    container_limit: int | None = None
    restart_count: int | None = None
    pids: tuple[int, ...] = ()
    """Every pid killed in this incident, in the kernel's order (``pid``, its chosen victim, first)."""
    kernel_pod_uid: str | None = None
    """The pod UID the kernel's memcg path names (also when no such pod is known)."""
    kernel_container_id: str | None = None
    """The container ID the kernel's memcg path names."""
    reason: str | None = None
    """Why the pod or the container could not be named; None when both were."""
    pod_labels: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    """The pod's labels when the kill was attributed: a policy's podSelector still decides
    after the pod has gone (``select_incidents``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "time": fmt_time(self.time),
            "pid": self.pid,
            "process": self.process,
            "oomScoreAdj": self.oom_score_adj,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "attribution": self.attribution,
            "silent": self.silent,
            "pending": self.pending,
            "scope": self.scope,
            "kills": self.kills,
            "pids": list(self.pids),
            "anonRss": self.anon_rss,
            "kernelPodUID": self.kernel_pod_uid,
            "kernelContainerID": self.kernel_container_id,
            "reason": self.reason,
        }


@dataclass
class Report:
    policy: str
    nodes: list[NodeReport] = field(default_factory=list)
    oom_kills: list[OOMIncident] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    evaluated_nodes: int = 0
    evaluated_pods: int = 0
    unparsed_events: list[OOMEventInfo] = field(default_factory=list)
    """OOM events whose message held no kernel OOM line we could read (logged, then skipped)."""
    skipped: list[Skipped] = field(default_factory=list)
    """OOM Events not believed, kills and incidents past the caps (logged)."""

    def summary(self) -> dict[str, int]:
        return summarize(self.violations, self.oom_kills, self.evaluated_nodes, self.evaluated_pods)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "nodes": [n.as_dict() for n in self.nodes],
            "oomKills": [k.as_dict() for k in self.oom_kills],
            "violations": [v.as_dict() for v in self.violations],
            "summary": self.summary(),
        }


def summarize(
    violations: Iterable[Violation], oom_kills: Iterable[OOMIncident], evaluated_nodes: int, evaluated_pods: int
) -> dict[str, int]:
    counts = {rule: 0 for rule in RULES}
    total = 0
    for v in violations:
        counts[v.rule] += 1
        total += 1
    return ruletable.summary(counts.__getitem__, sum(1 for _ in oom_kills), total, evaluated_nodes, evaluated_pods)


# --- selection ----------------------------------------------------------------------------


def node_selected(spec: MemoryPolicySpec, node: NodeInfo) -> bool:
    return matches(spec.node_selector, dict(node.labels))


def namespace_labels(namespace: str, namespaces: Mapping[str, Mapping[str, str]] | None) -> Mapping[str, str]:
    """A namespace's labels; one we have not seen has the label the API server always sets."""
    if namespaces is not None and namespace in namespaces:
        return namespaces[namespace]
    return {"kubernetes.io/metadata.name": namespace}


def pod_selected(
    spec: MemoryPolicySpec, pod: PodInfo, namespaces: Mapping[str, Mapping[str, str]] | None
) -> bool:
    return matches(spec.pod_selector, dict(pod.labels)) and matches(
        spec.namespace_selector, namespace_labels(pod.namespace, namespaces)
    )


# --- nodes ----------------------------------------------------------------------------------


def evaluate_node(
    spec: MemoryPolicySpec, node: NodeInfo, pods_on_node: Iterable[PodInfo]
) -> tuple[NodeReport, list[Violation]]:
    """The memory picture of one node and its node-rule violations.

    ``pods_on_node``: every pod bound to the node, whatever the selectors say (a node's
    overcommit is about all of its pods). Pods in phase Succeeded or Failed hold no memory and
    are not counted; those kubelet evicted for memory are listed in ``memory_evictions``.
    """
    requests = limits = without_limit = 0
    live = 0
    evicted: list[str] = []
    for pod in pods_on_node:
        if pod.terminal:
            if pod.memory_evicted:
                evicted.append(f"{pod.namespace}/{pod.name}")
            continue
        live += 1
        requests += pod.request
        if pod.limit is None:
            without_limit += 1
        else:
            limits += pod.limit
    evicted.sort()

    rule = spec.rules.overcommit
    basis = node.allocatable if rule.basis is Basis.ALLOCATABLE else node.capacity
    # Allocatable is capacity less reservations: above capacity it is wrong (a kubelet reporting
    # nonsense, or a Node status written by someone else): compare with the smaller of the two.
    impossible = node.allocatable is not None and node.capacity is not None and node.allocatable > node.capacity
    if impossible:
        basis = node.capacity
    if basis:
        percent: float | None = round(100.0 * limits / basis, 1)
        overcommitted: bool | None = limits * 100 > rule.max_limits_percent * basis
    else:
        percent, overcommitted = None, None
    report = NodeReport(
        name=node.name,
        capacity=node.capacity,
        allocatable=node.allocatable,
        requests=requests,
        limits=limits,
        pods_without_limit=without_limit,
        limits_percent=percent,
        overcommitted=overcommitted,
        memory_pressure=node.memory_pressure,
        memory_evictions=tuple(evicted),
    )

    violations: list[Violation] = []
    basis_name = "capacity" if impossible else rule.basis.value.lower()
    if rule.enabled and overcommitted:
        text = (
            f"memory limits of {live - without_limit} pods add up to {fmt_bytes(limits)}, "
            f"{percent:g}% of {basis_name} {fmt_bytes(basis)} (policy allows {rule.max_limits_percent}%); "
            f"requests {fmt_bytes(requests)}"
        )
        if without_limit:
            text += f"; {without_limit} more pods have no memory limit and are not counted"
        violations.append(Violation(OVERCOMMITTED, "Node", None, node.name, None, text, node.uid))
    if rule.enabled and impossible:
        text = (f"memory allocatable {fmt_bytes(node.allocatable)} is more than capacity {fmt_bytes(node.capacity)}: "
                "allocatable is capacity less kube-reserved, system-reserved and the eviction threshold, so the "
                "node's status is wrong; limits are compared with its capacity")
        violations.append(Violation(ALLOCATABLE_ABOVE_CAPACITY, "Node", None, node.name, None, text, node.uid))
    reservation = evaluate_reservation(spec.rules.node_reservation, node)
    if reservation is not None:
        violations.append(reservation)
    if spec.rules.memory_pressure.enabled and node.memory_pressure:
        text = "kubelet reports MemoryPressure"
        if node.pressure_message:
            text += f" ({node.pressure_message})"
        if overcommitted:
            text += f"; the node is also overcommitted: limits {percent:g}% of {basis_name}"
        if evicted:
            text += f"; evicted for memory: {', '.join(evicted)}"
        violations.append(Violation(MEMORY_PRESSURE, "Node", None, node.name, None, text, node.uid))
    return report, violations


# --- node reservations --------------------------------------------------------------------

GiB = 1 << 30
MiB = 1 << 20

RESERVE_TIERS: tuple[tuple[int | None, int], ...] = (
    (4 * GiB, 25), (8 * GiB, 20), (16 * GiB, 10), (128 * GiB, 6), (None, 2),
)
"""(up to this much capacity, percent of it reserved): the memory GKE and AKS reserve for the
kubelet and the system, by the node's size.
GKE: https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes#memory_and_cpu_reservations
("25% of the first 4 GiB of memory, 20% of the next 4 GiB (up to 8 GiB), 10% of the next 8 GiB
(up to 16 GiB), 6% of the next 112 GiB (up to 128 GiB), 2% of any memory above 128 GiB").
AKS before 1.29: https://learn.microsoft.com/en-us/azure/aks/node-resource-reservations (the same
tiers, in GB; AKS 1.29 and later reserve min(20 MB x max pods + 50 MB, 25%) instead)."""

DEFAULT_EVICTION_HARD = 100 * MiB
"""kubelet's default ``evictionHard`` ``memory.available`` on Linux (kubernetes/kubernetes
pkg/kubelet/eviction/defaults_linux.go ``DefaultEvictionHard``: "100Mi"); GKE and AKS 1.29+ use it
too (the pages above), AKS before 1.29 used 750Mi."""


def recommended_reserve(capacity: int) -> int:
    """The least capacity - allocatable for a node of this memory capacity, in bytes: the tiered
    reserve of :data:`RESERVE_TIERS` plus :data:`DEFAULT_EVICTION_HARD`, rounded up to a byte."""
    reserved = Fraction(0)
    low = 0
    for high, percent in RESERVE_TIERS:
        top = capacity if high is None else min(capacity, high)
        if top > low:
            reserved += Fraction((top - low) * percent, 100)
        if high is None or capacity <= high:
            break
        low = high
    return math.ceil(reserved) + DEFAULT_EVICTION_HARD


def evaluate_reservation(rule: NodeReservationRule, node: NodeInfo) -> Violation | None:
    """NodeReservationTooSmall: capacity - allocatable below the policy's minimum. Not judged when
    either number is unknown, or when allocatable exceeds capacity (NodeAllocatableAboveCapacity:
    the node's status is wrong, and there is no reserve to speak of)."""
    capacity, allocatable = node.capacity, node.allocatable
    if not rule.enabled or capacity is None or allocatable is None or allocatable > capacity:
        return None
    reserve = capacity - allocatable
    fixed = rule.fixed_minimum()
    minimum = recommended_reserve(capacity) if fixed is None else fixed
    if reserve >= minimum:
        return None
    why = ("what GKE and AKS reserve for a node of this size plus the 100Mi eviction threshold" if fixed is None
           else "the policy's rules.nodeReservation.minimum")
    text = (
        f"memory capacity {fmt_bytes(capacity)} less allocatable {fmt_bytes(allocatable)} leaves a reserve of "
        f"{fmt_bytes(reserve)} for kube-reserved, system-reserved and the hard eviction threshold; at least "
        f"{fmt_bytes(minimum)} is recommended ({why}). Without it system daemons and the kernel compete with "
        "the pods for memory: the kernel OOM-kills pods or the node freezes before kubelet evicts. Raise "
        "kubelet's --kube-reserved/--system-reserved memory (kubeReserved, systemReserved) and "
        f"--eviction-hard memory.available (evictionHard) until they add up to {fmt_bytes(minimum)} or more"
    )
    return Violation(RESERVATION_TOO_SMALL, "Node", None, node.name, None, text, node.uid)


# --- pods -----------------------------------------------------------------------------------


def evaluate_pod(spec: MemoryPolicySpec, pod: PodInfo) -> list[Violation]:
    """MissingMemoryRequest / MissingMemoryLimit / MemoryLimitRatioExceeded for one (selected)
    pod's long-running containers: app containers and sidecars. Finished pods are not reported.

    core/admission.py generates the same judgement in CEL for the API server; the e2e
    equivalence test holds the two together, case by case."""
    if pod.terminal:
        return []
    rule = spec.rules.missing_requests
    ratio = spec.rules.limit_ratio.max_limit_to_request_ratio
    out: list[Violation] = []
    for c in pod.containers:
        if c.kind == "init":
            continue
        if rule.enabled and c.request is None:
            out.append(
                Violation(
                    MISSING_REQUEST, "Pod", pod.namespace, pod.name, c.name,
                    f"container {c.name} has no memory request: the scheduler does not count it "
                    f"and the pod ({pod.qos}) is among the first the kernel and kubelet kill",
                    pod.uid,
                )
            )
        if rule.enabled and rule.require_limits and c.limit is None and pod.limit is None:
            out.append(
                Violation(
                    MISSING_LIMIT, "Pod", pod.namespace, pod.name, c.name,
                    f"container {c.name} has no memory limit: it may use all of its node's memory",
                    pod.uid,
                )
            )
        if ratio is not None and limit_ratio_exceeded(c.limit, c.request, ratio):
            assert c.limit is not None and c.request is not None
            times = f"{c.limit / c.request:.3g}x" if c.request else "infinitely many times"
            out.append(
                Violation(
                    LIMIT_RATIO, "Pod", pod.namespace, pod.name, c.name,
                    f"container {c.name} may use {times} its memory request (limit {fmt_bytes(c.limit)}, "
                    f"request {fmt_bytes(c.request)}; policy allows {ratio:g}x): the scheduler counts "
                    "only the request, so its node is overcommitted by design",
                    pod.uid,
                )
            )
    return out


def limit_ratio_exceeded(limit: int | None, request: int | None, ratio: float) -> bool:
    """limit > ratio x request, in IEEE doubles as the CEL of core/admission.py compares them
    (exact for byte counts below 2**53). A container without a request or a limit is the other
    rules' business."""
    if limit is None or request is None:
        return False
    return float(limit) > ratio * float(request)


# --- OOM kills ------------------------------------------------------------------------------


@dataclass
class _Kill:
    node: str
    time: float | None
    k: kernel.OOMKill
    order: tuple[str, int] = ("", 0)
    """(Event name, place in its message): the kernel's print order among kills of one second."""


def _event_time(ev: OOMEventInfo) -> float | None:
    return ev.first_time if ev.first_time is not None else ev.last_time


def _believed(ev: OOMEventInfo, reporters: Sequence[str], now: float | None) -> Skipped | None:
    """Why an OOM Event is not believed, or None."""
    if ev.namespace not in REPORTER_NAMESPACES:
        return Skipped("namespace", ev.node, ev, f"in namespace {ev.namespace}, not default")
    if ANY_REPORTER not in reporters and ev.source not in reporters:
        return Skipped("reporter", ev.node, ev, f"source {ev.source[:64]!r} is not among the policy's reporters")
    if now is not None:
        newest = max((t for t in (ev.first_time, ev.last_time) if t is not None), default=None)
        if newest is not None and newest > now + MAX_CLOCK_SKEW_SECONDS:
            return Skipped("future", ev.node, ev, f"dated {fmt_time(newest)}, in the future")
    return None


SAME_KILL_SECONDS = 2.0
"""One kill reported twice (node-problem-detector and the node agent, NPD and kubelet's
SystemOOM, an Event repeated): same node, same pid, times within 2 s (or the policy's
``correlationWindowSeconds`` when it is shorter). The agent's Event carries the kernel's own
time of the kill; NPD's and kubelet's are when they posted it, about a second later (seen on a
published AKS log: tests/unit/data/kernel/published/aks-cgroupv2-besteffort-group-kill-npd.txt).
Farther apart, the same pid is a new process that got the number again."""


def _kills_from_events(
    events: Iterable[OOMEventInfo], since: float, window: float, unparsed: list[OOMEventInfo],
    skipped: list[Skipped] | None = None, reporters: Sequence[str] = (ANY_REPORTER,), now: float | None = None,
    max_kills: int | None = None,
) -> list[_Kill]:
    """Every kill the events tell of, once, in the order the kernel printed them: the same pid
    on the same node reported twice within ``SAME_KILL_SECONDS`` (or ``window`` when shorter:
    node-problem-detector and the node agent, NPD and kubelet's SystemOOM, a repeated Event) is
    one kill. A kill without a pid (kubelet's bare "System OOM encountered", the node agent's
    memcg-counter kills) is never merged with another: nothing says two of them are the same."""
    same_kill = min(window, SAME_KILL_SECONDS)
    seen: dict[tuple[str, int], list[_Kill]] = defaultdict(list)
    anonymous: list[_Kill] = []
    for ev in events:
        last = ev.last_time if ev.last_time is not None else ev.first_time
        if last is not None and last < since:
            continue
        why = _believed(ev, reporters, now)
        if why is not None:
            if skipped is not None:
                skipped.append(why)
            continue
        kills = ev.kills if max_kills is None else ev.kills[:max_kills]
        capped = ev.more_kills or len(ev.kills) > len(kills)
        if not kills:
            unparsed.append(ev)
            continue
        if capped and skipped is not None:
            skipped.append(Skipped("kills_per_event", ev.node, ev, f"only the first {max_kills} kills were read"))
        t = _event_time(ev)
        for n, k in enumerate(kills):
            order = (ev.name or ev.uid, n)
            if k.pid == 0:
                anonymous.append(_Kill(ev.node, t, k, order))
                continue
            same_pid = seen[(ev.node, k.pid)]
            for i, prev in enumerate(same_pid):
                if prev.time is None or t is None or abs(prev.time - t) <= same_kill:
                    same_pid[i] = _Kill(ev.node, min_time(prev.time, t), _richer(prev.k, k), min(prev.order, order))
                    break
            else:  # first report of this kill (or the pid was reused later)
                same_pid.append(_Kill(ev.node, t, k, order))
    out = [k for group in seen.values() for k in group] + anonymous
    # Not by pid: a group kill's first line is the kernel's chosen victim (mm/oom_kill.c
    # oom_kill_process() kills it, then the other members of its memory.oom.group).
    return sorted(out, key=lambda x: (x.node, x.time or 0.0, x.order))


def min_time(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _richer(a: kernel.OOMKill, b: kernel.OOMKill) -> kernel.OOMKill:
    """Merge two reports of one kill, keeping every field either one knows."""
    merged = {f: getattr(a, f) if getattr(a, f) is not None else getattr(b, f) for f in a._fields}
    if a.scope == "system" and b.scope != "system":
        merged["scope"] = b.scope
    return kernel.OOMKill(**merged)


Attribution = tuple[str, PodInfo | None, str | None, str | None]
"""(attribution: "memcg", "oomScoreAdj" or "none"; pod; container name; reason when the pod or
the container is not named)."""


def _attribute(
    k: _Kill, node: NodeInfo | None, pods_on_node: Sequence[PodInfo], pods_by_uid: Mapping[str, PodInfo]
) -> Attribution:
    """Who one kill hit: the memcg path first (the kernel's own word), else the oom_score_adj
    fingerprint when exactly one running container fits. Never a guess: what the evidence does
    not settle is left unnamed, with the reason."""
    kk = k.k
    if kk.pod_uid:
        pod = pods_by_uid.get(kk.pod_uid)
        if pod is None:
            # The kernel named the pod: no other pod may be blamed for it.
            return "none", None, None, (f"pod UID {kk.pod_uid} from the memcg path is not among the node's "
                                        "pods (deleted, or completed, before it was seen)")
        if kk.container_id:
            return _by_container_id(pod, kk.container_id)
        # The memcg path stops at the pod (a pod-level limit or memory.oom.group, or the agent's
        # counter of the pod's cgroup): the container by elimination, else by its score.
        long_running = [c for c in pod.containers if c.kind != "init"]
        if len(long_running) == 1:
            return "memcg", pod, long_running[0].name, None
        if kk.oom_score_adj is not None and node is not None and node.capacity:
            fits = [c.name for c in pod.containers if _fits(k, pod, c, node.capacity)]
            if len(fits) == 1:
                return "memcg", pod, fits[0], None
            return "memcg", pod, None, (f"the memcg path names the pod, not the container, and "
                                        f"{_count(len(fits), 'container')} of the pod score {kk.oom_score_adj}")
        return "memcg", pod, None, "the memcg path names the pod, not the container"
    if kk.oom_score_adj is None:
        return "none", None, None, "no memcg path and no oom_score_adj in the kernel's lines"
    if node is None or not node.capacity:
        return "none", None, None, f"node {k.node} is unknown: its memory capacity sets the scores"
    candidates = [(pod, c.name) for pod in pods_on_node
                  if not pod.terminal and not (pod.created is not None and k.time is not None
                                               and pod.created > k.time + 1)  # created after the kill
                  for c in pod.containers if _fits(k, pod, c, node.capacity)]
    if len(candidates) == 1:
        return "oomScoreAdj", candidates[0][0], candidates[0][1], None
    if not candidates:
        return "none", None, None, (f"no running container scores {kk.oom_score_adj}: "
                                    "a process may set its own oom_score_adj")
    return "none", None, None, f"{_count(len(candidates), 'container')} score {kk.oom_score_adj}"


def _by_container_id(pod: PodInfo, cid: str) -> Attribution:
    for c in pod.containers:
        if c.container_id == cid:
            return "memcg", pod, c.name, None
    for c in pod.containers:
        if c.previous_id == cid:  # the container restarted since: its last instance
            return "memcg", pod, c.name, None
    unreported = [c for c in pod.containers if c.container_id is None]
    if len(unreported) == 1:  # kubelet has not reported its ID yet: the ID can only be its
        return "memcg", pod, unreported[0].name, None
    return "memcg", pod, None, (f"container ID {cid[:13]} from the memcg path is neither a current nor the "
                                "last container of the pod (its sandbox, or restarted more than once since)")


def _fits(k: _Kill, pod: PodInfo, c: ContainerInfo, capacity: int) -> bool:
    """The fingerprint: a running container whose kubelet-set score is the victim's. Its own
    memory limit (and the pod's) holds its anon-rss whichever memory cgroup ran out, so a limit
    below the victim's anon-rss rules it out; a container without a limit stays in: the kernel
    may have run out in the pod's cgroup or in kubepods (the node's allocatable), above it."""
    if not c.running or expected_score(pod, c, capacity) != k.k.oom_score_adj:
        return False
    rss = k.k.anon_rss_bytes
    if rss is None:
        return True
    return not ((c.limit is not None and c.limit < rss) or (pod.limit is not None and pod.limit < rss))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _visible(pods: Iterable[PodInfo], t: float | None, window: float) -> bool:
    """Kubernetes saw it: some container terminated OOMKilled within ``window`` of ``t``."""
    return any(_visible_containers(pod.containers, t, window) for pod in pods)


def _visible_containers(containers: Iterable[ContainerInfo], t: float | None, window: float) -> bool:
    for c in containers:
        for finished in c.oom_finished:
            if t is None or abs(finished - t) <= window:
                return True
    return False


SETTLE_SECONDS = 10.0
"""A kill is judged silent only this long after it: a visible one (PID 1 killed, the container
restarted) takes kubelet a moment to report: its PLEG notices the exit at its next relist
(every second, pkg/kubelet/pleg/generic.go), then the status manager writes the OOMKilled
termination to the API server, and the watch brings it here. Judged earlier, the node agent's
report (posted at once) beat kubelet's on the real node, and a visible kill was announced as
silent (scripts/demo, seed 000 case 1-2)."""


def _replaced_instance(pod: PodInfo, container_id: str | None) -> bool:
    """The memcg path names a container of the pod that is neither a current one nor the last
    instance of one: an instance that has been restarted more than once since (or the sandbox)."""
    return bool(container_id) and all(c.container_id is not None for c in pod.containers) and not any(
        container_id in (c.container_id, c.previous_id) for c in pod.containers)


def oom_incidents(
    rule: SilentOOMRule,
    events: Iterable[OOMEventInfo],
    nodes: Mapping[str, NodeInfo],
    pods_by_node: Mapping[str, Sequence[PodInfo]],
    pods_by_uid: Mapping[str, PodInfo],
    now: float,
    earlier: Iterable[OOMIncident] = (),
) -> tuple[list[OOMIncident], list[OOMEventInfo], list[Skipped]]:
    """Every OOM incident the events tell of within the lookback, attributed, whatever pods a
    policy selects (``select_incidents`` does that), in the kernel's order, not capped: what
    every policy with these settings shares.

    ``earlier``: the incidents of the last evaluation. One that named a pod which has gone since
    (deleted after the kill, or completed and so no longer watched) is kept as it was: the
    victim is known, and judging its kill again without the pod would blame the node.
    Only Events the rule believes count (``_believed``: in namespace default, from one of
    ``reporters``, not from the future); the kills of one Event are capped. Returns
    (incidents, unparsed events, what was skipped).
    """
    window = float(rule.correlation_window_seconds)
    unparsed: list[OOMEventInfo] = []
    skipped: list[Skipped] = []
    kills = _kills_from_events(events, now - rule.lookback_seconds, window, unparsed, skipped, rule.reporters, now,
                               rule.max_kills_per_event)
    gone: dict[tuple[str, int], list[OOMIncident]] = defaultdict(list)
    for i in earlier:
        if i.pod_uid and i.pod_uid not in pods_by_uid:
            for pid in i.pids:
                if pid:  # a kill without a pid cannot be told from another
                    gone[(i.node, pid)].append(i)
    recalled: set[OOMIncident] = set()

    incidents: list[OOMIncident] = []
    open_incident: dict[tuple[str, str, str], int] = {}
    for k in kills:
        before = next((i for i in gone.get((k.node, k.k.pid), ()) if k.k.pid
                       if i.time is None or k.time is None or abs(k.time - i.time) <= window), None)
        if before is not None:
            if before not in recalled:  # once for all the kills of a group incident
                recalled.add(before)
                if before.pending and _settled(before.time, now):
                    # its pod went before kubelet showed the kill: nothing says Kubernetes saw it
                    before = replace(before, pending=False, silent=True)
                incidents.append(before)
            continue
        node = nodes.get(k.node)
        on_node = pods_by_node.get(k.node, ())
        attribution, pod, container, reason = _attribute(k, node, on_node, pods_by_uid)
        if k.k.bad_memcg is not None:
            refused = f"memcg path {k.k.bad_memcg!r} is not canonical: refused"
            reason = f"{refused}; {reason}" if reason else refused
        cinfo = next((c for c in pod.containers if c.name == container), None) if pod else None
        # Kubernetes saw the kill if the container (when we know it), else any container of the
        # pod (when we know it), else any container on the node, terminated OOMKilled near it.
        # A pod the kernel named that we do not know may have shown its kill before it went:
        # nothing says so, and its OOMKilled termination can no longer be seen.
        if cinfo is not None:
            silent = not _visible_containers([cinfo], k.time, window)
        elif pod is None and k.k.pod_uid:
            silent = True
        else:
            silent = not _visible([pod] if pod is not None else on_node, k.time, window)
        if silent and pod is not None and cinfo is None and _replaced_instance(pod, k.k.container_id) \
                and any(c.oom_finished for c in pod.containers):
            # The killed instance has been replaced, and kubelet keeps only the last termination:
            # the pod's OOMKilled restarts (a crash loop) are where Kubernetes recorded it.
            silent = False
            reason = f"{reason}; the pod's containers show OOMKilled restarts: taken as one of them"
        pending = silent and not _settled(k.time, now)
        if pending:
            silent = False
        incident = OOMIncident(
            node=k.node,
            time=k.time,
            pid=k.k.pid,
            process=k.k.process,
            oom_score_adj=k.k.oom_score_adj,
            scope=k.k.scope,
            namespace=pod.namespace if pod else None,
            pod=pod.name if pod else None,
            pod_uid=pod.uid if pod else None,
            container=container,
            attribution=attribution,
            silent=silent,
            pending=pending,
            anon_rss=k.k.anon_rss_bytes,
            container_limit=cinfo.limit if cinfo else None,
            restart_count=cinfo.restart_count if cinfo else None,
            pids=(k.k.pid,),
            kernel_pod_uid=k.k.pod_uid,
            kernel_container_id=k.k.container_id,
            reason=reason,
            pod_labels=pod.labels if pod else (),
        )
        gkey: tuple[str, str, str] | None = None
        if pod is not None and container is not None:
            gkey = (k.node, pod.uid, container)
        elif pod is None and k.k.pod_uid:  # a group kill in a pod we do not know
            gkey = (k.node, k.k.pod_uid, k.k.container_id or "")
        elif pod is None and k.k.oom_score_adj is not None:
            # Unattributed (node-problem-detector's one Event per line of a group kill, with a
            # score several containers share): the same score in the same second, one incident.
            gkey = (k.node, "", f"{k.k.scope}/{k.k.oom_score_adj}")
        if gkey is not None:
            idx = open_incident.get(gkey)
            if idx is not None:
                first = incidents[idx]
                if first.time is not None and k.time is not None and k.time - first.time <= GROUP_KILL_SECONDS:
                    incidents[idx] = _merge_group_kill(first, incident)
                    continue
            open_incident[gkey] = len(incidents)
        incidents.append(incident)

    return incidents, unparsed, skipped


def select_incidents(spec: MemoryPolicySpec, incidents: Iterable[OOMIncident],
                     namespaces: Mapping[str, Mapping[str, str]] | None, skipped: list[Skipped]) -> list[OOMIncident]:
    """The incidents of pods the policy selects (and those no pod is named for), at most
    ``maxIncidentsPerNode`` per node, the newest."""
    selected = [i for i in incidents if i.pod is None or (
        matches(spec.pod_selector, dict(i.pod_labels))
        and matches(spec.namespace_selector, namespace_labels(i.namespace or "", namespaces)))]
    return _cap_per_node(selected, spec.rules.silent_oom.max_incidents_per_node, skipped)


def _cap_per_node(incidents: list[OOMIncident], cap: int, skipped: list[Skipped]) -> list[OOMIncident]:
    """At most ``cap`` incidents per node, the newest (in their order)."""
    per_node: dict[str, list[int]] = defaultdict(list)
    for i, inc in enumerate(incidents):
        per_node[inc.node].append(i)
    drop: set[int] = set()
    for node, idx in per_node.items():
        if len(idx) > cap:
            newest = sorted(idx, key=lambda i: (incidents[i].time or 0.0, i))[-cap:]
            drop.update(set(idx) - set(newest))
            skipped.append(Skipped("incidents_per_node", node, None,
                                   f"more than {cap} incidents within the lookback: the newest {cap} kept"))
    return [inc for i, inc in enumerate(incidents) if i not in drop] if drop else incidents


def _merge_group_kill(first: OOMIncident, other: OOMIncident) -> OOMIncident:
    pending = first.pending or other.pending
    return replace(first, kills=first.kills + other.kills, silent=first.silent and other.silent and not pending,
                   pending=pending, pids=first.pids + other.pids)


def _settled(t: float | None, now: float) -> bool:
    """``SETTLE_SECONDS`` have passed since ``t`` (an unknown time: long ago)."""
    return t is None or now - t >= SETTLE_SECONDS


def settles_at(incidents: Iterable[OOMIncident]) -> float | None:
    """When the first pending incident may be judged (for the caller to evaluate again then)."""
    return min((i.time + SETTLE_SECONDS for i in incidents if i.pending and i.time is not None), default=None)


def silent_violation(i: OOMIncident, node: NodeInfo | None) -> Violation:
    when = fmt_time(i.time) or "at an unknown time"
    what = f"process {i.process or '?'} (pid {i.pid})" if i.pid else "a process (the memcg oom_kill counter names no pid)"
    if i.kills > 1:
        what += f" and {i.kills - 1} more"
    rss = f", anon-rss {fmt_bytes(i.anon_rss)}" if i.anon_rss is not None else ""
    incident = f"{i.node}/{i.pid}/{int(i.time or 0)}"
    if not i.pid and i.kernel_container_id:
        incident += f"/{i.kernel_container_id[:12]}"
    if i.pod is not None:
        where = f"container {i.container}" if i.container else "a container"
        limit = f" (memory limit {fmt_bytes(i.container_limit)})" if i.container_limit is not None else ""
        how = "memcg path" if i.attribution == "memcg" else f"oom_score_adj {i.oom_score_adj}"
        if i.reason:
            how += f"; {i.reason}"
        kept = (f"the container kept running (restartCount {i.restart_count}, no OOMKilled termination)"
                if i.restart_count is not None else "no container of the pod terminated OOMKilled")
        text = (
            f"the kernel OOM-killed {what}{rss} in {where}{limit} of pod {i.namespace}/{i.pod} "
            f"on node {i.node} at {when}; {kept}, so Kubernetes did not restart it and recorded "
            f"nothing [attributed by {how}]"
        )
        return Violation(SILENT_OOM, "Pod", i.namespace, i.pod, i.container, text, i.pod_uid or "", incident)
    score = f", oom_score_adj {i.oom_score_adj}" if i.oom_score_adj is not None else ""
    text = (
        f"the kernel OOM-killed {what}{rss}{score} on node {i.node} at {when} and no container there "
        f"terminated OOMKilled; the pod could not be named ({i.reason or 'no memcg path'})"
    )
    uid = node.uid if node is not None else i.node
    return Violation(SILENT_OOM, "Node", None, i.node, None, text, uid, incident)
