#!/usr/bin/env python3
"""Many policies over one cluster (issue 13, "bounded cost"): 300 overlapping MemoryPolicies,
differing in selectors and settings, created at once over the 10,000-pod cluster, while a
control pod without a memory request is created every second. Measures the operator's peak
memory, how long each control pod waits for its Warning Event, how long until every policy has
its status, and the reconcile passes' lengths.

    .venv/bin/python bench/policies.py --tag after      # -> bench/results/policies-after.json

Needs the local control plane's binaries (scripts/test builds them) and the package installed
(.venv). Takes ~5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import BenchCluster, lc  # noqa: E402
from generator import LoadState, Plan, iso, load, npd_oom_event, post_oom_events  # noqa: E402
from kube import Kube  # noqa: E402
from measure import Operator, Sampler, proc_mem  # noqa: E402
from run import POLICY_PATH, install_crd, log  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONTROL_NS = "bench-control"
MB = 2**20


def policy_spec(i: int, namespaces: list[str]) -> dict[str, Any]:
    """Policy i: about two thirds of the namespaces (a different two thirds for each i mod 3) and
    the control namespace; its settings vary with i."""
    chosen = [ns for k, ns in enumerate(namespaces) if (k + i) % 3 != 0] + [CONTROL_NS]
    rules: dict[str, Any] = {
        "overcommit": {"maxLimitsPercent": 100 + (i % 5) * 25},
        "missingRequests": {"requireLimits": i % 2 == 0},
        "silentOOM": {"lookbackSeconds": 3600 + 60 * (i % 4)},
    }
    if i % 3:
        rules["limitRatio"] = {"maxLimitToRequestRatio": 1.5 * (i % 3)}
    return {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": chosen}]}, "rules": rules}


def flood_event(plan: Plan, kills: int) -> dict[str, Any]:
    """One node-problem-detector Event telling of ``kills`` kills (its kernel lines, one per kill)."""
    node = next(n for n in plan.nodes if n.oom_target)
    ev = npd_oom_event(node, 900_000)
    line = ev["message"]
    ev["message"] = "\n".join(line.replace("900000", str(900_000 + k)) for k in range(kills))
    ev["metadata"]["name"] = f"{node.name}.flood"
    return ev


def histogram(text: str, name: str) -> dict[str, Any]:
    """count, sum and the smallest bucket bound holding every observation, from /metrics."""
    buckets = [(float(m.group(1)), float(m.group(2))) for m in
               re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M) if m.group(1) != "+Inf"]
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))
    le_max = next((le for le, n in sorted(buckets) if n >= count), float("inf"))
    return {"count": int(count), "sum_s": round(total, 2), "mean_s": round(total / count, 3) if count else None,
            "max_at_most_s": le_max}


async def control_pods(kube: Kube, plan: Plan, seconds: float, every: float) -> list[dict[str, Any]]:
    """A pod without a memory request every ``every`` seconds for ``seconds``; each one's wait
    for its MissingMemoryRequest Warning Event (polled every 0.1 s)."""
    node = plan.nodes[0].name
    created: dict[str, float] = {}
    got: dict[str, float] = {}

    async def create(k: int) -> None:
        name = f"control-{k:03d}"
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": CONTROL_NS},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}
        created[name] = time.time()
        await kube.create(f"/api/v1/namespaces/{CONTROL_NS}/pods", body)

    async def watch(until: float) -> None:
        while time.time() < until and (len(got) < n or len(created) < n):
            items = (await kube.get(f"/api/v1/namespaces/{CONTROL_NS}/events?fieldSelector="
                                    "reason%3DMissingMemoryRequest,involvedObject.kind%3DPod"))["items"]
            for e in items:
                name = e["involvedObject"]["name"]
                if name in created and name not in got:
                    got[name] = time.time()
            await asyncio.sleep(0.1)

    n = int(seconds / every)
    watcher = asyncio.create_task(watch(time.time() + seconds + 120))
    for k in range(n):
        asyncio.create_task(create(k))
        await asyncio.sleep(every)
    await watcher
    return [{"pod": p, "wait_s": round(got[p] - t, 2) if p in got else None} for p, t in sorted(created.items())]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--policies", type=int, default=300)
    ap.add_argument("--flood-kills", type=int, default=10_000, help="kill lines in one NPD Event (0: none)")
    ap.add_argument("--control-seconds", type=float, default=60.0)
    ap.add_argument("--tag", default="", help="write bench/results/policies-<tag>.json")
    ap.add_argument("--timeout", type=float, default=900.0, help="for every policy's first status")
    args = ap.parse_args()

    cluster = BenchCluster(binaries=lc.ensure_binaries(), startup_timeout=180)
    cluster.start()
    workdir = Path("/tmp")
    op: Operator | None = None
    try:
        kube = Kube.for_cluster(cluster)
        await install_crd(kube)
        plan = Plan.make(args.pods)
        t = time.time()
        exp, _ = await load(kube, plan, LoadState())
        await post_oom_events(kube, plan, exp)
        if args.flood_kills:
            await kube.create("/api/v1/namespaces/default/events", flood_event(plan, args.flood_kills))
        await kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": CONTROL_NS}})
        log(f"loaded {args.pods} pods on {len(plan.nodes)} nodes in {time.time() - t:.0f}s")

        op = Operator(str(Path(sys.executable).parent / "memory-hygiene"), cluster.operator_kubeconfig,
                      lc._free_port(), workdir / f"mh-bench-policies{'-' + args.tag if args.tag else ''}.log", {"MEMORY_HYGIENE_RESYNC_SECONDS": "30"})
        op.start()
        sampler = Sampler(op.pid)
        stask = asyncio.create_task(sampler.run())
        while op.get("/readyz", timeout=2)[0] != 200:
            assert op.alive(), "the operator exited"
            await asyncio.sleep(0.25)
        ready_s = round(time.time() - op.started, 1)
        rss_ready = proc_mem(op.pid).get("VmRSS", 0)
        log(f"operator ready in {ready_s}s, RSS {rss_ready / MB:.0f} MB; creating {args.policies} policies")

        t_policies = time.time()
        names = [f"p{i:03d}" for i in range(args.policies)]
        await asyncio.gather(*(kube.create(POLICY_PATH, {
            "apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy", "metadata": {"name": n},
            "spec": policy_spec(i, plan.namespaces)}) for i, n in enumerate(names)))
        created_s = round(time.time() - t_policies, 1)
        controls = asyncio.create_task(control_pods(kube, plan, args.control_seconds, 1.0))

        all_status_s = None
        deadline = time.time() + args.timeout
        while time.time() < deadline:
            items = (await kube.get(POLICY_PATH))["items"]
            done = sum(1 for p in items if (p.get("status") or {}).get("summary")
                       and p["status"].get("observedGeneration") == p["metadata"]["generation"])
            if done == len(names):
                all_status_s = round(time.time() - t_policies, 1)
                break
            assert op.alive(), "the operator exited"
            await asyncio.sleep(0.5)
        waits = await controls
        metrics = op.get("/metrics", timeout=10)[1]
        sample = next(p for p in (await kube.get(POLICY_PATH))["items"] if p["metadata"]["name"] == "p001")
        stask.cancel()
        mem = proc_mem(op.pid)
        stopped = op.stop()
        got = [w["wait_s"] for w in waits if w["wait_s"] is not None]
        res = {
            "when": iso(), "pods": args.pods, "nodes": len(plan.nodes), "policies": args.policies,
            "flood_kills": args.flood_kills, "ready_s": ready_s, "rss_ready_mb": round(rss_ready / MB, 1),
            "policies_created_s": created_s, "every_status_s": all_status_s,
            # its own VmHWM: a child's exit ru_maxrss starts at this script's peak (bench/run.py)
            "peak_rss_mb": round(max(mem.get("VmHWM", 0), sampler.hwm) / MB, 1),
            "rss_end_mb": round(mem.get("VmRSS", 0) / MB, 1), "cpu_s": stopped.get("cpu_s"),
            "control_pods": len(waits), "control_posted": len(got),
            "control_wait_max_s": max(got) if got else None,
            "control_wait_p50_s": sorted(got)[len(got) // 2] if got else None,
            "control_waits": waits,
            "passes": histogram(metrics, "memory_hygiene_reconcile_pass_seconds"),
            "loop_lag": histogram(metrics, "memory_hygiene_event_loop_lag_seconds"),
            "sample_summary": (sample.get("status") or {}).get("summary"),
        }
        out = RESULTS / f"policies{'-' + args.tag if args.tag else ''}.json"
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "control_waits"}, indent=1))
        print(f"wrote {out}")
        await kube.close()
        return 0
    finally:
        if op is not None and op.proc is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster and the operator on the way out
    sys.exit(asyncio.run(main()))
