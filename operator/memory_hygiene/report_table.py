"""The audit report as text tables for people (fits 120 columns)."""

from __future__ import annotations

import textwrap

from .core import ruletable
from .core.rules import SILENT_OOM, Report, fmt_bytes, fmt_time

WIDTH = 120


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render(report: Report, width: int = WIDTH) -> str:
    out: list[str] = [f"MemoryPolicy {report.policy}", ""]
    if report.nodes:
        rows = []
        for n in report.nodes:
            pct = "?" if n.limits_percent is None else f"{n.limits_percent:g}%"
            if n.overcommitted:
                pct += " !"
            rows.append([
                _cut(n.name, 40), fmt_bytes(n.capacity), fmt_bytes(n.allocatable), fmt_bytes(n.requests),
                fmt_bytes(n.limits), pct, str(n.pods_without_limit), "yes" if n.memory_pressure else "no",
                str(len(n.memory_evictions)),
            ])
        out.append("NODES")
        out += _table(
            ["NAME", "CAPACITY", "ALLOCATABLE", "REQUESTS", "LIMITS", "LIMITS%", "NO-LIMIT", "PRESSURE",
             "EVICTED"],
            rows,
        )
        out.append("")
    if report.oom_kills:
        rows = []
        for k in report.oom_kills:
            who = f"{k.namespace}/{k.pod}" if k.pod else (f"? (uid {k.kernel_pod_uid})" if k.kernel_pod_uid else "?")
            rows.append([
                fmt_time(k.time) or "?", _cut(k.node, 24), _cut(f"{k.process} ({k.pid})", 26),
                "-" if k.oom_score_adj is None else str(k.oom_score_adj), _cut(who, 30), k.container or "?",
                k.attribution, "SILENT" if k.silent else "visible",
            ])
        out.append("OOM KILLS")
        out += _table(["TIME", "NODE", "PROCESS (PID)", "SCORE", "POD", "CONTAINER", "BY", "KUBERNETES SAW"], rows)
        out.append("")
    if report.violations:
        out.append(f"VIOLATIONS ({len(report.violations)})")
        for v in report.violations:
            obj = f"{v.kind} {v.namespace}/{v.name}" if v.namespace else f"{v.kind} {v.name}"
            if v.container:
                obj += f" [{v.container}]"
            out.append(f"- {v.rule}: {obj}")
            out += textwrap.wrap(v.message, width=width, initial_indent="    ", subsequent_indent="    ")
        out.append("")
    else:
        out += ["No violations.", ""]
    s = report.summary()
    counts = {r.name: 0 for r in ruletable.TABLE}
    for v in report.violations:
        counts[v.rule] += 1
    rules = ", ".join(f"{counts[r.name]} {r.label}"
                      + (f" (of {s['oomKills']} OOM kills)" if r.name == SILENT_OOM else "")
                      for r in ruletable.TABLE)
    out.append(f"Summary: {rules}; {s['evaluatedNodes']} nodes, {s['evaluatedPods']} pods.")
    return "\n".join(textwrap.fill(line, width) if len(line) > width else line for line in out) + "\n"
