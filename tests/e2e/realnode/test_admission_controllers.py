"""Admission enforcement with the real controllers around it (issue 14): what the local control
plane of tests/e2e/test_admission.py cannot show, because it runs no kube-controller-manager.

* kube-controller-manager's ValidatingAdmissionPolicy status controller type-checks the policy the
  operator generated and writes ``status.typeChecking``; the operator reads it back into the
  MemoryPolicy's ``Enforcing`` condition.
* The generated objects carry ownerReferences to their MemoryPolicy: with no operator running,
  deleting the MemoryPolicy leaves them to kube-controller-manager's garbage collector, which
  removes them.
"""

from __future__ import annotations

import json
import uuid

from tests.e2e.conftest import wait_for

GROUP_PATH = "/apis/admissionregistration.k8s.io/v1"


def _vap(node, name: str) -> dict | None:
    return node.get_json(f"{GROUP_PATH}/validatingadmissionpolicies/{name}")


def _binding(node, name: str) -> dict | None:
    return node.get_json(f"{GROUP_PATH}/validatingadmissionpolicybindings/{name}")


def _enforcing(node, policy: str) -> dict | None:
    st = (node.get_json(f"/apis/memoryhygiene.io/v1alpha1/memorypolicies/{policy}") or {}).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c["type"] == "Enforcing"), None)


def test_type_checked_by_the_controller_and_collected_with_its_policy(node, ncrd, noperator, nkubectl, apply):
    tag = uuid.uuid4().hex[:6]
    policy, ns = f"enforce-{tag}", f"team-{tag}"
    nkubectl("create", "namespace", ns)
    apply({"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy", "metadata": {"name": policy},
           "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                    "rules": {"missingRequests": {"admission": "Deny"}}}})
    name = f"memory-hygiene.{policy}.deny"
    try:
        owner_uid = node.get_json(f"/apis/memoryhygiene.io/v1alpha1/memorypolicies/{policy}")["metadata"]["uid"]

        # kube-controller-manager type-checks what the operator generated, for this generation
        def type_checked() -> dict | None:
            vap = _vap(node, name)
            st = (vap or {}).get("status") or {}
            done = vap and st.get("observedGeneration") == vap["metadata"]["generation"] and "typeChecking" in st
            return vap if done else None
        vap = wait_for(type_checked, timeout=90, what="kube-controller-manager to type-check the generated policy")
        warnings = vap["status"]["typeChecking"].get("expressionWarnings") or []
        assert warnings == [], f"the generated CEL draws type-check warnings: {warnings}"
        assert vap["metadata"]["ownerReferences"][0]["uid"] == owner_uid
        assert _binding(node, name)["metadata"]["ownerReferences"][0]["uid"] == owner_uid

        # the operator read that status: Enforcing with no warnings to report
        cond = wait_for(lambda: (c := _enforcing(node, policy)) and c["reason"] == "Enforced" and c, timeout=60,
                        what="the Enforcing condition")
        assert cond["status"] == "True" and name in cond["message"], cond

        # the real API server refuses a Deployment without a memory request in the namespace
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "no-request", "namespace": ns},
                      "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
                          "metadata": {"labels": {"app": "x"}},
                          "spec": {"containers": [{"name": "app", "image": "memhog", "resources": {}}]}}}}
        # (the API server's admission plugin loads new policies and bindings through an informer of
        # its own: a dry run polls until they are in force)
        wait_for(lambda: nkubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(deployment),
                                  check=False).returncode != 0, timeout=30, what="the binding to be in force")
        refused = nkubectl("apply", "-f", "-", input=json.dumps(deployment), check=False)
        assert refused.returncode != 0 and policy in refused.stderr and "requests.memory" in refused.stderr, \
            refused.stderr

        # no operator: deleting the MemoryPolicy leaves its objects to the garbage collector
        noperator.stop()
        nkubectl("delete", "memorypolicy", policy, "--wait=true", "--timeout=60s")
        wait_for(lambda: _vap(node, name) is None and _binding(node, name) is None, timeout=90,
                 what="kube-controller-manager's garbage collector to remove the admission objects")
    finally:
        if noperator.proc is None:
            noperator.start()
        nkubectl("delete", "memorypolicy", policy, "--ignore-not-found", check=False)
        nkubectl("delete", "namespace", ns, "--wait=false", check=False)
