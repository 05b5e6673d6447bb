"""The generated admission guardrails (core/admission.py) per policy shape, and their sync
(shell/admission.py) against a fake API. tests/e2e/test_admission.py runs the CEL on the real
API server and holds it to the Python rules case by case."""

from __future__ import annotations

import pytest

from memory_hygiene.core import admission as A
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.shell import admission as S

NS = "memory-hygiene"


def objs(spec: dict, name: str = "team", uid: str = "u-1") -> list[dict]:
    return A.admission_objects(name, uid, parse_spec(spec), NS)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_nothing_enforced_nothing_generated():
    assert objs({}) == []
    assert objs({"rules": {"missingRequests": {"requireLimits": True}, "limitRatio": {"maxLimitToRequestRatio": 2}}}) == []


def test_one_field_denies_pods_and_workloads_without_a_request():
    out = objs({"namespaceSelector": {"matchLabels": {"team": "a"}},
                "rules": {"missingRequests": {"admission": "Deny"}}})
    [vap] = by_kind(out, "ValidatingAdmissionPolicy")
    [binding] = by_kind(out, "ValidatingAdmissionPolicyBinding")
    assert vap["metadata"]["name"] == binding["metadata"]["name"] == "memory-hygiene.team.deny"
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    for o in out:
        assert o["metadata"]["ownerReferences"] == [{"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy",
                                                     "name": "team", "uid": "u-1", "controller": True}]
        assert o["metadata"]["labels"][A.POLICY_UID_LABEL] == "u-1"
    rules = {(r["apiGroups"][0], tuple(r["resources"])): r["operations"]
             for r in vap["spec"]["matchConstraints"]["resourceRules"]}
    assert rules == {("", ("pods",)): ["CREATE"],
                     ("apps", ("deployments", "statefulsets", "daemonsets", "replicasets")): ["CREATE", "UPDATE"],
                     ("batch", ("jobs", "cronjobs")): ["CREATE", "UPDATE"]}
    assert vap["spec"]["failurePolicy"] == "Ignore"
    [v] = vap["spec"]["validations"]
    assert v["expression"] == "size(variables.noRequest) == 0"
    assert "'MemoryPolicy ' + \"team\"" in v["messageExpression"] and "add resources.requests.memory" in v["messageExpression"]
    names = [x["name"] for x in vap["spec"]["variables"]]
    assert names == ["template", "spec", "containers", "podLimit", "noRequest"]
    # the namespace selector, with the control plane's and the operator's namespaces left out
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"team": "a"},
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                              "values": ["kube-system", "memory-hygiene"]}]}


def test_sidecars_are_judged_init_containers_not():
    containers = next(v for v in A.VARIABLES if v["name"] == "containers")["expression"]
    assert "initContainers.filter(c, has(c.restartPolicy) && c.restartPolicy == 'Always')" in containers
    assert "'memory' in c.resources.limits" in A.HAS_REQUEST  # a limit defaults the request
    assert "isGreaterThan(quantity('0'))" in A.OWN_LIMIT  # a zero limit is no limit
    assert "variables.podLimit ? []" in A.CHECK_VARIABLES["MissingMemoryLimit"]["expression"]


def test_one_pair_per_action_and_the_ratio_literal():
    out = objs({"rules": {"missingRequests": {"admission": "Warn", "requireLimits": True, "limitAdmission": "Deny"},
                          "limitRatio": {"maxLimitToRequestRatio": 2, "admission": "Warn"}}})
    assert [(o["kind"], o["metadata"]["name"]) for o in out] == [
        ("ValidatingAdmissionPolicy", "memory-hygiene.team.warn"),
        ("ValidatingAdmissionPolicyBinding", "memory-hygiene.team.warn"),
        ("ValidatingAdmissionPolicy", "memory-hygiene.team.deny"),
        ("ValidatingAdmissionPolicyBinding", "memory-hygiene.team.deny"),
    ]
    warn, deny = by_kind(out, "ValidatingAdmissionPolicy")
    assert [v["expression"] for v in warn["spec"]["validations"]] == [
        "size(variables.noRequest) == 0", "size(variables.overRatio) == 0"]
    assert [v["expression"] for v in deny["spec"]["validations"]] == ["size(variables.noLimit) == 0"]
    ratio = next(v for v in warn["spec"]["variables"] if v["name"] == "overRatio")["expression"]
    assert "> 2.0 * " in ratio and "asApproximateFloat()" in ratio
    assert "over 2x the request" in warn["spec"]["validations"][1]["messageExpression"]
    # every message names the MemoryPolicy, the containers (the CEL list) and the fix
    for v, variable, fix in ((warn["spec"]["validations"][0], "noRequest", "add resources.requests.memory"),
                             (warn["spec"]["validations"][1], "overRatio",
                              "raise resources.requests.memory or lower resources.limits.memory to at most 2x it"),
                             (deny["spec"]["validations"][0], "noLimit", "add resources.limits.memory")):
        assert v["messageExpression"].startswith("'MemoryPolicy ' + \"team\" + ': '"), v
        assert f"variables.{variable}.join(', ')" in v["messageExpression"] and fix in v["messageExpression"], v
        assert v["message"].startswith("MemoryPolicy team: ") and fix.split(" to at most")[0] in v["message"], v
    assert A.cel_double(1.5) == "1.5" and A.cel_double(1000) == "1000.0"


def test_pod_selector_matches_the_pods_labels_in_cel():
    selector = {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                     {"key": "x", "operator": "NotIn", "values": ["y"]},
                                     {"key": "e", "operator": "Exists"},
                                     {"key": "d", "operator": "DoesNotExist"}]}
    spec = parse_spec({"podSelector": selector, "rules": {"missingRequests": {"admission": "Audit"}}})
    assert A.selector_cel(spec.pod_selector, "L") == (
        '("app" in L && L["app"] == "web") && ("tier" in L && L["tier"] in ["a", "b"]) && '
        '(!("x" in L) || !(L["x"] in ["y"])) && ("e" in L) && !("d" in L)')
    assert A.selector_cel(parse_spec({"podSelector": {}}).pod_selector, "L") is None
    out = A.admission_objects("team", "u-1", spec, NS)
    [vap] = by_kind(out, "ValidatingAdmissionPolicy")
    conds = {c["name"]: c["expression"] for c in vap["spec"]["matchConditions"]}
    assert set(conds) == {"created-or-template-changed", "pod-selector"}
    # the pod's labels: a Pod's own, a workload's template's (not the workload's own)
    labels = f"(has({A.TEMPLATE}.metadata) && has({A.TEMPLATE}.metadata.labels) ? {A.TEMPLATE}.metadata.labels : {{}})"
    assert conds["pod-selector"] == A.selector_cel(spec.pod_selector, labels)
    assert "oldObject" in conds["created-or-template-changed"]
    [binding] = by_kind(out, "ValidatingAdmissionPolicyBinding")
    assert "objectSelector" not in binding["spec"]["matchResources"]
    assert binding["spec"]["validationActions"] == ["Audit"]


@pytest.mark.parametrize("selector, excluded", [
    (None, ["kube-system", "memory-hygiene"]),
    ({"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, ["memory-hygiene"]),
    ({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                            "values": ["kube-system", "memory-hygiene"]}]}, []),
    ({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                            "values": ["kube-system"]}]}, ["kube-system", "memory-hygiene"]),
])
def test_control_plane_namespaces_are_left_out_unless_named(selector, excluded):
    spec = parse_spec({"namespaceSelector": selector} if selector else {})
    assert A.excluded_namespaces(spec, NS) == excluded
    sel = A.namespace_selector(spec, NS)
    notin = [e for e in sel.get("matchExpressions", []) if e["operator"] == "NotIn"
             and e["values"] == excluded]
    assert bool(notin) == bool(excluded)


def test_long_policy_names_give_valid_object_names():
    deny = A.AdmissionAction.DENY
    out = A.object_name("p" * 253, deny)
    assert len(out) <= 253 and out.endswith(".deny")
    assert out != A.object_name("p" * 252 + "q", deny)


# --- sync ------------------------------------------------------------------------------------


class FakeApi:
    def __init__(self, forbid: bool = False, refuse: str | None = None) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.forbid = forbid
        self.refuse = refuse

    def _check(self, verb: str, kind: str, name: str = "") -> None:
        self.calls.append((verb, kind, name))
        if self.forbid:
            raise ApiError(403, f'{{"message": "{kind} is forbidden: cannot {verb}"}}')

    def list(self, kind):
        self._check("list", kind)
        return [o for (k, _), o in self.objects.items() if k == kind]

    def create(self, obj):
        self._check("create", obj["kind"], obj["metadata"]["name"])
        if self.refuse and obj["kind"] == "ValidatingAdmissionPolicy":
            raise ApiError(422, f'{{"message": "{self.refuse}"}}')
        self.objects[(obj["kind"], obj["metadata"]["name"])] = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}

    def update(self, obj):
        self._check("update", obj["kind"], obj["metadata"]["name"])
        assert obj["metadata"]["resourceVersion"] == "1"
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def delete(self, kind, name):
        self._check("delete", kind, name)
        del self.objects[(kind, name)]


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status, self.body = status, body


DENY = parse_spec({"rules": {"missingRequests": {"admission": "Deny"}}})
WARN = parse_spec({"rules": {"missingRequests": {"admission": "Warn"}}})


def test_sync_creates_keeps_updates_and_deletes():
    api = FakeApi()
    r = S.sync(api, {"team": ("u-1", DENY), "other": ("u-2", parse_spec({}))}, NS, may_list=True)
    assert r.written == 2 and set(api.objects) == {("ValidatingAdmissionPolicy", "memory-hygiene.team.deny"),
                                                   ("ValidatingAdmissionPolicyBinding", "memory-hygiene.team.deny")}
    assert [c[:2] for c in api.calls if c[0] == "create"] == [("create", "ValidatingAdmissionPolicy"),
                                                              ("create", "ValidatingAdmissionPolicyBinding")]
    status, reason, message = r.conditions["team"]
    assert (status, reason) == ("True", "Enforced") and "memory-hygiene.team.deny (Deny)" in message
    assert "other" not in r.conditions
    # unchanged: nothing written
    api.calls.clear()
    r = S.sync(api, {"team": ("u-1", DENY)}, NS, may_list=True)
    assert r.written == 0 and [c[0] for c in api.calls] == ["list", "list"]
    # the API server's type check warns: surfaced
    api.objects[("ValidatingAdmissionPolicy", "memory-hygiene.team.deny")]["status"] = {
        "typeChecking": {"expressionWarnings": [{"fieldRef": "spec.validations[0].expression",
                                                 "warning": "undefined field 'x'"}]}}
    status, reason, message = S.sync(api, {"team": ("u-1", DENY)}, NS, may_list=True).conditions["team"]
    assert (status, reason) == ("True", "TypeCheckWarnings") and "undefined field 'x'" in message
    # Deny -> Warn: the deny pair goes, a warn pair comes
    r = S.sync(api, {"team": ("u-1", WARN)}, NS, may_list=True)
    assert {n for _, n in api.objects} == {"memory-hygiene.team.warn"} and r.deleted == 2
    # an invalid spec keeps what its policy had
    S.sync(api, {"team": ("u-1", None)}, NS, may_list=True)
    assert {n for _, n in api.objects} == {"memory-hygiene.team.warn"}
    # the policy gone: deleted, binding first
    api.calls.clear()
    r = S.sync(api, {}, NS, may_list=True)
    assert api.objects == {} and [c[1] for c in api.calls if c[0] == "delete"] == [
        "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"]


def test_without_rbac_nothing_is_called_until_a_policy_asks_then_it_says_so():
    api = FakeApi(forbid=True)
    assert S.sync(api, {"team": ("u-1", parse_spec({}))}, NS, may_list=False).conditions == {}
    assert api.calls == []
    status, reason, message = S.sync(api, {"team": ("u-1", DENY)}, NS, may_list=False).conditions["team"]
    assert (status, reason) == ("False", "Forbidden")
    assert "manifests/overlays/enforcement" in message and "forbidden" in message


def test_a_refused_object_is_reported_not_hidden():
    api = FakeApi(refuse="spec.validations[0].expression: Invalid value: compilation failed")
    status, reason, message = S.sync(api, {"team": ("u-1", DENY)}, NS, may_list=True).conditions["team"]
    assert (status, reason) == ("False", "Rejected") and "compilation failed" in message
    assert api.objects == {}  # no binding to a policy that is not there


def test_live_policies_skip_those_being_deleted_and_mark_invalid_ones():
    items = [{"metadata": {"name": "a", "uid": "1"}, "spec": {}},
             {"metadata": {"name": "b", "uid": "2", "deletionTimestamp": "x"}, "spec": {}},
             {"metadata": {"name": "c", "uid": "3"}, "spec": {"rules": {"overcommit": {"maxLimitsPercent": 0}}}}]
    live = S.live_policies(items)
    assert set(live) == {"a", "c"} and live["c"] == ("3", None)
