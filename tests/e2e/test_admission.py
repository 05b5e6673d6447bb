"""MemoryPolicy guardrails at admission, on the real API server with the real kubectl.

- Equivalence: pods and workload templates generated to cover every branch (sidecars, init
  containers, pod-level limits and pod-level resources without one, resource lists without memory,
  requests defaulted from limits, zero amounts, pod labels) are
  dry-run created against the operator's generated ValidatingAdmissionPolicy (Warn) and judged by
  the Python rule (``core/rules.evaluate_pod``) on the very object the server returned; the two
  must agree case by case.
- kubectl: Warn prints a warning, Deny refuses a Deployment with the message, Audit leaves an
  audit annotation; excluded namespaces pass; editing the MemoryPolicy updates its objects and
  deleting it removes them (the local control plane has no garbage collector: the operator does).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import ssl
import tempfile
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from memory_hygiene.core.policy import parse_spec
from memory_hygiene.core.rules import evaluate_pod
from memory_hygiene.core.snapshot import pod_info
from tests.e2e.conftest import OperatorProcess, wait_for

ADM = ("admissionregistration.k8s.io", "v1")


# --- a raw client that keeps the API server's Warning headers ----------------------------------


class Raw:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"]
        self._dir = tempfile.TemporaryDirectory(prefix="mh-admission-")
        d = Path(self._dir.name)

        def file_of(data_key: str, file_key: str, where: dict, name: str) -> str:
            if where.get(data_key):
                (d / name).write_bytes(base64.b64decode(where[data_key]))
                return str(d / name)
            return where[file_key]

        self.ssl = ssl.create_default_context(cafile=file_of("certificate-authority-data", "certificate-authority",
                                                             cluster, "ca.crt"))
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if user.get("token"):
            self.headers["Authorization"] = f"Bearer {user['token']}"
        else:
            self.ssl.load_cert_chain(file_of("client-certificate-data", "client-certificate", user, "c.crt"),
                                     file_of("client-key-data", "client-key", user, "c.key"))

    def post(self, path: str, body: dict, dry_run: bool = True) -> tuple[int, Any, list[str]]:
        """(status, decoded body, warning texts)."""
        url = f"{self.server}{path}" + ("?dryRun=All" if dry_run else "")
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl) as resp:
                status, raw, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            status, raw, headers = err.code, err.read(), err.headers
        warnings = []
        for h in headers.get_all("Warning") or []:
            warnings += [w.replace('\\"', '"') for w in re.findall(r'299 - "((?:[^"\\]|\\.)*)"', h)]
        return status, json.loads(raw) if raw else None, warnings


@pytest.fixture(scope="module")
def raw(cluster) -> Raw:
    return Raw(Path(cluster.kubeconfig))


@pytest.fixture(scope="module")
def enforcer(cluster, crd, tmp_path_factory, operator_process):
    """The operator as cluster admin (the enforcement RBAC is proven in test_rbac.py), with its
    namespace set as in the Deployment."""
    operator_process.stop()  # one operator at a time writes the objects
    ns = f"mh-op-{uuid.uuid4().hex[:6]}"
    op = OperatorProcess(Path(cluster.kubeconfig), tmp_path_factory.mktemp("enforcer") / "operator.log",
                         env={"POD_NAMESPACE": ns})
    op.namespace = ns  # type: ignore[attr-defined]
    op.start()
    try:
        yield op
    finally:
        op.stop()


def namespace(kubectl, name: str, labels: dict[str, str]) -> str:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    kubectl("apply", "-f", "-", input=json.dumps(body), check=True)
    return name


def admission_objects(kube, policy: str) -> dict[str, list[dict]]:
    from kubernetes import client

    api = client.AdmissionregistrationV1Api(kube.api_client)
    out = {}
    for kind, fn in (("policies", api.list_validating_admission_policy),
                     ("bindings", api.list_validating_admission_policy_binding)):
        resp = fn(label_selector="app.kubernetes.io/managed-by=memory-hygiene", _preload_content=False)
        items = json.loads(resp.data)["items"]
        out[kind] = [i for i in items if i["metadata"]["annotations"].get("memoryhygiene.io/policy") == policy]
    return out


def enforcing(kube, name: str, reason: str = "Enforced") -> dict:
    def check():
        p = kube.policy(name)
        conds = (p.get("status") or {}).get("conditions") or []
        c = next((c for c in conds if c["type"] == "Enforcing"), None)
        return c if c and c["reason"] == reason and c.get("observedGeneration") == p["metadata"]["generation"] \
            else None

    return wait_for(check, timeout=40, what=f"{name}: Enforcing {reason}")  # type: ignore[return-value]


def in_force(raw: Raw, ns: str, policy: str, action: str = "warn") -> None:
    """Wait until the API server applies the policy (its admission plugin learns new policies
    from an informer, a moment after they are written)."""
    probe = pod_body("probe", [container("c", None, None)])

    def check():
        status, body, warnings = raw.post(f"/api/v1/namespaces/{ns}/pods", probe)
        if action == "deny":
            return status >= 400 and f"MemoryPolicy {policy}" in json.dumps(body)
        return any(f"MemoryPolicy {policy}:" in w for w in warnings)

    wait_for(check, timeout=30, what=f"{policy} in force in {ns}")


# --- the cases --------------------------------------------------------------------------------

SHAPES = [
    (None, None), (None, "1Gi"), ("1Gi", None), ("512Mi", "1Gi"), ("512Mi", "2Gi"), ("1Gi", "1Gi"),
    ("0", "1Gi"), ("0", None), (None, "0"), ("256Mi", "1025Mi"),
]
"""(request, limit) of a container: absent, zero, within and over 2x, a limit defaulting the request."""


def container(name: str, request: str | None, limit: str | None, cpu: bool = False, **extra: Any) -> dict:
    """``cpu``: CPU in both resource lists too, so a list is there without a memory entry."""
    res: dict[str, dict[str, str]] = {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}} if cpu else {}
    if request is not None:
        res.setdefault("requests", {})["memory"] = request
    if limit is not None:
        res.setdefault("limits", {})["memory"] = limit
    return {"name": name, "image": "registry.invalid/app:1", "resources": res, **extra}


def pod_body(name: str, containers: list[dict], init: list[dict] = (), pod_limit: str | None = None,
             labels: dict[str, str] | None = None, pod_resources: dict | None = None) -> dict:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = list(init)
    if pod_limit is not None:
        spec["resources"] = {"limits": {"memory": pod_limit}}
    elif pod_resources is not None:
        spec["resources"] = pod_resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


POD_LEVEL_WITHOUT_A_MEMORY_LIMIT = [None, {"requests": {"memory": "3Gi"}}, {"limits": {"cpu": "2"}}]
"""Pod-level resources that bound no container's memory: none, a memory request only, a CPU limit only."""


def cases() -> list[dict]:
    out = []
    n = 0
    inits = [[], [container("init", None, None)], [container("init", "1Gi", "8Gi")]]
    for (app, side, init, pod_limit) in itertools.product(SHAPES, [None, *SHAPES], range(3), [None, "4Gi"]):
        n += 1
        init_containers = list(inits[init])
        if side is not None:
            init_containers.append(container("side", *side, restartPolicy="Always"))
        labels = {"team": "skip"} if n % 7 == 0 else {"team": "a"}
        # spread over the cases (and over every third one, the workload templates' share)
        pod_resources = POD_LEVEL_WITHOUT_A_MEMORY_LIMIT[(n // 5) % 3]
        out.append(pod_body(f"case-{n}", [container("app", *app, cpu=n % 4 < 2), container("other", "1Gi", "1Gi")],
                            init_containers, pod_limit, labels, pod_resources))
    return out


WORKLOADS = {
    "Deployment": ("/apis/apps/v1/namespaces/{ns}/deployments", "apps/v1"),
    "StatefulSet": ("/apis/apps/v1/namespaces/{ns}/statefulsets", "apps/v1"),
    "DaemonSet": ("/apis/apps/v1/namespaces/{ns}/daemonsets", "apps/v1"),
    "ReplicaSet": ("/apis/apps/v1/namespaces/{ns}/replicasets", "apps/v1"),
    "Job": ("/apis/batch/v1/namespaces/{ns}/jobs", "batch/v1"),
    "CronJob": ("/apis/batch/v1/namespaces/{ns}/cronjobs", "batch/v1"),
}


def workload(kind: str, pod: dict) -> dict:
    name = pod["metadata"]["name"]
    labels = {**pod["metadata"]["labels"], "case": name}
    template = {"metadata": {"labels": labels}, "spec": dict(pod["spec"])}
    if kind in ("Job", "CronJob"):
        template["spec"]["restartPolicy"] = "Never"
    # the workload's own labels never match the pod selector's exclusion: the template's do
    meta = {"name": f"{kind.lower()}-{name}", "labels": {"team": "a"}}
    if kind == "CronJob":
        spec: dict[str, Any] = {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        spec = {"template": template}
    else:
        spec = {"selector": {"matchLabels": {"case": name}}, "template": template}
        if kind == "StatefulSet":
            spec["serviceName"] = "none"
    return {"apiVersion": WORKLOADS[kind][1], "kind": kind, "metadata": meta, "spec": spec}


def template_pod(kind: str, obj: dict) -> dict:
    """The pod a workload the server returned would create (its template), for the Python rule."""
    spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    t = spec["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**t.get("metadata", {}), "name": obj["metadata"]["name"],
                         "namespace": obj["metadata"]["namespace"], "uid": "template"},
            "spec": t["spec"], "status": {"phase": "Pending"}}


MESSAGE = re.compile(r"MemoryPolicy (\S+): containers? (.+?) (?:without a memory|with a memory limit over)"
                     r"[^(]*\((\w+)\)")


def server_says(warnings: list[str], policy: str) -> set[tuple[str, str]]:
    out = set()
    for w in warnings:
        for m in MESSAGE.finditer(w):
            assert m.group(1) == policy, w
            out |= {(m.group(3), c) for c in m.group(2).split(", ")}
    return out


def python_says(spec, pod: dict) -> set[tuple[str, str]]:
    from memory_hygiene.core.selectors import matches

    info = pod_info(pod)
    if not matches(spec.pod_selector, dict(info.labels)):
        return set()
    return {(v.rule, v.container) for v in evaluate_pod(spec, info)}


EQ_SPEC = {
    "podSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["skip"]}]},
    "rules": {"missingRequests": {"requireLimits": True, "admission": "Warn", "limitAdmission": "Warn"},
              "limitRatio": {"maxLimitToRequestRatio": 2, "admission": "Warn"}},
}


def test_the_api_server_and_the_python_rule_agree_case_by_case(enforcer, kube, kubectl, raw, unique_name):
    tag = unique_name("eq")
    ns = namespace(kubectl, tag, {"mh-test": tag})
    name = f"eq-{tag}"
    spec = {**EQ_SPEC, "namespaceSelector": {"matchLabels": {"mh-test": tag}}}
    kube.apply_policy(name, spec)
    try:
        cond = enforcing(kube, name)
        assert f"memory-hygiene.{name}.warn" in cond["message"]
        in_force(raw, ns, name)
        model = parse_spec(spec)
        tally: Counter[str] = Counter()
        disagreements = []

        def judge(what: str, path: str, body: dict, to_pod) -> None:
            status, obj, warnings = raw.post(path, body)
            if status >= 400:  # invalid for the API server itself (e.g. request over limit): no verdict
                assert obj.get("reason") == "Invalid", (what, obj)
                assert "MemoryPolicy" not in json.dumps(obj), (what, obj)
                tally["refused as invalid"] += 1
                return
            pod = to_pod(obj)
            pod_level = pod["spec"].get("resources") or {}
            tally["pod-level limit"] += "memory" in pod_level.get("limits", {})
            tally["pod-level, no memory limit"] += bool(pod_level) and "memory" not in pod_level.get("limits", {})
            app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
            tally["app lists without memory"] += any(
                k in app["resources"] and "memory" not in app["resources"][k] for k in ("requests", "limits"))
            tally["sidecar"] += any(c.get("restartPolicy") == "Always" for c in pod["spec"].get("initContainers", []))
            expected = python_says(model, pod)
            got = server_says(warnings, name)
            tally["judged"] += 1
            tally["with violations"] += bool(expected)
            for rule, _ in expected:
                tally[rule] += 1
            if expected != got:
                disagreements.append((what, sorted(expected), sorted(got), body))

        all_cases = cases()
        for pod in all_cases:
            judge(pod["metadata"]["name"], f"/api/v1/namespaces/{ns}/pods", pod, lambda o: o)
        for i, pod in enumerate(all_cases[::3]):  # every branch, again, as workload templates
            kind = list(WORKLOADS)[i % len(WORKLOADS)]
            judge(f"{kind} {pod['metadata']['name']}", WORKLOADS[kind][0].format(ns=ns), workload(kind, pod),
                  lambda o, k=kind: template_pod(k, o))
        print(f"\nequivalence: {dict(tally)}")
        assert not disagreements, f"{len(disagreements)} disagree, first: {disagreements[:3]}"
        # the cases did reach every branch
        assert tally["judged"] > 400 and tally["with violations"] > 100
        for rule in ("MissingMemoryRequest", "MissingMemoryLimit", "MemoryLimitRatioExceeded"):
            assert tally[rule] > 20, tally
        assert tally["judged"] - tally["with violations"] > 50
        assert tally["pod-level limit"] > 100 and tally["sidecar"] > 100, tally  # kept by the server
        assert tally["pod-level, no memory limit"] > 100 and tally["app lists without memory"] > 100, tally
    finally:
        kube.delete_policy(name)


# --- kubectl ------------------------------------------------------------------------------------

BAD_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: registry.invalid/web:1
        resources: {limits: {cpu: 100m}}
"""

GOOD_DEPLOYMENT = BAD_DEPLOYMENT.replace("{limits: {cpu: 100m}}", "{requests: {memory: 256Mi}, limits: {memory: 256Mi}}")


def test_one_field_denies_a_deployment_and_the_report_shows_what_already_runs(enforcer, kube, kubectl, raw,
                                                                             unique_name):
    tag = unique_name("deny")
    ns = namespace(kubectl, tag, {"mh-test": tag, "team": "payments"})
    old = pod_body("already-running", [container("legacy", None, None)])
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(old), check=True)
    legacy = BAD_DEPLOYMENT.replace("name: web}", "name: legacy}")
    kubectl("apply", "-n", ns, "-f", "-", input=legacy, check=True)
    name = f"teams-{tag}"
    spec = {"namespaceSelector": {"matchLabels": {"mh-test": tag}}}
    kube.apply_policy(name, spec)
    try:
        wait_for(lambda: (kube.settled(name) or {}).get("summary", {}).get("missingRequests") == 1,
                 what="the report of the pod that already runs")
        assert admission_objects(kube, name) == {"policies": [], "bindings": []}  # nothing enforced by default
        # the one field
        kube.apply_policy(name, {**spec, "rules": {"missingRequests": {"admission": "Deny"}}})
        enforcing(kube, name)
        in_force(raw, ns, name, "deny")
        proc = kubectl("apply", "-n", ns, "-f", "-", input=BAD_DEPLOYMENT)
        refused = proc.stderr
        assert proc.returncode != 0
        assert f"MemoryPolicy {name}: container app without a memory request (MissingMemoryRequest): " \
               "add resources.requests.memory" in proc.stderr, proc.stderr
        assert 'deployments.apps "web" is forbidden' in proc.stderr, proc.stderr
        assert kubectl("get", "-n", ns, "deployment", "web").returncode != 0
        proc = kubectl("apply", "-n", ns, "-f", "-", input=GOOD_DEPLOYMENT)
        assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
        # a bare pod too; and the report still tells of the pod that already ran
        proc = kubectl("run", "-n", ns, "bare", "--image=registry.invalid/x:1")
        assert proc.returncode != 0 and f"MemoryPolicy {name}: container bare without a memory request" in proc.stderr
        status = kube.settled(name)
        assert [v["name"] for v in status["violations"]] == ["already-running"]
        # a workload that predates the policy: scaled and relabelled freely, its template change refused
        assert kubectl("scale", "-n", ns, "deployment/legacy", "--replicas=3").returncode == 0
        assert kubectl("label", "-n", ns, "deployment/legacy", "owner=someone").returncode == 0
        proc = kubectl("set", "env", "-n", ns, "deployment/legacy", "MODE=new")
        assert proc.returncode != 0 and f"MemoryPolicy {name}: container app without a memory request" in proc.stderr
        print(f"\nkubectl apply of a Deployment without memory requests:\n{refused}")
        kubectl("delete", "-n", ns, "deployment", "web", check=True)
    finally:
        kube.delete_policy(name)


def test_warn_prints_in_kubectl_apply_and_lets_it_through(enforcer, kube, kubectl, raw, unique_name):
    tag = unique_name("warn")
    ns = namespace(kubectl, tag, {"mh-test": tag})
    name = f"warn-{tag}"
    kube.apply_policy(name, {"namespaceSelector": {"matchLabels": {"mh-test": tag}},
                             "rules": {"limitRatio": {"maxLimitToRequestRatio": 2, "admission": "Warn"}}})
    try:
        enforcing(kube, name)
        body = pod_body("greedy", [container("app", "100Mi", "1Gi")])

        def warned():
            proc = kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=json.dumps(body))
            return proc if "Warning:" in proc.stderr else None

        wait_for(warned, timeout=30, what="the warning")
        proc = kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))
        assert proc.returncode == 0, proc.stderr
        assert "Warning: Validation failed for ValidatingAdmissionPolicy" in proc.stderr
        assert f"MemoryPolicy {name}: container app with a memory limit over 2x the request " \
               "(MemoryLimitRatioExceeded)" in proc.stderr, proc.stderr
        assert kubectl("get", "-n", ns, "pod", "greedy").returncode == 0
    finally:
        kube.delete_policy(name)


def test_audit_leaves_an_audit_annotation(enforcer, cluster, kube, kubectl, raw, unique_name):
    audit_log = getattr(cluster, "audit_log", None)
    assert audit_log is not None, "this cluster has no audit log the test can read"
    tag = unique_name("audit")
    ns = namespace(kubectl, tag, {"mh-test": tag})
    name = f"audit-{tag}"
    kube.apply_policy(name, {"namespaceSelector": {"matchLabels": {"mh-test": tag}},
                             "rules": {"missingRequests": {"admission": "Audit"}}})
    try:
        enforcing(kube, name)
        vap = f"memory-hygiene.{name}.audit"
        n = 0

        def annotated():
            nonlocal n
            n += 1
            pod = pod_body(f"p{n}", [container("app", None, None)])
            proc = kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
            assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
            for line in Path(audit_log).read_text().splitlines():
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if ref.get("namespace") == ns and ref.get("name") == f"p{n}" and event.get("stage") == "ResponseComplete":
                    failure = (event.get("annotations") or {}).get("validation.policy.admission.k8s.io/validation_failure")
                    if failure:
                        return json.loads(failure)
            return None

        [failure] = wait_for(annotated, timeout=30, what="the audit annotation", interval=1)
        assert failure["policy"] == vap and failure["binding"] == vap
        assert failure["validationActions"] == ["Audit"]
        assert f"MemoryPolicy {name}: container app without a memory request" in failure["message"]
    finally:
        kube.delete_policy(name)


def test_control_plane_namespaces_pass_unless_named(enforcer, kube, kubectl, raw, unique_name):
    tag = unique_name("all")
    ns = namespace(kubectl, tag, {"mh-test": tag})
    op_ns = namespace(kubectl, enforcer.namespace, {})
    name = f"all-{tag}"
    kube.apply_policy(name, {"rules": {"missingRequests": {"admission": "Deny"}}})  # every namespace
    try:
        enforcing(kube, name)
        in_force(raw, ns, name, "deny")
        for excluded in ("kube-system", op_ns):
            status, body, _ = raw.post(f"/api/v1/namespaces/{excluded}/pods", pod_body("x", [container("c", None, None)]))
            assert status == 201, (excluded, body)
        [binding] = admission_objects(kube, name)["bindings"]
        assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": sorted(["kube-system", op_ns])} in binding["spec"]["matchResources"]["namespaceSelector"][
            "matchExpressions"]
        # named: judged
        kube.apply_policy(name, {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                 "rules": {"missingRequests": {"admission": "Deny"}}})
        enforcing(kube, name)
        in_force(raw, "kube-system", name, "deny")
    finally:
        kube.delete_policy(name)


def test_editing_updates_and_deleting_removes_the_admission_objects(enforcer, kube, kubectl, raw, unique_name):
    tag = unique_name("life")
    ns = namespace(kubectl, tag, {"mh-test": tag})
    name = f"life-{tag}"
    sel = {"matchLabels": {"mh-test": tag}}
    kube.apply_policy(name, {"namespaceSelector": sel, "rules": {"missingRequests": {"admission": "Deny"}}})
    enforcing(kube, name)
    objs = admission_objects(kube, name)
    assert [o["metadata"]["name"] for o in objs["policies"]] == [f"memory-hygiene.{name}.deny"]
    uid = kube.policy(name)["metadata"]["uid"]
    for o in objs["policies"] + objs["bindings"]:
        assert o["metadata"]["ownerReferences"][0]["uid"] == uid
    in_force(raw, ns, name, "deny")
    # Deny -> Warn, and the limit check added: the deny pair goes, a warn pair with both checks comes
    kube.apply_policy(name, {"namespaceSelector": sel, "rules": {"missingRequests": {
        "admission": "Warn", "requireLimits": True, "limitAdmission": "Warn"}}})
    enforcing(kube, name)
    wait_for(lambda: [o["metadata"]["name"] for o in admission_objects(kube, name)["policies"]] ==
             [f"memory-hygiene.{name}.warn"], what="the objects follow the edit")
    [vap] = admission_objects(kube, name)["policies"]
    assert [v["expression"] for v in vap["spec"]["validations"]] == ["size(variables.noRequest) == 0",
                                                                     "size(variables.noLimit) == 0"]
    in_force(raw, ns, name, "warn")
    # the API server's type check (kube-controller-manager's status controller, which this control
    # plane does not run: written here as it would) is surfaced in the condition
    from kubernetes import client

    api = client.AdmissionregistrationV1Api(kube.api_client)
    api.patch_validating_admission_policy_status(vap["metadata"]["name"], {"status": {
        "observedGeneration": vap["metadata"]["generation"],
        "typeChecking": {"expressionWarnings": [{"fieldRef": "spec.validations[0].expression",
                                                 "warning": "test: no such field"}]}}})
    cond = enforcing(kube, name, "TypeCheckWarnings")
    assert "test: no such field" in cond["message"] and cond["status"] == "True"
    # deleted: the operator removes them (no garbage collector here)
    kube.delete_policy(name)
    wait_for(lambda: admission_objects(kube, name) == {"policies": [], "bindings": []}, timeout=30,
             what="the admission objects removed with the policy")
    # and the API server stops applying them (its admission plugin learns it from an informer)
    def free():
        status, _, warnings = raw.post(f"/api/v1/namespaces/{ns}/pods", pod_body("free", [container("c", None, None)]))
        return status == 201 and not warnings

    wait_for(free, timeout=30, what="a pod without requests created without a warning")
