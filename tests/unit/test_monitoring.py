"""The alerts and the dashboard: promtool (built from the Go module proxy, tests/tools/build.py)
checks and unit-tests the rules; the dashboard is linted here (its queries parsed by promtool, its
metrics and labels the operator's own); the copies in manifests/overlays/monitoring/ and the chart
agree with charts/memory-hygiene/files/, the one source.

The dashboard is checked against the dashboard schema of Grafana's foundation SDK (dashlint,
tests/tools/dashlint/: a strict decode, panel options included, and the schema's Validate()), and
with the checks of grafana/dashboard-linter's rules that apply here (the Go module proxy refuses to
serve dashboard-linter itself: 403 "not available").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "memory-hygiene" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "dashboard.json"
OVERLAY = ROOT / "manifests" / "overlays" / "monitoring"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool" / "alerts_test.yaml"
sys.path.insert(0, str(ROOT / "tests" / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build as tools  # noqa: E402
from memory_hygiene.core.rules import RULES as RULE_NAMES  # noqa: E402
from memory_hygiene.shell import metrics  # noqa: E402,F401 - registers the operator's metrics
from test_chart import by_key, helm_template, kustomize  # noqa: E402


def promtool() -> str:
    try:
        return str(tools.build("promtool"))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"cannot build promtool (python tests/tools/build.py promtool): {e}", pytrace=False)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def test_promtool_check_rules() -> None:
    out = run([promtool(), "check", "rules", str(RULES)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout, out.stdout


def test_promtool_test_rules() -> None:
    """The alerts' unit tests (tests/unit/promtool/alerts_test.yaml): each alert fires when it
    should, with its labels and annotations, not before its `for`, and not on what it ignores."""
    out = run([promtool(), "test", "rules", str(PROMTOOL_TESTS)], cwd=PROMTOOL_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_every_alert_has_a_runbook() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    headings = set(re.findall(r"^## (\S+)$", runbooks, re.M))
    alerts = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in alerts} == headings
    for r in alerts:
        assert r["annotations"]["runbook_url"].endswith("docs/runbooks.md#" + r["alert"].lower())
        assert r["labels"]["severity"] in ("warning", "critical")


# --- the operator's own metric names and labels ----------------------------------------------------

def _families() -> dict[str, set[str]]:
    """sample name -> label names, for every memory_hygiene_ metric the operator registers."""
    out: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the registered collectors
        names = getattr(collector, "_labelnames", None)
        name = getattr(collector, "_name", "")
        if names is None or not name.startswith("memory_hygiene_") or name.startswith("memory_hygiene_node_agent"):
            continue
        kind = getattr(collector, "_type", "")
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])
        for s in suffixes:
            out[name + s] = set(names) | ({"le"} if s == "_bucket" else set())
    return out


SELECTOR = re.compile(r"(memory_hygiene_[a-z_]+)(\{[^}]*\})?")
SCRAPE_LABELS = {"job", "instance"}


def _check_exprs(exprs: list[str]) -> None:
    families = _families()
    assert "memory_hygiene_violations" in families, "the operator's metrics did not register"
    for expr in exprs:
        found = SELECTOR.findall(expr)
        assert found, f"{expr!r} reads no memory_hygiene_ metric"
        for name, matchers in found:
            assert name in families, f"{expr!r}: the operator exports no {name}"
            for label, value in re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', matchers or ""):
                assert label in families[name] | SCRAPE_LABELS, f"{expr!r}: {name} has no label {label}"
                if label == "rule":
                    assert value in RULE_NAMES, f"{expr!r}: no rule {value}"
        for labels in re.findall(r"by \(([^)]*)\)", expr):
            for label in (s.strip() for s in labels.split(",")):
                assert any(label in families[n] for n, _ in found), f"{expr!r}: no metric here has {label}"


def test_alerts_read_the_operators_metrics() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    _check_exprs([r["expr"] for r in rules if "memory_hygiene_" in r["expr"]])
    assert [r["expr"] for r in rules if "memory_hygiene_" not in r["expr"]] == ['absent(up{job="memory-hygiene"} == 1)']


# --- the dashboard -------------------------------------------------------------------------------

def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_matches_grafanas_schema(tmp_path: Path) -> None:
    try:
        dashlint = str(tools.build("dashlint"))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"cannot build dashlint (python tests/tools/build.py dashlint): {e}", pytrace=False)
    out = run([dashlint, str(DASHBOARD)])
    assert out.returncode == 0 and "ok (7 panels)" in out.stdout, out.stdout + out.stderr
    bad = _dashboard()
    bad["panels"][0]["options"]["legend"]["displayMod"] = "table"  # a typo Grafana would ignore
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    out = run([dashlint, str(f)])
    assert out.returncode == 1 and "displayMod" in out.stdout, out.stdout + out.stderr


def test_dashboard_lint() -> None:
    """What grafana/dashboard-linter checks that applies: a uid and title, a datasource variable
    used by every panel and query, the template variables used, $__rate_interval in rate(), unique
    panel ids, no overlapping panels, a unit and a description on each."""
    d = _dashboard()
    assert d["uid"] == "memory-hygiene" and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["description"] and p["fieldConfig"]["defaults"]["unit"], p["title"]
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']} overlaps another"
        assert g["x"] + g["w"] <= 24
        cells |= mine
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            for fn in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", t["expr"]):
                assert fn == "$__rate_interval", f"{p['title']}: use $__rate_interval, not {fn}"
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var == "__rate_interval", f"{p['title']}: unknown ${var}"
    used = {v for p in d["panels"] for t in p["targets"] for v in re.findall(r"\$(\w+)", t["expr"])}
    assert {"job", "policy"} <= used


def _panel_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]


def test_dashboard_shows_what_the_issue_asks() -> None:
    exprs = " ".join(_panel_exprs())
    for metric in ("memory_hygiene_node_limits_ratio", "memory_hygiene_oom_kill_incidents",
                   "memory_hygiene_violations", "memory_hygiene_events_posted_total",
                   "memory_hygiene_events_dropped_total", "memory_hygiene_reconcile_duration_seconds_bucket"):
        assert metric in exprs
    assert "by (attribution, silent)" in exprs and "by (rule)" in exprs and "by (node)" in exprs


def test_dashboard_queries_parse_and_read_the_operators_metrics(tmp_path: Path) -> None:
    """Every query, with its Grafana variables substituted, is valid PromQL (promtool parses it as
    a recording rule), and reads metrics and labels the operator exports."""
    exprs = _panel_exprs()
    _check_exprs(exprs)
    subst = [e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$policy", ".*") for e in exprs]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                        for i, e in enumerate(subst)]}]}
    f = tmp_path / "dashboard-queries.yaml"
    f.write_text(yaml.safe_dump(rules))
    out = run([promtool(), "check", "rules", str(f)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout


# --- one source: the overlay and the chart ----------------------------------------------------------

def test_overlay_copies_are_the_chart_files() -> None:
    rule = yaml.safe_load((OVERLAY / "prometheusrule.yaml").read_text())
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), \
        "manifests/overlays/monitoring/prometheusrule.yaml's spec must be charts/memory-hygiene/files/prometheus-rules.yaml"
    assert (OVERLAY / "dashboard.json").read_bytes() == DASHBOARD.read_bytes(), \
        "cp charts/memory-hygiene/files/dashboard.json manifests/overlays/monitoring/"


def test_chart_with_monitoring_renders_the_monitoring_overlay() -> None:
    chart = by_key(helm_template("--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,"
                                 "grafanaDashboard.enabled=true"))
    kust = by_key(kustomize("manifests/overlays/monitoring"))
    assert sorted(chart) == sorted(kust)
    for k in kust:
        assert chart[k] == kust[k], f"{k} differs between the chart and manifests/overlays/monitoring/"
    cm = next(v for k, v in chart.items() if k[1] == "ConfigMap")
    assert json.loads(cm["data"]["memory-hygiene.json"]) == _dashboard()
