"""The MemoryPolicy model: the one source of truth for the CRD schema (see ``crd.py``).

Every field has a default, so ``spec: {}`` is a valid policy with every rule enabled but the
opt-in ones (``nodeReservation``, and ``limitRatio`` until its ratio is set).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model, model_validator
from pydantic.alias_generators import to_camel

from . import ruletable
from .kernel import MAX_KILLS_PER_TEXT
from .quantity import QuantityError, parse_bytes

GROUP = "memoryhygiene.io"
VERSION = "v1alpha1"
KIND = "MemoryPolicy"
PLURAL = "memorypolicies"
API_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
"""The MemoryPolicies' collection on the API server."""
SINGULAR = "memorypolicy"
SHORT_NAMES = ["mempol"]
CATEGORIES = ["memory-hygiene"]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class SelectorOperator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry, as in a Kubernetes LabelSelector."""

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=list,
        max_length=256,
        description="Values for In and NotIn (must not be empty); empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"values must not be empty when operator is {self.operator.value}")
        if not needs_values and self.values:
            raise ValueError(f"values must be empty when operator is {self.operator.value}")
        return self


LABEL_SELECTOR_CEL = [
    {
        "rule": "!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? size(e.values) > 0 : size(e.values) == 0)",
        "message": "matchExpressions: values must be non-empty for In/NotIn and empty for Exists/DoesNotExist",
    }
]


class LabelSelector(_Model):
    """A Kubernetes label selector. An empty selector matches everything."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": LABEL_SELECTOR_CEL})

    match_labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=64, description="Requirements that must all hold."
    )


class Basis(str, Enum):
    ALLOCATABLE = "Allocatable"
    CAPACITY = "Capacity"


class OvercommitRule(_Model):
    """NodeOvercommitted: the finite memory limits of a node's pods add up past what it has (and NodeAllocatableAboveCapacity: its allocatable exceeds its capacity)."""

    enabled: bool = Field(default=True, description="Report overcommitted nodes.")
    basis: Basis = Field(
        default=Basis.ALLOCATABLE,
        description="What the limits are compared with: the node's Allocatable (what the scheduler "
        "gives pods) or its Capacity (all of its memory).",
    )
    max_limits_percent: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="A node is overcommitted when the sum of its pods' finite memory limits exceeds "
        "this percentage of the basis.",
    )


class MemoryPressureRule(_Model):
    """NodeMemoryPressure: kubelet reports the node's MemoryPressure condition True."""

    enabled: bool = Field(default=True, description="Report nodes under memory pressure.")


class AdmissionAction(str, Enum):
    """What the API server does with a Pod or workload that breaks an enforced rule when it is
    created (ValidatingAdmissionPolicy validationActions)."""

    AUDIT = "Audit"
    WARN = "Warn"
    DENY = "Deny"


ADMISSION_DOC = (
    "Enforce this at admission (a ValidatingAdmissionPolicy the operator generates and owns): Deny "
    "refuses, Warn warns the client (kubectl prints it), Audit records it in the API server's audit "
    "log; Pods on create, and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, "
    "Jobs and CronJobs on create and on template change. Unset: nothing enforced. Needs the "
    "enforcement RBAC (manifests/overlays/enforcement)."
)


class MissingRequestsRule(_Model):
    """MissingMemoryRequest (and MissingMemoryLimit when requireLimits is set)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.admission) || !has(self.enabled) || self.enabled",
                    "message": "admission needs the rule enabled (enabled: true)",
                    "fieldPath": ".admission",
                },
                {
                    "rule": "!has(self.limitAdmission) || (has(self.requireLimits) && self.requireLimits)",
                    "message": "limitAdmission needs requireLimits: true",
                    "fieldPath": ".limitAdmission",
                },
            ]
        }
    )

    enabled: bool = Field(
        default=True, description="Report containers without a memory request."
    )
    require_limits: bool = Field(
        default=False,
        description="Also report containers without a memory limit (MissingMemoryLimit), unless a "
        "pod-level limit bounds them.",
    )
    admission: AdmissionAction | None = Field(
        default=None, description="A container without a memory request. " + ADMISSION_DOC
    )
    limit_admission: AdmissionAction | None = Field(
        default=None,
        description="A container without a memory limit (needs requireLimits; a pod-level memory "
        "limit satisfies it): Audit, Warn or Deny at admission, as for admission. Unset: nothing enforced.",
    )

    @model_validator(mode="after")
    def _admission_fits(self) -> MissingRequestsRule:
        if self.admission is not None and not self.enabled:
            raise ValueError("admission needs the rule enabled (enabled: true)")
        if self.limit_admission is not None and not self.require_limits:
            raise ValueError("limitAdmission needs requireLimits: true")
        return self


class LimitRatioRule(_Model):
    """MemoryLimitRatioExceeded: a container's memory limit is more than maxLimitToRequestRatio times its memory request (it overcommits its node by design). Off unless the ratio is set."""  # noqa: E501 - one line: it is a CRD description

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.admission) || has(self.maxLimitToRequestRatio)",
                    "message": "admission needs maxLimitToRequestRatio",
                    "fieldPath": ".admission",
                }
            ]
        }
    )

    max_limit_to_request_ratio: float | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Report app and sidecar containers whose memory limit (their own, else the "
        "pod-level one) is more than this many times their memory request (e.g. 2: a 1Gi request "
        "may have at most a 2Gi limit). Unset: not checked.",
    )
    admission: AdmissionAction | None = Field(
        default=None,
        description="A container over the ratio: Audit, Warn or Deny at admission, as for "
        "missingRequests.admission. Unset: nothing enforced.",
    )

    @model_validator(mode="after")
    def _admission_needs_ratio(self) -> LimitRatioRule:
        if self.admission is not None and self.max_limit_to_request_ratio is None:
            raise ValueError("admission needs maxLimitToRequestRatio")
        return self


KNOWN_REPORTERS = ("kernel-monitor", "memory-hygiene-node-agent", "kubelet")
"""source.component (or reportingComponent, reportingController) of the OOM reporters believed by default:
node-problem-detector's kernel monitor (config/kernel-monitor.json ``"source":
"kernel-monitor"``), memory-hygiene's node agent (``shell/node_agent.py`` COMPONENT) and kubelet
(SystemOOM, pkg/kubelet/oom/oom_watcher_linux.go: component ``kubelet``)."""

ANY_REPORTER = "*"


class SilentOOMRule(_Model):
    """SilentOOMKill: the kernel killed a process in a container that Kubernetes did not restart."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.correlationWindowSeconds) || !has(self.lookbackSeconds) || self.correlationWindowSeconds <= self.lookbackSeconds",
                    "message": "correlationWindowSeconds must not exceed lookbackSeconds",
                    "fieldPath": ".correlationWindowSeconds",
                }
            ]
        }
    )

    enabled: bool = Field(default=True, description="Report silent OOM kills.")
    correlation_window_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="A kill is visible (not silent) when a container of its pod terminated with "
        "reason OOMKilled within this many seconds of the kernel's report.",
    )
    lookback_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 24 * 3600,
        description="OOM events older than this are no longer reported.",
    )
    reporters: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        default=list(KNOWN_REPORTERS),
        min_length=1,
        max_length=64,
        description="OOM Events count only when their source.component (or reportingComponent/Controller) is one "
        "of these, and they are in namespace default, where the reporters post about Nodes: "
        "node-problem-detector's kernel-monitor, memory-hygiene's node agent and kubelet (SystemOOM) "
        "by default. \"*\" believes any source. Whoever may create Events in default can still "
        "post one naming a known reporter: restrict that with RBAC.",
    )
    max_kills_per_event: int = Field(
        default=500,
        ge=1,
        le=MAX_KILLS_PER_TEXT,
        description="Kills read from one Event at most; the rest of its message is left out, counted "
        "(memory_hygiene_oom_skipped_total) and logged once.",
    )
    max_incidents_per_node: int = Field(
        default=1000,
        ge=1,
        le=1000000,
        description="OOM incidents kept per node within the lookback at most, the newest; older ones are "
        "left out, counted (memory_hygiene_oom_skipped_total) and logged once.",
    )

    @model_validator(mode="after")
    def _window_within_lookback(self) -> SilentOOMRule:
        if self.correlation_window_seconds > self.lookback_seconds:
            raise ValueError("correlationWindowSeconds must not exceed lookbackSeconds")
        return self


AUTO = "auto"

RESERVATION_MINIMUM_PATTERN = r"^(auto|([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE])?)$"


class NodeReservationRule(_Model):
    """NodeReservationTooSmall: a node's capacity less its allocatable (kube-reserved + system-reserved + the hard eviction threshold) is below a minimum, so system daemons and the kernel compete with pods for memory. Off unless enabled."""  # noqa: E501 - one line: it is a CRD description

    enabled: bool = Field(default=False, description="Report nodes whose memory reservation is too small.")
    minimum: str = Field(
        default=AUTO,
        pattern=RESERVATION_MINIMUM_PATTERN,
        max_length=32,
        description="The least capacity - allocatable a node should have: \"auto\" (what GKE and AKS reserve for "
        "a node of its capacity, 25% of the first 4Gi, 20% of the next 4Gi, 10% of the next 8Gi, 6% of the next "
        "112Gi and 2% above 128Gi, plus kubelet's default 100Mi hard eviction threshold) or a memory quantity "
        "such as 1Gi.",
    )

    @model_validator(mode="after")
    def _minimum_is_a_quantity(self) -> NodeReservationRule:
        if self.minimum != AUTO:
            try:
                parse_bytes(self.minimum)
            except QuantityError as err:
                raise ValueError(f"minimum: {err}") from None
        return self

    def fixed_minimum(self) -> int | None:
        """The minimum in bytes; None for "auto" (it depends on the node's capacity)."""
        return None if self.minimum == AUTO else parse_bytes(self.minimum)


class Rules(_Model):
    """Which rules run, and their settings. Every rule is enabled by default but nodeReservation (opt-in) and limitRatio (off until its ratio is set)."""  # noqa: E501 - one line: it is a CRD description

    overcommit: OvercommitRule = Field(default_factory=OvercommitRule, description=OvercommitRule.__doc__)
    memory_pressure: MemoryPressureRule = Field(
        default_factory=MemoryPressureRule, description=MemoryPressureRule.__doc__
    )
    missing_requests: MissingRequestsRule = Field(
        default_factory=MissingRequestsRule, description=MissingRequestsRule.__doc__
    )
    silent_oom: SilentOOMRule = Field(
        default_factory=SilentOOMRule, alias="silentOOM", description=SilentOOMRule.__doc__
    )
    limit_ratio: LimitRatioRule = Field(default_factory=LimitRatioRule, description=LimitRatioRule.__doc__)
    node_reservation: NodeReservationRule = Field(
        default_factory=NodeReservationRule, description=NodeReservationRule.__doc__
    )


class MemoryPolicySpec(_Model):
    """What a MemoryPolicy checks, and where."""

    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Pods in namespaces whose labels match are checked by the pod rules "
        "(missing requests, silent OOM kills). Unset: all namespaces.",
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Only pods whose labels match are checked by the pod rules. Unset: all pods."
    )
    node_selector: LabelSelector | None = Field(
        default=None,
        description="Only nodes whose labels match are checked by the node rules (overcommit, memory "
        "pressure) and for OOM kills. Unset: all nodes.",
    )
    rules: Rules = Field(default_factory=Rules, description=Rules.__doc__)


class PolicyError(ValueError):
    """An invalid MemoryPolicy spec. The message names the field."""


def describe_validation_error(err: ValidationError, prefix: str = "spec") -> str:
    parts = []
    for e in err.errors():
        loc = ".".join([prefix, *(str(p) for p in e["loc"])]) if e["loc"] else prefix
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_spec(spec: dict[str, Any] | None) -> MemoryPolicySpec:
    """Validate a MemoryPolicy ``spec`` (camelCase, as stored in the API)."""
    try:
        return MemoryPolicySpec.model_validate(spec or {})
    except ValidationError as err:
        raise PolicyError(describe_validation_error(err)) from None


def policy_from_manifest(obj: dict[str, Any]) -> tuple[str, MemoryPolicySpec]:
    """(name, spec) of a MemoryPolicy manifest; PolicyError if it is not a valid one."""
    if not isinstance(obj, dict):
        raise PolicyError("not a MemoryPolicy object")
    kind = obj.get("kind")
    if kind != KIND:
        raise PolicyError(f"kind is {kind!r}, expected {KIND!r}")
    api_version = obj.get("apiVersion", "")
    if api_version != f"{GROUP}/{VERSION}":
        raise PolicyError(f"apiVersion is {api_version!r}, expected '{GROUP}/{VERSION}'")
    name = (obj.get("metadata") or {}).get("name") or "unnamed"
    return name, parse_spec(obj.get("spec"))



# --- status ---------------------------------------------------------------------------------
# The operator writes it; the model documents it and gives the CRD its status schema.


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str = Field(
        description="Ready: the policy is valid and was evaluated. Enforcing: the policy's admission "
        "rules are in force (the generated ValidatingAdmissionPolicies are named in the message), or "
        "why not."
    )
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="A CamelCase reason for the status.")
    message: str = Field(default="", description="What happened, for people.")
    last_transition_time: str | None = Field(default=None, description="When the status last changed.")
    observed_generation: int | None = Field(default=None, description="The spec generation it is about.")


SUMMARY_DOC = "Counts over everything the policy selects."


def _summary_model() -> type[_Model]:
    """``status.summary``: one count per rule of the rule table that has a summary key, then the others."""
    fields: dict[str, Any] = {
        key: (int, Field(default=0, alias=key, description=doc)) for key, doc in ruletable.summary_fields()
    }
    return create_model("Summary", __base__=_Model, __doc__=SUMMARY_DOC, **fields)


if TYPE_CHECKING:
    Summary = _Model
else:
    Summary = _summary_model()


class ViolationStatus(_Model):
    """One violation, as the operator reports it."""

    rule: str = Field(description=ruletable.names_text() + ".")
    kind: str = Field(description="Pod or Node.")
    namespace: str | None = Field(default=None, description="The pod's namespace.")
    name: str = Field(description="The pod's or node's name.")
    container: str | None = Field(default=None, description="The container, where it is about one.")
    message: str = Field(default="", description="What is wrong, for people.")
    first_seen: str | None = Field(default=None, description="When the operator first saw it.")
    last_seen: str | None = Field(default=None, description="When the operator last saw it.")


class MemoryPolicyStatus(_Model):
    """What the operator found. Written by memory-hygiene only."""

    observed_generation: int | None = Field(default=None, description="The spec generation evaluated.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and why.")
    summary: Summary | None = Field(default=None, description=Summary.__doc__)
    violations: list[ViolationStatus] = Field(
        default_factory=list, description="Violations, most severe first, capped (see summary.violations)."
    )
    last_evaluation_time: str | None = Field(default=None, description="When the status was last computed.")
