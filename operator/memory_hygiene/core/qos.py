"""QoS class and the ``oom_score_adj`` kubelet gives each container.

Upstream (kubernetes/kubernetes, read at v1.37.2):

- ``pkg/apis/core/v1/helper/qos/qos.go``: ``GetPodQOS`` returns ``status.qosClass`` when set (the
  API server computes it on create) and only otherwise ``ComputePodQOS``. With pod-level resources
  set (``PodLevelResourcesFixKubeletQOSClass``, beta/on in 1.37) the class comes from
  ``spec.resources`` alone; else per container, init containers included, over cpu and memory:
  request == limit != 0 for both in every container -> Guaranteed, nothing at all -> BestEffort,
  anything else -> Burstable. Amounts are compared exactly (``Quantity.Equal``), not in bytes.
- ``pkg/kubelet/qos/policy.go`` + ``helpers.go`` ``GetContainerOOMScoreAdjust``:

  1. node-critical pod (priorityClassName ``system-node-critical`` *and* critical: static, mirror
     or priority >= 2000000000; ``pkg/kubelet/types/pod_update.go``) -> -997;
  2. Guaranteed -> -997; BestEffort -> 1000;
  3. Burstable: ``1000 - 1000 * (request + share) // capacity`` (integer division), where
     ``share`` is, when pod-level requests are set, the pod-level memory request not covered by
     the aggregated container requests, divided equally among all init and app containers;
  4. a sidecar (restartable init container) gets at most the score of the app container with the
     smallest request (plus the same share), so it is never killed before the app it serves;
  5. clamp: below 3 (1000 + -997) -> 3; exactly 1000 -> 999.

  ``capacity`` is the node's *capacity* (cAdvisor ``MachineInfo.MemoryCapacity``), not allocatable.
  kubelet passes the *allocated* Pod (``status.containerStatuses[].allocatedResources`` replaces
  the spec requests) and computes the score when it creates the container; an in-place resize does
  not change it until the container restarts. DRA memory claims (alpha, off) are not counted.
  Unreleased upstream work (the ``KubeletOOMScoreAdjTieBreak`` gate on master after v1.37) nudges
  Burstable scores by a few points; it is not modelled here.
"""

from __future__ import annotations

from decimal import Decimal

from .quantity import MalformedObjectError, bytes_of, object_ref
from .resources import (
    APP,
    SIDECAR,
    Container,
    aggregate,
    containers,
    mapping,
    pod_level_requests_set,
    pod_level_resources_set,
    quantity,
    spec_request,
)
from .types import ContainerInfo, PodInfo

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
QOS_CLASSES = (GUARANTEED, BURSTABLE, BEST_EFFORT)

GUARANTEED_OOM_SCORE_ADJ = -997
BEST_EFFORT_OOM_SCORE_ADJ = 1000
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000  # pkg/apis/scheduling/types.go
SYSTEM_NODE_CRITICAL = "system-node-critical"


def qos_class(pod: dict) -> str:
    """``status.qosClass`` if set, else the class computed from the spec (``GetPodQOS``)."""
    status = mapping(pod, pod.get("status"), "status")
    recorded = status.get("qosClass")
    if recorded:
        if recorded not in QOS_CLASSES:
            raise MalformedObjectError(pod, "status.qosClass", f"unknown QoS class {recorded!r}")
        return recorded
    return compute_qos_class(pod)


def compute_qos_class(pod: dict) -> str:
    """``ComputePodQOS``: the class from the spec alone (container requests default to limits)."""
    if pod_level_resources_set(pod):
        spec = mapping(pod, pod.get("spec"), "spec")
        res = mapping(pod, spec.get("resources"), "spec.resources")
        return _requirements_qos(pod, res, "spec.resources", defaulted=False)
    result = None
    for c in containers(pod):
        res = mapping(pod, c.spec.get("resources"), f"{c.path}.resources")
        qos = _requirements_qos(pod, res, f"{c.path}.resources", defaulted=True)
        if qos == BURSTABLE:
            return BURSTABLE
        if result is None:
            result = qos
        elif result != qos:
            return BURSTABLE
    return result or BEST_EFFORT


def _requirements_qos(pod: dict, res: dict, path: str, defaulted: bool) -> str:
    requests = mapping(pod, res.get("requests"), f"{path}.requests")
    limits = mapping(pod, res.get("limits"), f"{path}.limits")
    if not requests and not limits:
        return BEST_EFFORT
    classes = set()
    for name in ("cpu", "memory"):
        req = quantity(pod, requests, f"{path}.requests", name)
        lim = quantity(pod, limits, f"{path}.limits", name)
        if req is None and defaulted:  # SetDefaults_Pod: requests default to limits
            req = lim
        req, lim = req or Decimal(0), lim or Decimal(0)
        if req != lim:
            return BURSTABLE
        classes.add(BEST_EFFORT if req == 0 else GUARANTEED)
    return classes.pop() if len(classes) == 1 else BURSTABLE


def is_critical(pod: dict) -> bool:
    """kubelet ``IsCriticalPod``: a static pod, a mirror pod, or priority >= 2000000000."""
    meta = mapping(pod, pod.get("metadata"), "metadata")
    annotations = mapping(pod, meta.get("annotations"), "metadata.annotations")
    source = annotations.get("kubernetes.io/config.source")
    if source is not None and source != "api":
        return True
    if "kubernetes.io/config.mirror" in annotations:
        return True
    priority = mapping(pod, pod.get("spec"), "spec").get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise MalformedObjectError(pod, "spec.priority", f"not an integer: {priority!r}")
    return priority is not None and priority >= SYSTEM_CRITICAL_PRIORITY


def is_node_critical(pod: dict) -> bool:
    """kubelet ``IsNodeCriticalPod``: critical and of priority class system-node-critical."""
    spec = mapping(pod, pod.get("spec"), "spec")
    return spec.get("priorityClassName") == SYSTEM_NODE_CRITICAL and is_critical(pod)


def _allocated(pod: dict, c: Container) -> Decimal:
    """The container's memory request in the allocated Pod kubelet scores (0 if none)."""
    if c.status is not None and c.status.get("allocatedResources") is not None:
        value = quantity(pod, c.status["allocatedResources"], f"{c.status_path}.allocatedResources")
    else:
        value = spec_request(pod, c)
    return value or Decimal(0)


def _remaining_share(pod: dict, cs: list[Container]) -> int:
    """kubelet ``remainingPodMemReqPerContainer``: unassigned pod-level request per container."""
    spec = mapping(pod, pod.get("spec"), "spec")
    res = mapping(pod, spec.get("resources"), "spec.resources")
    pod_request = quantity(pod, res.get("requests"), "spec.resources.requests")
    status = mapping(pod, pod.get("status"), "status")
    if status.get("allocatedResources") is not None:  # the allocated pod-level request
        allocated = quantity(pod, status["allocatedResources"], "status.allocatedResources")
        pod_request = allocated if allocated is not None else pod_request
    if not pod_request:
        return 0
    assigned = aggregate(cs, lambda c: _allocated(pod, c)) or Decimal(0)
    remaining = max(bytes_of(pod_request) - bytes_of(assigned), 0)
    return remaining // len(cs)


def _check_capacity(memory_capacity: object) -> None:
    if isinstance(memory_capacity, bool) or not isinstance(memory_capacity, int):
        raise TypeError(f"memory_capacity must be an int, got {memory_capacity!r}")
    if memory_capacity <= 0:
        raise ValueError(f"memory_capacity must be positive, got {memory_capacity}")


def _linear(request: int, capacity: int) -> int:
    return 1000 - (1000 * request) // capacity


def oom_score_adj(pod: dict, container_name: str, memory_capacity: int) -> int:
    """The ``oom_score_adj`` kubelet sets for ``container_name`` on a node whose memory capacity
    (``status.capacity.memory``, not allocatable) is ``memory_capacity`` bytes."""
    _check_capacity(memory_capacity)
    cs = containers(pod)
    target = next((c for c in cs if c.name == container_name), None)
    if target is None:
        raise ValueError(f"{object_ref(pod)} has no container {container_name!r}")

    if is_node_critical(pod):
        return GUARANTEED_OOM_SCORE_ADJ
    qos = qos_class(pod)
    if qos == GUARANTEED:
        return GUARANTEED_OOM_SCORE_ADJ
    if qos == BEST_EFFORT:
        return BEST_EFFORT_OOM_SCORE_ADJ

    share = _remaining_share(pod, cs) if pod_level_requests_set(pod) else 0
    apps = [c for c in cs if c.kind == APP]
    smallest = min((bytes_of(_allocated(pod, c)) for c in apps), default=None)
    return _burstable(
        bytes_of(_allocated(pod, target)), share, target.kind, smallest, memory_capacity
    )


def _clamp(score: int) -> int:
    """Step 5 of the module docstring."""
    if score < 1000 + GUARANTEED_OOM_SCORE_ADJ:
        return 1000 + GUARANTEED_OOM_SCORE_ADJ
    if score == BEST_EFFORT_OOM_SCORE_ADJ:
        return score - 1
    return score


def _burstable(request: int, share: int, kind: str, smallest_app: int | None, capacity: int) -> int:
    """Steps 3-5 of the module docstring: the Burstable score with the sidecar rule and clamps."""
    score = _linear(request + share, capacity)
    if kind == SIDECAR and smallest_app is not None:
        score = min(score, _linear(smallest_app + share, capacity))
    return _clamp(score)


def score_requests(pod: dict) -> dict[str, int]:
    """Per container, the bytes kubelet's Burstable formula scores: the allocated request plus
    the pod-level share, and for a sidecar at least the smallest app container's (the formula
    decreases with the request, so min(score(a), score(b)) == score(max(a, b))). With these and
    the node's capacity, ``expected_score`` needs no Pod object."""
    cs = containers(pod)
    share = _remaining_share(pod, cs) if pod_level_requests_set(pod) else 0
    smallest = min((bytes_of(_allocated(pod, c)) for c in cs if c.kind == APP), default=None)
    out = {}
    for c in cs:
        own = bytes_of(_allocated(pod, c))
        if c.kind == SIDECAR and smallest is not None:
            own = max(own, smallest)
        out[c.name] = own + share
    return out


def expected_score(pod: PodInfo, container: ContainerInfo, memory_capacity: int) -> int:
    """``oom_score_adj`` of a container known only from the stored PodInfo/ContainerInfo, on a
    node of ``memory_capacity`` bytes: the same as ``oom_score_adj`` on the Pod object, from
    ``pod.node_critical``, ``pod.qos`` and ``container.score_request`` (see ``score_requests``)."""
    _check_capacity(memory_capacity)
    if pod.node_critical or pod.qos == GUARANTEED:
        return GUARANTEED_OOM_SCORE_ADJ
    if pod.qos == BEST_EFFORT:
        return BEST_EFFORT_OOM_SCORE_ADJ
    request = container.score_request if container.score_request is not None else (container.request or 0)
    return _clamp(_linear(request, memory_capacity))


def expected_scores(pod: dict, memory_capacity: int) -> dict[str, int]:
    """``oom_score_adj`` of every init and app container, by container name."""
    return {c.name: oom_score_adj(pod, c.name, memory_capacity) for c in containers(pod)}


__all__ = [
    "BEST_EFFORT",
    "BURSTABLE",
    "GUARANTEED",
    "compute_qos_class",
    "expected_score",
    "score_requests",
    "expected_scores",
    "is_critical",
    "is_node_critical",
    "oom_score_adj",
    "qos_class",
]
