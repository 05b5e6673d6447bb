#!/usr/bin/env python3
"""A real, local Kubernetes control plane (etcd + kube-apiserver) for e2e tests.

The same idea as controller-runtime's envtest: no nodes, no kubelet, no
kube-controller-manager, no scheduler -- just etcd and a genuine kube-apiserver
listening on 127.0.0.1, with TLS, client-certificate authentication and RBAC.

What that means for tests:

* Objects are stored and validated by the real API server (admission, RBAC,
  CRDs, watches, TokenRequest ...), but nothing reconciles them: pods are
  never scheduled or run, deleted namespaces stay ``Terminating`` forever
  (no namespace controller), there is no garbage collection and no token
  controller. Give test objects unique names; get ServiceAccount tokens with
  the TokenRequest API (:meth:`LocalCluster.service_account_token`).
* The ``ServiceAccount`` admission plugin is disabled (as in envtest), because
  nothing creates the ``default`` ServiceAccount in new namespaces and pods
  would otherwise be rejected.
* An audit log (``.audit_log``, JSON lines in the temp dir, see ``AUDIT_POLICY``):
  metadata of writes to pods and workloads only, where ValidatingAdmissionPolicies
  in Audit mode leave their annotations. No kube-controller-manager also means no
  ValidatingAdmissionPolicy type-checking status.

Binaries:

* kube-apiserver is built from the Go module proxy (``apiserver/go.mod`` next
  to this file pins the version) and cached under
  ``${XDG_CACHE_HOME:-~/.cache}/memory-hygiene/bin/kube-apiserver-<version>``.
* etcd comes from ``$MEMORY_HYGIENE_ETCD``, ``$PATH`` (Debian: ``apt-get
  install etcd-server``) or the same cache directory. A current etcd (``etcd/go.mod``
  pins it) is also built from the Go module proxy, into ``bin/built/``
  (:func:`build_etcd`): the e2e suite runs on both.

Only the standard library and PyYAML are used. Importable by path; also a CLI::

    python -m devcluster.localcluster build    # build/find binaries (--with-built-etcd)
    python -m devcluster.localcluster up       # start in the background
    python -m devcluster.localcluster status
    python -m devcluster.localcluster down
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
APISERVER_MODULE_DIR = HERE / "apiserver"
GO_MOD = APISERVER_MODULE_DIR / "go.mod"
ETCD_MODULE_DIR = HERE / "etcd"

#: Disabled admission plugins (envtest does the same; see module docstring).
DEFAULT_DISABLED_ADMISSION_PLUGINS = ("ServiceAccount",)

#: The audit policy (``--audit-policy-file``): metadata of writes to pods and workloads only, where
#: ValidatingAdmissionPolicies in Audit mode leave their annotations
#: (``validation.policy.admission.k8s.io/validation_failure``); nothing else is logged.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch"],
         "resources": [{"group": "", "resources": ["pods"]}, {"group": "apps"}, {"group": "batch"}]},
        {"level": "None"},
    ],
}


class LocalClusterError(RuntimeError):
    """Anything that prevents the local control plane from being built or started."""


# --------------------------------------------------------------------------- versions, paths


def kubernetes_version() -> str:
    """The Kubernetes version pinned in ``apiserver/go.mod`` (e.g. ``v1.37.2``)."""
    try:
        text = GO_MOD.read_text()
    except OSError as exc:
        raise LocalClusterError(f"cannot read {GO_MOD}: {exc}") from exc
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+)\b", text, re.M)
    if not match:
        raise LocalClusterError(f"no `k8s.io/kubernetes vX.Y.Z` requirement in {GO_MOD}")
    return match.group(1)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memory-hygiene"


def bin_dir() -> Path:
    return cache_dir() / "bin"


def default_state_file() -> Path:
    return cache_dir() / "localcluster-state.json"


def _log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- binaries


def find_go() -> Path:
    """The ``go`` tool: ``$MEMORY_HYGIENE_GO``, ``$PATH`` or ``/usr/local/go/bin/go``."""
    candidates = [os.environ.get("MEMORY_HYGIENE_GO"), shutil.which("go"), "/usr/local/go/bin/go"]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return Path(cand)
    raise LocalClusterError(
        "The Go toolchain is needed to build kube-apiserver (there is no prebuilt one in the "
        "package registries) and was not found. Install Go >= 1.26 (https://go.dev/dl/) and put "
        "`go` on PATH, or set MEMORY_HYGIENE_GO=/path/to/go. Alternatively set "
        "MEMORY_HYGIENE_KUBE_APISERVER=/path/to/kube-apiserver, or run the e2e tests against an "
        "existing cluster (e.g. kind) with MEMORY_HYGIENE_E2E_KUBECONFIG=/path/to/kubeconfig."
    )


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    return env


def _module_release_time(go: Path, version: str) -> str | None:
    """The release timestamp of k8s.io/kubernetes@version (from the module proxy metadata)."""
    try:
        out = subprocess.run(
            [str(go), "list", "-mod=readonly", "-m", "-json", "k8s.io/kubernetes"],
            cwd=APISERVER_MODULE_DIR, env=_go_env(), capture_output=True, text=True, check=True,
        ).stdout
        info = json.loads(out)
        if info.get("Version") == version and info.get("Time"):
            return info["Time"]
    except (subprocess.CalledProcessError, ValueError, OSError):
        pass
    return None


def _version_ldflags(go: Path, version: str) -> str:
    """Stamp the version like Kubernetes' own build does (hack/lib/version.sh)."""
    m = re.match(r"v(\d+)\.(\d+)\.", version)
    assert m, version
    values = {"gitVersion": version, "gitMajor": m.group(1), "gitMinor": m.group(2),
              "gitTreeState": "clean"}
    release_time = _module_release_time(go, version)
    if release_time:
        values["buildDate"] = release_time
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, val in values.items():
            flags.append(f"-X {pkg}.{key}={val}")
    return " ".join(flags)


KUBERNETES_COMPONENTS = ("kube-apiserver", "kubelet", "kube-scheduler", "kube-controller-manager")
"""What ``apiserver/go.mod`` builds (its ``tool`` lines): the control plane, and the real node's
kubelet (devcluster/realnode.py)."""


def build_kubernetes(component: str = "kube-apiserver", version: str | None = None, *,
                     force: bool = False) -> Path:
    """Return the cached ``component`` (one of :data:`KUBERNETES_COMPONENTS`) for ``version``,
    building it first if needed. They share one go.mod and one Go build cache, so the second
    one costs its own packages and a link.

    ``$MEMORY_HYGIENE_KUBE_APISERVER`` (``..._KUBELET``, ...) overrides everything (no build).
    """
    if component not in KUBERNETES_COMPONENTS:
        raise LocalClusterError(f"unknown component {component!r}")
    env_name = "MEMORY_HYGIENE_" + component.upper().replace("-", "_")
    override = os.environ.get(env_name)
    if override:
        if not os.access(override, os.X_OK):
            raise LocalClusterError(f"{env_name}={override} is not executable")
        return Path(override)

    pinned = kubernetes_version()
    version = version or pinned
    if version != pinned:
        raise LocalClusterError(
            f"{GO_MOD} pins k8s.io/kubernetes {pinned}, not {version}; edit it (see its header)")
    target = bin_dir() / f"{component}-{version}"
    if target.exists() and not force:
        return target

    go = find_go()
    return _go_build(go, target, APISERVER_MODULE_DIR, f"k8s.io/kubernetes/cmd/{component}",
                     _version_ldflags(go, version), f"{component} {version}",
                     "downloads ~hundreds of MB of modules and compiles for several minutes", force=force)


def build_kube_apiserver(version: str | None = None, *, force: bool = False) -> Path:
    """Return the cached kube-apiserver for ``version``, building it first if needed."""
    return build_kubernetes("kube-apiserver", version, force=force)


def _go_build(go: Path, target: Path, module_dir: Path, package: str, ldflags: str, what: str,
              how_long: str, *, force: bool, tags: str = "") -> Path:
    """``go build`` of ``package`` in ``module_dir`` into ``target``, under a file lock (another
    process may be building the same thing); a failure raises with the build's last lines."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and not force:
            return target
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        cmd = [str(go), "build", "-mod=readonly", "-trimpath", *(["-tags", tags] if tags else []),
               "-ldflags", ldflags, "-o", str(tmp), package]
        _log(f"building {what} from the Go module proxy (first time: {how_long}) ...")
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=module_dir, env=_go_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise LocalClusterError(
                f"building {what} failed after {elapsed:.0f}s (exit {proc.returncode}).\n"
                f"command (in {module_dir}): {' '.join(cmd)}\n{tail}")
        os.replace(tmp, target)
        _log(f"built {target} in {elapsed:.1f}s")
    return target


def built_etcd_version() -> str:
    """The etcd version ``etcd/go.mod`` pins (the one :func:`build_etcd` builds)."""
    text = (ETCD_MODULE_DIR / "go.mod").read_text()
    match = re.search(r"^require go\.etcd\.io/etcd/server/v3 (v\d+\.\d+\.\d+)$", text, re.M)
    if not match:
        raise LocalClusterError(f"no `require go.etcd.io/etcd/server/v3 vX.Y.Z` in {ETCD_MODULE_DIR / 'go.mod'}")
    return match.group(1)


def build_etcd(*, force: bool = False) -> Path:
    """Return the cached etcd that ``etcd/go.mod`` pins, building it first if needed (under
    ``bin/built/``, where :func:`find_etcd` does not look: the packaged etcd stays the default)."""
    version = built_etcd_version()
    target = bin_dir() / "built" / f"etcd-{version}"
    if target.exists() and not force:
        return target
    return _go_build(find_go(), target, ETCD_MODULE_DIR, "go.etcd.io/etcd/server/v3", "-s -w", f"etcd {version}",
                     "about a minute", force=force)


def watch_list_served(etcd_version: str) -> bool:
    """Whether kube-apiserver can stream initial events (and serve consistent LISTs from its
    watch cache) on this etcd: it needs RequestWatchProgress, in etcd 3.4.31+ and 3.5.13+."""
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", etcd_version)
    if not m:
        raise LocalClusterError(f"cannot read the etcd version {etcd_version!r}")
    v = tuple(int(x) for x in m.groups())
    return (3, 4, 31) <= v < (3, 5, 0) or v >= (3, 5, 13)


def find_etcd(*, install: bool = False) -> Path:
    """Find etcd: ``$MEMORY_HYGIENE_ETCD``, the cache bin dir, ``$PATH``, ``/usr/bin/etcd``.

    With ``install=True`` and root on a Debian-like system, ``apt-get install etcd-server``
    is tried when nothing is found.
    """
    override = os.environ.get("MEMORY_HYGIENE_ETCD")
    if override:
        if not os.access(override, os.X_OK):
            raise LocalClusterError(f"MEMORY_HYGIENE_ETCD={override} is not executable")
        return Path(override)
    cached = sorted(bin_dir().glob("etcd-v*"), reverse=True)
    for cand in [*(str(c) for c in cached), shutil.which("etcd"), "/usr/bin/etcd"]:
        if cand and os.access(cand, os.X_OK) and not cand.endswith((".lock", ".tmp")):
            return Path(cand)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        _log("etcd not found; running apt-get install -y etcd-server ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(["apt-get", "install", "-y", "etcd-server"], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:  # maybe the package lists were never fetched
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "etcd-server"], env=env,
                           capture_output=True)
        if os.access("/usr/bin/etcd", os.X_OK):
            return Path("/usr/bin/etcd")
    raise LocalClusterError(
        "etcd was not found. Install it (Debian/Ubuntu: `sudo apt-get install etcd-server`; "
        "or `python -m devcluster.localcluster build` as root does that), put an etcd "
        "binary on PATH, or set MEMORY_HYGIENE_ETCD=/path/to/etcd.")


def _binary_version(path: Path) -> str:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"(?:Kubernetes|etcd Version:)\s*(v?[\w.+-]+)", out)
    return m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "unknown"


def ensure_binaries(*, install_etcd: bool = False, force_build: bool = False) -> dict[str, Any]:
    """Build (or find cached) kube-apiserver and find etcd.

    Returns ``{"kube-apiserver": Path, "etcd": Path, "kubernetes_version": str,
    "etcd_version": str}``. Raises :class:`LocalClusterError` with instructions when
    Go or etcd is missing.
    """
    etcd = find_etcd(install=install_etcd)  # cheap; fail fast before a long build
    apiserver = build_kube_apiserver(force=force_build)  # logs the build time if it builds
    return {
        "kube-apiserver": apiserver,
        "etcd": etcd,
        "kubernetes_version": _binary_version(apiserver),
        "etcd_version": _binary_version(etcd),
    }


# --------------------------------------------------------------------------- PKI


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        raise LocalClusterError("`openssl` is needed to create the cluster certificates")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalClusterError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _make_pki(d: Path, serving_ips: tuple[str, ...] = ()) -> dict[str, Path]:
    """One CA signing the serving cert (for 127.0.0.1 and ``serving_ips``) and the admin
    client cert; an RSA SA key pair."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # keyUsage on the CA as kubeadm's has it: Python 3.13's ssl (VERIFY_X509_STRICT, the
    # operator's image) refuses a CA without it ("CA cert does not include key usage extension").
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", "/CN=memory-hygiene-localcluster-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign", cwd=d)
    (d / "serving.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1"
        + "".join(f",IP:{ip}" for ip in serving_ips if ip not in ("127.0.0.1", "10.0.0.1")) + "\n")
    (d / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n")
    for name, subj in (("serving", "/CN=kube-apiserver"),
                       ("admin", "/O=system:masters/CN=memory-hygiene-admin")):
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subj, cwd=d)
        ext = "serving.ext" if name == "serving" else "client.ext"
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", f"{name}.crt", cwd=d)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return {n: d / f for n, f in (
        ("ca_crt", "ca.crt"), ("ca_key", "ca.key"), ("serving_crt", "serving.crt"),
        ("serving_key", "serving.key"), ("admin_crt", "admin.crt"), ("admin_key", "admin.key"),
        ("sa_key", "sa.key"), ("sa_pub", "sa.pub"))}


def _b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path | str, *, server: str, ca_crt: Path | None = None,
                     ca_data: str | None = None, user: dict[str, str],
                     name: str = "memory-hygiene-local", namespace: str | None = None) -> Path:
    """Write a single-context kubeconfig. ``user`` is the kubeconfig ``user`` mapping
    (e.g. ``{"token": ...}`` or ``{"client-certificate-data": ..., ...}``)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data is None and ca_crt is not None:
        ca_data = _b64file(ca_crt)
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return path


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig_preexec() -> None:  # pragma: no cover - runs in the child
    """Make the child die with its parent (Linux), so a killed test run leaves no servers."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _terminate_pid(pid: int, *, must_contain: str | None = None, timeout: float = 15.0,
                   popen: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. With ``must_contain``, only signal the
    process if its command line contains that string (protects against PID reuse)."""
    if popen is not None:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(10)
        return
    if not _pid_alive(pid):
        return
    if must_contain and must_contain not in _pid_cmdline(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- the cluster

_DIR_PREFIX = "memory-hygiene-localcluster-"


def _remove_stale_dirs() -> None:
    """Remove data dirs left behind by test runs that were killed (SIGKILL leaves no chance
    to clean up; their servers died with them thanks to PR_SET_PDEATHSIG)."""
    for d in Path(tempfile.gettempdir()).glob(_DIR_PREFIX + "*"):
        try:
            owner = json.loads((d / "owner.json").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if owner.get("detached") or _pid_alive(int(owner.get("pid", 0))):
            continue  # `up` clusters are removed by `down`
        if any(str(d) in _pid_cmdline(int(p)) for p in os.listdir("/proc") if p.isdigit()):
            continue
        shutil.rmtree(d, ignore_errors=True)



class LocalCluster:
    """etcd + kube-apiserver as local processes on 127.0.0.1 (or on ``address``, one of this
    machine's own addresses: the real node's bridge, so that its pods reach the API server).

    >>> with LocalCluster() as c:              # doctest: +SKIP
    ...     subprocess.run(["kubectl", "--kubeconfig", c.kubeconfig, "get", "ns"])

    Everything (certificates, etcd data, logs, kubeconfigs) lives in one temporary
    directory (``.root``) that :meth:`stop` removes (unless ``keep_dir=True``).
    """

    def __init__(self, *, binaries: dict[str, Any] | None = None,
                 root_dir: str | Path | None = None, startup_timeout: float = 90.0,
                 extra_apiserver_args: list[str] | tuple[str, ...] = (),
                 disable_admission_plugins: tuple[str, ...] = DEFAULT_DISABLED_ADMISSION_PLUGINS,
                 detach: bool = False, keep_dir: bool = False, address: str = "127.0.0.1") -> None:
        self._binaries = binaries
        self.address = address
        self._root_arg = Path(root_dir) if root_dir else None
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.disable_admission_plugins = tuple(disable_admission_plugins)
        self.detach = detach  # True: processes outlive this Python process (CLI `up`)
        self.keep_dir = keep_dir
        self.root: Path | None = None
        self.server: str | None = None
        self.kubeconfig: Path | None = None
        self.etcd_url: str | None = None
        self.pki: dict[str, Path] = {}
        self.startup_seconds: float | None = None
        self.audit_log: Path | None = None
        """The API server's audit log (JSON lines, see AUDIT_POLICY), in ``.root``."""
        self.etcd_pid: int | None = None
        self.etcd_version: str | None = None
        self.apiserver_pid: int | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._ssl: ssl.SSLContext | None = None
        self._owns_root = False

    # ---- lifecycle

    def start(self) -> "LocalCluster":
        """Start etcd and kube-apiserver, wait for ``/readyz``, write the admin kubeconfig."""
        if self._procs:
            raise LocalClusterError("already started")
        binaries = self._binaries or ensure_binaries()
        self.etcd_version = binaries.get("etcd_version")
        t0 = time.monotonic()
        if self._root_arg:
            self._root_arg.mkdir(parents=True, exist_ok=True)
            self.root = self._root_arg
        else:
            _remove_stale_dirs()
            self.root = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
            self._owns_root = True
            (self.root / "owner.json").write_text(
                json.dumps({"pid": os.getpid(), "detached": self.detach}))
        try:
            last_error: Exception | None = None
            for _attempt in range(3):  # a "free" port can be taken before we bind it
                try:
                    etcd = self._spawn_etcd(Path(binaries["etcd"]))
                    if not self.pki:  # while etcd boots
                        self.pki = _make_pki(self.root / "pki", (self.address,))
                        self._ssl = ssl.create_default_context(cafile=str(self.pki["ca_crt"]))
                        self._ssl.load_cert_chain(str(self.pki["admin_crt"]),
                                                  str(self.pki["admin_key"]))
                    self._wait_for("etcd", etcd, self._etcd_ok, timeout=30)
                    self._start_apiserver(Path(binaries["kube-apiserver"]))
                    break
                except _PortClash as exc:
                    last_error = exc
                    self._stop_processes()
            else:
                raise LocalClusterError(f"could not start after 3 attempts: {last_error}")
            self.kubeconfig = write_kubeconfig(
                self.root / "admin.kubeconfig", server=self.server, ca_crt=self.pki["ca_crt"],
                user={"client-certificate-data": _b64file(self.pki["admin_crt"]),
                      "client-key-data": _b64file(self.pki["admin_key"])})
        except BaseException:
            self.stop()
            if self._owns_root and self.root:  # even with keep_dir: nothing worth keeping
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        assert self.root is not None
        log = open(self.root / f"{name}.log", "wb")  # fresh per attempt (port-clash check)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.root, start_new_session=True,
                preexec_fn=None if self.detach else _pdeathsig_preexec)
        finally:
            log.close()
        self._procs[name] = proc
        return proc

    def _spawn_etcd(self, etcd: Path) -> subprocess.Popen:
        assert self.root is not None
        client_port, peer_port = _free_port(), _free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        data = self.root / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        proc = self._spawn("etcd", [
            str(etcd), "--name", "default", "--data-dir", str(data),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}", "--initial-cluster-state", "new",
            "--unsafe-no-fsync", "--logger", "zap", "--log-level", "warn",
        ])
        self.etcd_pid = proc.pid
        return proc

    def _etcd_ok(self) -> bool:
        return self._http_ok(f"{self.etcd_url}/health", tls=False)

    def _start_apiserver(self, apiserver: Path, port: int | None = None) -> None:
        assert self.root is not None and self.etcd_url
        self._apiserver_binary = apiserver
        port = port or _free_port()
        self.server = f"https://{self.address}:{port}"
        args = [
            str(apiserver),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.root / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki['serving_crt']}",
            f"--tls-private-key-file={self.pki['serving_key']}",
            f"--client-ca-file={self.pki['ca_crt']}",
            f"--secure-port={port}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            # 1.37 refuses a loopback advertise address with the default ("lease") endpoint
            # reconciler; nothing here needs the `kubernetes` Service's endpoints anyway.
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.pki['sa_pub']}",
            f"--service-account-signing-key-file={self.pki['sa_key']}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        audit_policy = self.root / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit_log = self.root / "audit.log"
        # blocking mode: an event is in the file when the request returns; one file, no rotation
        args += [f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}",
                 "--audit-log-mode=blocking", "--audit-log-format=json"]
        if self.address != "127.0.0.1":
            # A real node (devcluster/realnode.py): logs/exec reach its kubelet, which
            # trusts this CA's client certificates.
            args += [f"--kubelet-client-certificate={self.pki['admin_crt']}",
                     f"--kubelet-client-key={self.pki['admin_key']}",
                     "--kubelet-preferred-address-types=InternalIP"]
        if self.disable_admission_plugins:
            args.append("--disable-admission-plugins=" + ",".join(self.disable_admission_plugins))
        args += self.extra_apiserver_args
        proc = self._spawn("kube-apiserver", args)
        self.apiserver_pid = proc.pid
        self._wait_for("kube-apiserver", proc, self._readyz_ok, timeout=self.startup_timeout)

    def _wait_for(self, name: str, proc: subprocess.Popen, check, timeout: float) -> None:
        assert self.root is not None
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if proc.poll() is not None:
                tail = _tail(self.root / f"{name}.log")
                if "address already in use" in tail:
                    raise _PortClash(f"{name}: address already in use")
                raise LocalClusterError(
                    f"{name} exited with code {proc.returncode} during start-up; "
                    f"last log lines ({self.root / (name + '.log')}):\n{tail}")
            if check():
                return
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"{name} not ready after {timeout:.0f}s; last log lines:\n"
                    f"{_tail(self.root / f'{name}.log')}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _http_ok(self, url: str, *, tls: bool = True) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2,
                                        context=self._ssl if tls else None) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _readyz_ok(self) -> bool:
        return self._http_ok(f"{self.server}/readyz")

    def is_ready(self) -> bool:
        return bool(self.server) and self._readyz_ok()

    # ---- faults (tests/e2e/test_faults.py)

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (no graceful shutdown: connections are cut mid-stream)."""
        proc = self._procs.pop("kube-apiserver", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.apiserver_pid = None

    def start_apiserver_again(self) -> float:
        """Start kube-apiserver on the port it had, on the same etcd; returns the seconds until
        its /readyz answered 200."""
        if "kube-apiserver" in self._procs:
            raise LocalClusterError("kube-apiserver is running")
        port = int(self.server.rsplit(":", 1)[1])
        t0 = time.monotonic()
        self._start_apiserver(self._apiserver_binary, port)
        return time.monotonic() - t0

    def pause_etcd(self) -> None:
        """SIGSTOP etcd (a stalled disk, a paused VM): connections stay open, nothing answers."""
        if self.etcd_pid is None:
            raise LocalClusterError("etcd is not running")
        os.kill(self.etcd_pid, signal.SIGSTOP)

    def resume_etcd(self) -> None:
        if self.etcd_pid is not None:
            os.kill(self.etcd_pid, signal.SIGCONT)

    def _stop_processes(self) -> None:
        # API server first, so it does not spew errors about a vanished etcd.
        for name in ("kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                _terminate_pid(proc.pid, popen=proc)

    def stop(self) -> None:
        """Terminate kube-apiserver and etcd (SIGTERM, then SIGKILL) and remove the data dir."""
        with contextlib.suppress(ProcessLookupError, LocalClusterError):
            self.resume_etcd()  # a paused etcd would not hear SIGTERM
        self._stop_processes()
        if self.root and self._owns_root and not self.keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)
        self.etcd_pid = self.apiserver_pid = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- API helpers (stdlib HTTP with the admin client certificate)

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json") -> tuple[int, Any]:
        """Call the API server as cluster admin; returns ``(status, decoded JSON or text)``."""
        if not self.server or self._ssl is None:
            raise LocalClusterError("cluster not started")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def _ensure(self, path: str, create_path: str, body: dict) -> None:
        status, _ = self.request("GET", path)
        if status == 404:
            status, resp = self.request("POST", create_path, body)
            if status not in (200, 201, 409):
                raise LocalClusterError(f"POST {create_path}: {status} {resp}")

    def service_account_token(self, namespace: str, name: str, *, create: bool = True,
                              expiration_seconds: int = 3600,
                              audiences: list[str] | None = None) -> str:
        """A token for ServiceAccount ``namespace/name`` via the TokenRequest API.

        With ``create=True`` the namespace and ServiceAccount are created if missing.
        (No token controller runs here, so Secret-based tokens never appear.)
        """
        if create:
            self._ensure(f"/api/v1/namespaces/{namespace}", "/api/v1/namespaces",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            self._ensure(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
                         f"/api/v1/namespaces/{namespace}/serviceaccounts",
                         {"apiVersion": "v1", "kind": "ServiceAccount",
                          "metadata": {"name": name, "namespace": namespace}})
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = audiences
        status, resp = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        if status not in (200, 201):
            raise LocalClusterError(f"TokenRequest for {namespace}/{name} failed: {status} {resp}")
        return resp["status"]["token"]

    def write_token_kubeconfig(self, token: str, path: str | Path | None = None, *,
                               namespace: str | None = None) -> Path:
        """Write a kubeconfig that authenticates with a bearer ``token``."""
        assert self.root is not None and self.server
        if path is None:
            fd, tmp = tempfile.mkstemp(prefix="token-", suffix=".kubeconfig", dir=self.root)
            os.close(fd)
            path = tmp
        return write_kubeconfig(path, server=self.server, ca_crt=self.pki["ca_crt"],
                                user={"token": token}, namespace=namespace)

    def service_account_kubeconfig(self, namespace: str, name: str,
                                   path: str | Path | None = None, **token_kwargs: Any) -> Path:
        """TokenRequest for ``namespace/name`` + a kubeconfig using it (default namespace set)."""
        token = self.service_account_token(namespace, name, **token_kwargs)
        return self.write_token_kubeconfig(token, path, namespace=namespace)

    @property
    def watch_list(self) -> bool | None:
        """Whether this API server streams initial events (by its etcd's version); None before
        :meth:`start`."""
        return watch_list_served(self.etcd_version) if self.etcd_version else None

    # ---- state file (CLI up/down)

    def state(self) -> dict[str, Any]:
        return {"root": str(self.root), "server": self.server, "kubeconfig": str(self.kubeconfig),
                "etcd_url": self.etcd_url,
                "pids": {"kube-apiserver": self.apiserver_pid, "etcd": self.etcd_pid},
                "started_at": time.time(), "startup_seconds": self.startup_seconds}


class _PortClash(LocalClusterError):
    pass


# --------------------------------------------------------------------------- CLI


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LocalClusterError(f"corrupt state file {path}: {exc}") from exc


def _state_alive(state: dict[str, Any]) -> dict[str, bool]:
    return {name: bool(pid) and _pid_alive(pid) and state["root"] in _pid_cmdline(pid)
            for name, pid in state.get("pids", {}).items()}


def _cmd_build(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    info = ensure_binaries(install_etcd=True, force_build=args.force)
    print(f"kube-apiserver {info['kubernetes_version']}: {info['kube-apiserver']}")
    print(f"etcd {info['etcd_version']}: {info['etcd']}")
    if args.with_built_etcd:
        built = build_etcd(force=args.force)
        print(f"etcd {_binary_version(built)} (built): {built}")
    print(f"took {time.monotonic() - t0:.1f}s")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    old = _read_state(state_file)
    if old and any(_state_alive(old).values()):
        print(f"already up: {old['server']} (run `down` first)", file=sys.stderr)
        print(f"export KUBECONFIG={old['kubeconfig']}")
        return 1
    binaries = ensure_binaries(install_etcd=True)
    cluster = LocalCluster(binaries=binaries, detach=True, keep_dir=True,
                           startup_timeout=args.timeout)
    cluster.start()
    state = cluster.state()
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2))
    print(f"kube-apiserver {binaries['kubernetes_version']} + etcd {binaries['etcd_version']} "
          f"up at {cluster.server} in {cluster.startup_seconds:.2f}s", file=sys.stderr)
    print(f"data dir: {cluster.root}  (state: {state_file})", file=sys.stderr)
    print(f"kubeconfig: {cluster.kubeconfig}", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    state = _read_state(state_file)
    if not state:
        print("nothing is up (no state file)", file=sys.stderr)
        return 0
    root = state["root"]
    for name in ("kube-apiserver", "etcd"):
        pid = state.get("pids", {}).get(name)
        if pid:
            _terminate_pid(pid, must_contain=root)
    alive = _state_alive(state)
    if any(alive.values()):
        print(f"still running: {alive}", file=sys.stderr)
        return 1
    if root and Path(root).name.startswith(_DIR_PREFIX):
        shutil.rmtree(root, ignore_errors=True)
    state_file.unlink(missing_ok=True)
    print(f"stopped {state['server']} and removed {root}", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = _read_state(Path(args.state_file))
    if not state:
        print("down (no state file)")
        return 1
    alive = _state_alive(state)
    ctx = ssl.create_default_context(cafile=str(Path(state["root"]) / "pki" / "ca.crt"))
    ready = False
    with contextlib.suppress(Exception):
        ctx.load_cert_chain(str(Path(state["root"]) / "pki" / "admin.crt"),
                            str(Path(state["root"]) / "pki" / "admin.key"))
        with urllib.request.urlopen(f"{state['server']}/readyz", timeout=3, context=ctx) as r:
            ready = r.status == 200
    procs = ", ".join(f"{n} pid {state['pids'][n]} {'running' if a else 'DEAD'}"
                      for n, a in alive.items())
    print(f"{'ready' if ready else 'NOT ready'}: {state['server']} ({procs})")
    print(f"export KUBECONFIG={state['kubeconfig']}")
    return 0 if ready else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-file", default=str(default_state_file()),
                        help="where `up` records pids/dirs (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build/find kube-apiserver and etcd (installs etcd via apt as root)")
    b.add_argument("--force", action="store_true", help="rebuild kube-apiserver (and etcd) even if cached")
    b.add_argument("--with-built-etcd", action="store_true",
                   help="also build the etcd that etcd/go.mod pins (the e2e suite runs on both)")
    u = sub.add_parser("up", help="start a cluster in the background")
    u.add_argument("--timeout", type=float, default=90.0)
    sub.add_parser("down", help="stop the cluster started by `up` and remove its data")
    sub.add_parser("status", help="is the cluster started by `up` ready?")
    args = parser.parse_args(argv)
    handler = {"build": _cmd_build, "up": _cmd_up, "down": _cmd_down, "status": _cmd_status}
    try:
        return handler[args.command](args)
    except LocalClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
