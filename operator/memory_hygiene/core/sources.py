"""What is read from the cluster, declared once: for each watched resource its API path, the
server-side field selector and the conversion to the small tuple a cache keeps.

The operator's list+watch caches (``shell/runtime.py`` ``reflectors``) and the one-shot live
audit (``inputs.load_live``, through ``shell/reflector.read_once``) both take their reads from
``SOURCES``, so that the two see the same objects and report the same numbers.

No I/O here: a path and a selector are data; ``shell/reflector.py`` does the requests.

Field selectors are what the API server can filter on, nothing else (an unknown field is a
400): Pods offer ``spec.nodeName``, ``spec.restartPolicy``, ``spec.schedulerName``,
``spec.serviceAccountName``, ``spec.hostNetwork``, ``status.phase``, ``status.podIP``,
``status.nominatedNodeName`` and the metadata ones (kubernetes pkg/registry/core/pod/strategy.go,
``ToSelectableFields``); Events offer ``involvedObject.{kind,namespace,name,uid,apiVersion,
resourceVersion,fieldPath}``, ``reason``, ``source`` (``source.component``), ``type`` and the
metadata ones (pkg/registry/core/event/strategy.go, ``EventToSelectableFields``; newer servers
add ``reportingComponent``). Only ``=``, ``==`` and ``!=``, joined by commas, which all must
hold: there is no "reason in (a, b)".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .engine import UNSCHEDULED
from .events import oom_event_info
from .snapshot import node_info, pod_info
from .types import NodeInfo, OOMEventInfo, PodInfo

Convert = Callable[[dict], "tuple[str, Any] | None"]
"""An object to (bucket, tuple), or None to keep nothing of it. May raise ValueError."""


class Source(NamedTuple):
    name: str
    """The cache's name: the operator's store, the reflector's metrics label."""
    path: str
    """The cluster-wide collection, e.g. /api/v1/pods."""
    field_selector: str | None
    """Filtered by the API server: what it leaves out is never sent."""
    convert: Convert
    """Applied to every object the API server sends (None: keep nothing of it)."""


# --- the conversions: tiny tuples, never bodies ---------------------------------------------------


def oom_record(pod: dict) -> bool:
    """A container of the pod terminated with reason OOMKilled (``state`` or ``lastState``,
    any exit code), as kubelet reports it; also True when the statuses are not well-formed
    (``pod_info`` then names the problem)."""
    status = pod.get("status")
    if not isinstance(status, dict):
        return True
    for field in ("initContainerStatuses", "containerStatuses"):
        statuses = status.get(field) or []
        if not isinstance(statuses, list):
            return True
        for cs in statuses:
            if not isinstance(cs, dict):
                return True
            for key in ("lastState", "state"):
                state = cs.get(key) or {}
                term = state.get("terminated") if isinstance(state, dict) else None
                if isinstance(term, dict) and term.get("reason") == "OOMKilled":
                    return True
    return False


def pod(obj: dict) -> tuple[str, PodInfo] | None:
    """A Pod, in its node's bucket (UNSCHEDULED while it has none). A Succeeded pod holds no
    memory and breaks no rule: it is kept only with an OOM record, for its kills (below)."""
    status = obj.get("status")
    if isinstance(status, dict) and status.get("phase") == "Succeeded" and not oom_record(obj):
        return None
    info = pod_info(obj)
    return info.node or UNSCHEDULED, info


def node(obj: dict) -> tuple[str, NodeInfo]:
    info = node_info(obj)
    return info.name, info


def oom_event(obj: dict) -> tuple[str, OOMEventInfo] | None:
    """An OOM report (``core.events.OOM_REASONS``), in its node's bucket; None for any other Event."""
    info = oom_event_info(obj)
    return (info.node, info) if info is not None else None


def namespace(obj: dict) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A Namespace: its own bucket (its name) and its labels, sorted."""
    meta = obj.get("metadata") or {}
    return meta.get("name", ""), tuple(sorted((meta.get("labels") or {}).items()))


# --- the sources -----------------------------------------------------------------------------------

PODS = Source(
    "pods", "/api/v1/pods",
    # No server-side filter. Pods that are Succeeded hold no memory and break no rule, and
    # `status.phase!=Succeeded` would keep them (the bulk of a batch cluster's completed Job
    # pods) out; but the victim of an OOM kill may have completed since: a Job's container
    # killed, restarted (restartPolicy OnFailure) and then done. A kill whose memcg path names
    # a pod that is not known names no pod and is silent, on the Node (rules.oom_incidents),
    # whatever the pod's status showed and whether or not the policy selects its namespace.
    # So every pod is read, and `pod` keeps a Succeeded one only if a container of it
    # terminated OOMKilled. What this adds to the stream is bounded: kube-controller-manager's
    # pod GC deletes terminated (Succeeded or Failed) pods beyond --terminated-pod-gc-threshold
    # (12,500 by default), and a Succeeded pod no longer changes.
    None, pod)
NODES = Source("nodes", "/api/v1/nodes", None, node)
OOM_EVENTS = Source(
    "events", "/api/v1/events",
    # Every OOM reporter posts a Warning about the Node: node-problem-detector's OOMKilling (a
    # "temporary" rule of its kernel monitor makes an Event of severity Warn,
    # pkg/systemlogmonitor/log_monitor.go generateStatus), kubelet's SystemOOM
    # (pkg/kubelet/oom/oom_watcher_linux.go, v1.EventTypeWarning), and our node agent's OOMKilling
    # (shell/node_agent.py). A field selector cannot say "reason OOMKilling or SystemOOM" (no
    # set-based operators): one watch per reason would double the connections and the caches
    # for the few other Warning Events on Nodes that `oom_event` drops. A Normal Event with an
    # OOM reason is nobody's report, and is not read.
    "involvedObject.kind=Node,type=Warning", oom_event)
NAMESPACES = Source("namespaces", "/api/v1/namespaces", None, namespace)

SOURCES: tuple[Source, ...] = (PODS, NODES, OOM_EVENTS, NAMESPACES)
"""Everything the operator watches and the live audit reads, in this order."""
