#!/usr/bin/env python3
"""Plots of named bench/results/*.json files into docs/img/bench-*.png (matplotlib, in bench/.venv).

Each curve reads the files named below, no others (docs/benchmarks.md cites each of them under
the plots): the main sweep ``<pods>.json`` (the operator under test), and for comparison the
sweeps ``<pods>-a120dc2.json`` (the operator on kopf indexes), ``<pods>-9239a97.json`` (its own
caches, paged LISTs, etcd 3.4) and ``<pods>-edf6dba.json`` (whose audit read the cluster in paged
LISTs). A named file that is missing is an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMG = HERE.parent / "docs" / "img"
MB = 1 << 20
SIZES = (1000, 10000, 50000, 150000)

SWEEP = [f"{n}.json" for n in SIZES]  # the operator under test, its audit, Popeye
# kopf indexes ("operator_default"); 150000-a120dc2.json has none (that run's default operator was
# already 9239a97), so it is not drawn.
KOPF_INDEXES = [f"{n}-a120dc2.json" for n in (1000, 10000, 50000)]
PAGED_OPERATOR = [f"{n}-9239a97.json" for n in SIZES]  # etcd 3.4, paged LISTs from etcd, full passes
PAGED_AUDIT = [f"{n}-edf6dba.json" for n in SIZES]  # the audit before it read the cluster as the operator does


def load(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        r = json.loads((RESULTS / name).read_text())
        if not (r.get("operator") or r.get("operator_default")):
            raise SystemExit(f"{RESULTS / name}: no operator measurements in it")
        rows.append(r)
    return sorted(rows, key=lambda r: r["pods"])


def _pts(rows, get):
    xs, ys = [], []
    for r in rows:
        try:
            y = get(r)
        except (KeyError, TypeError):
            y = None
        if y is not None:
            xs.append(r["pods"])
            ys.append(y)
    return xs, ys


def _popeye_ok(r) -> bool:
    p = r["checkers"]["popeye"]
    return bool(p.get("wall_s")) and p.get("exit") == 0 and not p.get("report_errors") and not p.get("error")


def main() -> int:
    rows = load(SWEEP)
    old = load(KOPF_INDEXES)
    before = load(PAGED_OPERATOR)
    paged_audit = load(PAGED_AUDIT)
    popeye = [r for r in rows if _popeye_ok(r)]  # Popeye's completed scans in the sweep
    IMG.mkdir(parents=True, exist_ok=True)
    sizes = sorted({r["pods"] for r in rows + old})
    labels = [f"{p // 1000}k pods\n{-(-p // 30):,} nodes" for p in sizes]
    commit = ((rows[0].get("operator_under_test") or {}).get("commit") if rows else "") or "HEAD"

    fig, ax = plt.subplots(figsize=(10.5, 4.5))
    ax.plot(*_pts(rows, lambda r: r["operator"]["sync_s"]), "o-", lw=2, label=f"operator {commit}: initial sync")
    ax.plot(*_pts(old, lambda r: r["operator_default"]["sync_s"]), "x-", color="gray",
            label="operator a120dc2 (kopf indexes): initial sync")
    xs, ys = _pts(old, lambda r: None if r["operator_default"].get("sync_s") else
                  r["settings"]["default_timeout"])
    if xs:
        ax.scatter(xs, ys, marker="^", color="red", zorder=5,
                   label="operator a120dc2: NOT ready when stopped (lower bound)")
    ax.plot(*_pts(before, lambda r: r["operator"]["sync_s"]), "s--", color="tab:purple",
            label="operator 9239a97 (own caches, paged LISTs, etcd 3.4): initial sync")
    ax.plot(*_pts(rows, lambda r: r["checkers"]["memory_hygiene_audit"]["wall_s"]), "^-", color="tab:green",
            label=f"memory-hygiene audit {commit} (one-shot)")
    ax.plot(*_pts(paged_audit, lambda r: r["checkers"]["memory_hygiene_audit"]["wall_s"]), "^:",
            color="tab:olive", label="memory-hygiene audit edf6dba (paged LISTs)")
    ax.plot(*_pts(popeye, lambda r: r["checkers"]["popeye"]["wall_s"]), "v-",
            color="tab:orange", label="Popeye v0.22.1 (completed scans only)")
    ax.axhline(60, color="red", lw=0.8, ls=":", label="target at 150k: 60 s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, labels, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("cluster size")
    ax.set_ylabel("seconds")
    ax.set_title("Time to a complete, correct report (2 vCPU, shared with kube-apiserver + etcd)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot: hides no point
    fig.tight_layout()
    fig.savefig(IMG / "bench-sync-time.png", dpi=110)

    fig, ax = plt.subplots(figsize=(10.5, 4.5))
    ax.plot(*_pts(rows, lambda r: r["peak_rss_mb"]), "o-", lw=2, label=f"operator {commit}: peak RSS")
    ax.plot(*_pts(rows, lambda r: r["steady"]["rss_mb"]), "s--", color="tab:cyan", label=f"operator {commit}: steady RSS")
    ax.plot(*_pts(old, lambda r: (r["operator_default"].get("stop") or {}).get("peak_rss_bytes", 0) / MB or None),
            "x-", color="gray", label="operator a120dc2 (kopf indexes): peak RSS (until stopped)")
    ax.plot(*_pts(rows, lambda r: r["checkers"]["memory_hygiene_audit"]["peak_rss_bytes"] / MB), "^-",
            color="tab:green", label=f"memory-hygiene audit {commit}: peak RSS")
    ax.plot(*_pts(paged_audit, lambda r: r["checkers"]["memory_hygiene_audit"]["peak_rss_bytes"] / MB), "^:",
            color="tab:olive", label="memory-hygiene audit edf6dba (paged LISTs): peak RSS")
    ax.plot(*_pts(before, lambda r: r["peak_rss_mb"]), "s--", color="tab:purple",
            label="operator 9239a97 (paged LISTs, etcd 3.4): peak RSS")
    ax.plot(*_pts(popeye, lambda r: r["checkers"]["popeye"]["peak_rss_bytes"] / MB), "v-",
            color="tab:orange", label="Popeye: peak RSS (completed scans only)")
    ax.axhline(500, color="red", lw=0.8, ls=":", label="target: 500 MB")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, labels, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("cluster size")
    ax.set_ylabel("MB")
    ax.set_title("Memory vs cluster size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(IMG / "bench-rss.png", dpi=110)
    print(f"wrote {IMG / 'bench-sync-time.png'} and {IMG / 'bench-rss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
