"""core/policyreport.py: violations as wgpolicyk8s.io/v1alpha2 PolicyReports, by scope, bounded,
updated from what a pass changed; the bodies valid against the upstream CRDs (kubeconform, with
the schemas of the CRDs as Kyverno ships them: tests/tools/schemas.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from memory_hygiene.core import policyreport as R
from memory_hygiene.core.rules import MISSING_LIMIT, MISSING_REQUEST, OVERCOMMITTED, RULES, SILENT_OOM, Violation

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))


def pod_v(ns: str, name: str, rule: str = MISSING_REQUEST, container: str | None = "app") -> Violation:
    return Violation(rule, "Pod", ns, name, container, f"{rule} on {name}", f"uid-{ns}-{name}")


def node_v(name: str, rule: str = OVERCOMMITTED) -> Violation:
    return Violation(rule, "Node", None, name, None, f"{name} is at 180%", f"uid-{name}")


def test_every_rule_has_a_severity_of_the_schema() -> None:
    assert set(R.SEVERITY) == set(RULES)
    assert set(R.SEVERITY.values()) <= {"critical", "high", "medium", "low", "info"}


def test_scopes() -> None:
    assert R.scope_of(pod_v("a", "p")) == "a"
    assert R.scope_of(node_v("n1")) == R.CLUSTER
    # an OOM kill no pod could be named for is about the Node: the cluster report
    assert R.scope_of(Violation(SILENT_OOM, "Node", None, "n1", None, "m", "n1", "t1")) == R.CLUSTER


def test_report_bounded_most_severe_first() -> None:
    vs = [pod_v("a", f"p{i}", MISSING_LIMIT) for i in range(5)] + [pod_v("a", "q", SILENT_OOM)]
    body = R.build_report("cluster-memory", "a", vs, 3, lambda v: 1700000000.5 if v.name == "q" else None)
    assert body is not None
    assert body["kind"] == "PolicyReport" and body["metadata"]["namespace"] == "a"
    assert body["metadata"]["name"] == "memory-hygiene-cluster-memory"
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "memory-hygiene",
                                          "memoryhygiene.io/policy": "cluster-memory"}
    assert body["summary"] == {"pass": 0, "fail": 6, "warn": 0, "error": 0, "skip": 0}
    assert [r["rule"] for r in body["results"]] == [SILENT_OOM, MISSING_LIMIT, MISSING_LIMIT]
    first = body["results"][0]
    assert first == {
        "policy": "cluster-memory", "rule": SILENT_OOM, "result": "fail", "scored": True, "severity": "high",
        "category": "memory", "source": "memory-hygiene", "message": "SilentOOMKill on q",
        "resources": [{"apiVersion": "v1", "kind": "Pod", "namespace": "a", "name": "q", "uid": "uid-a-q"}],
        "properties": {"container": "app"}, "timestamp": {"seconds": 1700000000, "nanos": 0},
    }
    assert R.build_report("p", "a", [], 3, lambda v: None) is None
    cluster = R.build_report("p", R.CLUSTER, [node_v("n1")], 3, lambda v: None)
    assert cluster is not None and cluster["kind"] == "ClusterPolicyReport" and "namespace" not in cluster["metadata"]
    assert cluster["results"][0]["resources"] == [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-n1"}]


def test_scope_index_marks_only_what_changed() -> None:
    ix = R.ScopeIndex()
    a1, a2, b1, n1 = pod_v("a", "p1"), pod_v("a", "p2"), pod_v("b", "p1"), node_v("n1")
    ix.replace([a1, a2, b1, n1])
    assert ix.take() == {"a", "b", R.CLUSTER}
    assert ix.take() == set()
    ix.update({a1.key: a1, n1.key: n1}, {})  # unchanged violations of changed buckets: nothing to write
    assert ix.take() == set()
    moved = Violation(OVERCOMMITTED, "Node", None, "n1", None, "n1 is at 190%", "uid-n1")
    ix.update({moved.key: moved}, {b1.key: b1})  # a new message, and the last violation of b ended
    assert ix.take() == {R.CLUSTER, "b"}
    assert "b" not in ix.scopes and ix.scopes[R.CLUSTER][moved.key] == moved
    ix.replace([a1])
    assert ix.take() == {"a", R.CLUSTER}
    ix.clear()
    assert ix.take() == {"a"} and ix.scopes == {}


def test_reports_are_valid_against_the_upstream_crds(tmp_path: Path) -> None:
    import build as tools
    import schemas

    try:
        kubeconform = str(tools.build("kubeconform"))
        location = schemas.write_schemas(tmp_path / "schemas")
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"cannot build kubeconform or its schemas: {e}", pytrace=False)
    docs = [R.build_report("cluster-memory", "a", [pod_v("a", "p"), pod_v("a", "q", SILENT_OOM)], 10, lambda v: 1.0),
            R.build_report("cluster-memory", R.CLUSTER, [node_v("n1")], 10, lambda v: None)]
    f = tmp_path / "reports.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run([kubeconform, "-strict", "-summary", "-output", "json", "-schema-location", location, str(f)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["summary"] == {"valid": 2, "invalid": 0, "errors": 0, "skipped": 0}
