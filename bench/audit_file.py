"""`memory-hygiene audit -f` on a `kubectl get -o yaml`-shaped dump: wall, CPU and peak RSS.

    bench/.venv/bin/python bench/audit_file.py --pods 22000      # or the project's .venv
    bench/.venv/bin/python bench/audit_file.py --pods 22000 --json   # a `kubectl get -o json` dump

Writes the benchmark's cluster (generator.py: the same nodes and pods the live benchmark loads,
with the uid, resourceVersion, managedFields and status a real dump carries) as one v1 List in
YAML (or JSON, indented as kubectl writes it), then runs the CLI on it as a user would and prints the numbers, and PyYAML's own C loader
reading the same file whole for comparison (--no-baseline skips it: it needs ~1.8 GB at 22k).
No cluster is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from generator import Plan, make_pod, node_obj, node_status, pod_status  # noqa: E402


def write_dump(pods: int, out: Path, as_json: bool = False) -> int:
    plan = Plan.make(pods)
    items = []
    for n in plan.nodes:
        node = node_obj(n)
        node.update(node_status(n))
        node["metadata"]["uid"] = str(uuid.uuid4())
        items.append(node)
    for n in plan.nodes:
        for i in plan.pods_on(n.index):
            pod = make_pod(plan, i, n).body
            meta = pod["metadata"]
            meta.update(uid=str(uuid.uuid4()), creationTimestamp="2026-12-01T10:00:00Z", resourceVersion=str(1000 + i))
            meta["managedFields"] = [{
                "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
                "operation": "Update", "time": "2026-12-01T10:00:00Z",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {
                    f'k:{{"name":"{c["name"]}"}}': {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}
                    for c in pod["spec"]["containers"]}}}}]
            pod.update(pod_status(pod, n.index, i))
            items.append(pod)
    dump = {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
    with out.open("w") as f:
        if as_json:
            json.dump(dump, f, indent=4)
        else:
            yaml.dump(dump, f, Dumper=yaml.CSafeDumper, default_flow_style=False)
    return len(items)


def timed(argv: list[str]) -> tuple[float, float, int, int]:
    """wall s, CPU s, peak RSS MB, exit status of a child, from wait4's rusage."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    return time.monotonic() - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=22_000)
    ap.add_argument("--json", action="store_true", help="write the dump as JSON (kubectl get -o json)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the whole-file baseline (PyYAML's C loader; for --json, json.load)")
    ap.add_argument("--write", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        print(write_dump(args.pods, Path(args.write), args.json))
        return
    exe = str(Path(sys.executable).parent / "memory-hygiene")
    with tempfile.TemporaryDirectory() as tmp:
        fmt = "JSON" if args.json else "YAML"
        dump = Path(tmp) / f"dump.{fmt.lower()}"
        # In a process of its own: a child forked from a large parent inherits its RSS high-water
        # mark across exec, and would report the dump's memory as its own.
        objects = int(subprocess.run([sys.executable, __file__, "--pods", str(args.pods), "--write", str(dump),
                                      *(["--json"] if args.json else [])],
                                     check=True, capture_output=True, text=True).stdout)
        size = dump.stat().st_size / 1e6
        wall, cpu, rss, code = timed([exe, "audit", "-f", str(dump), "-o", "json"])
        print(f"dump: {objects} objects ({args.pods} pods), {size:.1f} MB of {fmt}")
        print(f"memory-hygiene audit -f: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS {rss} MB (exit {code})")
        if args.no_baseline:
            return
        if args.json:
            wall, cpu, rss, _ = timed([sys.executable, "-c", "import sys, json; json.load(open(sys.argv[1]))", str(dump)])
            print(f"json.load, the file whole: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS {rss} MB")
        else:
            wall, cpu, rss, _ = timed([sys.executable, "-c", "import sys, yaml; yaml.load(open(sys.argv[1]), "
                                       "Loader=yaml.CSafeLoader)", str(dump)])
            print(f"yaml.load(CSafeLoader), the file whole: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS {rss} MB")


if __name__ == "__main__":
    main()
