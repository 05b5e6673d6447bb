#!/usr/bin/env python3
"""What the operator's Pod and Node caches hold, per pod, measured in-process (no cluster).

    PYTHONPATH=operator .venv/bin/python bench/cache_memory.py --pods 150000   # ~3 min

The pods and nodes are the 150k benchmark's (bench/generator.py ``Plan``, ``make_pod``,
``pod_status``, ``node_obj``, ``node_status``), with what the API server adds on create
(``metadata.uid``, ``creationTimestamp`` at the benchmark's ~364 pods/s, ``status.qosClass``).
Each object is serialized and parsed again with orjson (one node and its pods at a time), as the
reflector reads a watch line (so no string is shared between pods unless the conversion shares it), converted by
``memory_hygiene.core.sources.PODS.convert`` / ``NODES.convert`` and kept in a
``shell.reflector.Buckets`` with ``put(key, bucket, info)`` as the Reflector does; the dicts are
dropped as it goes.

Readings (``--modes``), each in a fresh child process (they disturb each other):

* ``rss``: VmRSS after minus before the fill (gc.collect() both times), per pod;
* ``walk``: every object reachable from the Buckets, counted once by id, sized with
  sys.getsizeof rounded up to pymalloc's 16 bytes, attributed to the field it was first
  reached from: what each field costs per pod, and how many distinct objects it has;
* ``cpu``: CPU seconds to parse (orjson) and keep 30,000 pods from their JSON bytes, best of 3
  (the conversion's caches warm, as at a relist);
* ``trace`` (not by default: ~4 min at 150k): tracemalloc's bytes still allocated after the
  fill, per pod, and the lines that allocated them (requested sizes, no allocator rounding).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generator import PODS_PER_NODE, Plan, iso, make_pod, node_obj, node_status, pod_status  # noqa: E402

from memory_hygiene.core.qos import compute_qos_class  # noqa: E402
from memory_hygiene.core.sources import NODES, PODS  # noqa: E402
from memory_hygiene.shell.reflector import Buckets, Reflector  # noqa: E402

LOAD_RATE = 364.0
"""Pods created per second by the benchmark's load generator at 150k (docs/benchmarks.md): how
many pods share a creationTimestamp second."""


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def as_served(obj: dict) -> dict:
    """Through JSON and back, as a watch line is read: every string a fresh object."""
    return orjson.loads(orjson.dumps(obj))


def served(pods: int, seed: int = 1):
    """(node object, [its pod objects]) as the API server would send them, one node at a time."""
    plan = Plan.make(pods, seed)
    rng = random.Random(seed)
    t0 = time.time() - pods / LOAD_RATE
    for n in plan.nodes:
        body = node_obj(n)
        body["metadata"].update(uid=_uid(rng), creationTimestamp=iso(t0))
        body.update(node_status(n))
        pods = []
        for i in plan.pods_on(n.index):
            pod = make_pod(plan, i, n).body
            pod["metadata"].update(uid=_uid(rng), creationTimestamp=iso(t0 + i / LOAD_RATE),
                                   resourceVersion=str(1000 + i))
            pod.update(pod_status(pod, n.index, i))
            pod["status"]["qosClass"] = compute_qos_class(pod)
            pods.append(pod)
        yield body, pods


def keep(nodes: Buckets, store: Buckets, node: dict, pods: list[dict]) -> None:
    """What the Reflector does with each object it reads."""
    nodes.put(Reflector._key(node), *NODES.convert(node))
    for pod in pods:
        conv = PODS.convert(pod)
        if conv is not None:
            store.put(Reflector._key(pod), *conv)


def fill(pods: int, seed: int = 1) -> tuple[Buckets, Buckets]:
    nodes, store = Buckets(), Buckets()
    for node, objs in served(pods, seed):
        keep(nodes, store, as_served(node), [as_served(p) for p in objs])
        del node, objs
    return nodes, store


def convert_seconds(pods: int, seed: int = 1, rounds: int = 3) -> float:
    """CPU seconds (best of ``rounds``) to parse and keep ``pods`` pods and their nodes, from the
    JSON bytes the API server would send (each round into fresh Buckets, after the shape cache is
    warm: what a relist costs)."""
    lines = [(orjson.dumps(node), [orjson.dumps(p) for p in objs]) for node, objs in served(pods, seed)]
    best = float("inf")
    for _ in range(rounds):
        nodes, store = Buckets(), Buckets()
        gc.collect()
        t = time.process_time()
        for node, objs in lines:
            keep(nodes, store, orjson.loads(node), [orjson.loads(p) for p in objs])
        best = min(best, time.process_time() - t)
        del nodes, store
    return best


# --- the walk ------------------------------------------------------------------------------------


def _size(o: object) -> int:
    return (sys.getsizeof(o) + 15) & ~15


def walk(nodes: Buckets, store: Buckets) -> dict[str, list[int]]:
    """{category: [bytes, objects]}, each object counted once (where first reached)."""
    seen: set[int] = set()
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def add(cat: str, o: object) -> bool:
        if id(o) in seen:
            return False
        seen.add(id(o))
        if o is None or o is True or o is False or (isinstance(o, int) and -5 <= o <= 256) \
                or (isinstance(o, (str, tuple)) and len(o) == 0):
            return False  # interpreter singletons: nobody's
        out[cat][0] += _size(o)
        out[cat][1] += 1
        return True

    def info(prefix: str, t: tuple) -> None:
        add(f"{prefix} tuple", t)
        for field, v in zip(t._fields, t):  # type: ignore[attr-defined]
            if field == "labels":
                if add(f"{prefix}.labels tuple", v):
                    for pair in v:
                        if add(f"{prefix}.labels pair tuples", pair):
                            add(f"{prefix}.labels keys (str)", pair[0])
                            add(f"{prefix}.labels values (str)", pair[1])
            elif field == "containers":
                if add(f"{prefix}.containers tuple", v):
                    for c in v:
                        info("ContainerInfo", c)
            elif isinstance(v, tuple):
                if add(f"{prefix}.{field} tuple", v):
                    for x in v:
                        add(f"{prefix}.{field} items", x)
            else:
                add(f"{prefix}.{field} ({type(v).__name__})", v)

    for name, b in (("pods", store), ("nodes", nodes)):
        for d in b.by_bucket.values():  # first: a key that is a tuple's uid or node counts there
            for v in d.values():
                info("PodInfo" if name == "pods" else "NodeInfo", v)
        add(f"Buckets({name}).where dict", b.where)
        add(f"Buckets({name}).by_bucket dict", b.by_bucket)
        for bucket, d in b.by_bucket.items():
            add(f"Buckets({name}).by_bucket keys (str)", bucket)
            add(f"Buckets({name}).per-bucket dicts", d)
        for key, bucket in b.where.items():
            add(f"Buckets({name}).where keys (str)", key)
            add(f"Buckets({name}).where values (str)", bucket)
    return dict(out)


# --- the readings --------------------------------------------------------------------------------


def measure(mode: str, pods: int, seed: int) -> dict:
    if mode == "cpu":
        n = min(pods, 30_000)
        return {"mode": mode, "pods": n, "nodes": -(-n // PODS_PER_NODE), "fill_s": 0,
                "cpu_s": convert_seconds(n, seed)}
    if mode == "trace":
        import tracemalloc

        tracemalloc.start()
    gc.collect()
    before = rss()
    t = time.monotonic()
    nodes, store = fill(pods, seed)
    elapsed = time.monotonic() - t
    gc.collect()
    out: dict = {"mode": mode, "pods": len(store), "nodes": len(nodes), "fill_s": round(elapsed, 1)}
    if mode == "rss":
        out["rss_delta"] = rss() - before
        out["rss_after"] = rss()
    elif mode == "trace":
        import tracemalloc

        current, _ = tracemalloc.get_traced_memory()
        out["traced"] = current
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        out["top"] = [(str(s.traceback[0]), s.size, s.count) for s in snap.statistics("lineno")[:12]]
    else:
        out["walk"] = walk(nodes, store)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default="rss,walk,cpu",
                    help="which readings, comma-separated (rss, walk, cpu: the time to parse and keep 30,000 pods; trace: tracemalloc, slow)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the readings to this file")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.pods, a.seed)))
        return
    res = {}
    for mode in a.modes.split(","):
        p = subprocess.run([sys.executable, __file__, "--pods", str(a.pods), "--seed", str(a.seed), "--child", mode],
                           capture_output=True, text=True, env=os.environ)
        if p.returncode:
            sys.exit(f"{mode}: exit {p.returncode}\n{p.stderr}")
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    first = next((r for m, r in res.items() if m != "cpu"), None)
    n_pods = first["pods"] if first else 0
    if first:
        print(f"{n_pods} pods, {first['nodes']} nodes kept (fill {first['fill_s']} s)")
    if "cpu" in res:
        r = res["cpu"]
        print(f"CPU to parse and keep {r['pods']} pods (best of 3): {r['cpu_s']:.2f} s = "
              f"{r['cpu_s'] / r['pods'] * 1e6:.1f} us/pod")
    if "rss" in res:
        r = res["rss"]
        print(f"RSS delta: {r['rss_delta'] / 2**20:.1f} MiB = {r['rss_delta'] / n_pods:.0f} B/pod "
              f"(process RSS after: {r['rss_after'] / 2**20:.1f} MiB)")
    if "trace" in res:
        r = res["trace"]
        print(f"tracemalloc: {r['traced'] / 2**20:.1f} MiB = {r['traced'] / n_pods:.0f} B/pod; top lines:")
        for where, size, count in r["top"]:
            print(f"  {size / n_pods:7.1f} B/pod {count:9d} blocks  {where}")
    if "walk" in res:
        w = res["walk"]["walk"]
        total = sum(b for b, _ in w.values())
        print(f"walk: {total / 2**20:.1f} MiB = {total / n_pods:.0f} B/pod (sizes rounded to 16 B); by field:")
        for cat, (b, n) in sorted(w.items(), key=lambda kv: -kv[1][0]):
            print(f"  {b / n_pods:7.1f} B/pod {n:9d} objects  {cat}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
