#!/usr/bin/env python3
"""Plots of bench/results/*.json into docs/img/bench-*.png (matplotlib, in bench/.venv).

``<pods>.json`` is the main sweep (the operator under test); ``<pods>-<tag>.json`` files of
earlier sweeps are drawn for comparison: ``a120dc2`` (the operator on kopf indexes; or the tag
given as the first argument), ``9239a97`` (its own caches, paged LISTs, etcd 3.4) and
``edf6dba`` (whose audit read the cluster in paged LISTs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
IMG = HERE.parent / "docs" / "img"
MB = 1 << 20


def load(tag: str = "") -> list[dict]:
    rows = []
    for p in (HERE / "results").glob("*.json"):
        stem = p.stem
        if (tag and not stem.endswith(f"-{tag}")) or (not tag and not stem.isdigit()):
            continue
        r = json.loads(p.read_text())
        if r.get("operator") or r.get("operator_default"):
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
    rows = load()
    old = load(sys.argv[1] if len(sys.argv) > 1 else "a120dc2")
    before = load("9239a97")  # etcd 3.4, paged LISTs from etcd, full reconcile passes
    paged_audit = load("edf6dba")  # the audit before it read the cluster as the operator does
    # Popeye's completed scans: the sweep's, and reruns with a larger memory cap (--tag popeye20g)
    by_size = {r["pods"]: r for r in load("popeye20g") + rows if _popeye_ok(r)}  # the sweep's own first
    popeye = [by_size[p] for p in sorted(by_size)]
    if not rows and not old:
        print("no results", file=sys.stderr)
        return 1
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
