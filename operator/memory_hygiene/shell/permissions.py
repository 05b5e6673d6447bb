"""What the operator needs from RBAC, checked at startup with SelfSubjectAccessReviews.

kopf only warns when it may not watch a resource, and goes on without it: an operator that
cannot list Pods would report a clean cluster. Checking first turns a missing rule into a clear
error and a non-zero exit. Keep this list equal to manifests/base/clusterrole.yaml (a unit test
compares them).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Need(NamedTuple):
    group: str
    resource: str
    verb: str
    subresource: str = ""
    why: str = ""

    def __str__(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {res}{'.' + self.group if self.group else ''} (cluster-wide)"


NEEDS = [
    *(Need("", r, v, why="the list+watch caches (shell/reflector.py)") for r in ("pods", "nodes", "namespaces") for v in ("list", "watch")),
    Need("", "events", "list", why="OOM events, and our own Events at startup"),
    Need("", "events", "watch", why="OOM events"),
    Need("", "events", "create", why="posting Events"),
    Need("", "events", "get", why="an Event that exists already"),
    Need("", "events", "patch", why="counting an Event again"),
    Need("apiextensions.k8s.io", "customresourcedefinitions", "list", why="kopf's resource discovery"),
    Need("apiextensions.k8s.io", "customresourcedefinitions", "watch", why="kopf's resource discovery"),
    Need("memoryhygiene.io", "memorypolicies", "list", why="the policies"),
    Need("memoryhygiene.io", "memorypolicies", "watch", why="the policies"),
    Need("memoryhygiene.io", "memorypolicies", "patch", subresource="status", why="writing status"),
]


# --policy-reports only (manifests/overlays/policyreports/clusterrole.yaml).
POLICY_REPORT_NEEDS = [
    Need("wgpolicyk8s.io", r, v, why=why) for r in ("policyreports", "clusterpolicyreports")
    for v, why in (("list", "reports of an earlier run, at startup"),
                   ("create", "server-side apply of a report that does not exist yet"),
                   ("patch", "server-side apply of a report"),
                   ("delete", "a report whose last violation ended"))
]


def missing(api_client: Any, *, policy_reports: bool = False) -> list[Need]:
    """The needs this identity lacks (one SelfSubjectAccessReview each)."""
    from kubernetes import client

    authz = client.AuthorizationV1Api(api_client)
    out = []
    for n in NEEDS + (POLICY_REPORT_NEEDS if policy_reports else []):
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    group=n.group, resource=n.resource, subresource=n.subresource or None, verb=n.verb
                )
            )
        )
        result = authz.create_self_subject_access_review(review)
        if not result.status.allowed:
            out.append(n)
    return out
