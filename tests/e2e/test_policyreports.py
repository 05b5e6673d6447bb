"""PolicyReports for the seed scenarios, on the real API server with the upstream wgpolicyk8s.io
CRDs (as Kyverno ships them, from the Go module proxy: tests/tools/schemas.py), written by the
operator run with `--policy-reports` and the token of its own ServiceAccount, whose RBAC is
manifests/overlays/policyreports/ (the opt-in ClusterRole; the base one has nothing on
wgpolicyk8s.io). The reports agree with the offline audit, and go when the policy goes.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from memory_hygiene.core.engine import evaluate
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.inputs import load_files
from tests.e2e.conftest import OperatorProcess, wait_for
from devcluster.sim.kube import load_snapshot
from tests.e2e.test_operator import EXAMPLES, SEEDS, scoped_spec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
GROUP, VERSION = "wgpolicyk8s.io", "v1alpha2"


@pytest.fixture(scope="module")
def report_crds(cluster, kubectl):
    import schemas

    files = schemas.upstream_crd_files()
    wg = [f for f in files if "wgpolicyk8s.io_" in f.name]
    assert len(wg) == 2, files
    for f in wg:
        proc = kubectl("apply", "--server-side", "-f", str(f))
        assert proc.returncode == 0, proc.stderr

    def established() -> bool:
        for plural in ("policyreports", "clusterpolicyreports"):
            out = kubectl("get", f"crd/{plural}.{GROUP}", "-o",
                          'jsonpath={.status.conditions[?(@.type=="Established")].status}')
            if out.returncode != 0 or out.stdout.strip() != "True":
                return False
        return True

    wait_for(established, timeout=60, what="the wgpolicyk8s.io CRDs to be Established")


@pytest.fixture(scope="module")
def reporting_operator(cluster, kubectl, crd, report_crds, operator_process, tmp_path_factory):
    """The operator with --policy-reports and only the RBAC of the policyreports overlay."""
    proc = kubectl("apply", "-k", str(ROOT / "manifests" / "overlays" / "policyreports"))
    assert proc.returncode == 0, proc.stderr
    operator_process.stop()  # the admin operator must not do the work for it
    kubeconfig = cluster.service_account_kubeconfig("memory-hygiene", "memory-hygiene", create=False)
    op = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("reports") / "operator.log",
                         extra_args=("--policy-reports", "--status-interval", "0.5")).start()
    try:
        yield op
    finally:
        op.stop()


def reports(kube, name: str) -> dict[str, dict]:
    """scope ('' for the cluster) -> the report named memory-hygiene-<policy>."""
    out = {}
    sel = f"memoryhygiene.io/policy={name}"
    for item in kube.custom.list_cluster_custom_object(GROUP, VERSION, "policyreports", label_selector=sel)["items"]:
        out[item["metadata"]["namespace"]] = item
    for item in kube.custom.list_cluster_custom_object(GROUP, VERSION, "clusterpolicyreports",
                                                       label_selector=sel)["items"]:
        out[""] = item
    return out


def result_keys(report: dict) -> list[tuple]:
    return sorted((r["rule"], r["resources"][0]["kind"], r["resources"][0].get("namespace"), r["resources"][0]["name"],
                   (r.get("properties") or {}).get("container")) for r in report.get("results") or [])


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_scenarios_appear_as_policy_reports(seed, reporting_operator, sim, kube):
    tag = uuid.uuid4().hex[:8]
    loaded = load_snapshot(sim, EXAMPLES / seed, tag, labels={"mh-test": tag})
    name = f"pr-{tag}"
    kube.apply_policy(name, scoped_spec(tag))

    snap = load_files([str(EXAMPLES / seed)])
    expected = evaluate("x", parse_spec({}), snap.nodes, snap.pods, snap.events, snap.newest_time or 0,
                        snap.namespaces)
    want: dict[str, list[tuple]] = {}
    for v in expected.violations:
        ns = loaded.namespaces.get(v.namespace) if v.kind == "Pod" and v.namespace else None
        node = loaded.nodes.get(v.name, v.name) if v.kind == "Node" else v.name
        want.setdefault(ns or "", []).append((v.rule, v.kind, ns, node, v.container))
    want = {k: sorted(v) for k, v in want.items()}

    wait_for(lambda: kube.settled(name), timeout=60, what=f"{name} evaluated")

    def matches():
        got = reports(kube, name)
        return (got,) if {k: result_keys(r) for k, r in got.items()} == want else None

    (got,) = wait_for(matches, timeout=60, what=f"{seed}: PolicyReports with {want}")
    for scope, report in got.items():
        assert report["kind"] == ("ClusterPolicyReport" if scope == "" else "PolicyReport")
        assert report["metadata"]["name"] == f"memory-hygiene-{name}"
        assert report["summary"]["fail"] == len(want[scope])
        for r in report["results"]:
            assert r["policy"] == name and r["source"] == "memory-hygiene" and r["result"] == "fail"
            assert r["severity"] in ("critical", "high", "medium", "low") and r["message"]
    if not want:  # a clean scenario: no report at all
        assert got == {}

    kube.delete_policy(name)
    wait_for(lambda: reports(kube, name) == {}, timeout=60, what=f"{name}'s reports deleted with the policy")
    assert "Forbidden" not in reporting_operator.logs(400), reporting_operator.logs()
