"""Fixtures for the e2e tests on a REAL node (devcluster/realnode.py).

One node for the whole package: the control plane (kube-apiserver on etcd 3.6, the
ServiceAccount admission plugin on), kube-scheduler, kube-controller-manager, containerd and
kubelet, with real pods. The operator and the node agent run as real processes on the host,
as a cluster admin would run them from a shell; no simulated kubelet or node-problem-detector
object is written. The install test (test_install.py) runs them from the project's image
instead.

The node needs root, a memory cgroup controller and the binaries (built and cached by
`scripts/test`). Where they are missing the fixture raises: these tests ERROR, never skip.
When the node is stopped, the fixture checks that the host is as it was before (sysctls,
runtime directories, cgroups, the bridge) and fails the teardown otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from devcluster import localcluster, realnode
from tests.e2e.conftest import CRD_FILE, OperatorProcess, _SUMMARY, find_kubectl, wait_for

NAMESPACE = "seeds"


def _host_fingerprint() -> dict:
    return {
        "sysctls": {n: realnode._sysctl_path(n).read_text().strip() for n in realnode.SYSCTLS},
        "paths": {p: os.path.lexists(p) for p in realnode.RUNTIME_PATHS},
        "cgroups": sorted(str(h / realnode.CGROUP_ROOT) for h in realnode._cgroup_hierarchies()
                          if (h / realnode.CGROUP_ROOT).exists()),
        "bridge": subprocess.run(["ip", "link", "show", realnode.BRIDGE], capture_output=True).returncode == 0,
    }


@pytest.fixture(scope="package")
def node() -> Iterator[realnode.RealNode]:
    before = _host_fingerprint()
    binaries = localcluster.ensure_binaries()
    etcd = localcluster.build_etcd()
    binaries = {**binaries, "etcd": etcd, "etcd_version": localcluster._binary_version(etcd)}
    rn = realnode.RealNode(cluster_binaries=binaries)
    os.environ.setdefault("PATH", "")
    kubectl_dir = str(Path(find_kubectl()).parent)
    if kubectl_dir not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = kubectl_dir + os.pathsep + os.environ["PATH"]
    rn.start()
    _SUMMARY.append("real node: " + ", ".join(f"{k} {v:.1f}s" for k, v in rn.timings.items()))
    try:
        yield rn
    finally:
        t0 = time.monotonic()
        problems = rn.stop()
        _SUMMARY.append(f"real node stopped in {time.monotonic() - t0:.1f}s")
        after = _host_fingerprint()
        assert not problems, problems
        assert after == before, f"the real node left the host changed:\nbefore {before}\nafter  {after}"


@pytest.fixture(scope="package")
def nkubectl(node) -> Callable[..., subprocess.CompletedProcess]:
    binary = find_kubectl()

    def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 90):
        proc = subprocess.run([binary, "--kubeconfig", str(node.kubeconfig), *map(str, args)],
                              capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))}: {proc.stderr}")
        return proc
    return run


@pytest.fixture(scope="package")
def ncrd(node, nkubectl) -> Path:
    nkubectl("apply", "-f", str(CRD_FILE))
    wait_for(lambda: nkubectl("get", "crd/memorypolicies.memoryhygiene.io", "-o",
                              'jsonpath={.status.conditions[?(@.type=="Established")].status}').stdout == "True",
             timeout=60, what="the CRD to be Established")
    nkubectl("create", "namespace", NAMESPACE)
    wait_for(lambda: node.get_json(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
             timeout=60, what="the default ServiceAccount (kube-controller-manager)")
    return CRD_FILE


class AgentProcess:
    """``memory-hygiene node-agent`` on the host, following this machine's /dev/kmsg."""

    def __init__(self, kubeconfig: Path, log_path: Path, node_name: str, since: float) -> None:
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.node_name = node_name
        self.since = since
        """Kills before this POSIX time are not this cluster's (the kernel log outlives it)."""
        self.port = localcluster._free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        exe = Path(sys.executable).parent / "memory-hygiene"
        cmd = [str(exe), "node-agent", "--kubeconfig", str(self.kubeconfig), "--node-name", self.node_name,
               "--http-host", "127.0.0.1", "--http-port", str(self.port),
               "--cgroup-root", f"/{realnode.CGROUP_ROOT}",
               "--lookback", f"{time.time() - self.since + 1:.0f}"]
        with open(self.log_path, "a") as log:
            log.write(f"\n===== start: {' '.join(cmd)}\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or self._metrics_ok(), timeout=30,
                 what="the node agent's metrics")
        if self.proc.poll() is not None:
            raise AssertionError(f"node agent exited with {self.proc.returncode}:\n{self.logs()}")
        return self

    def _metrics_ok(self) -> bool:
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def logs(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no agent log)"


@pytest.fixture(scope="package")
def agent(node, ncrd, tmp_path_factory) -> Iterator[AgentProcess]:
    a = AgentProcess(node.kubeconfig, tmp_path_factory.mktemp("agent") / "agent.log",
                     realnode.NODE_NAME, node.started_at).start()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture(scope="package")
def noperator(node, ncrd, tmp_path_factory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(node.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start()
    try:
        yield op
    finally:
        op.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and report.failed:
        for name in ("noperator", "agent"):
            proc = item.funcargs.get(name) or _fixture_value(item, name)
            if proc is not None:
                report.sections.append((f"{name} log (last lines)", proc.logs()))
        rn = item.funcargs.get("node")
        if isinstance(rn, realnode.RealNode) and rn.work is not None:
            report.sections.append(("kubelet log (last lines)", localcluster._tail(rn.logs / "kubelet.log", 40)))


def _fixture_value(item, name: str):
    """A package fixture's value even when the test's setup failed before filling funcargs."""
    try:
        defs = item._fixtureinfo.name2fixturedefs.get(name) or ()
        return next((d.cached_result[0] for d in reversed(defs) if getattr(d, "cached_result", None)), None)
    except Exception:  # noqa: BLE001 - only for a failure report
        return None


def pod_manifest(name: str, command: list[str], *, requests: dict | None = None, limits: dict | None = None,
                 restart: str = "Always", namespace: str = NAMESPACE, containers: list[dict] | None = None,
                 pod_resources: dict | None = None, labels: dict | None = None) -> dict:
    """A Pod running the memhog image (busybox + /bin/memhog), scheduled by kube-scheduler."""
    res: dict = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    spec: dict = {
        "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "containers": containers or [{"name": "app", "image": realnode.MEMHOG_IMAGE,
                                      "imagePullPolicy": "Never", "command": command, "resources": res}],
    }
    if pod_resources:
        spec["resources"] = pod_resources
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec}


def container(name: str, command: list[str], requests: dict | None = None, limits: dict | None = None) -> dict:
    res = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    return {"name": name, "image": realnode.MEMHOG_IMAGE, "imagePullPolicy": "Never", "command": command,
            "resources": res}


@pytest.fixture(scope="package")
def apply(nkubectl) -> Callable[[dict], dict]:
    def run(obj: dict) -> dict:
        out = nkubectl("apply", "-o", "json", "-f", "-", input=json.dumps(obj))
        return json.loads(out.stdout)
    return run
