"""Load seed scenarios (snapshot files) into a cluster through the kubelet/NPD simulators.

    python -m devcluster.sim.load --kubeconfig K examples/seed*.yaml

Each file gets its own suffix on node and namespace names (so scenarios that share a node name
do not collide), timestamps shifted to the present, and the label mh-scenario=<suffix>.
Prints one line per file.
"""

from __future__ import annotations

import argparse
import os
import sys

from devcluster.sim.kube import Sim, load_snapshot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devcluster.sim.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default: $KUBECONFIG")
    p.add_argument("--no-shift", action="store_true", help="keep the snapshots' own timestamps")
    p.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    if not args.kubeconfig:
        p.error("no kubeconfig: pass --kubeconfig or set KUBECONFIG")
    sim = Sim(args.kubeconfig)
    for i, f in enumerate(args.files, 1):
        suffix = f"s{i}"
        loaded = load_snapshot(sim, f, suffix, shift_to_now=not args.no_shift, labels={"mh-scenario": suffix})
        print(f"{f}: nodes {', '.join(loaded.nodes.values())}; namespaces {', '.join(loaded.namespaces.values())}; "
              f"{len(loaded.pods)} pods, {len(loaded.events)} OOM events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
