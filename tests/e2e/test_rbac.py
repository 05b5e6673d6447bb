"""RBAC proven, not assumed: manifests/ applied to the RBAC-enforcing API server, the operator
run with a token of *its* ServiceAccount, the seed scenarios passing; and a rule taken away
making it stop with a clear log line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import OperatorProcess, wait_for
from tests.e2e.sim.kube import load_snapshot
from tests.e2e.test_operator import EXAMPLES, scoped_spec, settled_with

ROOT = Path(__file__).resolve().parents[2]
NS, SA = "memory-hygiene", "memory-hygiene"


@pytest.fixture(scope="module")
def installed(cluster, kubectl, crd):
    # For real first: on an empty cluster a server-side dry run cannot create the namespace the
    # other objects go in. Then a server-side dry run of the same (what an upgrade does).
    proc = kubectl("apply", "-k", str(ROOT / "manifests"))
    assert proc.returncode == 0, proc.stderr
    proc = kubectl("apply", "--dry-run=server", "-k", str(ROOT / "manifests"))
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout
    out = kubectl("get", "clusterrole", "memory-hygiene", "-o", "yaml", check=True).stdout
    return yaml.safe_load(out)


def test_operator_with_its_own_service_account_passes_the_seeds(installed, cluster, operator_process, sim, kube,
                                                                 tmp_path):
    operator_process.stop()  # the admin operator must not do the work for it
    kubeconfig = cluster.service_account_kubeconfig(NS, SA, create=False)
    op = OperatorProcess(kubeconfig, tmp_path / "sa-operator.log").start()
    try:
        for seed in ("seed000-case1-1-silent-oom.yaml", "seed000-case2-memory-pressure.yaml",
                     "seed004-gke-oom-score-adj.yaml"):
            tag = uuid.uuid4().hex[:8]
            load_snapshot(sim, EXAMPLES / seed, tag, labels={"mh-test": tag})
            name = f"rbac-{tag}"
            kube.apply_policy(name, scoped_spec(tag))
            status = settled_with(kube, name, lambda s: s["summary"]["violations"] > 0, what=f"{seed} evaluated")
            for v in status["violations"]:
                ns = v.get("namespace") or "default"
                wait_for(lambda: kube.events(ns, **{"involvedObject.name": v["name"], "reason": v["rule"]}),
                         what=f"{v['rule']} event posted with the service account's rights")
        assert "403" not in op.logs(400) and "Forbidden" not in op.logs(400), op.logs()
    finally:
        op.stop()


def test_a_removed_rule_stops_the_operator_visibly(installed, cluster, kubectl, operator_process, tmp_path):
    operator_process.stop()
    role = {k: v for k, v in installed.items() if k in ("apiVersion", "kind", "metadata", "rules")}
    role["metadata"] = {"name": "memory-hygiene"}
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["pods"]]
    assert len(role["rules"]) == len(installed["rules"]) - 1
    kubectl("apply", "-f", "-", input=yaml.safe_dump(role), check=True)
    try:
        kubeconfig = cluster.service_account_kubeconfig(NS, SA, create=False)
        op = OperatorProcess(kubeconfig, tmp_path / "crippled.log")
        with pytest.raises(AssertionError, match="operator exited with 1"):
            op.start()
        logs = op.logs()
        assert "RBAC: this service account may not list pods (cluster-wide)" in logs
        assert "may not watch pods" in logs and "memory-hygiene stopped" in logs
    finally:
        kubectl("apply", "-k", str(ROOT / "manifests"), check=True)
