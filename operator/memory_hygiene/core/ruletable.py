"""The rule table: every rule declared once. Pure data, no imports from the rest of the package.

Everything about a rule that is not its evaluation is derived from its entry here:

- the report order (``rules.violation_order``: most severe first, the order of :data:`TABLE`);
- ``status.summary`` (``rules.summarize``, ``PolicyEngine.summary``) and its schema in the CRD
  (``policy.Summary`` is built from :func:`summary_fields`);
- the ``memory_hygiene_violations`` gauge's ``rule`` label (``shell/reconciler.py``);
- the PolicyReport severity (``policyreport.SEVERITY``);
- the text summary of ``memory-hygiene audit`` (``report_table.py``);
- the Rules section of docs/memorypolicy.md (``crd.reference_markdown``; a test fails when it drifts).

Adding a rule: an entry here, its evaluation function (``rules.py``) and its policy knob
(``policy.Rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

SEVERITIES = ("critical", "high", "medium", "low")
"""PolicyReport (wgpolicyk8s.io/v1alpha2) severities we use, most severe first."""


@dataclass(frozen=True)
class Rule:
    name: str
    """The violation's ``rule``, the reason of the Warning Event posted when it starts, and the
    ``rule`` label of ``memory_hygiene_violations``."""
    kind: str
    """"Node" or "Pod": what the violation is about (SilentOOMKill: a Pod, or the Node when no pod
    could be named)."""
    severity: str
    """PolicyReport severity: one of :data:`SEVERITIES`."""
    summary_key: str | None
    """Its count in ``status.summary``; None: counted in ``summary.violations`` only."""
    summary_doc: str
    """The description of that count (the CRD's status schema)."""
    label: str
    """What the count counts, for people: "3 overcommitted nodes"."""
    doc: str
    """One line for docs/memorypolicy.md."""
    knob: str
    """The ``spec.rules`` field that turns it on and sets it."""
    resolves: bool = True
    """A Normal Event ``<name>Resolved`` is posted when it ends. An OOM kill does not end: it
    ages out of the lookback."""
    note: str = ""
    """More for docs/memorypolicy.md (sources, defaults), printed under the table."""

    @property
    def reason(self) -> str:
        """The Warning Event's reason when it starts."""
        return self.name

    @property
    def resolved_reason(self) -> str | None:
        """The Normal Event's reason when it ends; None when it never ends."""
        return f"{self.name}Resolved" if self.resolves else None

    @property
    def metric_label(self) -> str:
        return self.name


TABLE: tuple[Rule, ...] = (
    Rule("SilentOOMKill", "Pod", "high", "silentOOMKills", "Silent OOM kill incidents within the lookback.",
         "silent OOM kills",
         "the kernel OOM-killed a process in a container and Kubernetes recorded nothing (no OOMKilled "
         "restart); on the Node when no pod can be named",
         "silentOOM", resolves=False),
    Rule("NodeMemoryPressure", "Node", "critical", "nodesUnderMemoryPressure", "Nodes with MemoryPressure=True.",
         "nodes under memory pressure",
         "kubelet reports MemoryPressure: it is evicting pods now",
         "memoryPressure"),
    Rule("NodeOvercommitted", "Node", "medium", "overcommittedNodes", "Nodes whose limits exceed the policy.",
         "overcommitted nodes",
         "the finite memory limits of a node's pods add up past maxLimitsPercent of its allocatable (or capacity)",
         "overcommit"),
    Rule("NodeAllocatableAboveCapacity", "Node", "medium", None, "",
         "nodes with allocatable above capacity",
         "a node reports more allocatable memory than capacity: its status is wrong (its limits are compared "
         "with its capacity instead)",
         "overcommit"),
    Rule("NodeReservationTooSmall", "Node", "medium", "reservationTooSmall",
         "Nodes whose capacity less allocatable is below rules.nodeReservation's minimum.",
         "nodes with too small a reservation",
         "capacity less allocatable (kube-reserved + system-reserved + the hard eviction threshold) is below the "
         "policy's minimum: system daemons and the kernel compete with pods for memory",
         "nodeReservation",
         note="Opt-in (`rules.nodeReservation.enabled: true`). Its `minimum: auto` is the memory GKE and AKS "
         "(before 1.29) reserve for the kubelet and the system on a node of that capacity, 25% of the first 4Gi, "
         "20% of the next 4Gi, 10% of the next 8Gi, 6% of the next 112Gi and 2% above 128Gi "
         "(https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes#memory_and_cpu_reservations, "
         "https://learn.microsoft.com/en-us/azure/aks/node-resource-reservations), plus kubelet's default hard "
         "eviction threshold `memory.available` 100Mi (kubernetes/kubernetes "
         "pkg/kubelet/eviction/defaults_linux.go): 1.1Gi for a 4Gi node, 2.7Gi for 16Gi, 5.6Gi for 64Gi. "
         "Not judged on a node whose allocatable exceeds its capacity (NodeAllocatableAboveCapacity)."),
    Rule("MissingMemoryRequest", "Pod", "medium", "missingRequests", "Containers without a memory request.",
         "missing requests",
         "a container has no memory request: invisible to the scheduler, among the first killed",
         "missingRequests"),
    Rule("MissingMemoryLimit", "Pod", "low", "missingLimits", "Containers without a memory limit (requireLimits).",
         "missing limits",
         "a container has no memory limit (and no pod-level limit bounds it)",
         "missingRequests"),
    Rule("MemoryLimitRatioExceeded", "Pod", "low", "limitRatioExceeded",
         "Containers whose limit exceeds maxLimitToRequestRatio times their request.",
         "over the limit/request ratio",
         "a container's memory limit is more than maxLimitToRequestRatio times its request",
         "limitRatio"),
)
"""Every rule, most severe first: the order of ``violations``."""

BY_NAME: dict[str, Rule] = {r.name: r for r in TABLE}
NAMES: tuple[str, ...] = tuple(r.name for r in TABLE)
RANK: dict[str, int] = {r.name: i for i, r in enumerate(TABLE)}

OTHER_SUMMARY: tuple[tuple[str, str], ...] = (
    ("oomKills", "OOM kill incidents within the lookback."),
    ("violations", "All violations (status.violations may hold fewer)."),
    ("evaluatedNodes", "Nodes the policy selects."),
    ("evaluatedPods", "Pods the policy selects."),
)
"""The counts of ``status.summary`` that are not one rule's."""


def summary_fields() -> Iterator[tuple[str, str]]:
    """(key, description) of every count in ``status.summary``, in order."""
    for r in TABLE:
        if r.summary_key is not None:
            yield r.summary_key, r.summary_doc
    yield from OTHER_SUMMARY


def summary(count: Callable[[str], int], oom_kills: int, violations: int, nodes: int, pods: int) -> dict[str, int]:
    """``status.summary``: ``count(rule name)`` for each rule with a key, then the others."""
    out = {r.summary_key: count(r.name) for r in TABLE if r.summary_key is not None}
    out.update(oomKills=oom_kills, violations=violations, evaluatedNodes=nodes, evaluatedPods=pods)
    return out


def names_text() -> str:
    """"A, B or C": every rule name, in report order."""
    return ", ".join(NAMES[:-1]) + " or " + NAMES[-1]


def markdown() -> list[str]:
    """The Rules section of docs/memorypolicy.md."""
    lines = [
        "## Rules",
        "",
        "Generated from the rule table (`operator/memory_hygiene/core/ruletable.py`), most severe first: the",
        "order of `status.violations`. Each violation posts a Warning Event with the rule as its reason on the",
        "object and on the MemoryPolicy, and a Normal Event `<rule>Resolved` when it ends; the gauge",
        "`memory_hygiene_violations{rule=\"<rule>\"}` counts the current ones; PolicyReports carry the severity.",
        "",
        "| rule | about | set by `spec.rules.` | severity | `status.summary` | Events | what it means |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in TABLE:
        key = f"`{r.summary_key}`" if r.summary_key else "(only in `violations`)"
        events = f"`{r.reason}`" + (f", `{r.resolved_reason}`" if r.resolved_reason else " (never resolved: ages out)")
        lines.append(f"| `{r.name}` | {r.kind} | `{r.knob}` | {r.severity} | {key} | {events} | {r.doc} |")
    lines.append("")
    for r in TABLE:
        if r.note:
            lines += [f"**{r.name}**: {r.note}", ""]
    return lines
