"""Kubernetes object dicts -> the small tuples of ``core.types``.

Input is a Pod or Node as the API serves it (``kubectl get -o json``, a kopf body): camelCase
keys, quantities as strings, times as RFC 3339 strings. Anything we cannot interpret raises
``MalformedObjectError`` (a ValueError) naming the object and the field, never a bare
KeyError/TypeError.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import orjson
from datetime import datetime, timedelta, timezone

from .qos import is_node_critical, qos_class, score_requests
from .quantity import MalformedObjectError, QuantityError, parse_bytes
from .resources import container_memory, containers, mapping, pod_memory, sequence
from .types import ContainerInfo, Labels, NodeInfo, PodInfo, labels_of

__all__ = ["MalformedObjectError", "TimeFormatError", "node_info", "parse_time", "pod_info"]


class TimeFormatError(ValueError):
    """A string is not an RFC 3339 timestamp."""


# metav1.Time is RFC 3339 with second precision ("2024-05-01T10:00:00Z"), metav1.MicroTime has
# six fractional digits; Go's time.RFC3339Nano allows up to nine and any offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


_METAV1_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)
"""What the API server writes for every metav1.Time: parsed by datetime in C, 10x faster."""


def format_time(t: float, micro: bool = False) -> str:
    """POSIX seconds as the API server writes a metav1.Time (RFC 3339, UTC, whole seconds), or
    a metav1.MicroTime (``micro``: microseconds)."""
    when = datetime.fromtimestamp(t, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> float | None:
    """An RFC 3339 time (``Z`` or ``+hh:mm``, optional fraction) as POSIX seconds.

    None and "" give None; anything else that is not RFC 3339 raises TimeFormatError.
    """
    if s is None or s == "":
        return None
    if not isinstance(s, str):
        raise TimeFormatError(f"invalid time {s!r}: not a string")
    if len(s) == 20 and _METAV1_TIME.fullmatch(s):
        try:
            return datetime.fromisoformat(s).timestamp()  # "Z" is UTC (Python >= 3.11)
        except ValueError as exc:
            raise TimeFormatError(f"invalid time {s!r}: {exc}") from exc
    m = _RFC3339.fullmatch(s)
    if not m:
        raise TimeFormatError(f"invalid time {s!r}: not RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_h, off_m = m.group(7, 8, 9, 10)
    offset = timedelta()
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise TimeFormatError(f"invalid time {s!r}: bad UTC offset")
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError as exc:
        raise TimeFormatError(f"invalid time {s!r}: {exc}") from exc
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def _time(obj: dict, value: object, field: str) -> float | None:
    try:
        return parse_time(value)  # type: ignore[arg-type]
    except TimeFormatError as exc:
        raise MalformedObjectError(obj, field, str(exc)) from exc


def _str(obj: dict, value: object, field: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedObjectError(obj, field, f"expected a string, got {type(value).__name__}")
    return value


# --- sharing: the caches keep one tuple per Pod, so what pods repeat is kept once --------------------


def shared_str(s: str) -> str:
    """The one object for this string (``sys.intern``), for the strings many cached tuples repeat:
    a namespace, a node's name, a phase, a container's name, label keys and values. Interned
    strings are freed when nothing else holds them, so churn does not grow the table. Not for
    the strings every pod has its own of (uid, name, container id): an entry each, for nothing."""
    return sys.intern(s) if type(s) is str else s


class SharedValues:
    """Equal immutable values -> one object, bounded: two generations of at most ``size``
    entries each. A value is looked up in the young one, then the old one (and moved young);
    when the young one is full it becomes the old one and the old one is dropped, so what no
    new object repeats any more (its pods deleted) is let go after two generations, and what
    does stays shared."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.young: dict[Any, Any] = {}
        self.old: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def clear(self) -> None:
        self.young, self.old = {}, {}

    def get(self, value: Any, make: Callable[[Any], Any] | None = None) -> Any:
        """The shared object equal to ``value``; on a miss, ``make(value)`` (default: ``value``
        itself) becomes it."""
        hit = self.young.get(value)
        if hit is not None:
            return hit
        hit = self.old.get(value)
        if hit is None:
            hit = value if make is None else make(value)
        if len(self.young) >= self.size:
            self.old, self.young = self.young, {}
        self.young[hit] = hit
        return hit


_LABEL_SETS = SharedValues(10_000)
"""Whole label sets: a Deployment's (a ReplicaSet's) or a DaemonSet's pods have the same."""
_LABEL_PAIRS = SharedValues(10_000)
"""(key, value) pairs, for label sets that are not all shared: a StatefulSet pod's own
``statefulset.kubernetes.io/pod-name`` beside its set's labels, a Node's hostname beside its
zone and instance type."""


_TIMES = SharedValues(4_096)
"""creationTimestamps (float seconds): pods made together (a rollout, a scale-up, a node's
DaemonSet pods, the benchmark's load) were created in the same second."""


def _pair(pair: tuple[str, str]) -> tuple[str, str]:
    return (shared_str(pair[0]), shared_str(pair[1]))


def _label_set(labels: Labels) -> Labels:
    return tuple([_LABEL_PAIRS.get(pair, _pair) for pair in labels])


def shared_labels(labels: Labels) -> Labels:
    """``labels`` (sorted pairs), as the one tuple kept for every equal label set."""
    return _LABEL_SETS.get(labels, _label_set) if labels else ()


def _labels(obj: dict) -> Labels:
    meta = mapping(obj, obj.get("metadata"), "metadata")
    labels = mapping(obj, meta.get("labels"), "metadata.labels")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise MalformedObjectError(obj, f"metadata.labels.{key}", "label value is not a string")
    return shared_labels(labels_of(obj))


def _container_id(obj: dict, value: object, field: str) -> str | None:
    """``containerd://abc`` -> ``abc`` (also ``cri-o://``, ``docker://``); None if unset."""
    raw = _str(obj, value, field)
    return raw.partition("://")[2] if "://" in raw else (raw or None)


def _previous_id(obj: dict, cs: dict, path: str) -> str | None:
    last = mapping(obj, cs.get("lastState"), f"{path}.lastState")
    term = mapping(obj, last.get("terminated"), f"{path}.lastState.terminated")
    return _container_id(obj, term.get("containerID"), f"{path}.lastState.terminated.containerID")


def _oom_times(obj: dict, cs: dict, path: str) -> tuple[float, ...]:
    """finishedAt of ``state.terminated`` and ``lastState.terminated`` whose reason is OOMKilled
    and whose exit code is not 0. kubelet reports ``OOMKilled`` for a container whose memory
    cgroup saw an OOM kill during its life, also when PID 1 then exited 0 by itself (a child was
    the victim: seen on a real kubelet, tests/e2e/realnode): that termination is not the kill."""
    found = []
    for key in ("lastState", "state"):
        state = mapping(obj, cs.get(key), f"{path}.{key}")
        term = mapping(obj, state.get("terminated"), f"{path}.{key}.terminated")
        if term.get("reason") == "OOMKilled" and term.get("exitCode") != 0:
            t = _time(obj, term.get("finishedAt"), f"{path}.{key}.terminated.finishedAt")
            if t is not None:
                found.append(t)
    return tuple(sorted(found))


_SHAPES: dict[bytes, tuple] = {}
_SHAPES_MAX = 20_000


def _shape(pod: dict) -> bytes | None:
    """Everything the memory math (resources.py, qos.py) reads from a Pod, as one key: pods
    of the same shape (a Deployment's replicas) share the result. None when not well-formed
    enough to say (the full path then raises the clear error)."""
    try:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        annotations = meta.get("annotations") or {}
        statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        return orjson.dumps([
            [[c.get("name"), c.get("resources"), c.get("restartPolicy")] for c in spec.get("initContainers") or []],
            [[c.get("name"), c.get("resources")] for c in spec.get("containers") or []],
            spec.get("resources"), spec.get("overhead"), spec.get("priorityClassName"), spec.get("priority"),
            annotations.get("kubernetes.io/config.source"), "kubernetes.io/config.mirror" in annotations,
            status.get("qosClass"), status.get("allocatedResources"), status.get("resources"),
            [[x.get("name"), x.get("allocatedResources"), x.get("resources")] for x in statuses],
            [[c.get("type"), c.get("reason")] for c in status.get("conditions") or []
             if c.get("type") == "PodResizePending"],
        ], option=orjson.OPT_SORT_KEYS)
    except (AttributeError, TypeError, ValueError):
        return None


def _memory_math(pod: dict) -> tuple:
    """(request, limit, per-container ContainerMemory, score requests, QoS, node-critical)."""
    key = _shape(pod)
    hit = _SHAPES.get(key) if key is not None else None
    if hit is not None:
        return hit
    request, limit = pod_memory(pod)
    result = (request, limit, container_memory(pod), score_requests(pod), qos_class(pod), is_node_critical(pod))
    if key is not None:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[key] = result
    return result


def pod_info(pod: dict) -> PodInfo:
    """A Pod object as a PodInfo (effective memory, QoS, per-container runtime state)."""
    if not isinstance(pod, dict):
        raise MalformedObjectError(pod, "", "a Pod must be a JSON object")
    meta = mapping(pod, pod.get("metadata"), "metadata")
    spec = mapping(pod, pod.get("spec"), "spec")
    status = mapping(pod, pod.get("status"), "status")
    request, limit, memories, scores, qos, node_critical = _memory_math(pod)
    infos = []
    for c, mem in zip(containers(pod), memories, strict=True):
        cs, path = c.status or {}, c.status_path
        state = mapping(pod, cs.get("state"), f"{path}.state")
        restarts = cs.get("restartCount", 0)
        if isinstance(restarts, bool) or not isinstance(restarts, int):
            raise MalformedObjectError(pod, f"{path}.restartCount", f"not an integer: {restarts!r}")
        infos.append(
            ContainerInfo(
                name=shared_str(c.name),
                kind=c.kind,
                request=mem.request,
                limit=mem.limit,
                container_id=_container_id(pod, cs.get("containerID"), f"{path}.containerID"),
                running=state.get("running") is not None,
                oom_finished=_oom_times(pod, cs, path),
                restart_count=restarts,
                score_request=scores.get(c.name),
                previous_id=_previous_id(pod, cs, path),
            )
        )
    return PodInfo(
        uid=_str(pod, meta.get("uid"), "metadata.uid"),
        namespace=shared_str(_str(pod, meta.get("namespace"), "metadata.namespace")),
        name=_str(pod, meta.get("name"), "metadata.name"),
        node=shared_str(_str(pod, spec.get("nodeName"), "spec.nodeName")) or None,
        phase=shared_str(_str(pod, status.get("phase"), "status.phase")) or "Unknown",
        labels=_labels(pod),
        qos=qos,
        request=request,
        limit=limit,
        containers=tuple(infos),
        reason=shared_str(_str(pod, status.get("reason"), "status.reason")),
        message=_str(pod, status.get("message"), "status.message"),
        node_critical=node_critical,
        created=_created(pod, meta),
        kubelet_uid=_mirror_of(pod, meta),
    )


def _created(pod: dict, meta: dict) -> float | None:
    t = _time(pod, meta.get("creationTimestamp"), "metadata.creationTimestamp")
    return None if t is None else _TIMES.get(t)


MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
"""kubelet's ConfigMirrorAnnotationKey (pkg/kubelet/types/pod_update.go), set by its mirror
client (pkg/kubelet/pod/mirror_client.go, CreateMirrorPod) to the static pod's hash, which is
also its UID on the node (pkg/kubelet/config/common.go, applyDefaults)."""


def _mirror_of(pod: dict, meta: dict) -> str | None:
    annotations = mapping(pod, meta.get("annotations"), "metadata.annotations")
    value = _str(pod, annotations.get(MIRROR_ANNOTATION), f"metadata.annotations[{MIRROR_ANNOTATION}]")
    return value.lower() or None


def _memory(node: dict, resources: object, field: str) -> int | None:
    rl = mapping(node, resources, field)
    if rl.get("memory") is None:
        return None
    try:
        return parse_bytes(rl["memory"])
    except QuantityError as exc:
        raise MalformedObjectError(node, f"{field}.memory", str(exc)) from exc


def node_info(node: dict) -> NodeInfo:
    """A Node object as a NodeInfo (memory capacity/allocatable, MemoryPressure condition)."""
    if not isinstance(node, dict):
        raise MalformedObjectError(node, "", "a Node must be a JSON object")
    meta = mapping(node, node.get("metadata"), "metadata")
    status = mapping(node, node.get("status"), "status")
    pressure, message = False, ""
    for i, cond in enumerate(sequence(node, status.get("conditions"), "status.conditions")):
        cond = mapping(node, cond, f"status.conditions[{i}]")
        if cond.get("type") == "MemoryPressure":
            pressure = cond.get("status") == "True"
            message = _str(node, cond.get("message"), f"status.conditions[{i}].message")
            break
    return NodeInfo(
        name=shared_str(_str(node, meta.get("name"), "metadata.name")),
        uid=_str(node, meta.get("uid"), "metadata.uid"),
        labels=_labels(node),
        capacity=_memory(node, status.get("capacity"), "status.capacity"),
        allocatable=_memory(node, status.get("allocatable"), "status.allocatable"),
        memory_pressure=pressure,
        pressure_message=shared_str(message),
    )
