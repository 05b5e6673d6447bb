"""A MemoryPolicy's admission guardrails as ValidatingAdmissionPolicies (plain dicts, no HTTP).

The API server judges Pods (on create) and the pod templates of Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs and CronJobs (on create, and on update when the template changed)
with CEL generated here, the way ``core/rules.py`` ``evaluate_pod`` judges the pods that run:

- app containers and sidecars (init containers with ``restartPolicy: Always``) are judged; plain
  init containers are not;
- a memory request is present when ``resources.requests.memory`` is, or, failing that,
  ``resources.limits.memory`` (the API server defaults a Pod's request from its limit:
  ``pkg/apis/core/v1/defaults.go`` ``SetDefaults_Pod``; a template is not defaulted, its pods are);
- a memory limit is a non-zero ``resources.limits.memory`` of the container, or a non-zero
  pod-level ``spec.resources.limits.memory`` (kubelet: zero means unlimited);
- the limit/request ratio compares the effective limit (own, else pod-level) with the request,
  in doubles, as ``rules.limit_ratio_exceeded`` does.

One ValidatingAdmissionPolicy + Binding pair per action in use (a binding's validationActions
apply to every validation of its policy, so Deny and Warn checks cannot share one), named
``memory-hygiene.<policy>.<action>``. The MemoryPolicy's namespaceSelector becomes the binding's
namespaceSelector, with the operator's own namespace and kube-system left out unless the selector
names them. Its podSelector is matched in CEL against the *pod's* labels (a workload's template
labels), not the workload's own, so a Deployment is judged by the pods it would create.
tests/e2e/test_admission.py holds this CEL and ``evaluate_pod`` together, case by case, on the
real API server.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .policy import GROUP, KIND, VERSION, AdmissionAction, LabelSelector, MemoryPolicySpec, SelectorOperator
from .rules import LIMIT_RATIO, MISSING_LIMIT, MISSING_REQUEST

API_VERSION = "admissionregistration.k8s.io/v1"
MANAGED_BY = "memory-hygiene"
POLICY_UID_LABEL = "memoryhygiene.io/policy-uid"
"""On every generated object: which MemoryPolicy (by uid) it belongs to."""
POLICY_ANNOTATION = "memoryhygiene.io/policy"
NAME_LABEL = "kubernetes.io/metadata.name"
ALWAYS_EXCLUDED = ("kube-system",)
"""Never judged unless a namespaceSelector names them (with the operator's own namespace)."""
MAX_NAME = 253

WORKLOADS = {
    "apps": ("deployments", "statefulsets", "daemonsets", "replicasets"),
    "batch": ("jobs", "cronjobs"),
}

# The object whose metadata.labels and spec are the pod's: a Pod itself, a workload's
# spec.template, a CronJob's spec.jobTemplate.spec.template. dyn(): the policy matches several
# kinds and CEL's type check would otherwise refuse .template on a Pod.
TEMPLATE = (
    "(has(dyn(object.spec).jobTemplate) ? dyn(object.spec).jobTemplate.spec.template : "
    "(has(dyn(object.spec).template) ? dyn(object.spec).template : dyn(object)))"
)
OLD_TEMPLATE = (
    "(has(dyn(oldObject.spec).jobTemplate) ? dyn(oldObject.spec).jobTemplate.spec.template : "
    "(has(dyn(oldObject.spec).template) ? dyn(oldObject.spec).template : dyn(oldObject)))"
)

HAS_REQUEST = (
    "(has(c.resources) && ((has(c.resources.requests) && 'memory' in c.resources.requests) || "
    "(has(c.resources.limits) && 'memory' in c.resources.limits)))"
)
OWN_LIMIT = (
    "(has(c.resources) && has(c.resources.limits) && 'memory' in c.resources.limits && "
    "quantity(c.resources.limits.memory).isGreaterThan(quantity('0')))"
)
REQUEST = (
    "(has(c.resources.requests) && 'memory' in c.resources.requests ? "
    "quantity(c.resources.requests.memory) : quantity(c.resources.limits.memory))"
)

VARIABLES = [
    {"name": "template", "expression": TEMPLATE},
    {"name": "spec", "expression": "variables.template.spec"},
    {
        "name": "containers",
        "expression": "(has(variables.spec.containers) ? variables.spec.containers : []) + "
        "(has(variables.spec.initContainers) ? variables.spec.initContainers.filter(c, "
        "has(c.restartPolicy) && c.restartPolicy == 'Always') : [])",
    },
    {
        "name": "podLimit",
        "expression": "has(variables.spec.resources) && has(variables.spec.resources.limits) && "
        "'memory' in variables.spec.resources.limits && "
        "quantity(variables.spec.resources.limits.memory).isGreaterThan(quantity('0'))",
    },
]

CHECK_VARIABLES = {
    MISSING_REQUEST: {
        "name": "noRequest",
        "expression": f"variables.containers.filter(c, !{HAS_REQUEST}).map(c, c.name)",
    },
    MISSING_LIMIT: {
        "name": "noLimit",
        "expression": f"variables.podLimit ? [] : variables.containers.filter(c, !{OWN_LIMIT}).map(c, c.name)",
    },
}


def ratio_variable(ratio: float) -> dict[str, str]:
    limit = (f"({OWN_LIMIT} ? quantity(c.resources.limits.memory) : "
             "quantity(variables.spec.resources.limits.memory))")
    return {
        "name": "overRatio",
        "expression": (
            f"variables.containers.filter(c, {HAS_REQUEST} && ({OWN_LIMIT} || variables.podLimit) && "
            f"{limit}.asApproximateFloat() > {cel_double(ratio)} * {REQUEST}.asApproximateFloat())"
            ".map(c, c.name)"
        ),
    }


def cel_string(s: str) -> str:
    """A CEL string literal (JSON's escapes are CEL's)."""
    return json.dumps(s)


def cel_double(x: float) -> str:
    text = repr(float(x))
    return text if ("." in text or "e" in text) else text + ".0"


def selector_cel(selector: LabelSelector, labels: str) -> str | None:
    """A LabelSelector as a CEL condition on the map ``labels``; None when it matches everything."""
    parts = []
    for key, value in sorted(selector.match_labels.items()):
        k = cel_string(key)
        parts.append(f"({k} in {labels} && {labels}[{k}] == {cel_string(value)})")
    for req in selector.match_expressions:
        k = cel_string(req.key)
        values = "[" + ", ".join(cel_string(v) for v in req.values) + "]"
        if req.operator is SelectorOperator.IN:
            parts.append(f"({k} in {labels} && {labels}[{k}] in {values})")
        elif req.operator is SelectorOperator.NOT_IN:
            parts.append(f"(!({k} in {labels}) || !({labels}[{k}] in {values}))")
        elif req.operator is SelectorOperator.EXISTS:
            parts.append(f"({k} in {labels})")
        else:
            parts.append(f"!({k} in {labels})")
    return " && ".join(parts) if parts else None


def _names_named(selector: LabelSelector | None) -> set[str]:
    """The namespaces a selector names by their kubernetes.io/metadata.name label."""
    if selector is None:
        return set()
    named = set()
    if NAME_LABEL in selector.match_labels:
        named.add(selector.match_labels[NAME_LABEL])
    for req in selector.match_expressions:
        if req.key == NAME_LABEL and req.operator is SelectorOperator.IN:
            named.update(req.values)
    return named


def excluded_namespaces(spec: MemoryPolicySpec, operator_namespace: str) -> list[str]:
    """kube-system and the operator's namespace, unless the policy's namespaceSelector names them."""
    named = _names_named(spec.namespace_selector)
    return sorted({operator_namespace, *ALWAYS_EXCLUDED} - named)


def namespace_selector(spec: MemoryPolicySpec, operator_namespace: str) -> dict[str, Any]:
    sel = spec.namespace_selector or LabelSelector()
    out: dict[str, Any] = sel.model_dump(by_alias=True, mode="json", exclude_defaults=True)
    excluded = excluded_namespaces(spec, operator_namespace)
    if excluded:
        out.setdefault("matchExpressions", []).append(
            {"key": NAME_LABEL, "operator": "NotIn", "values": excluded})
    return out


def checks(spec: MemoryPolicySpec) -> dict[AdmissionAction, list[str]]:
    """The rules the policy enforces, by action (rules in report order)."""
    out: dict[AdmissionAction, list[str]] = {}
    mr = spec.rules.missing_requests
    for rule, action in ((MISSING_REQUEST, mr.admission if mr.enabled else None),
                         (MISSING_LIMIT, mr.limit_admission if mr.enabled and mr.require_limits else None),
                         (LIMIT_RATIO, spec.rules.limit_ratio.admission
                          if spec.rules.limit_ratio.max_limit_to_request_ratio is not None else None)):
        if action is not None:
            out.setdefault(action, []).append(rule)
    return out


def object_name(policy: str, action: AdmissionAction) -> str:
    """``memory-hygiene.<policy>.<action>``; a hash stands in for the end of a name too long."""
    name = f"memory-hygiene.{policy}.{action.value.lower()}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(policy.encode()).hexdigest()[:10]
    return f"memory-hygiene.{policy[:MAX_NAME - 32]}-{digest}.{action.value.lower()}"


def _validation(rule: str, policy: str, ratio: float | None) -> dict[str, Any]:
    who = "'MemoryPolicy ' + " + cel_string(policy)

    def plural(var: str, one: str, many: str) -> str:
        return (f"{who} + ': ' + (size(variables.{var}) == 1 ? {cel_string(one)} : {cel_string(many)}) + "
                f"variables.{var}.join(', ')")

    if rule == MISSING_REQUEST:
        return {
            "expression": "size(variables.noRequest) == 0",
            "messageExpression": plural("noRequest", "container ", "containers ")
            + " + ' without a memory request (" + MISSING_REQUEST + "): add resources.requests.memory'",
            "message": f"MemoryPolicy {policy}: a container without a memory request ({MISSING_REQUEST}): "
            "add resources.requests.memory",
            "reason": "Forbidden",
        }
    if rule == MISSING_LIMIT:
        return {
            "expression": "size(variables.noLimit) == 0",
            "messageExpression": plural("noLimit", "container ", "containers ")
            + " + ' without a memory limit (" + MISSING_LIMIT + "): add resources.limits.memory "
            "(or a pod-level spec.resources.limits.memory)'",
            "message": f"MemoryPolicy {policy}: a container without a memory limit ({MISSING_LIMIT}): "
            "add resources.limits.memory",
            "reason": "Forbidden",
        }
    assert ratio is not None
    allowed = f"{ratio:g}"
    return {
        "expression": "size(variables.overRatio) == 0",
        "messageExpression": plural("overRatio", "container ", "containers ")
        + f" + ' with a memory limit over {allowed}x the request ({LIMIT_RATIO}): raise "
        f"resources.requests.memory or lower resources.limits.memory to at most {allowed}x it'",
        "message": f"MemoryPolicy {policy}: a container's memory limit is over {allowed}x its request "
        f"({LIMIT_RATIO}): raise resources.requests.memory or lower resources.limits.memory",
        "reason": "Forbidden",
    }


def _metadata(name: str, policy: str, uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, POLICY_UID_LABEL: uid},
        "annotations": {POLICY_ANNOTATION: policy},
        # Garbage collection removes them with the policy on a real cluster; the operator also
        # deletes them itself (shell/admission.py), for control planes without one.
        "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": policy, "uid": uid,
                             "controller": True}],
    }


def admission_objects(policy: str, uid: str, spec: MemoryPolicySpec,
                      operator_namespace: str) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicies and their Bindings for one MemoryPolicy (policy then
    binding, per action); [] when it enforces nothing."""
    out: list[dict[str, Any]] = []
    ratio = spec.rules.limit_ratio.max_limit_to_request_ratio
    match_conditions = [{
        # On update, only a changed pod template is judged: a label or a scale change of a
        # workload that predates the policy goes through (its new pods are judged anyway).
        "name": "created-or-template-changed",
        "expression": f"request.operation == 'CREATE' || {TEMPLATE} != {OLD_TEMPLATE}",
    }]
    if spec.pod_selector is not None:
        labels = f"(has({TEMPLATE}.metadata) && has({TEMPLATE}.metadata.labels) ? {TEMPLATE}.metadata.labels : {{}})"
        condition = selector_cel(spec.pod_selector, labels)
        if condition is not None:
            match_conditions.append({"name": "pod-selector", "expression": condition})
    for action, rules in sorted(checks(spec).items(), key=lambda kv: list(AdmissionAction).index(kv[0])):
        name = object_name(policy, action)
        variables = list(VARIABLES)
        for rule in rules:
            variables.append(ratio_variable(ratio) if rule == LIMIT_RATIO and ratio is not None
                             else CHECK_VARIABLES[rule])
        out.append({
            "apiVersion": API_VERSION,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": _metadata(name, policy, uid),
            "spec": {
                # Ignore: an expression that cannot be evaluated never blocks the API server;
                # Warn and Audit must never refuse anything.
                "failurePolicy": "Ignore",
                "matchConstraints": {
                    "matchPolicy": "Equivalent",
                    "resourceRules": [
                        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                         "operations": ["CREATE"]},
                        *({"apiGroups": [g], "apiVersions": ["v1"], "resources": list(rs),
                           "operations": ["CREATE", "UPDATE"]} for g, rs in WORKLOADS.items()),
                    ],
                },
                "matchConditions": match_conditions,
                "variables": variables,
                "validations": [_validation(rule, policy, ratio) for rule in rules],
            },
        })
        out.append({
            "apiVersion": API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": _metadata(name, policy, uid),
            "spec": {
                "policyName": name,
                "validationActions": [action.value],
                "matchResources": {"namespaceSelector": namespace_selector(spec, operator_namespace)},
            },
        })
    return out
