#!/usr/bin/env python3
"""Markdown tables from bench/results/*.json (pasted into docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MB = 1 << 20


def f(x, nd=1, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def _fmt_ratios(d) -> str:
    if not d:
        return "–"
    short = {"missing_requests": "no mem. request", "missing_requests(pods)": "no mem. request",
             "overcommitted_nodes": "overcommit", "silent_oom_kills": "silent OOM", "memory_pressure": "pressure"}
    return ", ".join(f"{short.get(k, k)} {v:.2f}" if v is not None else f"{short.get(k, k)} –" for k, v in d.items())


def main() -> int:
    rows, tagged = [], []
    sized = [p for p in (HERE / "results").glob("*.json") if p.stem.split("-")[0].isdigit()]  # not policies-*.json
    for p in sorted(sized, key=lambda p: int(p.stem.split("-")[0])):
        r = json.loads(p.read_text())
        r["_file"] = p.name
        (rows if p.stem.isdigit() else tagged).append(r)
    if not rows:
        return 1
    out = []
    out.append("| pods / nodes | load (pods/s) | caches filled | **initial sync** | peak RSS | steady RSS "
               "| CPU to sync | API requests to sync (LIST pods pages; – : none, a watch list) | API req/s after sync (of which Event posts) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = r.get("operator") or {}
        api = r.get("api") or {}
        sy, st = api.get("sync") or {}, api.get("steady") or {}
        ev = sum(v for k, v in (st.get("by_verb_resource") or {}).items() if k.endswith(" events"))
        evs = ev / st["seconds"] if st.get("seconds") else None
        out.append(
            f"| {r['pods']:,} / {r['nodes']:,} | {f((r.get('load') or {}).get('pods_per_s'), 0)} "
            f"| {f(o.get('ready_s'), 1, ' s')} | **{f(o.get('sync_s'), 1, ' s')}** | {f(r.get('peak_rss_mb'), 0, ' MB')} "
            f"| {f((r.get('steady') or {}).get('rss_mb'), 0, ' MB')} | {f(o.get('cpu_at_sync_s'), 1, ' s')} "
            f"| {sy.get('requests', '–')} ({(sy.get('by_verb_resource') or {}).get('list pods', '–')}) "
            f"| {f(st.get('per_second'), 1)} ({f(evs, 1)}) |")
    out.append("")
    out.append("| pods | memory-hygiene audit: wall / peak RSS | Popeye: wall / peak RSS | Popeye ÷ audit (wall) "
               "| found ÷ planted (audit) | found ÷ planted (Popeye) |")
    out.append("|---|---|---|---|---|---|")
    for r in rows:
        c = r.get("checkers") or {}
        a, p = c.get("memory_hygiene_audit") or {}, c.get("popeye") or {}
        ra = c.get("ratios") or {}
        fop = ra.get("found_over_planted") or {}
        perr = " (**partial**: one of its LISTs did not complete within its 30 s client timeout)" \
            if p.get("report_errors") else ""
        if p.get("killed_over_rss_limit_bytes"):
            perr = f" (**killed** at the {p['killed_over_rss_limit_bytes'] >> 30} GiB cap, no report)"
        if p.get("error") and not p.get("wall_s"):
            perr = " not run (see below)"
        out.append(
            f"| {r['pods']:,} | {f(a.get('wall_s'), 1, ' s')} / {round((a.get('peak_rss_bytes') or 0) / MB)} MB "
            f"| {f(p.get('wall_s'), 1, ' s')} / {round((p.get('peak_rss_bytes') or 0) / MB)} MB{perr} "
            f"| {f(ra.get('popeye_wall_over_audit'), 2)} | {_fmt_ratios(fop.get('memory_hygiene_audit'))} "
            f"| {_fmt_ratios(fop.get('popeye'))} |")
    out.append("")
    floors = [r for r in rows + tagged if r.get("floor")]
    if floors:
        out.append("| pods [file] | operator: initial sync (caches filled, its log) / CPU to sync / peak RSS to sync "
                   "| floor, bytes only: wall (streams) / CPU / peak RSS | floor, + orjson.loads: wall (streams) / CPU "
                   "/ peak RSS | initial sync ÷ floor wall (bytes, + orjson) | caches filled ÷ floor streams |")
        out.append("|---|---|---|---|---|---|")
        for r in floors:
            o, fl, ratio = r.get("operator") or {}, r["floor"], r.get("sync_vs_floor") or {}

            def cell(m: str) -> str:
                x = fl.get(m) or {}
                if x.get("error"):
                    return f"error: {x['error'][:80]}"
                return (f"{f(x.get('wall_s'), 2, ' s')} ({f(x.get('streams_s'), 2, ' s')}) / {f(x.get('cpu_s'), 2, ' s')} "
                        f"/ {f(x.get('peak_rss_mb'), 0, ' MB')}")

            fill = r.get("fill_vs_floor_streams") or {}
            out.append(f"| {r['pods']:,} [{r['_file']}] | {f(o.get('sync_s'), 1, ' s')} ({f(o.get('caches_filled_in_s'), 1, ' s')}) "
                       f"/ {f(o.get('cpu_at_sync_s'), 1, ' s')} / {f(o.get('hwm_mb_at_sync'), 0, ' MB')} "
                       f"| {cell('bytes')} | {cell('decode')} | {f(ratio.get('bytes'), 1)}, {f(ratio.get('decode'), 1)} "
                       f"| {f(fill.get('bytes'), 1)}, {f(fill.get('decode'), 1)} |")
        out.append("")
    for r in rows + tagged:
        c = r.get("churn")
        if not c:
            continue
        out.append(f"Churn at {r['pods']:,} pods [{r['_file']}] ({c['achieved_create_rate']} creations/s and as many deletions, "
                   f"{c['seconds']:.0f} s, after waiting {r.get('backlog_wait_s')} s for the initial Events):")
        out.append("")
        out.append("| what | sent | Events seen | p50 | p90 | p99 | max |")
        out.append("|---|---|---|---|---|---|---|")
        for k, name in (("pod", "pod without memory request → MissingMemoryRequest"),
                        ("oom", "NPD OOMKilling → SilentOOMKill")):
            x = c[k]
            out.append(f"| {name} | {x['sent']} | {x['events_seen']} | {f(x['p50_s'], 2, ' s')} | "
                       f"{f(x['p90_s'], 2, ' s')} | {f(x['p99_s'], 2, ' s')} | {f(x['max_s'], 2, ' s')} |")
        out.append("")
        if c.get("stages"):
            out.append("| stage (operator's histograms over the churn window) | observations | mean "
                       "| p50 at most | p99 at most |")
            out.append("|---|---|---|---|---|")
            for series, st in c["stages"].items():
                out.append(f"| `{series.replace('memory_hygiene_', '')}` | {st['count']} | {f(st['mean_s'], 3, ' s')} "
                           f"| {f(st['p50_le_s'], 3, ' s')} | {f(st['p99_le_s'], 3, ' s')} |")
            out.append("")
    for r in rows:
        for e in r.get("experiments") or []:
            st = e.get("stop") or {}
            out.append(f"| {r['pods']:,} | {e['label']} | {f(e.get('ready_s'), 1, ' s')} | {f(e.get('sync_s'), 1, ' s')} "
                       f"| {round((st.get('peak_rss_bytes') or 0) / MB)} MB | {st.get('cpu_s')} s "
                       f"| {(e.get('api_sync') or {}).get('requests')} | {e.get('error', '')} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
