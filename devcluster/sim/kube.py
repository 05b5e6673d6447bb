"""Simulators that play kubelet and node-problem-detector through the API, exactly as they do.

There is no kubelet, scheduler or NPD in the test control plane: these helpers write what they
would write. kubelet registers its Node and keeps ``status`` (capacity, allocatable, conditions)
through the status subresource, and writes Pod status (container states, restarts, evictions).
NPD's kernel monitor posts a core/v1 Event (``config/kernel-monitor.json`` in
kubernetes/node-problem-detector): type Warning, reason OOMKilling, source kernel-monitor with
host = node name, involvedObject the Node with uid = the node's *name*, in namespace default,
message = the matched kernel text. kubelet posts ``SystemOOM`` for a node-level OOM
(``pkg/kubelet/oom/oom_watcher_linux.go``: "System OOM encountered, victim process: X, pid: N").
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TIME_FIELDS = {"firstTimestamp", "lastTimestamp", "finishedAt", "startedAt", "lastTransitionTime",
               "lastHeartbeatTime", "lastProbeTime"}


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso(offset_seconds: float = 0) -> str:
    return iso(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_seconds))


def _parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def api_client(kubeconfig: str | Path) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


class Sim:
    """kubelet + node-problem-detector, through the API of the cluster of ``kubeconfig``."""

    def __init__(self, kubeconfig: str | Path) -> None:
        from kubernetes import client

        self.client = api_client(kubeconfig)
        self.core = client.CoreV1Api(self.client)

    # --- namespaces and nodes (kubelet registers its Node, then owns its status) --------------

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        return self.core.api_client.sanitize_for_serialization(self.core.create_namespace(body))

    def node(self, name: str, capacity: str, allocatable: str, labels: dict[str, str] | None = None,
             pressure: bool = False, extra_status: dict | None = None) -> dict:
        self.core.create_node({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": name, "labels": labels or {}}})
        status = {
            "capacity": {"cpu": "4", "memory": capacity, "pods": "110"},
            "allocatable": {"cpu": "4", "memory": allocatable, "pods": "110"},
            "conditions": [self._pressure_condition(pressure), self._ready_condition()],
        }
        status.update(extra_status or {})
        return self.node_status(name, status)

    def node_status(self, name: str, status: dict) -> dict:
        out = self.core.patch_node_status(name, {"status": status})
        return self.client.sanitize_for_serialization(out)

    @staticmethod
    def _pressure_condition(on: bool, message: str | None = None) -> dict:
        return {
            "type": "MemoryPressure",
            "status": "True" if on else "False",
            "reason": "KubeletHasInsufficientMemory" if on else "KubeletHasSufficientMemory",
            "message": message or ("kubelet has insufficient memory available" if on
                                   else "kubelet has sufficient memory available"),
            "lastHeartbeatTime": now_iso(),
            "lastTransitionTime": now_iso(),
        }

    @staticmethod
    def _ready_condition() -> dict:
        return {"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": now_iso(),
                "lastTransitionTime": now_iso()}

    def set_memory_pressure(self, node: str, on: bool) -> dict:
        # conditions is a strategic-merge list keyed by type: this replaces MemoryPressure only
        return self.node_status(node, {"conditions": [self._pressure_condition(on)]})

    # --- pods ------------------------------------------------------------------------------

    def pod(self, namespace: str, name: str, containers: dict[str, dict[str, str | None]],
            node: str | None = None, labels: dict[str, str] | None = None, running: bool = True,
            init_containers: list[dict] | None = None, restart_policy: str | None = None) -> dict:
        """A pod bound to ``node`` (as the scheduler would), running if ``running`` (as kubelet
        reports). ``containers``: name -> {"requests": "128Mi", "limits": "1Gi"} (None: unset)."""
        spec: dict[str, Any] = {
            "containers": [
                {"name": c, "image": "registry.k8s.io/pause:3.10",
                 "resources": {k: {"memory": v} for k, v in (res or {}).items() if v is not None}}
                for c, res in containers.items()
            ],
        }
        if init_containers:
            spec["initContainers"] = init_containers
        if restart_policy:
            spec["restartPolicy"] = restart_policy
        if node:
            spec["nodeName"] = node
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec}
        created = self.client.sanitize_for_serialization(self.core.create_namespaced_pod(namespace, body))
        if running and node:
            return self.run(namespace, name)
        return created

    def read_pod(self, namespace: str, name: str) -> dict:
        return self.client.sanitize_for_serialization(self.core.read_namespaced_pod(name, namespace))

    @staticmethod
    def container_id(pod: dict, container: str, restart: int = 0) -> str:
        digest = hashlib.sha256(f"{pod['metadata']['uid']}/{container}/{restart}".encode()).hexdigest()
        return f"containerd://{digest}"

    def _status(self, namespace: str, name: str, status: dict) -> dict:
        out = self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        return self.client.sanitize_for_serialization(out)

    def run(self, namespace: str, name: str) -> dict:
        """kubelet started every container: phase Running, each container running."""
        pod = self.read_pod(namespace, name)
        started = now_iso()
        # kubelet (1.33+) reports what it allocated and what the runtime applied, per container
        statuses = [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "started": True,
             "restartCount": 0, "containerID": self.container_id(pod, c["name"]),
             "state": {"running": {"startedAt": started}},
             "allocatedResources": dict((c.get("resources") or {}).get("requests") or {}),
             "resources": {k: v for k, v in (c.get("resources") or {}).items() if k in ("requests", "limits")}}
            for c in pod["spec"]["containers"]
        ]
        return self._status(namespace, name, {
            "phase": "Running", "startTime": started, "containerStatuses": statuses,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
        })

    def oom_killed_restart(self, namespace: str, name: str, container: str,
                           finished_at: str | None = None, crashloop: bool = False) -> dict:
        """PID 1 of ``container`` was OOM-killed: it exited 137 with reason OOMKilled, and kubelet
        restarted it (restartCount + 1, lastState terminated), or is backing off (CrashLoopBackOff)."""
        pod = self.read_pod(namespace, name)
        finished = finished_at or now_iso()
        statuses = copy.deepcopy(pod["status"]["containerStatuses"])
        for cs in statuses:
            if cs["name"] != container:
                continue
            restarts = cs.get("restartCount", 0) + 1
            started = (cs.get("state") or {}).get("running", {}).get("startedAt") or finished
            cs["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "startedAt": started,
                                              "finishedAt": finished, "containerID": cs.get("containerID")}}
            cs["restartCount"] = restarts
            if crashloop:
                cs["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": f"back-off 10s restarting failed container={container}"}}
                cs["ready"] = False
            else:
                cs["containerID"] = self.container_id(pod, container, restarts)
                cs["state"] = {"running": {"startedAt": now_iso()}}
        return self._status(namespace, name, {"containerStatuses": statuses})

    def complete(self, namespace: str, name: str, child_oom_killed: bool = False) -> dict:
        """Every container's PID 1 exited 0: phase Succeeded, each container terminated
        ``Completed`` (``lastState`` kept). ``child_oom_killed``: reason ``OOMKilled`` with exit
        code 0, as kubelet reports a container whose memory cgroup saw a kill of a child process
        (tests/e2e/realnode/test_seeds.py)."""
        pod = self.read_pod(namespace, name)
        finished = now_iso()
        statuses = copy.deepcopy(pod["status"]["containerStatuses"])
        for cs in statuses:
            started = (cs.get("state") or {}).get("running", {}).get("startedAt") or finished
            cs["state"] = {"terminated": {"reason": "OOMKilled" if child_oom_killed else "Completed", "exitCode": 0,
                                          "startedAt": started, "finishedAt": finished,
                                          "containerID": cs.get("containerID")}}
            cs["ready"], cs["started"] = False, False
        return self._status(namespace, name, {
            "phase": "Succeeded", "containerStatuses": statuses,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted",
                            "lastTransitionTime": finished}],
        })

    def resize_memory(self, namespace: str, name: str, container: str, request: str, limit: str) -> dict:
        """An in-place resize (the ``resize`` subresource), then kubelet's status once it applied
        it: ``allocatedResources`` and ``resources`` follow the new spec."""
        patch = {"spec": {"containers": [{"name": container, "resources": {
            "requests": {"memory": request}, "limits": {"memory": limit}}}]}}
        self.core.patch_namespaced_pod_resize(name, namespace, patch)
        pod = self.read_pod(namespace, name)
        statuses = copy.deepcopy(pod["status"]["containerStatuses"])
        for cs in statuses:
            if cs["name"] == container:
                cs["allocatedResources"] = {"memory": request}
                cs["resources"] = {"requests": {"memory": request}, "limits": {"memory": limit}}
        return self._status(namespace, name, {"containerStatuses": statuses})

    def evict_for_memory(self, namespace: str, name: str, threshold: str = "100Mi",
                         available: str = "90Mi") -> dict:
        """kubelet's eviction manager evicted the pod because the node was low on memory."""
        pod = self.read_pod(namespace, name)
        c = pod["spec"]["containers"][0]
        statuses = copy.deepcopy(pod["status"].get("containerStatuses") or [])
        for cs in statuses:
            cs["ready"] = False
            cs["state"] = {"terminated": {"reason": "ContainerStatusUnknown", "exitCode": 137,
                                          "finishedAt": now_iso(),
                                          "message": "The container could not be located when the pod was terminated"}}
        message = (f"The node was low on resource: memory. Threshold quantity: {threshold}, available: "
                   f"{available}. Container {c['name']} was using 788244Ki, request is "
                   f"{(c.get('resources') or {}).get('requests', {}).get('memory', '0')}, has larger consumption "
                   f"of memory. ")
        return self._status(namespace, name, {"phase": "Failed", "reason": "Evicted", "message": message,
                                              "containerStatuses": statuses})

    # --- node-problem-detector and kubelet events ---------------------------------------------

    def _node_event(self, node: str, reason: str, message: str, component: str, t: str | None,
                    event_type: str = "Warning") -> dict:
        stamp = t or now_iso()
        name = f"{node}.{uuid.uuid4().hex[:16]}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": node, "uid": node},
            "reason": reason, "message": message, "type": event_type,
            "source": {"component": component, "host": node},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        return self.client.sanitize_for_serialization(self.core.create_namespaced_event("default", body))

    def npd_oom_killing(self, node: str, kernel_text: str, t: str | None = None, event_type: str = "Warning") -> dict:
        """node-problem-detector's kernel monitor saw an OOM kill in the kernel log (its Events
        are Warnings; ``event_type`` "Normal" makes one that no OOM reporter posts)."""
        return self._node_event(node, "OOMKilling", kernel_text, "kernel-monitor", t, event_type)

    def kubelet_system_oom(self, node: str, process: str, pid: int, t: str | None = None) -> dict:
        return self._node_event(node, "SystemOOM", f"System OOM encountered, victim process: {process}, pid: {pid}",
                                "kubelet", t)


# --- seed scenarios into the cluster ---------------------------------------------------------------


@dataclass
class Loaded:
    """What a snapshot became in the cluster: renamed nodes and namespaces, new pod UIDs."""

    suffix: str
    nodes: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    shift_seconds: float = 0.0
    uids: dict[str, str] = field(default_factory=dict)
    """The snapshot's pod UIDs -> the server's (kernel text naming them is rewritten)."""


def _objects(path: Path) -> list[dict]:
    out: list[dict] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        out.extend(doc.get("items") or []) if doc.get("kind") == "List" else out.append(doc)
    return out


def _newest(objs: list[dict]) -> dt.datetime | None:
    found = _times(objs)
    return max(found) if found else None


def _oldest(objs: list[dict]) -> dt.datetime | None:
    found = _times(objs)
    return min(found) if found else None


def _times(objs: list[dict]) -> list[dt.datetime]:
    found: list[dt.datetime] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k in TIME_FIELDS and isinstance(v, str):
                    found.append(_parse(v))
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(objs)
    return found


def _shift(x: Any, delta: dt.timedelta) -> Any:
    if isinstance(x, dict):
        return {k: (iso(_parse(v) + delta) if k in TIME_FIELDS and isinstance(v, str) else _shift(v, delta))
                for k, v in x.items()}
    if isinstance(x, list):
        return [_shift(v, delta) for v in x]
    return x


def load_snapshot(sim: Sim, path: str | Path, suffix: str, *, shift_to_now: bool = True,
                  labels: dict[str, str] | None = None) -> Loaded:
    """Create a snapshot's Namespaces, Nodes, Pods (with their status) and OOM Events.

    Node and namespace names get ``-<suffix>`` so scenarios do not collide, and both get
    ``labels`` (so a policy can select one scenario). Pod UIDs are the server's: memcg paths in
    event messages are rewritten to them. With ``shift_to_now`` every timestamp moves by whole
    seconds to the present (the operator judges OOM events against it): the first OOM event to
    just after the load, or, without events, the newest timestamp to now.
    """
    objs = _objects(Path(path))
    loaded = Loaded(suffix=suffix)
    if shift_to_now:
        # The pods are created now, and a pod cannot die before it exists: when there are OOM
        # events, the first one lands just after the load; otherwise the newest time is now.
        events = [o for o in objs if o.get("kind") == "Event"]
        anchor = _oldest(events) if events else _newest(objs)
        if anchor is not None:
            target = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3 if events else 0)
            delta = dt.timedelta(seconds=round((target - anchor).total_seconds()))
            loaded.shift_seconds = delta.total_seconds()
            objs = _shift(objs, delta)
    labels = labels or {}
    for o in objs:
        if o.get("kind") == "Node":
            loaded.nodes[o["metadata"]["name"]] = f"{o['metadata']['name']}-{suffix}"
        if o.get("kind") in ("Pod", "Namespace"):
            ns = o["metadata"]["name"] if o["kind"] == "Namespace" else o["metadata"]["namespace"]
            loaded.namespaces.setdefault(ns, f"{ns}-{suffix}")
    for old, new in loaded.namespaces.items():
        ns_obj = next((o for o in objs if o.get("kind") == "Namespace" and o["metadata"]["name"] == old), None)
        ns_labels = {k: v for k, v in ((ns_obj or {}).get("metadata", {}).get("labels") or {}).items()
                     if k != "kubernetes.io/metadata.name"}
        sim.namespace(new, {**ns_labels, **labels})
    for o in objs:
        if o.get("kind") != "Node":
            continue
        name = loaded.nodes[o["metadata"]["name"]]
        node_labels = {**(o["metadata"].get("labels") or {}), **labels}
        node_labels["kubernetes.io/hostname"] = name
        sim.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": node_labels}})
        sim.node_status(name, o.get("status") or {})
    uid_map = loaded.uids
    for o in objs:
        if o.get("kind") != "Pod":
            continue
        meta = o["metadata"]
        ns = loaded.namespaces[meta["namespace"]]
        spec = copy.deepcopy(o["spec"])
        if spec.get("nodeName"):
            spec["nodeName"] = loaded.nodes.get(spec["nodeName"], spec["nodeName"])
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            c.setdefault("image", "registry.k8s.io/pause:3.10")
        created = sim.core.create_namespaced_pod(ns, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": meta["name"], "namespace": ns, "labels": meta.get("labels") or {}},
            "spec": spec,
        })
        uid_map[meta["uid"]] = created.metadata.uid
        status = copy.deepcopy(o.get("status") or {})
        status.pop("qosClass", None)  # the API server computed it on create
        for cs in status.get("containerStatuses") or []:
            image = next((c["image"] for c in spec["containers"] if c["name"] == cs["name"]), "unknown")
            cs.setdefault("image", image)
            cs.setdefault("imageID", "")
            cs.setdefault("ready", False)
            cs.setdefault("restartCount", 0)
        pod = sim._status(ns, meta["name"], status) if status else sim.read_pod(ns, meta["name"])
        loaded.pods[(meta["namespace"], meta["name"])] = pod
    for o in objs:
        if o.get("kind") != "Event":
            continue
        node = o["involvedObject"]["name"]
        new_node = loaded.nodes.get(node, f"{node}-{suffix}")
        message = o["message"]
        for old_uid, new_uid in uid_map.items():
            message = message.replace(old_uid, new_uid).replace(old_uid.replace("-", "_"), new_uid.replace("-", "_"))
        body = copy.deepcopy(o)
        body["metadata"] = {"name": f"{new_node}.{uuid.uuid4().hex[:16]}", "namespace": "default"}
        body["involvedObject"] = {"kind": "Node", "name": new_node, "uid": new_node}
        body["source"] = {**(o.get("source") or {}), "host": new_node}
        body["message"] = message
        loaded.events.append(sim.client.sanitize_for_serialization(sim.core.create_namespaced_event("default", body)))
    return loaded


def dump_json(x: Any) -> str:
    return json.dumps(x, indent=2, sort_keys=True, default=str)
