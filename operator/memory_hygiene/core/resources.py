"""A Pod's effective memory request and limit, per container and for the whole Pod.

Follows kubernetes/kubernetes ``staging/src/k8s.io/component-helpers/resource/helpers.go``
(``PodRequests``, ``PodLimits``, ``AggregateContainerRequests``/``Limits``; read at
component-helpers v0.37.2 = Kubernetes v1.37.2) with the options the scheduler passes in 1.37
(``pkg/scheduler/framework/types.go`` ``CalculateResource``): ``UseStatusResources`` (in-place
resize, GA) and ``InPlacePodLevelResourcesVerticalScalingEnabled`` (beta, on) both true, pod-level
resources on, overhead included, no DRA (``DRANodeAllocatableResources`` is alpha, off).

Requests (memory only):

- ``aggregate(f)`` = max(sum over app containers and sidecars of f, max over init containers i of
  f(i) + sum of f over the sidecars declared before i); a sidecar is an init container with
  ``restartPolicy: Always``.
- With in-place resize the request is max(aggregate(spec), aggregate(actuated),
  aggregate(allocated)) -- a max of *sums*, not a sum of per-container maxes. Per container,
  "allocated" is ``status.*ContainerStatuses[].allocatedResources`` (else spec) and "actuated" is
  ``.resources.requests`` (else allocated, else spec). When the pod-level
  ``status.allocatedResources`` and ``status.resources.requests`` are both set they replace the
  two container aggregates. If the Pod's ``PodResizePending`` condition says ``Infeasible`` the spec
  is ignored: max(actuated, allocated).
- ``spec.resources.requests.memory`` (pod-level resources), when set, replaces the result
  (max'ed with ``status.resources``/``status.allocatedResources`` when ``status.resources`` is set).
- ``spec.overhead.memory`` is added.

Limits: the same shape with max(spec, actuated) only; pod-level ``spec.resources.limits.memory``
replaces the aggregate; overhead is added to a non-zero limit. Whether the limit is *finite* is
kubelet's rule (``pkg/kubelet/cm/helpers_linux.go`` ``ResourceConfigForPod``): the pod cgroup gets a
memory limit only if every init and app container has a non-zero memory limit, or the pod-level
memory limit is non-zero. A container without a limit of its own runs under the pod-level limit if
there is one (``pkg/kubelet/kuberuntime/kuberuntime_container_linux.go`` ``getMemoryLimit``).

Before all this, container requests are defaulted from limits as the API server does on create
(``pkg/apis/core/v1/defaults.go`` ``SetDefaults_Pod``): a no-op for objects read from the API,
but it makes hand-written Pods behave like real ones. Pod-level defaulting is not replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import NamedTuple

from .quantity import MalformedObjectError, QuantityError, bytes_of, parse_decimal

MEMORY = "memory"
APP, INIT, SIDECAR = "app", "init", "sidecar"

Amount = Decimal | None
"""An amount of a resource; None when the resource list has no such key."""


class ContainerMemory(NamedTuple):
    name: str
    kind: str
    """"app", "init" or "sidecar" (an init container with restartPolicy Always)."""
    request: int | None
    """Effective request in bytes (max of spec, allocated, actuated); None if unset."""
    limit: int | None
    """Effective limit in bytes (max of spec, actuated; else the pod-level limit); None if
    unbounded. A zero limit means "no limit" to kubelet and is reported as None."""


class Container(NamedTuple):
    """One init or app container of a Pod, with the status kubelet reports for it."""

    name: str
    kind: str
    path: str
    """Field path of the spec, e.g. ``spec.initContainers[1]`` (for error messages)."""
    spec: dict
    status: dict | None
    status_path: str


# ---------------------------------------------------------------------------------------------
# Reading the object


def mapping(obj: dict, value: object, path: str) -> dict:
    """``value`` as a dict ({} if None), else MalformedObjectError naming ``obj`` and ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedObjectError(obj, path, f"expected an object, got {type(value).__name__}")
    return value


def sequence(obj: dict, value: object, path: str) -> list:
    """``value`` as a list ([] if None), else MalformedObjectError."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedObjectError(obj, path, f"expected a list, got {type(value).__name__}")
    return value


def quantity(obj: dict, resources: object, path: str, name: str = MEMORY) -> Amount:
    """The ``name`` entry of a resource list, or None if the list or the entry is missing."""
    rl = mapping(obj, resources, path)
    raw = rl.get(name)
    if raw is None:
        return None
    try:
        value = parse_decimal(raw)
    except QuantityError as exc:
        raise MalformedObjectError(obj, f"{path}.{name}", str(exc)) from exc
    if value < 0 and name == MEMORY:
        raise MalformedObjectError(obj, f"{path}.{name}", f"negative memory amount {raw!r}")
    return value


def containers(pod: dict) -> list[Container]:
    """Init containers (in order) then app containers, each with its status if reported.

    A status is looked up by name in containerStatuses, then initContainerStatuses, as
    component-helpers ``findContainerStatus`` does.
    """
    spec = mapping(pod, pod.get("spec"), "spec")
    status = mapping(pod, pod.get("status"), "status")
    statuses: dict[str, tuple[dict, str]] = {}
    for field in ("initContainerStatuses", "containerStatuses"):  # later wins: app first
        for i, cs in enumerate(sequence(pod, status.get(field), f"status.{field}")):
            cs = mapping(pod, cs, f"status.{field}[{i}]")
            if isinstance(cs.get("name"), str):
                statuses[cs["name"]] = (cs, f"status.{field}[{i}]")
    result = []
    for field in ("initContainers", "containers"):
        for i, c in enumerate(sequence(pod, spec.get(field), f"spec.{field}")):
            path = f"spec.{field}[{i}]"
            c = mapping(pod, c, path)
            name = c.get("name")
            if not isinstance(name, str):
                raise MalformedObjectError(pod, f"{path}.name", "missing or not a string")
            if field == "containers":
                kind = APP
            else:
                kind = SIDECAR if c.get("restartPolicy") == "Always" else INIT
            cs, cs_path = statuses.get(name, (None, ""))
            result.append(Container(name, kind, path, c, cs, cs_path))
    return result


def spec_request(pod: dict, c: Container) -> Amount:
    """The container's spec memory request, defaulted from its limit when absent."""
    res = mapping(pod, c.spec.get("resources"), f"{c.path}.resources")
    requests = mapping(pod, res.get("requests"), f"{c.path}.resources.requests")
    if requests.get(MEMORY) is None:
        return quantity(pod, res.get("limits"), f"{c.path}.resources.limits")
    return quantity(pod, requests, f"{c.path}.resources.requests")


def spec_limit(pod: dict, c: Container) -> Amount:
    res = mapping(pod, c.spec.get("resources"), f"{c.path}.resources")
    return quantity(pod, res.get("limits"), f"{c.path}.resources.limits")


def allocated_request(pod: dict, c: Container, infeasible: bool) -> Amount:
    """component-helpers ``containerAllocatedRequests`` (memory)."""
    if c.status is not None and c.status.get("allocatedResources") is not None:
        return quantity(pod, c.status["allocatedResources"], f"{c.status_path}.allocatedResources")
    return None if infeasible else spec_request(pod, c)


def _status_resources(pod: dict, c: Container, key: str) -> object:
    if c.status is None:
        return None
    res = mapping(pod, c.status.get("resources"), f"{c.status_path}.resources")
    return res.get(key)


def actuated_request(pod: dict, c: Container, infeasible: bool) -> Amount:
    """component-helpers ``containerActuatedRequests`` (memory)."""
    requests = _status_resources(pod, c, "requests")
    if requests is not None:
        return quantity(pod, requests, f"{c.status_path}.resources.requests")
    return allocated_request(pod, c, infeasible)


def actuated_limit(pod: dict, c: Container, infeasible: bool) -> Amount:
    """component-helpers ``containerActuatedLimits`` (memory)."""
    limits = _status_resources(pod, c, "limits")
    if limits is not None:
        return quantity(pod, limits, f"{c.status_path}.resources.limits")
    return None if infeasible else spec_limit(pod, c)


def resize_infeasible(pod: dict) -> bool:
    """component-helpers ``IsPodResizeInfeasible``: the first PodResizePending condition says
    Infeasible."""
    status = mapping(pod, pod.get("status"), "status")
    for i, cond in enumerate(sequence(pod, status.get("conditions"), "status.conditions")):
        cond = mapping(pod, cond, f"status.conditions[{i}]")
        if cond.get("type") == "PodResizePending":
            return cond.get("reason") == "Infeasible"
    return False


def _pod_level(pod: dict, key: str) -> dict:
    spec = mapping(pod, pod.get("spec"), "spec")
    res = mapping(pod, spec.get("resources"), "spec.resources")
    return mapping(pod, res.get(key), f"spec.resources.{key}")


def _supported(name: object) -> bool:
    return name in ("cpu", "memory") or (isinstance(name, str) and name.startswith("hugepages-"))


def pod_level_requests_set(pod: dict) -> bool:
    """component-helpers ``IsPodLevelRequestsSet``: spec.resources.requests names cpu, memory or
    hugepages-*."""
    return any(_supported(k) for k in _pod_level(pod, "requests"))


def pod_level_resources_set(pod: dict) -> bool:
    """component-helpers ``IsPodLevelResourcesSet``: pod-level requests or limits are set."""
    return pod_level_requests_set(pod) or any(_supported(k) for k in _pod_level(pod, "limits"))


def pod_level_limit(pod: dict) -> Amount:
    return quantity(pod, _pod_level(pod, "limits"), "spec.resources.limits")


# ---------------------------------------------------------------------------------------------
# Arithmetic on optional amounts (None = "key absent", as in a Go ResourceList)


def _add(a: Amount, b: Amount) -> Amount:
    if a is None:
        return b
    return a if b is None else a + b


def _max(*values: Amount) -> Amount:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def aggregate(cs: list[Container], value: Callable[[Container], Amount]) -> Amount:
    """Sidecar-aware aggregation (component-helpers ``aggregateContainerResourcesByFn``)."""
    total: Amount = None
    for c in cs:
        if c.kind == APP:
            total = _add(total, value(c))
    sidecars: Amount = None
    init_peak: Amount = None
    for c in cs:
        if c.kind == APP:
            continue
        v = value(c)
        if c.kind == SIDECAR:
            total = _add(total, v)
            sidecars = _add(sidecars, v)
            running = sidecars
        else:
            running = _add(v, sidecars)
        init_peak = _max(init_peak, running)
    return _max(total, init_peak)


def _bytes(pod: dict, value: Amount, field: str) -> int | None:
    if value is None:
        return None
    try:
        return bytes_of(value)
    except QuantityError as exc:
        raise MalformedObjectError(pod, field, str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# Public API


def container_memory(pod: dict) -> list[ContainerMemory]:
    """Effective memory request and limit of every init and app container (init first)."""
    infeasible = resize_infeasible(pod)
    fallback = pod_level_limit(pod) if pod_level_resources_set(pod) else None
    result = []
    for c in containers(pod):
        allocated = allocated_request(pod, c, infeasible)
        actuated = actuated_request(pod, c, infeasible)
        if infeasible:
            request = _max(actuated, allocated)
            limit = actuated_limit(pod, c, infeasible)
        else:
            request = _max(spec_request(pod, c), actuated, allocated)
            limit = _max(spec_limit(pod, c), actuated_limit(pod, c, infeasible))
        if not limit:  # None or zero: unlimited, unless the pod-level limit applies
            limit = fallback or None
        result.append(
            ContainerMemory(
                c.name,
                c.kind,
                _bytes(pod, request, f"{c.path}.resources.requests.memory"),
                _bytes(pod, limit, f"{c.path}.resources.limits.memory"),
            )
        )
    return result


def pod_request(pod: dict) -> Amount:
    """Effective pod memory request as an exact Decimal (None if nothing requests memory)."""
    cs = containers(pod)
    infeasible = resize_infeasible(pod)
    status = mapping(pod, pod.get("status"), "status")
    st_res = mapping(pod, status.get("resources"), "status.resources")
    st_alloc = status.get("allocatedResources")

    spec_total = aggregate(cs, lambda c: spec_request(pod, c))
    if st_alloc is not None and st_res.get("requests") is not None:
        allocated = quantity(pod, st_alloc, "status.allocatedResources")
        actuated = quantity(pod, st_res["requests"], "status.resources.requests")
    else:
        allocated = aggregate(cs, lambda c: allocated_request(pod, c, infeasible))
        actuated = aggregate(cs, lambda c: actuated_request(pod, c, infeasible))
    request = _max(actuated, allocated) if infeasible else _max(spec_total, actuated, allocated)

    if pod_level_requests_set(pod):
        level = quantity(pod, _pod_level(pod, "requests"), "spec.resources.requests")
        if status.get("resources") is not None:
            level = _max(
                None if infeasible else level,
                quantity(pod, st_res.get("requests"), "status.resources.requests"),
                quantity(pod, st_alloc, "status.allocatedResources"),
            )
        if level is not None:
            request = level

    spec = mapping(pod, pod.get("spec"), "spec")
    return _add(request, quantity(pod, spec.get("overhead"), "spec.overhead"))


def pod_limit(pod: dict) -> Amount:
    """``PodLimits`` memory as an exact Decimal, before kubelet's finiteness rule."""
    cs = containers(pod)
    infeasible = resize_infeasible(pod)
    status = mapping(pod, pod.get("status"), "status")
    st_res = mapping(pod, status.get("resources"), "status.resources")

    spec_total = aggregate(cs, lambda c: spec_limit(pod, c))
    if st_res.get("limits") is not None:
        actuated = quantity(pod, st_res["limits"], "status.resources.limits")
    else:
        actuated = aggregate(cs, lambda c: actuated_limit(pod, c, infeasible))
    limit = actuated if infeasible else _max(spec_total, actuated)

    if pod_level_resources_set(pod):
        level = pod_level_limit(pod)
        if status.get("resources") is not None:
            level = _max(
                None if infeasible else level,
                quantity(pod, st_res.get("limits"), "status.resources.limits"),
            )
        if level is not None:
            limit = level

    spec = mapping(pod, pod.get("spec"), "spec")
    if limit:  # overhead is only added to a non-zero limit
        limit = _add(limit, quantity(pod, spec.get("overhead"), "spec.overhead"))
    return limit


def pod_memory(pod: dict) -> tuple[int, int | None]:
    """(effective request in bytes, 0 if none; finite effective limit in bytes, or None).

    The limit is None when some init or app container has no (or a zero) memory limit and no
    pod-level memory limit bounds it: kubelet then puts no memory limit on the pod cgroup.
    """
    request = _bytes(pod, pod_request(pod), "spec") or 0
    if any(c.limit is None for c in container_memory(pod)):
        return request, None
    limit = pod_limit(pod)
    return request, (_bytes(pod, limit, "spec") if limit else None)
