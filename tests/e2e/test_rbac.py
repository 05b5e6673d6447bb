"""RBAC proven, not assumed: manifests/ applied to the RBAC-enforcing API server, the operator
run with a token of *its* ServiceAccount, the seed scenarios passing; and a rule taken away
making it stop with a clear log line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import OperatorProcess, wait_for
from tests.e2e.test_operator import reports_seeds

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
        reports_seeds(sim, kube, ("seed000-case1-1-silent-oom.yaml", "seed000-case2-memory-pressure.yaml",
                                  "seed004-gke-oom-score-adj.yaml"), "rbac", "the service account's rights")
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


# --- admission enforcement: its own overlay, exactly its verbs -----------------------------------

ENFORCEMENT = ROOT / "manifests" / "overlays" / "enforcement"


def _enforcing(kube, name: str, reason: str, timeout: float = 40) -> dict:
    def check():
        p = kube.policy(name)
        c = next((c for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == "Enforcing"), None)
        return c if c and c["reason"] == reason and c.get("observedGeneration") == p["metadata"]["generation"] \
            else None

    return wait_for(check, timeout=timeout, what=f"{name}: Enforcing {reason}")


def _owned(kube, name: str) -> list[str]:
    import json

    from kubernetes import client

    api = client.AdmissionregistrationV1Api(kube.api_client)
    out = []
    for kind, fn in (("ValidatingAdmissionPolicy", api.list_validating_admission_policy),
                     ("ValidatingAdmissionPolicyBinding", api.list_validating_admission_policy_binding)):
        items = json.loads(fn(label_selector="app.kubernetes.io/managed-by=memory-hygiene",
                              _preload_content=False).data)["items"]
        out += [f"{kind}/{i['metadata']['name']}" for i in items
                if i["metadata"]["annotations"].get("memoryhygiene.io/policy") == name]
    return sorted(out)


def test_enforcement_needs_its_overlay_and_every_verb_of_it(installed, cluster, kubectl, kube, operator_process,
                                                          tmp_path):
    """Without the overlay the operator runs and says Forbidden; with it, it enforces, with the
    service account's own rights; and taking away any one of its verbs breaks what that verb is for."""
    operator_process.stop()
    kubectl("delete", "clusterrolebinding", "memory-hygiene-enforcement", "--ignore-not-found", check=True)
    kubeconfig = cluster.service_account_kubeconfig(NS, SA, create=False)
    op = OperatorProcess(kubeconfig, tmp_path / "sa-operator.log", env={"POD_NAMESPACE": NS}).start()
    tag = uuid.uuid4().hex[:8]
    name = f"enf-{tag}"
    spec = {"namespaceSelector": {"matchLabels": {"mh-test": tag}}, "rules": {"missingRequests": {"admission": "Deny"}}}
    role_yaml = (ENFORCEMENT / "clusterrole.yaml").read_text()
    try:
        assert "admission enforcement RBAC (manifests/overlays/enforcement): absent" in op.logs(200)
        kube.apply_policy(name, spec)
        cond = _enforcing(kube, name, "Forbidden")
        assert cond["status"] == "False" and "apply manifests/overlays/enforcement" in cond["message"]
        assert f"MemoryPolicy {name} asks for enforcement, not in force" in op.logs(400)
        # the overlay: enforced with the service account's rights (picked up at the next resync)
        kubectl("apply", "-k", str(ENFORCEMENT), check=True)
        _enforcing(kube, name, "Enforced")
        assert _owned(kube, name) == [f"ValidatingAdmissionPolicy/memory-hygiene.{name}.deny",
                                      f"ValidatingAdmissionPolicyBinding/memory-hygiene.{name}.deny"]

        def without(verb: str) -> None:
            role = yaml.safe_load(role_yaml)
            role["rules"][0]["verbs"] = [v for v in role["rules"][0]["verbs"] if v != verb]
            kubectl("apply", "-f", "-", input=yaml.safe_dump(role), check=True)

        # update: an edit cannot be written
        without("update")
        kube.apply_policy(name, {**spec, "rules": {"missingRequests": {"admission": "Deny", "requireLimits": True,
                                                                       "limitAdmission": "Deny"}}})
        assert "cannot update" in _enforcing(kube, name, "Forbidden")["message"]
        kubectl("apply", "-f", str(ENFORCEMENT / "clusterrole.yaml"), check=True)
        _enforcing(kube, name, "Enforced")
        # create: a new action's pair cannot be made
        without("create")
        kube.apply_policy(name, {**spec, "rules": {"missingRequests": {"admission": "Deny"},
                                                   "limitRatio": {"maxLimitToRequestRatio": 3, "admission": "Warn"}}})
        assert "cannot create" in _enforcing(kube, name, "Forbidden")["message"]
        kubectl("apply", "-f", str(ENFORCEMENT / "clusterrole.yaml"), check=True)
        _enforcing(kube, name, "Enforced")
        # list: nothing can be compared
        without("list")
        kube.apply_policy(name, {**spec, "rules": {**spec["rules"], "limitRatio": None}})  # merge patch: drop the Warn
        assert "cannot list" in _enforcing(kube, name, "Forbidden")["message"]
        kubectl("apply", "-f", str(ENFORCEMENT / "clusterrole.yaml"), check=True)
        _enforcing(kube, name, "Enforced")
        assert _owned(kube, name) == [f"ValidatingAdmissionPolicy/memory-hygiene.{name}.deny",
                                      f"ValidatingAdmissionPolicyBinding/memory-hygiene.{name}.deny"]
        # delete: the policy's objects outlive it (and the log says so), until the verb is back
        without("delete")
        kube.delete_policy(name)
        wait_for(lambda: "could not delete ValidatingAdmissionPolicyBinding" in op.logs(400), timeout=30,
                 what="the failed delete logged")
        assert _owned(kube, name)
        kubectl("apply", "-f", str(ENFORCEMENT / "clusterrole.yaml"), check=True)
        wait_for(lambda: _owned(kube, name) == [], timeout=30, what="the objects deleted once it may")
        logs = op.logs(400)
        assert "RBAC: this service account may not" not in logs
    finally:
        op.stop()
        kubectl("apply", "-f", str(ENFORCEMENT / "clusterrole.yaml"))
        try:
            kube.delete_policy(name)
        except Exception:  # noqa: BLE001 - already gone
            pass
        for obj in _owned(kube, name):
            kubectl("delete", obj.lower(), "--ignore-not-found")
        kubectl("delete", "clusterrolebinding", "memory-hygiene-enforcement", "--ignore-not-found")
