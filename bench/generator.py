"""Load generator: fills the control plane with N nodes and M pods, as kubelet, the scheduler
and node-problem-detector would leave them, and knows what it planted.

Shape (deterministic for a seed):

* nodes = ceil(M / 30), ~30 pods each (bound with ``spec.nodeName``, as the scheduler does;
  status written through the status subresource, as kubelet does: phase Running, every
  container running with a containerID);
* namespaces: one per 500 pods (at least 5; the first 2,500 pods spread over five);
* pods: ~30% Guaranteed, ~62% Burstable (30% of them with a sidecar), 4% BestEffort and 4%
  Burstable whose app container has a CPU request but no memory request (one
  ``MissingMemoryRequest`` each);
* 3% of nodes are small (12Gi): their pods' limits add up past allocatable
  (``NodeOvercommitted``); 3% report ``MemoryPressure``; 2% (at least 2) carry one
  "target" pod (Burstable, 3Gi request, 4Gi limit: a unique ``oom_score_adj`` on its node)
  and get an NPD ``OOMKilling`` event whose kernel line has that ``oom_score_adj`` and no
  memcg path: a silent kill attributable only by the fingerprint (``SilentOOMKill``).

What is expected is computed from the objects themselves (limits summed as the rules do), not
assumed from the percentages.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kube import Kube

Mi = 1 << 20
Gi = 1 << 30
PODS_PER_NODE = 30
NORMAL_CAPACITY, NORMAL_ALLOCATABLE = 64 * Gi, 62 * Gi
SMALL_CAPACITY, SMALL_ALLOCATABLE = 12 * Gi, 11 * Gi + 512 * Mi
TARGET_REQUEST, TARGET_LIMIT = 3 * Gi, 4 * Gi
OOM_ANON_RSS_KB = 2 * 1024 * 1024  # 2Gi, under the target's 4Gi limit (memcg scope)


def iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(t if t is not None else time.time(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def qty(n: int) -> str:
    return f"{n // Gi}Gi" if n % Gi == 0 else f"{n // Mi}Mi"


@dataclass
class NodePlan:
    index: int
    name: str
    capacity: int
    allocatable: int
    pressure: bool
    oom_target: bool
    zone: str


@dataclass
class Plan:
    pods: int
    seed: int = 1
    nodes: list[NodePlan] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, pods: int, seed: int = 1) -> "Plan":
        """Node j's shape depends only on (seed, j) and pod i's only on (seed, i), so a cluster
        can be grown from one size to the next by adding nodes and pods."""
        p = cls(pods=pods, seed=seed)
        n_nodes = math.ceil(pods / PODS_PER_NODE)
        for j in range(n_nodes):
            r = random.Random(seed * 7_919 + j).random()
            small = j == 1 or (j > 4 and r < 0.03)
            pressure = j == 2 or (j > 4 and 0.03 <= r < 0.06)
            oom = j in (3, 4) or (j > 4 and 0.06 <= r < 0.08)
            p.nodes.append(NodePlan(
                index=j, name=f"node-{j:05d}",
                capacity=SMALL_CAPACITY if small else NORMAL_CAPACITY,
                allocatable=SMALL_ALLOCATABLE if small else NORMAL_ALLOCATABLE,
                pressure=pressure, oom_target=oom, zone=f"zone-{'abc'[j % 3]}"))
        p.namespaces = [f"bench-{k:03d}" for k in range(max(5, math.ceil(pods / 500)))]
        return p

    def namespace_of(self, i: int) -> str:
        """Stable as the cluster grows: pod i lands in namespace (i // 500) (at least 5 of them)."""
        return f"bench-{i % 5 if i < 2500 else i // 500:03d}"

    def pods_on(self, j: int) -> range:
        start = j * PODS_PER_NODE
        return range(start, min(start + PODS_PER_NODE, self.pods))


# --- objects --------------------------------------------------------------------------------


def namespace_obj(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"team": f"team-{int(name[-3:]) % 7}"}}}


def node_obj(n: NodePlan) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name, "labels": {
        "kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": n.zone,
        "node.kubernetes.io/instance-type": "m6i.large" if n.capacity == SMALL_CAPACITY else "m6i.4xlarge"}},
        "spec": {"podCIDR": f"10.{64 + n.index // 256}.{n.index % 256}.0/24"}}


def node_status(n: NodePlan) -> dict:
    now = iso()

    def cond(t: str, on: bool, reason_on: str, reason_off: str, msg_on: str, msg_off: str) -> dict:
        return {"type": t, "status": "True" if on else "False", "reason": reason_on if on else reason_off,
                "message": msg_on if on else msg_off, "lastHeartbeatTime": now, "lastTransitionTime": now}

    return {"status": {
        "capacity": {"cpu": "16", "memory": qty(n.capacity), "pods": "110", "ephemeral-storage": "100Gi"},
        "allocatable": {"cpu": "15800m", "memory": qty(n.allocatable), "pods": "110",
                        "ephemeral-storage": "95Gi"},
        "conditions": [
            cond("MemoryPressure", n.pressure, "KubeletHasInsufficientMemory", "KubeletHasSufficientMemory",
                 "kubelet has insufficient memory available", "kubelet has sufficient memory available"),
            cond("DiskPressure", False, "", "KubeletHasNoDiskPressure", "", "kubelet has no disk pressure"),
            cond("PIDPressure", False, "", "KubeletHasSufficientPID", "", "kubelet has sufficient PID available"),
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
        ],
        "addresses": [{"type": "InternalIP", "address": f"10.1.{n.index // 256}.{n.index % 256}"},
                      {"type": "Hostname", "address": n.name}],
        "nodeInfo": {"kubeletVersion": "v1.37.2", "kubeProxyVersion": "v1.37.2", "containerRuntimeVersion":
                     "containerd://2.1.4", "kernelVersion": "6.8.0-1031-aws", "osImage": "Ubuntu 24.04.2 LTS",
                     "operatingSystem": "linux", "architecture": "amd64", "machineID": "", "systemUUID": "",
                     "bootID": ""},
    }}


@dataclass
class PodPlan:
    """One pod: its object and what it contributes to the expected report."""

    namespace: str
    name: str
    node: str
    body: dict
    missing: int       # containers without a memory request
    limit: int | None  # the pod's finite limit (None: some container unbounded)
    kind: str


def _res(req: int | None, lim: int | None, cpu: str | None = "100m") -> dict:
    out: dict[str, dict[str, str]] = {}
    if cpu:
        out["requests"] = {"cpu": cpu}
    if req is not None:
        out.setdefault("requests", {})["memory"] = qty(req)
    if lim is not None:
        out["limits"] = {"memory": qty(lim)}
    return out


def make_pod(plan: Plan, i: int, node: NodePlan, *, kind: str | None = None, name: str | None = None,
             namespace: str | None = None) -> PodPlan:
    rng = random.Random(plan.seed * 1_000_003 + i)
    r = rng.random()
    if kind is None:
        kind = ("besteffort" if r < 0.04 else "nomemreq" if r < 0.08 else "guaranteed" if r < 0.38 else "burstable")
        if node.oom_target and i == plan.pods_on(node.index).start:
            kind = "target"
    app = f"app-{i % 997}"
    containers: list[dict[str, Any]] = []
    missing = 0
    limit: int | None = 0
    image = "registry.k8s.io/pause:3.10"
    if kind == "besteffort":
        containers.append({"name": "app", "image": image, "resources": {}})
        missing, limit = 1, None
    elif kind == "nomemreq":
        containers.append({"name": "app", "image": image, "resources": _res(None, None)})
        containers.append({"name": "proxy", "image": image, "resources": _res(64 * Mi, 128 * Mi, "50m")})
        missing, limit = 1, None
    elif kind == "guaranteed":
        m = rng.choice((256, 512, 768, 1024)) * Mi
        containers.append({"name": "app", "image": image, "resources": {
            "requests": {"cpu": "250m", "memory": qty(m)}, "limits": {"cpu": "250m", "memory": qty(m)}}})
        limit = m
    elif kind == "target":
        containers.append({"name": "app", "image": image, "resources": _res(TARGET_REQUEST, TARGET_LIMIT)})
        limit = TARGET_LIMIT
    else:  # burstable
        m = rng.choice((128, 256, 384, 512)) * Mi
        containers.append({"name": "app", "image": image, "resources": _res(m, 2 * m)})
        limit = 2 * m
        if rng.random() < 0.3:
            containers.append({"name": "sidecar", "image": image, "resources": _res(32 * Mi, 64 * Mi, "10m")})
            limit += 64 * Mi
    ns = namespace or plan.namespace_of(i)
    pname = name or f"{app}-{i:07d}"
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pname, "namespace": ns,
                         "labels": {"app": app, "pod-template-hash": hashlib.md5(app.encode()).hexdigest()[:10],
                                    "bench.memoryhygiene.io/kind": kind}},
            "spec": {"nodeName": node.name, "containers": containers, "restartPolicy": "Always",
                     "terminationGracePeriodSeconds": 30}}
    return PodPlan(ns, pname, node.name, body, missing, limit, kind)


def pod_status(pod: dict, node_index: int, i: int) -> dict:
    now = iso()
    uid = pod["metadata"]["uid"]
    statuses = [{"name": c["name"], "image": c["image"], "imageID": "registry.k8s.io/pause@sha256:ee6521f290b2",
                 "ready": True, "started": True, "restartCount": 0,
                 "containerID": "containerd://" + hashlib.sha256(f"{uid}/{c['name']}".encode()).hexdigest(),
                 "state": {"running": {"startedAt": now}}} for c in pod["spec"]["containers"]]
    return {"status": {
        "phase": "Running", "startTime": now,
        "hostIP": f"10.1.{node_index // 256}.{node_index % 256}",
        "podIP": f"10.{64 + node_index // 256}.{node_index % 256}.{2 + i % 250}",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": statuses}}


def oom_score_adj_of_target(node: NodePlan) -> int:
    """kubelet's formula for a Burstable container (pkg/kubelet/qos/policy.go)."""
    score = 1000 - (1000 * TARGET_REQUEST) // node.capacity
    return min(max(score, 3), 999)


def npd_oom_event(node: NodePlan, pid: int, t: float | None = None, comm: str = "java") -> dict:
    stamp = iso(t)
    msg = (f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:{OOM_ANON_RSS_KB * 2}kB, "
           f"anon-rss:{OOM_ANON_RSS_KB}kB, file-rss:10240kB, shmem-rss:0kB, UID:1000 pgtables:4520kB "
           f"oom_score_adj:{oom_score_adj_of_target(node)}")
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{node.name}.{hashlib.md5(f'{pid}{stamp}'.encode()).hexdigest()[:16]}",
                         "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": node.name, "uid": node.name},
            "reason": "OOMKilling", "message": msg, "type": "Warning",
            "source": {"component": "kernel-monitor", "host": node.name},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}


# --- loading ----------------------------------------------------------------------------------


@dataclass
class Expected:
    nodes: int = 0
    pods: int = 0
    overcommitted: int = 0
    pressure: int = 0
    missing_requests: int = 0
    silent_oom: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {"evaluatedNodes": self.nodes, "evaluatedPods": self.pods, "overcommittedNodes": self.overcommitted,
                "nodesUnderMemoryPressure": self.pressure, "missingRequests": self.missing_requests,
                "silentOOMKills": self.silent_oom}


class Progress:
    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done, self.t0, self.last = what, total, 0, time.monotonic(), 0.0

    def tick(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last > 10 or self.done == self.total:
            self.last = now
            el = now - self.t0
            print(f"  {self.what}: {self.done}/{self.total} in {el:.0f}s ({self.done / max(el, 1e-9):.0f}/s)",
                  flush=True)


async def _pool(n_workers: int, items, fn) -> None:
    it = iter(items)

    async def worker() -> None:
        for x in it:
            await fn(x)

    await asyncio.gather(*(worker() for _ in range(n_workers)))


@dataclass
class LoadState:
    """What is in the cluster so far (the sweep grows one cluster from size to size)."""

    nodes: int = 0
    pods: int = 0
    limits: dict[int, int] = field(default_factory=dict)
    missing_requests: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)


async def load(kube: Kube, plan: Plan, state: LoadState, workers: int = 32) -> tuple[Expected, dict[str, float]]:
    """Add the namespaces, nodes (+status) and pods (+status) of ``plan`` not in ``state`` yet.
    OOM events are separate (:func:`post_oom_events`) so that they are fresh when the operator
    starts."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    new_ns = [ns for ns in plan.namespaces if ns not in state.namespaces]
    await _pool(8, new_ns, lambda ns: kube.create("/api/v1/namespaces", namespace_obj(ns)))
    state.namespaces.update(new_ns)
    timings["namespaces_s"] = time.monotonic() - t

    t = time.monotonic()
    new_nodes = plan.nodes[state.nodes:]
    prog = Progress("nodes", len(new_nodes))

    async def mk_node(n: NodePlan) -> None:
        await kube.create("/api/v1/nodes", node_obj(n))
        await kube.merge_patch(f"/api/v1/nodes/{n.name}/status", node_status(n))
        prog.tick()

    await _pool(workers, new_nodes, mk_node)
    state.nodes = len(plan.nodes)
    timings["nodes_s"] = time.monotonic() - t

    t = time.monotonic()
    prog = Progress("pods", plan.pods - state.pods)

    async def mk_pod(i: int) -> None:
        node = plan.nodes[i // PODS_PER_NODE]
        pp = make_pod(plan, i, node)
        created = await kube.create(f"/api/v1/namespaces/{pp.namespace}/pods", pp.body)
        if created.get("kind") == "Status":  # 409: already there (a re-run): read it
            created = await kube.get(f"/api/v1/namespaces/{pp.namespace}/pods/{pp.name}")
        await kube.merge_patch(f"/api/v1/namespaces/{pp.namespace}/pods/{pp.name}/status",
                               pod_status(created, node.index, i))
        state.missing_requests += pp.missing
        state.kinds[pp.kind] = state.kinds.get(pp.kind, 0) + 1
        if pp.limit is not None:
            state.limits[node.index] = state.limits.get(node.index, 0) + pp.limit
        prog.tick()

    await _pool(workers, range(state.pods, plan.pods), mk_pod)
    timings["pods_s"] = time.monotonic() - t
    timings["pods_added"] = plan.pods - state.pods
    state.pods = plan.pods
    exp = Expected(nodes=len(plan.nodes), pods=plan.pods,
                   overcommitted=sum(1 for n in plan.nodes if state.limits.get(n.index, 0) > n.allocatable),
                   pressure=sum(1 for n in plan.nodes if n.pressure), missing_requests=state.missing_requests,
                   kinds=dict(state.kinds))
    return exp, timings


async def post_oom_events(kube: Kube, plan: Plan, exp: Expected, pid_base: int = 100_000) -> list[str]:
    """One fresh NPD OOMKilling event per target node (older ones are deleted first: the policy's
    lookback is an hour, and a sweep takes longer)."""
    await kube.request("DELETE", "/api/v1/namespaces/default/events?fieldSelector=reason%3DOOMKilling",
                       ok=(200, 202, 404))
    names = []
    targets = [n for n in plan.nodes if n.oom_target]

    async def post(n: NodePlan) -> None:
        await kube.create("/api/v1/namespaces/default/events", npd_oom_event(n, pid_base + n.index))
        names.append(n.name)

    await _pool(16, targets, post)
    exp.silent_oom = len(names)
    return names
