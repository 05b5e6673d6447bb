#!/usr/bin/env python3
"""A loaded benchmark cluster that stays up, for profiling by hand:

    bench/.venv/bin/python bench/up.py --pods 10000 --info /tmp/mh-bench-up.json &
    # ... memory-hygiene run --kubeconfig "$(jq -r .operator_kubeconfig /tmp/mh-bench-up.json)"
    kill %1      # SIGTERM: stops kube-apiserver and etcd, removes the data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import BenchCluster, lc  # noqa: E402
from generator import LoadState, Plan, load, post_oom_events  # noqa: E402
from kube import Kube  # noqa: E402
from run import create_policy, install_crd  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, required=True)
    ap.add_argument("--info", default="/tmp/mh-bench-up.json")
    ap.add_argument("--etcd", metavar="PATH", help="the etcd binary (default: Debian's)")
    args = ap.parse_args()
    if args.etcd:
        import os

        os.environ["MEMORY_HYGIENE_ETCD"] = str(Path(args.etcd).expanduser())
    cluster = BenchCluster(binaries=lc.ensure_binaries(), startup_timeout=180)
    cluster.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        kube = Kube.for_cluster(cluster)
        await install_crd(kube)
        plan = Plan.make(args.pods)
        exp, _ = await load(kube, plan, LoadState())
        await post_oom_events(kube, plan, exp)
        await create_policy(kube)
        await kube.close()
        Path(args.info).write_text(json.dumps({
            "server": cluster.server, "kubeconfig": str(cluster.kubeconfig),
            "operator_kubeconfig": str(cluster.operator_kubeconfig), "audit_log": str(cluster.audit_log),
            "expected": exp.summary(), "apiserver_pid": cluster.apiserver_pid, "etcd_pid": cluster.etcd_pid}, indent=2))
        print(f"up: {args.info}", flush=True)
        await stop.wait()
    finally:
        cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
