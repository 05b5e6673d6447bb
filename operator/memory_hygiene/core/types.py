"""Plain data the rules work on.

Everything here is a small immutable tuple: the operator keeps one per Pod, Node and OOM
Event in its list+watch caches, so nothing here may hold a whole Kubernetes object body.
Byte counts are ints; an unknown or unset amount is None. Times are POSIX seconds (float).
``core.snapshot`` gives equal values one object (a namespace, a node's name, a label set, a
creation time), so that 150,000 pods do not hold 150,000 copies: compare them with ``==``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .kernel import OOMKill

Labels = tuple[tuple[str, str], ...]
"""Labels as sorted (key, value) pairs, so they hash and compare."""


def labels_of(obj: dict) -> Labels:
    return tuple(sorted(((obj.get("metadata") or {}).get("labels") or {}).items()))


class ContainerInfo(NamedTuple):
    name: str
    kind: str
    """"app", "init" (runs to completion before the app containers) or "sidecar"
    (an init container with restartPolicy Always)."""
    request: int | None
    """Effective memory request in bytes (max of spec, allocated and actual), None if unset."""
    limit: int | None
    """Effective memory limit in bytes, None if unset (unbounded)."""
    container_id: str | None
    """The runtime's container id without its scheme (``containerd://``), from the status."""
    running: bool
    oom_finished: tuple[float, ...]
    """finishedAt of each terminated state/lastState whose reason is OOMKilled."""
    restart_count: int
    score_request: int | None = None
    """The bytes kubelet's oom_score_adj formula uses for this container (qos.score_requests)."""
    previous_id: str | None = None
    """The container id of its last termination (``lastState.terminated.containerID``): a
    memory cgroup path printed before the restart names that one."""


class PodInfo(NamedTuple):
    uid: str
    namespace: str
    name: str
    node: str | None
    phase: str
    labels: Labels
    qos: str
    """"Guaranteed", "Burstable" or "BestEffort"."""
    request: int
    """Effective pod memory request in bytes (component-helpers PodRequests), 0 when none."""
    limit: int | None
    """Effective finite pod memory limit in bytes, None when some container is unbounded."""
    containers: tuple[ContainerInfo, ...]
    reason: str
    """status.reason (e.g. "Evicted")."""
    message: str
    """status.message (kubelet's eviction message)."""
    node_critical: bool = False
    """kubelet gives every container of a node-critical pod oom_score_adj -997."""
    created: float | None = None
    """metadata.creationTimestamp: a pod created after a kill cannot be its victim."""
    kubelet_uid: str | None = None
    """A static pod's UID on its node, which its memory cgroup path carries: kubelet names a
    static pod by the hash of its manifest and gives its mirror pod (what the API server
    holds, with a UID of its own) that hash as ``kubernetes.io/config.mirror``. None for others."""

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def memory_evicted(self) -> bool:
        """Evicted by kubelet because the node ran low on memory."""
        return (
            self.phase == "Failed"
            and self.reason == "Evicted"
            and "low on resource: memory" in self.message
        )


class NodeInfo(NamedTuple):
    name: str
    uid: str
    labels: Labels
    capacity: int | None
    allocatable: int | None
    memory_pressure: bool
    pressure_message: str


class OOMEventInfo(NamedTuple):
    """An Event whose reason is OOMKilling (node-problem-detector, or any source using the
    same reason) or SystemOOM (kubelet), with the kills its text tells of, read once when it
    arrives (``core/events.py``)."""

    uid: str
    reason: str
    node: str
    message: str
    """The first ``MESSAGE_EXCERPT`` characters of its text, for logs (the kills are below)."""
    first_time: float | None
    last_time: float | None
    count: int
    source: str
    name: str = ""
    """metadata.name: node-problem-detector names its Events by creation time (``<node>.<hex
    nanoseconds>``), so among Events of one second the name gives the kernel's print order."""
    namespace: str = ""
    """metadata.namespace: reporters post Node Events in ``default``; elsewhere they are not
    theirs (anyone who may create Events in a namespace of their own could post one)."""
    kills: tuple[OOMKill, ...] = ()
    """The kills its text tells of, in the order printed (at most ``kernel.MAX_KILLS_PER_TEXT``)."""
    more_kills: bool = False
    """Its text told of more kills than ``kills`` holds."""
