"""Writing the admission guardrails: the ValidatingAdmissionPolicies and Bindings that
``core/admission.py`` generates for each MemoryPolicy, kept equal to it, and deleted with it.

Only the objects a MemoryPolicy asks for, labelled ``app.kubernetes.io/managed-by=memory-hygiene``
and owned by it (ownerReferences: on a real cluster the garbage collector removes them with the
policy; this module deletes them itself too, for control planes without one, and for an operator
that was down when the policy went). Nothing is read or written while no policy enforces
anything and the operator may not list them (the enforcement RBAC, manifests/overlays/enforcement,
is optional). Verbs used: list, create, update, delete on validatingadmissionpolicies and
validatingadmissionpolicybindings (admissionregistration.k8s.io); ``NEEDS`` below, and the
overlay's ClusterRole, are exactly these.

The outcome per MemoryPolicy is its ``Enforcing`` condition: True with the objects' names (and
the API server's type-checking warnings, from the policies' status, when there are any), or
False with why (RBAC, or the API server refusing an object).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core import admission as A
from ..core import policy as P
from ..core.policy import MemoryPolicySpec

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("memory_hygiene.admission")

GROUP = "admissionregistration.k8s.io"
KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
SPEC_HASH = "memoryhygiene.io/spec-hash"
"""Annotation: a hash of what we generated, so an unchanged object is not written again
(the server fills in defaults: comparing specs would always differ)."""
SELECTOR = f"app.kubernetes.io/managed-by={A.MANAGED_BY}"
OVERLAY = "manifests/overlays/enforcement"


class Need(NamedTuple):
    resource: str
    verb: str
    why: str


NEEDS = [
    Need(r, v, why) for r in ("validatingadmissionpolicies", "validatingadmissionpolicybindings")
    for v, why in (("list", "finding the objects it owns (and those of deleted policies)"),
                   ("create", "a MemoryPolicy that asks for enforcement"),
                   ("update", "a MemoryPolicy that changed"),
                   ("delete", "a MemoryPolicy deleted, or no longer enforcing"))
]
"""What enforcement needs (and manifests/overlays/enforcement grants): a unit test compares them."""


def operator_namespace() -> str:
    """The namespace the operator runs in: $POD_NAMESPACE, else its service account's, else
    memory-hygiene (the manifests' namespace)."""
    ns = os.environ.get("POD_NAMESPACE")
    if ns:
        return ns
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "memory-hygiene"
    except OSError:
        return "memory-hygiene"


def spec_hash(obj: Mapping[str, Any]) -> str:
    what = {k: obj["metadata"].get(k) for k in ("labels", "annotations", "ownerReferences")}
    return hashlib.sha256(json.dumps([what, obj["spec"]], sort_keys=True).encode()).hexdigest()[:16]


def desired_objects(policies: Mapping[str, tuple[str, MemoryPolicySpec | None]],
                    namespace: str) -> dict[tuple[str, str], dict]:
    """(kind, name) -> object, for every policy (name -> (uid, spec)), with the hash annotation."""
    out: dict[tuple[str, str], dict] = {}
    for name, (uid, spec) in sorted(policies.items()):
        if spec is None:
            continue
        for obj in A.admission_objects(name, uid, spec, namespace):
            obj["metadata"]["annotations"][SPEC_HASH] = spec_hash(obj)
            out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def condition_for(policy: str, objects: list[dict], existing: Mapping[tuple[str, str], dict],
                  errors: Mapping[tuple[str, str], str]) -> tuple[str, str, str]:
    """(status, reason, message) of one policy's Enforcing condition."""
    failed = [f"{kind} {name}: {errors[(kind, name)]}" for kind, name in
              ((o["kind"], o["metadata"]["name"]) for o in objects) if (kind, name) in errors]
    if failed:
        forbidden = any("Forbidden" in e or "403" in e for e in failed)
        reason = "Forbidden" if forbidden else "Rejected"
        hint = (f"; the operator lacks the enforcement RBAC: apply {OVERLAY} (see docs/install.md)"
                if forbidden else "")
        return "False", reason, "; ".join(failed)[:3000] + hint
    names = [o["metadata"]["name"] for o in objects if o["kind"] == KINDS[0]]
    warnings = []
    for name in names:
        status = (existing.get((KINDS[0], name)) or {}).get("status") or {}
        for w in ((status.get("typeChecking") or {}).get("expressionWarnings") or []):
            warnings.append(f"{name} {w.get('fieldRef', '?')}: {w.get('warning', '')}")
    actions = sorted({o["spec"]["validationActions"][0] for o in objects if o["kind"] == KINDS[1]})
    message = (f"ValidatingAdmissionPolicy and Binding {', '.join(names)} ({'/'.join(actions)})")
    if warnings:
        return "True", "TypeCheckWarnings", (message + "; the API server's type check warns: "
                                             + "; ".join(warnings))[:3000]
    return "True", "Enforced", message


_LOGGED: dict[str, tuple[str, str, str]] = {}
"""The last condition logged per policy (a failure is logged when it starts, not every pass)."""


@dataclass
class Result:
    conditions: dict[str, tuple[str, str, str]]
    """MemoryPolicy name -> its Enforcing condition (only policies that enforce something)."""
    written: int = 0
    deleted: int = 0
    listed: bool = False
    """The objects could be listed (the operator may from now on look for what to delete)."""


class Writer:
    """The API calls, over a kubernetes ``ApiClient`` (raw JSON: no model round trip)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api = client.AdmissionregistrationV1Api(api_client)

    def _call(self, method: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        suffix = "validating_admission_policy" + ("_binding" if kind == KINDS[1] else "")
        fn = getattr(self.api, f"{method}_{suffix}")
        resp = fn(*args, _preload_content=False, **kwargs)
        data = resp.data if hasattr(resp, "data") else resp.read()
        return json.loads(data) if data else None

    def list(self, kind: str) -> list[dict]:
        return (self._call("list", kind, label_selector=SELECTOR) or {}).get("items") or []

    def create(self, obj: dict) -> None:
        self._call("create", obj["kind"], obj)

    def update(self, obj: dict) -> None:
        self._call("replace", obj["kind"], obj["metadata"]["name"], obj)

    def delete(self, kind: str, name: str) -> None:
        self._call("delete", kind, name)


def _error_text(err: Exception) -> str:
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    message = None
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    reason = {403: "Forbidden", 422: "Invalid"}.get(status or 0, str(status or type(err).__name__))
    return f"{reason}: {message or err}"


def sync(writer: Any, policies: Mapping[str, tuple[str, MemoryPolicySpec | None]], namespace: str,
         may_list: bool) -> Result:
    """Make the cluster hold exactly the admission objects ``policies`` ask for.

    ``policies``: every MemoryPolicy there is, as just listed (name -> (uid, spec)); a spec of
    None (invalid) keeps what its policy had. ``may_list``: the operator may list the admission
    objects (checked at startup). Without it and with no policy enforcing anything, nothing is
    called at all."""
    keep_uids = {uid for uid, spec in policies.values() if spec is None}
    desired = desired_objects(policies, namespace)
    by_policy: dict[str, list[dict]] = {}
    for obj in desired.values():
        by_policy.setdefault(obj["metadata"]["annotations"][A.POLICY_ANNOTATION], []).append(obj)
    result = Result(conditions={})
    if not desired and not may_list:
        return result
    errors: dict[tuple[str, str], str] = {}
    existing: dict[tuple[str, str], dict] = {}
    list_error = None
    for kind in KINDS:
        try:
            for obj in writer.list(kind):
                existing[(kind, obj["metadata"]["name"])] = obj
        except Exception as err:  # noqa: BLE001 - reported in the condition
            list_error = _error_text(err)
    if list_error is not None:
        for key in desired:
            errors[key] = list_error
        if not desired:
            log.warning("could not list the admission objects to remove those no policy wants: %s", list_error)
    else:
        result.listed = True
        for key in sorted(desired, key=lambda k: KINDS.index(k[0])):  # a policy before its binding
            obj = desired[key]
            if key[0] == KINDS[1] and (KINDS[0], key[1]) in errors:
                errors[key] = "not written: its ValidatingAdmissionPolicy was not"
                continue
            have = existing.get(key)
            if have is not None and (have["metadata"].get("annotations") or {}).get(SPEC_HASH) == \
                    obj["metadata"]["annotations"][SPEC_HASH]:
                continue
            try:
                if have is None:
                    writer.create(obj)
                else:
                    body = dict(obj)
                    body["metadata"] = {**obj["metadata"], "resourceVersion": have["metadata"].get("resourceVersion")}
                    writer.update(body)
                result.written += 1
                log.info("%s %s %s for MemoryPolicy %s", "created" if have is None else "updated", key[0], key[1],
                         obj["metadata"]["annotations"][A.POLICY_ANNOTATION])
            except Exception as err:  # noqa: BLE001 - reported in the condition
                errors[key] = _error_text(err)
        for key in sorted(existing, key=lambda k: -KINDS.index(k[0])):  # a binding before its policy
            if key in desired or (existing[key]["metadata"].get("labels") or {}).get(A.POLICY_UID_LABEL) in keep_uids:
                continue
            try:
                writer.delete(*key)
                result.deleted += 1
                owner = (existing[key]["metadata"].get("annotations") or {}).get(A.POLICY_ANNOTATION, "?")
                log.info("deleted %s %s (MemoryPolicy %s gone or no longer enforcing it)", key[0], key[1], owner)
            except Exception as err:  # noqa: BLE001 - tried again on the next pass
                if getattr(err, "status", None) != 404:
                    log.warning("could not delete %s %s: %s", key[0], key[1], _error_text(err))
    for policy, objects in by_policy.items():
        cond = condition_for(policy, objects, existing, errors)
        result.conditions[policy] = cond
        if _LOGGED.get(policy) == cond:
            continue  # said once: the status holds it
        _LOGGED[policy] = cond
        if cond[0] == "False":
            log.error("MemoryPolicy %s asks for enforcement, not in force: %s", policy, cond[2])
        elif cond[1] == "TypeCheckWarnings":
            log.warning("MemoryPolicy %s: %s", policy, cond[2])
    return result


def live_policies(items: list[dict]) -> dict[str, tuple[str, MemoryPolicySpec | None]]:
    """name -> (uid, spec or None when invalid), of listed MemoryPolicy objects."""
    from ..core.policy import PolicyError, parse_spec

    out: dict[str, tuple[str, MemoryPolicySpec | None]] = {}
    for item in items:
        meta = item.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue  # going: what it owns goes with it
        try:
            spec: MemoryPolicySpec | None = parse_spec(item.get("spec") or {})
        except PolicyError:
            spec = None
        out[meta.get("name", "")] = (meta.get("uid", ""), spec)
    return out


def may_list(api_client: Any) -> bool:
    """Whether this identity may list both kinds (SelfSubjectAccessReview)."""
    from kubernetes import client

    authz = client.AuthorizationV1Api(api_client)
    for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(group=GROUP, resource=resource, verb="list")))
        if not authz.create_self_subject_access_review(review).status.allowed:
            return False
    return True


async def run(rt: Runtime) -> None:
    """Keep every MemoryPolicy's admission objects in step with it: on each policy change, and
    every resync (to read the API server's type-checking warnings, and to repair what someone
    else changed or deleted). The policies are listed afresh each time, so none is taken for
    deleted because kopf has not delivered it yet. The outcome is each policy's ``Enforcing``
    condition, in ``rt.enforcing``; a change asks for a status write."""
    namespace = operator_namespace()
    while True:
        try:
            await asyncio.wait_for(rt.admission_changed.wait(), timeout=rt.config.resync_seconds)
        except asyncio.TimeoutError:
            pass
        rt.admission_changed.clear()
        try:
            assert rt.session is not None
            items = await rt.session.list_all(P.API_PATH)
            result = await asyncio.to_thread(sync, rt.admission_writer, live_policies(items), namespace,
                                             rt.admission_may_list)
        except Exception:  # noqa: BLE001 - keep the loop alive; tried again on the next resync
            log.exception("admission pass failed")
            continue
        rt.admission_may_list = result.listed or (rt.admission_may_list and not result.conditions)
        generations = {(i.get("metadata") or {}).get("name"): (i.get("metadata") or {}).get("generation")
                       for i in items}
        enforcing = {name: (generations.get(name), cond) for name, cond in result.conditions.items()}
        if enforcing != rt.enforcing:
            rt.enforcing = enforcing
            for name in enforcing.keys() | rt.policies.keys():
                if name in rt.policies:
                    rt.policies[name].needs_write = True
                    rt.policies[name].asked += 1
            rt.changed.set()
