#!/usr/bin/env python3
"""The scale benchmark: one command per cluster size.

    bench/.venv/bin/python bench/run.py --pods 150000
    bench/.venv/bin/python bench/run.py --sizes 1000,10000,50000,150000

For each size: a fresh local control plane (kube-apiserver + etcd, bench/cluster.py), filled by
the load generator (bench/generator.py); then the operator (``memory-hygiene run`` from the
project's .venv) is started and measured: time to a complete and correct MemoryPolicy status,
RSS and CPU, the API requests it makes (the apiserver's audit log, filtered to the operator's
client certificate), the Events it posts (a watch on source=memory-hygiene); the same cluster is
audited by ``memory-hygiene audit``, Popeye and Polaris; churn (pods created and deleted at a
steady rate, plus OOM kills) gives violation-to-Event latency; once the operator has stopped,
bench/floor.py receives the same watch-list streams and discards them (the floor under the initial
sync). Results: bench/results/<size>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402

from cluster import BenchCluster, lc, parse_audit  # noqa: E402
from floor import SOURCES_PY, run_floor  # noqa: E402
from generator import (PODS_PER_NODE, Expected, LoadState, Plan, load, make_pod, npd_oom_event,  # noqa: E402
                       pod_status, post_oom_events)
from kube import Kube  # noqa: E402
from measure import Operator, Sampler, proc_mem, run_measured  # noqa: E402

ROOT = HERE.parent
RESULTS = HERE / "results"
CRD = ROOT / "crds" / "memorypolicies.memoryhygiene.io.yaml"
GROUP, VERSION, PLURAL = "memoryhygiene.io", "v1alpha1", "memorypolicies"
POLICY_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
MH = os.environ.get("MH_EXE") or str(ROOT / ".venv" / "bin" / "memory-hygiene")
"""The operator under test: the project's .venv, or MH_EXE (e.g. a venv pinned to one commit, since
the working tree may move while a long sweep runs)."""
_MH_PYTHON = Path(MH).with_name("python")
FLOOR_PYTHON = os.environ.get("MH_FLOOR_PYTHON") or (str(_MH_PYTHON) if os.access(_MH_PYTHON, os.X_OK) else sys.executable)
"""bench/floor.py runs in the operator's interpreter (the same Python, aiohttp and orjson), else in
this one's, or MH_FLOOR_PYTHON."""
MB = 1 << 20
BENCH_BIN = lc.cache_dir() / "bench-bin"
POPEYE_RSS_LIMIT = int(float(os.environ.get("POPEYE_RSS_LIMIT_GIB", "10")) * (1 << 30))
POPEYE_MAX_PODS = int(os.environ.get("POPEYE_MAX_PODS", "50000"))
"""Popeye needs ~0.8 GB of RSS per 1,000 pods; past this it is killed (the machine has 24 GB, shared
with kube-apiserver and etcd), and the result says so."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


# --- the Events the operator posts -------------------------------------------------------------


class EventLog:
    """Every Event with source=memory-hygiene, as a watch delivers it, with the receive time."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.waiters: dict[tuple, float] = {}
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.matched: Counter[str] = Counter()

    async def run(self, kube: Kube) -> None:
        async for ev in kube.watch("/api/v1/events", {"fieldSelector": "source=memory-hygiene"}):
            now = time.time()
            o = ev["object"]
            meta = o.get("metadata") or {}
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            count = o.get("count") or 1
            if ev["type"] == "ADDED" or (ev["type"] == "MODIFIED" and count > self.counts.get(key, 0)):
                inv = o.get("involvedObject") or {}
                self.records.append({"t": now, "type": ev["type"], "reason": o.get("reason"),
                                     "kind": inv.get("kind"), "name": inv.get("name"), "uid": inv.get("uid"),
                                     "ns": inv.get("namespace")})
                self.counts[key] = count
                self._match(now, o, inv)

    def _match(self, now: float, o: dict, inv: dict) -> None:
        if inv.get("kind") != "Pod":
            return
        if o.get("reason") == "MissingMemoryRequest":
            k = ("pod", inv.get("namespace"), inv.get("name"))
        elif o.get("reason") == "SilentOOMKill":
            m = re.search(r"\(pid (\d+)\)", o.get("message") or "")
            if not m:
                return
            k = ("oom", int(m.group(1)))
        else:
            return
        t0 = self.waiters.pop(k, None)
        if t0 is not None:
            self.latency[k[0]].append(now - t0)
            self.matched[k[0]] += 1
            # The same from the API server's clock (whole seconds): not inflated if this watch lags.
            created = (o.get("metadata") or {}).get("creationTimestamp")
            if created:
                from datetime import datetime

                ct = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
                self.latency[k[0] + "_server"].append(ct - t0)

    def rate_stats(self, t0: float, t1: float) -> dict[str, Any]:
        recs = [r for r in self.records if t0 <= r["t"] <= t1]
        per_sec = Counter(int(r["t"]) for r in recs)
        per_obj = Counter(r["uid"] for r in recs)
        win10 = 0
        ts = sorted(r["t"] for r in recs)
        j = 0
        for i, t in enumerate(ts):
            while ts[j] < t - 10:
                j += 1
            win10 = max(win10, i - j + 1)
        return {"events": len(recs), "by_reason": dict(Counter(r["reason"] for r in recs)),
                "max_per_second": max(per_sec.values(), default=0),
                "max_per_10s_window": win10,
                "mean_per_second": round(len(recs) / max(t1 - t0, 1e-9), 2),
                "max_per_object": max(per_obj.values(), default=0)}


# --- the policy --------------------------------------------------------------------------------


async def install_crd(kube: Kube) -> None:
    crd = yaml.safe_load(CRD.read_text())
    await kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for _ in range(120):
        c = await kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}")
        if any(x["type"] == "Established" and x["status"] == "True" for x in (c.get("status") or {}).get("conditions") or []):
            break
        await asyncio.sleep(0.25)
    for _ in range(120):  # discovery of the new group can lag a little
        try:
            await kube.get(POLICY_PATH)
            return
        except Exception:  # noqa: BLE001
            await asyncio.sleep(0.25)


async def create_policy(kube: Kube, name: str = "bench") -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MemoryPolicy", "metadata": {"name": name}, "spec": {}}
    await kube.create(POLICY_PATH, body, exists_ok=False)


async def delete_policy(kube: Kube, name: str = "bench") -> None:
    await kube.request("DELETE", f"{POLICY_PATH}/{name}", ok=(200, 202, 404))
    for _ in range(100):
        try:
            await kube.get(f"{POLICY_PATH}/{name}")
        except Exception:  # noqa: BLE001 - 404: gone
            return
        await asyncio.sleep(0.1)


async def wait_sync(kube: Kube, op: Operator, expected: dict[str, int], timeout: float,
                    name: str = "bench") -> dict[str, Any]:
    """Poll until the policy's summary equals what was planted; times from operator start."""
    t0 = op.started
    out: dict[str, Any] = {"ready_s": None, "first_status_s": None, "sync_s": None, "last_summary": None}
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not op.alive():
            out["error"] = f"operator exited with {op.proc.returncode if op.proc else '?'}"
            return out
        if out["ready_s"] is None:
            code, _ = op.get("/readyz", timeout=2)
            if code == 200:
                out["ready_s"] = round(time.time() - t0, 2)
        try:
            p = await kube.get(f"{POLICY_PATH}/{name}")
        except Exception as exc:  # noqa: BLE001
            out["poll_error"] = str(exc)
            await asyncio.sleep(0.5)
            continue
        summary = (p.get("status") or {}).get("summary")
        if summary:
            now = time.time()
            if out["first_status_s"] is None:
                out["first_status_s"] = round(now - t0, 2)
                out["first_summary"] = summary
            out["last_summary"] = summary
            if all(summary.get(k) == v for k, v in expected.items()):
                out["sync_s"] = round(now - t0, 2)
                out["sync_at"] = now
                return out
        await asyncio.sleep(0.25)
    out["error"] = "timed out"
    return out


# --- API load --------------------------------------------------------------------------------


def api_load(records: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    rs = [r for r in records if t0 <= r["t"] <= t1]
    by = Counter(f"{r['verb']} {r['resource']}{'/' + r['sub'] if r['sub'] else ''}" for r in rs)
    dur = max(t1 - t0, 1e-9)
    ev_posts = [r for r in rs if r["resource"] == "events" and r["verb"] in ("create", "patch")]
    per_sec = Counter(int(r["t"]) for r in ev_posts)
    # Event names are "<involved object name>.mh<hash>s|e" (shell/events.py): per-object counts.
    per_obj = Counter((r.get("ns"), (r.get("name") or "").rsplit(".mh", 1)[0]) for r in ev_posts)
    win10, j = 0, 0
    ts = [r["t"] for r in ev_posts]
    for i, t in enumerate(ts):
        while ts[j] < t - 10:
            j += 1
        win10 = max(win10, i - j + 1)
    return {"seconds": round(dur, 1), "requests": len(rs), "per_second": round(len(rs) / dur, 2),
            "by_verb_resource": dict(by.most_common()),
            "event_writes": len(ev_posts), "event_writes_max_per_second": max(per_sec.values(), default=0),
            "event_writes_max_per_10s": win10, "event_writes_max_per_object": max(per_obj.values(), default=0)}


# --- the other checkers -----------------------------------------------------------------------


def find_popeye() -> str | None:
    for cand in (os.environ.get("POPEYE"), shutil.which("popeye"), str(BENCH_BIN / "popeye"), "/tmp/gobin/popeye",
                 str(Path.home() / "go" / "bin" / "popeye")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def find_polaris() -> str | None:
    for cand in (os.environ.get("POLARIS"), shutil.which("polaris"), str(BENCH_BIN / "polaris"), "/tmp/gobin/polaris",
                 str(Path.home() / "go" / "bin" / "polaris")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


POLARIS_ERROR = (
    "not built: the Go module proxy, the only source reachable here, answers every request for "
    "github.com/fairwindsops/polaris (its go.mod's module path) and for /v9 and /v10: the version list, "
    "@latest, @master and a commit of the default branch, with `403 Forbidden / server response: This module "
    "version is not available.`")


def run_audit(kubeconfig: Path, workdir: Path) -> dict[str, Any]:
    out = workdir / "audit.json"
    r = run_measured([MH, "audit", "--kubeconfig", str(kubeconfig), "-o", "json"], stdout_path=out, timeout=1800)
    try:
        rep = json.loads(out.read_text())
        s = rep["summary"]
        r["found"] = {"overcommittedNodes": s["overcommittedNodes"], "nodesUnderMemoryPressure":
                      s["nodesUnderMemoryPressure"], "missingRequests": s["missingRequests"],
                      "silentOOMKills": s["silentOOMKills"], "oomKills": s["oomKills"],
                      "evaluatedPods": s["evaluatedPods"], "evaluatedNodes": s["evaluatedNodes"]}
    except (OSError, ValueError, KeyError) as exc:
        r["error"] = f"{type(exc).__name__}: {exc}; stderr: {_tail(out.with_suffix('.stderr'))}"
    return r


def _tail(p: Path, n: int = 800) -> str:
    try:
        return p.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_popeye(exe: str, kubeconfig: Path, workdir: Path) -> dict[str, Any]:
    out = workdir / "popeye.json"
    env = {**os.environ, "POPEYE_REPORT_DIR": str(workdir)}
    r = run_measured([exe, "--kubeconfig", str(kubeconfig), "-A", "--over-allocs", "--request-timeout", "30m",
                      "-o", "json", "--force-exit-zero"],
                     env=env, stdout_path=out, timeout=900, rss_limit_bytes=POPEYE_RSS_LIMIT)
    try:
        rep = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        r["error"] = f"{type(exc).__name__}: {exc}; stderr: {_tail(out.with_suffix('.stderr'))}"
        return r
    codes: Counter[str] = Counter()
    objects_by_code: dict[str, set] = defaultdict(set)
    messages: dict[str, str] = {}
    for sec in (rep.get("popeye") or {}).get("sections") or []:
        linter = sec.get("linter") or sec.get("gvr")
        for obj, issues in (sec.get("issues") or {}).items():
            for iss in issues or []:
                m = re.search(r"\[(POP-\d+)\]", iss.get("message", ""))
                code = m.group(1) if m else "?"
                key = f"{linter}:{code}"
                codes[key] += 1
                objects_by_code[key].add(obj)
                messages.setdefault(key, iss.get("message", "")[:160])
    r["score"] = (rep.get("popeye") or {}).get("score")
    if (rep.get("popeye") or {}).get("errors"):
        r["report_errors"] = rep["popeye"]["errors"]
    r["issues_by_code"] = {k: {"issues": v, "objects": len(objects_by_code[k]), "example": messages[k]}
                           for k, v in codes.most_common()}
    return r


def summarize_popeye(p: dict[str, Any]) -> dict[str, Any]:
    """What Popeye says about the three things: missing requests, overcommit, OOM kills."""
    codes = p.get("issues_by_code") or {}

    def pick(pred) -> int:
        return sum(v["objects"] for k, v in codes.items() if pred(k, v["example"].lower()))

    return {
        # POP-106 "No resources requests/limits defined" (per container).
        "pods_missing_requests": pick(lambda k, m: k.startswith("pods:") and "request" in m),
        "nodes_overcommitted_or_over_limits": pick(lambda k, m: k.startswith("nodes:") and (
            "limit" in m or "overcommit" in m or "over" in m and "memory" in m)),
        "nodes_memory_pressure": pick(lambda k, m: k.startswith("nodes:") and "memory" in m),
        "oom_kills": pick(lambda k, m: "oom" in m),
    }


# --- churn and latency --------------------------------------------------------------------------


async def churn(kube: Kube, plan: Plan, events: EventLog, rate: float, seconds: float,
                violating_every: int, oom_per_second: float, lifetime: float) -> dict[str, Any]:
    normal = [n for n in plan.nodes if not n.oom_target and n.capacity > 20 << 30]
    targets = [n for n in plan.nodes if n.oom_target]
    alive: deque[tuple[float, str, str]] = deque()
    sent = Counter()
    errors: list[str] = []
    sem = asyncio.Semaphore(64)
    tasks: set[asyncio.Task] = set()
    t_start = time.time()
    pid_next = 2_000_000

    async def create(k: int) -> None:
        async with sem:
            node = normal[k % len(normal)]
            kind = "besteffort" if k % violating_every == 0 else None
            pp = make_pod(plan, plan.pods + k, node, kind=kind, name=f"churn-{k:07d}",
                          namespace=plan.namespaces[k % len(plan.namespaces)])
            t = time.time()
            if kind:
                events.waiters[("pod", pp.namespace, pp.name)] = t
                sent["pod"] += 1
            try:
                created = await kube.create(f"/api/v1/namespaces/{pp.namespace}/pods", pp.body, exists_ok=False)
                await kube.merge_patch(f"/api/v1/namespaces/{pp.namespace}/pods/{pp.name}/status",
                                       pod_status(created, node.index, k))
                alive.append((t, pp.namespace, pp.name))
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc)[:200])

    async def delete(ns: str, name: str) -> None:
        async with sem:
            try:
                await kube.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc)[:200])

    async def oom(pid: int, node) -> None:
        t = time.time()
        events.waiters[("oom", pid)] = t
        sent["oom"] += 1
        try:
            await kube.create("/api/v1/namespaces/default/events", npd_oom_event(node, pid, t))
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc)[:200])

    def spawn(coro) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    k = 0
    next_oom = t_start
    oom_i = 0
    deleted = 0
    while True:
        now = time.time()
        if now - t_start >= seconds:
            break
        due = int((now - t_start) * rate)
        while k < due:
            spawn(create(k))
            k += 1
        while alive and alive[0][0] < now - lifetime:
            _, ns, name = alive.popleft()
            spawn(delete(ns, name))
            deleted += 1
        if oom_per_second > 0 and now >= next_oom and targets:
            spawn(oom(pid_next, targets[oom_i % len(targets)]))
            pid_next += 1
            oom_i += 1
            next_oom += 1.0 / oom_per_second
        await asyncio.sleep(0.005)
    achieved = k / (time.time() - t_start)
    await asyncio.gather(*list(tasks), return_exceptions=True)
    # Let the last Events arrive.
    deadline = time.time() + 30
    while events.waiters and time.time() < deadline:
        await asyncio.sleep(0.5)
    missing = Counter(key[0] for key in events.waiters)
    events.waiters.clear()
    # Remove what is left of the churn pods, so the cluster is back to the planted state.
    rest = list(alive)
    alive.clear()
    for i in range(0, len(rest), 64):
        await asyncio.gather(*(kube.delete(f"/api/v1/namespaces/{ns}/pods/{name}") for _, ns, name in rest[i:i + 64]))
    out: dict[str, Any] = {"seconds": seconds, "target_rate": rate, "achieved_create_rate": round(achieved, 1),
                           "created": k, "deleted": deleted + len(rest), "errors": len(errors),
                           "error_examples": errors[:3], "t0": t_start, "t1": t_start + seconds}
    for what in ("pod", "oom"):
        lat = events.latency.get(what, [])
        srv = events.latency.get(what + "_server", [])
        out[what] = {"sent": sent[what], "events_seen": len(lat), "not_seen_within_30s": missing[what],
                     "p50_s": _r(pct(lat, 50)), "p90_s": _r(pct(lat, 90)), "p99_s": _r(pct(lat, 99)),
                     "max_s": _r(max(lat) if lat else None),
                     "by_event_creationTimestamp": {"p50_s": _r(pct(srv, 50)), "p99_s": _r(pct(srv, 99)),
                                                    "note": "whole seconds, rounded down by the API server"}}
    events.latency.clear()
    return out


_STAGES = ("memory_hygiene_watch_delay_seconds", "memory_hygiene_change_evaluated_seconds",
           "memory_hygiene_reconcile_pass_seconds", "memory_hygiene_event_queue_seconds",
           "memory_hygiene_event_post_seconds", "memory_hygiene_event_loop_lag_seconds")


def histograms(text: str) -> dict[str, dict[str, Any]]:
    """The operator's stage histograms from /metrics: series -> {"buckets": {le: n}, "sum", "count"}."""
    out: dict[str, dict[str, Any]] = {}
    for m in re.finditer(r"^(memory_hygiene_\w+?)_(bucket|sum|count)(\{[^}]*\})? ([0-9.e+-]+)$", text, re.M):
        name, part, labels, value = m.group(1), m.group(2), m.group(3) or "", float(m.group(4))
        if name not in _STAGES:
            continue
        le = re.search(r'le="([^"]+)"', labels)
        rest = [kv for kv in labels.strip("{}").split(",") if kv and not kv.startswith("le=")]
        series = name + ("{" + ",".join(rest) + "}" if rest else "")
        h = out.setdefault(series, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if part == "bucket" and le:
            h["buckets"][float(le.group(1))] = value
        else:
            h[part] = value
    return out


def stage_latency(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per stage, over a window: count, mean, and p50/p99 as the upper bound of their histogram bucket."""
    out: dict[str, Any] = {}
    for series, h in after.items():
        b = before.get(series, {"buckets": {}, "sum": 0.0, "count": 0.0})
        n = h["count"] - b["count"]
        if n <= 0:
            continue
        cum = sorted((le, v - b["buckets"].get(le, 0.0)) for le, v in h["buckets"].items())

        def q(p: float) -> float | None:
            return next((le for le, c in cum if c >= p * n), None)

        out[series] = {"count": int(n), "mean_s": round((h["sum"] - b["sum"]) / n, 4),
                       "p50_le_s": q(0.5), "p99_le_s": q(0.99)}
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


async def wait_backlog(events: EventLog, quiet_rate: float, max_wait: float) -> float:
    """Wait until the operator's initial Events are posted (fewer than quiet_rate a second)."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        recent = sum(1 for r in events.records[-200:] if r["t"] > time.time() - 10)
        if recent < quiet_rate * 10 and time.time() - t0 > 10:
            break
        await asyncio.sleep(1)
    return round(time.time() - t0, 1)


# --- one size ------------------------------------------------------------------------------------


async def run_operator_once(kube: Kube, cluster: BenchCluster, workdir: Path, expected: dict[str, int],
                            label: str, exe: str, env: dict[str, str], timeout: float,
                            events: EventLog | None = None, keep: bool = False,
                            args: tuple[str, ...] = ()) -> tuple[dict[str, Any], Operator, Sampler]:
    await delete_policy(kube)
    await create_policy(kube)
    op = Operator(exe, cluster.operator_kubeconfig, lc._free_port(), workdir / "operator.log",
                  {"MEMORY_HYGIENE_RESYNC_SECONDS": "30", **env}, args)
    log(f"operator [{label}] starting")
    op.start()
    sampler = Sampler(op.pid)
    stask = asyncio.create_task(sampler.run())
    sync = await wait_sync(kube, op, expected, timeout)
    res: dict[str, Any] = {"label": label, "env": env, **sync}
    if sync.get("sync_s") is not None:
        res["rss_at_sync_mb"] = round(sampler.rss_at(sync["sync_at"]) / MB, 1)
        res["cpu_at_sync_s"] = round(sampler.cpu_at(sync["sync_at"]), 2)
    res["hwm_mb_at_sync"] = round(sampler.hwm / MB, 1)
    log(f"operator [{label}] ready {sync.get('ready_s')}s, first status {sync.get('first_status_s')}s, "
        f"sync {sync.get('sync_s')}s, peak RSS {res['hwm_mb_at_sync']} MB {sync.get('error', '')}")
    if sync.get("error"):
        res["log_tail"] = _tail(workdir / "operator.log", 2000)
    if not keep:
        stask.cancel()
        res["stop"] = op.stop()
        recs = parse_audit(cluster.audit_log, op.started)
        end = sync.get("sync_at") or time.time()
        res["api_sync"] = api_load(recs, op.started, end)
    return res, op, sampler


def cpu_snapshot(pids: list[int]) -> tuple[float, float, float]:
    """(time, machine busy CPU seconds, CPU seconds of ``pids``): what else ran on the machine."""
    from measure import proc_cpu

    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return time.time(), busy, sum(proc_cpu(p) for p in pids if p)


def contention(a: tuple[float, float, float], b: tuple[float, float, float]) -> dict[str, float]:
    wall = max(b[0] - a[0], 1e-9)
    return {"machine_busy_cores": round((b[1] - a[1]) / wall, 2),
            "benchmark_processes_cores": round((b[2] - a[2]) / wall, 2),
            "other_processes_cores": round(((b[1] - a[1]) - (b[2] - a[2])) / wall, 2)}


async def run_sweep(args: argparse.Namespace) -> int:
    """One cluster, grown from size to size; everything measured at each size."""
    sizes = sorted(args.sizes)
    binaries = lc.ensure_binaries()
    extra = ("--max-requests-inflight=800", "--max-mutating-requests-inflight=400")
    cluster = BenchCluster(binaries=binaries, startup_timeout=180, extra_apiserver_args=extra)
    cluster.start()
    log(f"cluster up at {cluster.server} in {cluster.startup_seconds:.1f}s ({cluster.root})")
    kube = Kube.for_cluster(cluster, args.concurrency)
    state = LoadState()
    rc = 0
    try:
        await install_crd(kube)
        for size in sizes:
            log(f"===== {size} pods =====")
            result: dict[str, Any] = {"pods": size, "nodes": (size + PODS_PER_NODE - 1) // PODS_PER_NODE,
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                                      "settings": {k: v for k, v in vars(args).items()},
                                      "cluster_grown_from_pods": state.pods}
            try:
                await measure_size(cluster, kube, state, size, args, size == sizes[-1], result)
            except Exception as exc:  # noqa: BLE001 - record, go on
                import traceback

                traceback.print_exc()
                result["error"] = f"{type(exc).__name__}: {exc}"
                rc = 1
            path = RESULTS / (f"{size}-{args.tag}.json" if args.tag else f"{size}.json")
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            print_row(result)
            log(f"wrote {path}")
    finally:
        await kube.close()
        cluster.stop()
    return rc


async def measure_size(cluster: BenchCluster, kube: Kube, state: LoadState, size: int, args: argparse.Namespace,
                       largest: bool, result: dict[str, Any]) -> None:
    workdir = Path(f"/tmp/mh-bench-run-{size}")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    result["versions"] = versions(cluster)
    result["operator_under_test"] = {"exe": MH, "commit": os.environ.get("MH_COMMIT") or subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    ops: list[Operator] = []
    tasks: list[asyncio.Task] = []
    watch_kube: Kube | None = None
    try:
        plan = Plan.make(size, args.seed)
        t = time.monotonic()
        exp, timings = await load(kube, plan, state, args.concurrency)
        await post_oom_events(kube, plan, exp)
        timings["total_s"] = time.monotonic() - t
        result["load"] = {k: round(v, 1) for k, v in timings.items()}
        result["load"]["pods_per_s"] = round(timings["pods_added"] / max(timings["pods_s"], 1e-9), 1)
        result["expected"] = exp.summary()
        result["pod_kinds"] = exp.kinds
        result["apiserver_rss_mb_after_load"] = round(_rss(cluster.apiserver_pid) / MB)
        result["etcd_rss_mb_after_load"] = round(_rss(cluster.etcd_pid) / MB)
        log(f"loaded {size} pods / {len(plan.nodes)} nodes ({timings['pods_added']} pods added in "
            f"{timings['total_s']:.0f}s); expected {exp.summary()}")

        events = EventLog()
        watch_kube = Kube.for_cluster(cluster, 4)
        tasks.append(asyncio.create_task(events.run(watch_kube)))
        await asyncio.sleep(1)
        await asyncio.sleep(args.settle_seconds)

        timeout = max(600.0, size / 100)
        main_label, main_exe, main_env = "default", MH, {}
        if args.compare_reflector and os.access(EXP_EXE, os.X_OK):
            # The operator as it is, with a time limit (its initial sync is quadratic in the number of
            # objects, see docs/benchmarks.md); then the proposed change does the rest of the run.
            snap0 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid()])
            res0, op0, _ = await run_operator_once(kube, cluster, workdir, exp.summary(), "default", MH, {},
                                                   args.default_timeout)
            res0["contention_during_sync"] = contention(
                snap0, cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid()]))
            res0.pop("log_tail", None)
            result["operator_default"] = res0
            main_label, main_exe, main_env = REFLECTOR_LABEL, EXP_EXE, {"MH_EXP_REFLECTOR": "1"}
            await asyncio.sleep(args.settle_seconds)
        snap0 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid()])
        res, op, sampler = await run_operator_once(kube, cluster, workdir, exp.summary(), main_label, main_exe,
                                                   main_env, timeout, events, keep=True)
        ops.append(op)
        snap1 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid(), op.pid])
        res["contention_during_sync"] = contention(snap0, snap1)
        result["operator"] = res
        if res.get("sync_s") is None:
            raise RuntimeError(f"operator never reached the expected status: {res.get('last_summary')}")
        sync_at = res["sync_at"]

        # Steady state: nothing changes in the cluster; the operator drains its Event queue.
        await asyncio.sleep(args.steady_seconds)
        t_steady = time.time()
        result["steady"] = {"rss_mb": round(sampler.rss_at(t_steady) / MB, 1),
                            "hwm_mb": round(sampler.hwm / MB, 1),
                            "cpu_s_since_start": round(sampler.cpu_at(t_steady), 2),
                            **{k: round(v, 2) for k, v in sampler.window(sync_at, t_steady).items()}}
        log(f"steady: RSS {result['steady']['rss_mb']} MB, peak {result['steady']['hwm_mb']} MB")

        if args.tools:
            snap0 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid(), op.pid])
            # In a thread: the Event watch must keep reading while the checkers run, or the API server
            # drops it as a slow consumer and Events go uncounted.
            result["checkers"] = await asyncio.to_thread(checkers, cluster, workdir, exp)
            snap1 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid(), op.pid])
            result["checkers"]["contention"] = contention(snap0, snap1)

        if args.churn_seconds > 0 and (args.churn or largest):
            waited = await wait_backlog(events, 0.5, args.drain_wait)
            result["backlog_wait_s"] = waited
            log(f"initial Events posted after {waited}s more; churn at {args.churn_rate}/s for {args.churn_seconds}s")
            ckube = Kube.for_cluster(cluster, args.concurrency)
            snap0 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid(), op.pid])
            hist0 = histograms(op.get("/metrics")[1])
            result["churn"] = await churn(ckube, plan, events, args.churn_rate, args.churn_seconds,
                                          args.violating_every, args.oom_per_second, args.churn_lifetime)
            snap1 = cpu_snapshot([cluster.apiserver_pid, cluster.etcd_pid, os.getpid(), op.pid])
            result["churn"]["contention"] = contention(snap0, snap1)
            result["churn"]["stages"] = stage_latency(hist0, histograms(op.get("/metrics")[1]))
            for series, st in result["churn"]["stages"].items():
                log(f"  {series}: n={st['count']} mean {st['mean_s']} s, p50 <= {st['p50_le_s']} s, "
                    f"p99 <= {st['p99_le_s']} s")
            await ckube.close()
            await post_oom_events(kube, plan, exp)  # drop the churn's OOM events: back to what was planted
            c = result["churn"]
            log(f"churn: {c['achieved_create_rate']}/s; pod->Event p50 {c['pod']['p50_s']} p99 {c['pod']['p99_s']} "
                f"({c['pod']['events_seen']}/{c['pod']['sent']}); OOM->Event p50 {c['oom']['p50_s']} "
                f"p99 {c['oom']['p99_s']} ({c['oom']['events_seen']}/{c['oom']['sent']})")
            result["rss_after_churn_mb"] = round(sampler.rss_at(time.time()) / MB, 1)

        t_end = time.time()
        op_metrics = op.get("/metrics")[1]
        result["operator_metrics"] = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"^(memory_hygiene_events_(?:posted|dropped)_total\{[^}]*\}) ([0-9.e+]+)$", op_metrics, re.M)}
        # The operator's own high-water mark (/proc VmHWM), read last just before it stops. Not
        # its exit rusage: a child's ru_maxrss starts at its parent's peak (exec keeps it), and
        # this script holds the whole load plan (at 150k, more than the operator).
        sampler.hwm = max(sampler.hwm, proc_mem(op.proc.pid).get("VmHWM", 0))
        result["operator_exit"] = op.stop()
        ops.remove(op)
        result["peak_rss_mb"] = round(sampler.hwm / MB, 1)
        result["cpu_total_s"] = result["operator_exit"].get("cpu_s")
        await asyncio.sleep(2)  # the audit log is written in batches
        recs = parse_audit(cluster.audit_log, op.started)
        result["api"] = {"sync": api_load(recs, op.started, sync_at),
                         "steady": api_load(recs, sync_at + 5, t_steady),
                         "whole_run": api_load(recs, op.started, t_end)}
        if "churn" in result:
            c = result["churn"]
            result["api"]["churn"] = api_load(recs, c["t0"], c["t1"])
            result["events_churn"] = events.rate_stats(c["t0"], c["t1"])
        result["events"] = events.rate_stats(op.started, t_end)

        # The floor, on the same loaded cluster, once the operator has stopped (while it runs, the
        # two would share the 2 cores and the floor would change its steady-state numbers).
        result["floor"] = await measure_floor(cluster, workdir)
        floors = {m: f for m, f in result["floor"].items() if isinstance(f, dict) and not f.get("error")}
        result["sync_vs_floor"] = {m: round(res["sync_s"] / f["wall_s"], 2) for m, f in floors.items() if f.get("wall_s")}
        # Like with like, without either's start: the operator's own "caches filled in" (its
        # reflectors' start to the last end bookmark) over the floor's streams.
        filled = re.findall(r"caches filled in ([0-9.]+)s", _tail(workdir / "operator.log", 1 << 20))
        if filled:
            res["caches_filled_in_s"] = float(filled[-1])
            result["fill_vs_floor_streams"] = {m: round(float(filled[-1]) / f["streams_s"], 2)
                                               for m, f in floors.items() if f.get("streams_s")}
        log(f"initial sync {res['sync_s']} s / floor: {result['sync_vs_floor']}; caches filled "
            f"{res.get('caches_filled_in_s')} s / floor streams: {result.get('fill_vs_floor_streams')}")

        if size in args.experiments:
            # kopf's own settings only where the operator as it is can sync at all (see docs); the
            # reflector variants at the larger sizes.
            which = args.experiment_set or ([] if size <= 2000 else ["reflector"])
            result["experiments"] = await experiments(kube, cluster, workdir, exp, timeout, which)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if watch_kube is not None:
            await watch_kube.close()
        for op in ops:
            op.stop()
        result["apiserver_rss_mb_end"] = round(_rss(cluster.apiserver_pid) / MB) if cluster.apiserver_pid else None
        result["etcd_rss_mb_end"] = round(_rss(cluster.etcd_pid) / MB) if cluster.etcd_pid else None


def operator_sources_py(python: str) -> Path:
    """The core/sources.py of the operator under test (MH_EXE may be another commit's venv)."""
    try:
        out = subprocess.run([python, "-c", "import memory_hygiene.core.sources as s; print(s.__file__)"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and Path(out.stdout.strip()).is_file():
            return Path(out.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return SOURCES_PY


async def measure_floor(cluster: BenchCluster, workdir: Path) -> dict[str, Any]:
    """bench/floor.py, bytes only and then with orjson.loads per line, each a process of its own,
    with the admin certificate (so that the audit log's count of the operator's requests stays
    the operator's)."""
    sources_py = await asyncio.to_thread(operator_sources_py, FLOOR_PYTHON)
    out: dict[str, Any] = {"python": FLOOR_PYTHON, "sources_py": str(sources_py)}
    pids = [cluster.apiserver_pid, cluster.etcd_pid, os.getpid()]
    for decode in (False, True):
        snap0 = cpu_snapshot(pids)
        r = await asyncio.to_thread(run_floor, cluster.kubeconfig, decode, workdir, FLOOR_PYTHON, sources_py)
        snap1 = cpu_snapshot(pids)
        c = contention(snap0, snap1)
        wall = max(snap1[0] - snap0[0], 1e-9)
        c["floor_cores"] = round((r.get("cpu_s") or 0) / wall, 2)
        c["other_processes_cores"] = round(c["other_processes_cores"] - c["floor_cores"], 2)
        r["contention"] = c
        out[r.get("mode", "decode" if decode else "bytes")] = r
        log(f"floor [{r.get('mode')}]: wall {r.get('wall_s')} s (streams {r.get('streams_s')} s), CPU {r.get('cpu_s')} s, "
            f"peak RSS {r.get('peak_rss_mb')} MB, {r.get('objects')} objects, {round((r.get('bytes') or 0) / MB)} MB "
            f"{r.get('error', '')}")
    return out


def checkers(cluster: BenchCluster, workdir: Path, exp: Expected) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("memory-hygiene audit (one-shot, live cluster) ...")
    out["memory_hygiene_audit"] = run_audit(cluster.kubeconfig, workdir)
    log(f"  {_short(out['memory_hygiene_audit'])}")
    pop = find_popeye()
    if pop and exp.pods > POPEYE_MAX_PODS:
        out["popeye"] = {"error": f"not run above {POPEYE_MAX_PODS} pods: at 50,000 pods its unpaginated LIST of all "
                         "pods times out after its built-in 30 s (`GET /api/v1/pods?timeout=30s: Client.Timeout exceeded "
                         "while awaiting headers`), and at 150,000 pods its concurrent full LISTs drove etcd 3.4 to "
                         "15.5 GB of RSS and the kernel's OOM killer (bench/results/sweep-a120dc2.log)"}
    elif pop:
        log("popeye ...")
        p = run_popeye(pop, cluster.kubeconfig, workdir)
        p["version"] = "v0.22.1 (built by bench/tools.sh; the binary reports 'dev')"
        p["summary"] = summarize_popeye(p)
        out["popeye"] = p
        log(f"  {_short(p)} {p.get('summary')}")
    else:
        out["popeye"] = {"error": "popeye binary not found (see bench/tools.sh)"}
    pol = find_polaris()
    if pol:
        out["polaris"] = run_measured([pol, "audit", "--kubeconfig", str(cluster.kubeconfig), "--format", "json"],
                                      stdout_path=workdir / "polaris.json", timeout=3600)
    else:
        out["polaris"] = {"error": POLARIS_ERROR}
    a, p = out["memory_hygiene_audit"], out.get("popeye") or {}
    if a.get("wall_s") and p.get("wall_s"):
        out["ratios"] = {"popeye_wall_over_audit": round(p["wall_s"] / a["wall_s"], 2),
                         "popeye_rss_over_audit": round(p["peak_rss_bytes"] / a["peak_rss_bytes"], 2)}
        ps = p.get("summary") or {}
        e = exp.summary()
        out["ratios"]["found_over_planted"] = {
            "memory_hygiene_audit": {k: _ratio((a.get("found") or {}).get(k2), e[k2]) for k, k2 in (
                ("missing_requests", "missingRequests"), ("overcommitted_nodes", "overcommittedNodes"),
                ("silent_oom_kills", "silentOOMKills"), ("memory_pressure", "nodesUnderMemoryPressure"))},
            "popeye": {"missing_requests(pods)": _ratio(ps.get("pods_missing_requests"), e["missingRequests"]),
                       "overcommitted_nodes": _ratio(ps.get("nodes_overcommitted_or_over_limits"),
                                                     e["overcommittedNodes"]),
                       "silent_oom_kills": _ratio(ps.get("oom_kills"), e["silentOOMKills"]),
                       "memory_pressure": _ratio(ps.get("nodes_memory_pressure"), e["nodesUnderMemoryPressure"])},
        }
    return out


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def _short(r: dict[str, Any]) -> str:
    return (f"wall {r.get('wall_s')}s, peak RSS {round((r.get('peak_rss_bytes') or 0) / MB)} MB, "
            f"exit {r.get('exit')} {r.get('error', '')[:300]} {r.get('found', '')}")


def _popeye_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"Version:\s*(\S+)", out)
        return m.group(1) if m else out.strip()[:80]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --- kopf settings experiments (mid size) -------------------------------------------------------

# A scratch copy of the operator with the MH_EXP_* knobs, installed at MH_EXP_EXE: the patch that made
# it (against 84b16ca, code that no longer exists) is in git history only,
# `git show b5cc57e:bench/proposals/reflector-scratch.diff`. Without it these variants are not run.
EXP_EXE = os.environ.get("MH_EXP_EXE", "/tmp/mh-exp/.venv/bin/memory-hygiene")
REFLECTOR_LABEL = "proposed: own list+watch reflector instead of kopf indexes (scratch copy)"


async def experiments(kube: Kube, cluster: BenchCluster, workdir: Path, exp: Expected,
                      timeout: float, which: list[str] | None = None) -> list[dict[str, Any]]:
    variants: list[tuple[str, str, dict[str, str]]] = [
        ("chunk_size=500 (default)", MH, {}),
        ("chunk_size=100", MH, {"MEMORY_HYGIENE_CHUNK_SIZE": "100"}),
        ("chunk_size=5000", MH, {"MEMORY_HYGIENE_CHUNK_SIZE": "5000"}),
        ("chunk_size=0 (one LIST)", MH, {"MEMORY_HYGIENE_CHUNK_SIZE": "0"}),
        ("watch_list=false (paged LIST)", MH, {"MEMORY_HYGIENE_WATCH_LIST": "false"}),
        ("watch_list=true (default)", MH, {"MEMORY_HYGIENE_WATCH_LIST": "true"}),
    ]
    if os.access(EXP_EXE, os.X_OK):
        variants += [
            ("reflector (scratch copy)", EXP_EXE, {"MH_EXP_REFLECTOR": "1"}),
            ("reflector, chunk_size=5000 (scratch copy)", EXP_EXE, {"MH_EXP_REFLECTOR": "1",
                                                                   "MEMORY_HYGIENE_CHUNK_SIZE": "5000"}),
            ("reflector, no field_selectors (scratch copy)", EXP_EXE, {"MH_EXP_REFLECTOR": "1",
                                                                      "MH_EXP_NO_FIELD_SELECTORS": "1"}),
            ("initial_streaming=True (scratch copy)", EXP_EXE, {"MH_EXP_INITIAL_STREAMING": "1"}),
            ("no field_selectors (scratch copy)", EXP_EXE, {"MH_EXP_NO_FIELD_SELECTORS": "1"}),
            ("queueing.idle_timeout=0.5 (scratch copy)", EXP_EXE, {"MH_EXP_IDLE_TIMEOUT": "0.5"}),
        ]
    out = []
    for label, exe, env in variants:
        if which and not any(w in label for w in which):
            continue
        res, _, _ = await run_operator_once(kube, cluster, workdir, exp.summary(), label, exe, env,
                                            min(timeout, 600))
        out.append({k: v for k, v in res.items() if k not in ("first_summary",)})
    return out


# --- environment -------------------------------------------------------------------------------


def _rss(pid: int | None) -> int:
    from measure import proc_mem

    return proc_mem(pid).get("VmRSS", 0) if pid else 0


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().split("\n")[0]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": mem.split(":", 1)[1].strip(),
            "kernel": platform.release(), "python": platform.python_version()}


def versions(cluster: BenchCluster) -> dict[str, str]:
    v = cluster.versions()
    try:
        out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                              "import importlib.metadata as m, platform; print(m.version('kopf'), "
                              "m.version('kubernetes'), platform.python_version())"],
                             capture_output=True, text=True, timeout=60).stdout.split()
        v.update({"kopf": out[0], "kubernetes_python_client": out[1], "operator_python": out[2]})
    except (OSError, IndexError, subprocess.TimeoutExpired):
        pass
    return v


# --- main ---------------------------------------------------------------------------------------


def print_row(r: dict[str, Any]) -> None:
    op = r.get("operator") or {}
    c = r.get("churn") or {}
    ch = r.get("checkers") or {}
    a = ch.get("memory_hygiene_audit") or {}
    p = ch.get("popeye") or {}
    print(f"\n=== {r['pods']} pods / {r['nodes']} nodes ===")
    print(f"  load: {r.get('load')}")
    print(f"  initial sync: {op.get('sync_s')} s (caches filled {op.get('ready_s')} s, first status "
          f"{op.get('first_status_s')} s)")
    print(f"  operator RSS: peak {r.get('peak_rss_mb')} MB, at sync {op.get('rss_at_sync_mb')} MB, steady "
          f"{(r.get('steady') or {}).get('rss_mb')} MB; CPU {op.get('cpu_at_sync_s')} s to sync, "
          f"{r.get('cpu_total_s')} s total")
    api = r.get("api") or {}
    print(f"  API: sync {(api.get('sync') or {}).get('requests')} requests "
          f"({(api.get('sync') or {}).get('per_second')}/s), steady {(api.get('steady') or {}).get('per_second')}/s, "
          f"churn {(api.get('churn') or {}).get('per_second')}/s")
    ev = r.get("events") or {}
    print(f"  Events: {ev.get('events')} posted, max {ev.get('max_per_second')}/s, max "
          f"{ev.get('max_per_10s_window')} per 10 s, max {ev.get('max_per_object')} per object; "
          f"operator metrics {r.get('operator_metrics')}")
    fl = r.get("floor") or {}
    for mode in ("bytes", "decode"):
        f = fl.get(mode)
        if f:
            print(f"  floor [{mode}]: wall {f.get('wall_s')} s, CPU {f.get('cpu_s')} s, peak RSS {f.get('peak_rss_mb')} MB; "
                  f"initial sync / floor {(r.get('sync_vs_floor') or {}).get(mode)}; streams {f.get('streams_s')} s, "
                  f"operator's caches filled / floor's streams {(r.get('fill_vs_floor_streams') or {}).get(mode)} "
                  f"{f.get('error', '')}")
    if c:
        print(f"  churn {c.get('achieved_create_rate')}/s: pod->Event p50 {c['pod']['p50_s']} s p99 "
              f"{c['pod']['p99_s']} s; OOM->Event p50 {c['oom']['p50_s']} s p99 {c['oom']['p99_s']} s")
    if a:
        print(f"  audit: {_short(a)}")
    if p:
        print(f"  popeye: {_short(p)} {p.get('summary')}")
    if ch.get("ratios"):
        print(f"  ratios: {ch['ratios']}")
    for e in r.get("experiments") or []:
        print(f"  exp {e['label']}: sync {e.get('sync_s')} s, ready {e.get('ready_s')} s, peak "
              f"{round((e.get('stop') or {}).get('peak_rss_bytes', 0) / MB)} MB, cpu "
              f"{(e.get('stop') or {}).get('cpu_s')} s, requests {(e.get('api_sync') or {}).get('requests')} "
              f"{e.get('error', '')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, help="one size (pods; nodes = pods/30)")
    ap.add_argument("--sizes", help="comma-separated sizes, e.g. 1000,10000,50000,150000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent requests of the load generator")
    ap.add_argument("--steady-seconds", type=float, default=30)
    ap.add_argument("--no-tools", dest="tools", action="store_false", help="skip audit/Popeye/Polaris")
    ap.add_argument("--churn", action="store_true", help="churn at every size (default: the largest only)")
    ap.add_argument("--churn-rate", type=float, default=100.0, help="pod creations (and deletions) per second")
    ap.add_argument("--churn-seconds", type=float, default=60.0)
    ap.add_argument("--churn-lifetime", type=float, default=30.0, help="a churn pod is deleted after S seconds")
    ap.add_argument("--violating-every", type=int, default=20, help="every Nth churn pod has no memory request")
    ap.add_argument("--oom-per-second", type=float, default=1.0)
    ap.add_argument("--drain-wait", type=float, default=1800.0,
                    help="wait at most S seconds for the initial Events to be posted before churn")
    ap.add_argument("--experiments", default="", metavar="SIZES",
                    help="at these sizes, also restart the operator with other kopf settings (chunk_size, "
                    "initial_streaming, field selectors, queueing.idle_timeout) and measure each")
    ap.add_argument("--experiment-set", default="", metavar="WORDS",
                    help="only the variants whose label contains one of these comma-separated words")
    ap.add_argument("--tag", default="", help="write bench/results/<pods>-<tag>.json instead of <pods>.json")
    ap.add_argument("--compare-reflector", action="store_true",
                    help="run the operator as it is with --default-timeout, then the proposed list+watch variant "
                    "(scratch copy, MH_EXP_EXE) for the rest of the measurements")
    ap.add_argument("--default-timeout", type=float, default=300.0)
    ap.add_argument("--settle-seconds", type=float, default=5.0,
                    help="pause between loading and starting the operator")
    ap.add_argument("--etcd", metavar="PATH",
                    help="the etcd binary of the control plane (default: Debian's); `built`: the etcd "
                         "devcluster/etcd/go.mod pins (bench/tools.sh builds it)")
    args = ap.parse_args()
    if args.etcd == "built":
        os.environ["MEMORY_HYGIENE_ETCD"] = str(lc.build_etcd())
    elif args.etcd:
        os.environ["MEMORY_HYGIENE_ETCD"] = str(Path(args.etcd).expanduser())
    if not args.sizes and not args.pods:
        ap.error("--pods or --sizes")
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.pods]
    args.experiments = [int(x) for x in args.experiments.split(",")] if args.experiments else []
    args.experiment_set = [x for x in args.experiment_set.split(",") if x] if args.experiment_set else []
    RESULTS.mkdir(exist_ok=True)
    return asyncio.run(run_sweep(args))


if __name__ == "__main__":
    sys.exit(main())
