"""The MemoryPolicy CustomResourceDefinition, generated from the pydantic models.

``crds/memorypolicies.memoryhygiene.io.yaml`` is this module's output, committed; a unit test
fails when the two drift. Regenerate with ``memory-hygiene crd > crds/memorypolicies.memoryhygiene.io.yaml``.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from .core import policy as p
from .core import ruletable

CRD_FILE = f"{p.PLURAL}.{p.GROUP}.yaml"

PRINTER_COLUMNS = [
    {"name": "Overcommitted", "type": "integer", "jsonPath": ".status.summary.overcommittedNodes",
     "description": "Overcommitted nodes"},
    {"name": "SilentOOMs", "type": "integer", "jsonPath": ".status.summary.silentOOMKills",
     "description": "Silent OOM kill incidents within the lookback"},
    {"name": "MissingRequests", "type": "integer", "jsonPath": ".status.summary.missingRequests",
     "description": "Containers without a memory request"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "The policy is valid and evaluated"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve $ref, turn pydantic's JSON Schema into a Kubernetes structural schema."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update(node)  # keep description/default given at the use site
        return _inline(target, defs)
    nullable = False
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} in a structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**options[0], **rest}
        if "$ref" in node:
            return _inline({**node, "nullable": nullable} if nullable else node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {k: _inline(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]  # not allowed with properties; the server prunes unknowns
    if "properties" in out:
        out.setdefault("type", "object")
    if nullable:
        out["nullable"] = True
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _inline(raw, defs)
    _add_object_defaults(model, schema)
    return schema


def _add_object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Sub-objects with a default factory default to {} so the API server fills in their
    defaults and ``kubectl get -o yaml`` shows every setting in force."""
    for name, f in model.model_fields.items():
        alias = f.alias or name
        sub = schema.get("properties", {}).get(alias)
        ann = f.annotation
        if sub is None or not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            continue
        if f.default_factory is not None:
            sub["default"] = {}
        _add_object_defaults(ann, sub)


def crd() -> dict[str, Any]:
    spec_schema = schema_of(p.MemoryPolicySpec)
    spec_schema["default"] = {}
    status_schema = schema_of(p.MemoryPolicyStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{p.PLURAL}.{p.GROUP}"},
        "spec": {
            "group": p.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": p.KIND,
                "listKind": f"{p.KIND}List",
                "plural": p.PLURAL,
                "singular": p.SINGULAR,
                "shortNames": p.SHORT_NAMES,
                "categories": p.CATEGORIES,
            },
            "versions": [
                {
                    "name": p.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A MemoryPolicy says which memory hygiene rules memory-hygiene "
                            "checks on which nodes and pods; its status holds what it found.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `memory-hygiene crd` from operator/memory_hygiene/core/policy.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def _rows(schema: dict[str, Any], path: str, out: list[tuple[str, str, str, str]]) -> None:
    for name, sub in (schema.get("properties") or {}).items():
        p = f"{path}.{name}" if path else name
        typ = sub.get("type", "")
        if typ == "array":
            typ = f"[]{(sub.get('items') or {}).get('type', '')}"
        if "enum" in sub:
            typ += " (" + " \\| ".join(sub["enum"]) + ")"
        bounds = []
        if "minimum" in sub:
            bounds.append(f"≥ {sub['minimum']}")
        if "maximum" in sub:
            bounds.append(f"≤ {sub['maximum']}")
        if bounds:
            typ += " " + ", ".join(bounds)
        default = sub.get("default")
        shown = "" if default is None or default == {} else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        desc = (sub.get("description") or "").replace("\n", " ").replace("|", "\\|")
        for rule in sub.get("x-kubernetes-validations") or []:
            desc += f" Checked by the API server: {rule['message']}."
        out.append((p, typ, shown, desc))
        if sub.get("type") == "object":
            _rows(sub, p, out)
        elif sub.get("type") == "array" and (sub.get("items") or {}).get("type") == "object":
            _rows(sub["items"], f"{p}[]", out)


def reference_markdown() -> str:
    """docs/memorypolicy.md: every field of the MemoryPolicy, from the CRD schema, and every rule,
    from the rule table."""
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    lines = [
        "# MemoryPolicy reference",
        "",
        f"`{p.GROUP}/{p.VERSION}`, kind `{p.KIND}`, cluster-scoped, short name `{p.SHORT_NAMES[0]}`.",
        "Generated by `memory-hygiene crd --reference` from the pydantic model (a test fails when it drifts).",
        "",
    ]
    for part in ("spec", "status"):
        rows: list[tuple[str, str, str, str]] = []
        _rows(root[part], part, rows)
        lines += [f"## {part}", "", root[part].get("description", ""), "",
                  "| field | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{a}` | {b} | {c} | {d} |" for a, b, c, d in rows]
        lines.append("")
    lines += ruletable.markdown()
    lines += ENFORCING_EXAMPLE
    return "\n".join(lines)


ENFORCING_EXAMPLE = [
    "## Example: enforcing at admission",
    "",
    "Deny pods without memory requests in team namespaces (and Deployments, StatefulSets, DaemonSets,",
    "ReplicaSets, Jobs and CronJobs whose pod template has such a container), at `kubectl apply`; every rule still",
    "reports what already runs. Needs the enforcement RBAC (`kubectl apply -k manifests/overlays/enforcement/`,",
    "see [install.md](install.md#enforcement)).",
    "",
    "```yaml",
    "spec:",
    "  namespaceSelector: {matchLabels: {team-namespace: \"true\"}}",
    "  rules:",
    "    missingRequests:",
    "      admission: Deny",
    "```",
    "",
    "The operator writes the ValidatingAdmissionPolicy and Binding `memory-hygiene.<policy>.deny`, owned",
    "by the policy; the API server refuses a Deployment (a Pod, a Job ...) without a memory request at",
    "`kubectl apply`:",
    "",
    "```console",
    "$ kubectl apply -n payments -f web.yaml",
    "Error from server (Forbidden): error when creating \"web.yaml\": deployments.apps \"web\" is forbidden:",
    "ValidatingAdmissionPolicy 'memory-hygiene.teams.deny' with binding 'memory-hygiene.teams.deny' denied",
    "request: MemoryPolicy teams: container app without a memory request (MissingMemoryRequest): add",
    "resources.requests.memory",
    "```",
    "",
    "and the same policy reports what already runs (here a pod created before the policy), with the",
    "`Enforcing` condition naming the generated objects:",
    "",
    "```console",
    "$ kubectl get mempol teams",
    "NAME    OVERCOMMITTED   SILENTOOMS   MISSINGREQUESTS   READY   AGE",
    "teams   0               0            1                 True    2m",
    "$ kubectl describe mempol teams      # abridged",
    "Status:",
    "  Conditions:",
    "    Reason:                Evaluated",
    "    Status:                True",
    "    Type:                  Ready",
    "    Message:               ValidatingAdmissionPolicy and Binding memory-hygiene.teams.deny (Deny)",
    "    Reason:                Enforced",
    "    Status:                True",
    "    Type:                  Enforcing",
    "  Violations:",
    "    Container:   legacy-batch",
    "    Message:     container legacy-batch has no memory request: the scheduler does not count it and",
    "                 the pod (BestEffort) is among the first the kernel and kubelet kill",
    "    Name:        legacy-batch",
    "    Namespace:   payments",
    "    Rule:        MissingMemoryRequest",
    "```",
    "",
]
