#!/usr/bin/env python3
"""A real Kubernetes node on this machine, registered with a :class:`LocalCluster`.

kubelet, kube-scheduler and kube-controller-manager (built from ``apiserver/go.mod``, the same
module as kube-apiserver), containerd (built from ``containerd/go.mod``), Debian's runc and CNI
plugins (a ``bridge`` network without masquerade), and two OCI images written here without a
registry: a ``pause`` sandbox and a ``memhog`` workload (busybox plus a static C memory hog).
Pods run for real: the kernel OOM-kills their processes at their memory limits, kubelet
evicts them under memory pressure, and ``/proc/<pid>/oom_score_adj`` is what kubelet set.

The facts this rests on (and every workaround) were found with a prototype; they are written
up in ``README.md`` next to this file ("The real node"). In short, for this project's VMs:

* cgroup v1: kubelet needs ``failCgroupV1: false``; its cgroups go below their own root
  (``/realnode``), clear of the e2e suite's other memory cgroups (``/kubepods``).
* root lacks ``CAP_SYS_RESOURCE``: no negative ``oom_score_adj``. runc would fail to start
  the pause container (-998), so containerd's ``restrict_oom_score_adj`` clamps every negative
  value to 0 (Guaranteed pods and sandboxes then score 0, not -997/-998).
* kubelet rewrites sysctls (``vm.overcommit_memory``, ``vm.panic_on_oom``, ``kernel.panic``,
  ``kernel.panic_on_oops``) and the bridge plugin turns on ``net.ipv4.ip_forward``: saved
  before, restored by :meth:`RealNode.stop`. ``makeIPTablesUtilChains: false`` keeps kubelet's
  iptables chains off the host; every mount, cgroup, network link and runtime directory it or
  containerd made is removed; every process is stopped by PID.
* The node's address is the bridge's (a loopback node IP is refused); the API server listens
  on it too, so pods reach it (there is no kube-proxy: pods get the API server's address in
  ``KUBERNETES_SERVICE_HOST``/``PORT`` where they need it, see :meth:`RealNode.api_env`).

Importable by path (tests/e2e/conftest.py) and a CLI::

    python -m devcluster.realnode build     # binaries + images (cached)
    python -m devcluster.realnode check     # can this machine run it? (root, cgroups, ...)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster as lc  # noqa: E402  (a sibling module, found by path: realnode.py also runs as a file)

HERE = Path(__file__).resolve().parent
CONTAINERD_MODULE_DIR = HERE / "containerd"

NODE_NAME = "realnode"
CGROUP_ROOT = "realnode"
"""kubelet's ``cgroupRoot``: pods live in ``/realnode/kubepods/...``."""
BRIDGE = "mhnode0"
SUBNET = "10.237.0.0/24"
GATEWAY = "10.237.0.1"
"""The bridge's address: the node's InternalIP and the API server's listening address."""
PAUSE_IMAGE = "localhost/memory-hygiene/pause:v1"
MEMHOG_IMAGE = "localhost/memory-hygiene/memhog:v1"
IMAGE_SOURCES = HERE / "images"
"""C sources of the two test images (``pause.c``, ``memhog.c``)."""

SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "net.ipv4.ip_forward")
"""What kubelet (``protectKernelDefaults: false``) and the bridge plugin change on the host."""
RUNTIME_PATHS = ("/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/log/pods")
"""Paths containerd's shims, CNI and kubelet always use; removed on stop when they were not
there before."""
APT_PACKAGES = ("runc", "containernetworking-plugins", "busybox-static", "gcc", "libc6-dev",
                "iproute2")


class RealNodeError(RuntimeError):
    """This machine cannot run the real node, or it failed to come up."""


def _log(msg: str) -> None:
    print(f"[realnode] {msg}", file=sys.stderr, flush=True)


def _run(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


# --------------------------------------------------------------------------- what the host needs


def host_problems() -> list[str]:
    """Why this machine cannot run the real node ([] when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (kubelet, containerd and runc need root)")
    if not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() and \
            "memory" not in (Path("/sys/fs/cgroup/cgroup.controllers").read_text()
                             if Path("/sys/fs/cgroup/cgroup.controllers").exists() else ""):
        problems.append("no memory cgroup controller")
    for tool in ("runc", "ip", "gcc"):
        if not shutil.which(tool):
            problems.append(f"`{tool}` not found (apt-get install {' '.join(APT_PACKAGES)})")
    if not Path("/usr/lib/cni/bridge").exists():
        problems.append("CNI plugins not found in /usr/lib/cni (apt-get install containernetworking-plugins)")
    if not Path("/bin/busybox").exists() and not shutil.which("busybox"):
        problems.append("busybox not found (apt-get install busybox-static)")
    return problems


def install_packages() -> None:
    """``apt-get install`` what the node needs (as root on Debian), once."""
    missing = [p for p in APT_PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    _log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env,
                      capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        _run("apt-get", "install", "-y", "-q", *missing, env=env)


# --------------------------------------------------------------------------- binaries


def containerd_version() -> str:
    text = (CONTAINERD_MODULE_DIR / "go.mod").read_text()
    m = re.search(r"^\s*(?:require\s+)?github\.com/containerd/containerd/v2 (v\d+\.\d+\.\d+)", text, re.M)
    if not m:
        raise RealNodeError(f"no github.com/containerd/containerd/v2 version in {CONTAINERD_MODULE_DIR}/go.mod")
    return m.group(1)


def build_containerd(*, force: bool = False) -> dict[str, Path]:
    """containerd, its runc shim and ctr, built from ``containerd/go.mod`` (cached by version)."""
    version = containerd_version()
    out = {}
    go = lc.find_go()
    for cmd in ("containerd", "containerd-shim-runc-v2", "ctr"):
        target = lc.bin_dir() / f"containerd-{version}" / cmd
        # The shim must be found by that name on PATH: one directory per version.
        out[cmd] = lc._go_build(
            go, target, CONTAINERD_MODULE_DIR, f"github.com/containerd/containerd/v2/cmd/{cmd}",
            f"-s -w -X github.com/containerd/containerd/v2/version.Version={version}",
            f"{cmd} {version}", "about two minutes", force=force, tags="no_btrfs,no_devmapper,no_zfs")
    return out


def build_binaries(*, force: bool = False) -> dict[str, Any]:
    """Every binary and image the node needs, built or found in the cache."""
    t0 = time.monotonic()
    binaries: dict[str, Any] = {c: lc.build_kubernetes(c, force=force)
                                for c in ("kubelet", "kube-scheduler", "kube-controller-manager")}
    binaries.update(build_containerd(force=force))
    binaries["images"] = build_images(force=force)
    binaries["seconds"] = time.monotonic() - t0
    return binaries


# --------------------------------------------------------------------------- images


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_bytes(entries: list[tuple[str, bytes | str | None]]) -> bytes:
    """An uncompressed, reproducible tar: (name, bytes) a file, (name, None) a directory,
    (name, "->target") a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content[2:]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def write_oci_archive(path: Path, ref: str, layer_entries: list[tuple[str, bytes | str | None]],
                      entrypoint: list[str]) -> Path:
    """A one-layer OCI image layout in a tar (what ``ctr images import`` takes), named ``ref``
    (the ``io.containerd.image.name`` annotation)."""
    layer = _tar_bytes(layer_entries)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": _digest(manifest), "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}],
    }, sort_keys=True).encode()
    files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    files += [(f"blobs/sha256/{_digest(b)[7:]}", b) for b in (layer, config, manifest)]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(_tar_bytes(files))
    os.replace(tmp, path)
    return path


def build_images(*, force: bool = False) -> dict[str, Path]:
    """The pause and memhog images as OCI archives, cached by a hash of their sources."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    sources = sorted(IMAGE_SOURCES.glob("*.c"))
    h = hashlib.sha256()
    for src in sources:
        h.update(src.name.encode() + src.read_bytes())
    h.update(busybox.read_bytes() if busybox.exists() else b"")
    d = lc.bin_dir() / "images" / h.hexdigest()[:12]
    out = {"pause": d / "pause.tar", "memhog": d / "memhog.tar"}
    if all(p.exists() for p in out.values()) and not force:
        return out
    if not busybox.exists():
        raise RealNodeError("busybox not found (apt-get install busybox-static)")
    d.mkdir(parents=True, exist_ok=True)
    built = {}
    for src in sources:
        exe = d / src.stem
        _run("gcc", "-static", "-O2", "-Wall", "-o", str(exe), str(src))
        built[src.stem] = exe.read_bytes()
    dirs: list[tuple[str, bytes | str | None]] = [(n, None) for n in ("bin", "dev", "etc", "proc", "sys", "tmp")]
    write_oci_archive(out["pause"], PAUSE_IMAGE, [*dirs, ("pause", built["pause"])], ["/pause"])
    tools = ("sh", "sleep", "cat", "echo", "kill", "ls", "grep", "sed", "awk", "wc", "head", "true")
    write_oci_archive(out["memhog"], MEMHOG_IMAGE, [
        *dirs, ("bin/busybox", busybox.read_bytes()), ("bin/memhog", built["memhog"]),
        *((f"bin/{t}", "->busybox") for t in tools)], ["/bin/sh"])
    _log(f"images written to {d}")
    return out


# --------------------------------------------------------------------------- host state


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


class HostState:
    """What the node changes on the host, saved before and put back after."""

    def __init__(self, state_dir: Path) -> None:
        self.file = state_dir / "host-state.json"
        self.saved: dict[str, Any] = {}

    def save(self) -> None:
        self.saved = {
            "sysctls": {n: _sysctl_path(n).read_text().strip() for n in SYSCTLS if _sysctl_path(n).exists()},
            "created_paths": [p for p in RUNTIME_PATHS if not os.path.lexists(p)],
        }
        self.file.write_text(json.dumps(self.saved))

    def restore(self) -> list[str]:
        """Put back every saved value; returns what could not be restored."""
        problems = []
        for name, value in self.saved.get("sysctls", {}).items():
            try:
                if _sysctl_path(name).read_text().strip() != value:
                    _sysctl_path(name).write_text(value)
            except OSError as exc:
                problems.append(f"sysctl {name}={value}: {exc}")
        for p in self.saved.get("created_paths", []):
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        return problems


def _cgroup_hierarchies(*, unified: bool = True) -> list[Path]:
    """The cgroup hierarchies: v1 ones kubelet checks (cpu, cpuacct, cpuset, memory, pids,
    systemd, ...) and, with ``unified``, the hybrid layout's cgroup2 mount, where runc makes the
    pods' cgroups too (removed on stop; kubelet does not need ours made there)."""
    root = Path("/sys/fs/cgroup")
    return [p for p in sorted(root.iterdir())
            if p.is_dir() and not p.is_symlink() and (unified or p.name != "unified")]


def _rmdir_tree(top: Path, deadline: float) -> list[str]:
    """Remove a cgroup directory tree, leaves first (retrying while tasks die)."""
    left = []
    if not top.exists():
        return left
    dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*dirs, top]:
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    left.append(f"{d}: {exc.strerror}")
                    break
                time.sleep(0.1)
    return left


def _mounts_below(prefix: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == prefix or mnt.startswith(prefix.rstrip("/") + "/"):
            out.append(mnt)
    return sorted(set(out), key=len, reverse=True)


def _umount(path: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.umount2(path.encode(), 0) != 0:
        libc.umount2(path.encode(), 2)  # MNT_DETACH


# --------------------------------------------------------------------------- the node


class RealNode:
    """A real node: the control plane (a LocalCluster on the bridge address, with the
    ServiceAccount admission plugin on), kube-scheduler, kube-controller-manager, containerd
    and kubelet.

    >>> with RealNode() as node:                # doctest: +SKIP
    ...     node.kubectl("get", "nodes")
    """

    def __init__(self, *, cluster_binaries: dict[str, Any] | None = None,
                 work_dir: str | Path | None = None, eviction_hard: str = "100Mi",
                 images: tuple[Path, ...] = ()) -> None:
        self.cluster_binaries = cluster_binaries
        self.work_arg = Path(work_dir) if work_dir else None
        self.eviction_hard = eviction_hard
        self.extra_images = tuple(images)
        self.work: Path | None = None
        self.cluster: lc.LocalCluster | None = None
        self.binaries: dict[str, Any] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.host: HostState | None = None
        self.timings: dict[str, float] = {}
        self.kubelet_port = 0
        self.started_at: float | None = None
        """POSIX time of :meth:`start`: kernel records older than this are other clusters'."""
        self._bridge_made = False

    # ---- paths
    @property
    def state(self) -> Path:
        assert self.work is not None
        return self.work / "state"

    @property
    def logs(self) -> Path:
        assert self.work is not None
        return self.work / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:
        assert self.cluster is not None and self.cluster.kubeconfig is not None
        return self.cluster.kubeconfig

    @property
    def memory_cgroup_root(self) -> Path:
        """Where this node's pods' memory cgroups are (``.../kubepods/<qos>/pod<uid>/<id>``)."""
        return Path("/sys/fs/cgroup/memory") / CGROUP_ROOT

    def api_env(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``PORT`` for pods: the API server itself (no kube-proxy
        here routes the ``kubernetes`` Service's ClusterIP)."""
        assert self.cluster is not None and self.cluster.server
        host, port = self.cluster.server.removeprefix("https://").rsplit(":", 1)
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}

    # ---- lifecycle
    def start(self) -> "RealNode":
        problems = host_problems()
        if problems:
            raise RealNodeError("this machine cannot run the real node: " + "; ".join(problems))
        t0 = time.monotonic()
        self.started_at = time.time()
        self.binaries = build_binaries()
        self.timings["binaries"] = time.monotonic() - t0
        if self.work_arg:
            self.work = self.work_arg
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self.work = Path(tempfile.mkdtemp(prefix="memory-hygiene-realnode-"))
        for d in (self.state, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.host = HostState(self.state)
        self.host.save()
        try:
            self._make_bridge()
            t1 = time.monotonic()
            self.cluster = lc.LocalCluster(binaries=self.cluster_binaries, address=GATEWAY,
                                           disable_admission_plugins=())
            self.cluster.start()
            self.timings["control plane"] = time.monotonic() - t1
            self._make_cgroup_root()
            t1 = time.monotonic()
            self._start_containerd()
            for archive in (*self.binaries["images"].values(), *self.extra_images):
                self.import_image(archive)
            self.timings["containerd + images"] = time.monotonic() - t1
            self._start_controllers()
            self.start_kubelet()
            self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def __enter__(self) -> "RealNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.state, start_new_session=True, env=env,
                                    preexec_fn=lc._pdeathsig_preexec)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def _wait(self, what: str, check, timeout: float, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc is not None and proc.poll() is not None:
                raise RealNodeError(f"{what}: the process exited with {proc.returncode}; its log:\n"
                                    f"{lc._tail(self.logs / (what + '.log'), 40)}")
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                log = self.logs / f"{what}.log"
                raise RealNodeError(f"{what} not ready after {timeout:.0f}s"
                                    + (f"; its log:\n{lc._tail(log, 40)}" if log.exists() else ""))
            time.sleep(0.2)

    def _make_bridge(self) -> None:
        if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            raise RealNodeError(f"network link {BRIDGE} exists already: another real node is running "
                                f"(or a killed one left it: `ip link del {BRIDGE}`)")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._bridge_made = True
        _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")

    def _make_cgroup_root(self) -> None:
        # kubelet checks cgroupRoot in every hierarchy it uses; cpuset needs cpus/mems set.
        for h in _cgroup_hierarchies(unified=False):
            (h / CGROUP_ROOT).mkdir(exist_ok=True)
        cpuset = Path("/sys/fs/cgroup/cpuset")
        if cpuset.exists():
            for f in ("cpuset.cpus", "cpuset.mems"):
                (cpuset / CGROUP_ROOT / f).write_text((cpuset / f).read_text())

    def _containerd_config(self) -> str:
        s = self.state / "containerd"
        return f"""version = 3
root = "{s}/root"
state = "{s}/run"
imports = []
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{s}/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: a negative oom_score_adj cannot be set (runc create fails).
  # This clamps them to containerd's own value (0).
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{s}/runc"
        BinaryName = "{shutil.which('runc')}"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{self.state}/cni/net.d"
"""

    def _start_containerd(self) -> None:
        (self.state / "containerd").mkdir(parents=True, exist_ok=True)
        (self.state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (self.state / "containerd" / "config.toml").write_text(self._containerd_config())
        (self.state / "cni" / "net.d" / "10-memory-hygiene.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "memory-hygiene-realnode", "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "dataDir": str(self.state / "cni" / "ipam"),
                          "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "loopback"}]}))
        env = dict(os.environ, PATH=f"{self.binaries['containerd'].parent}:{os.environ.get('PATH', '')}")
        proc = self._spawn("containerd", [str(self.binaries["containerd"]), "--config",
                                          str(self.state / "containerd" / "config.toml")], env=env)
        self._wait("containerd", self.containerd_socket.exists, 30, proc)
        self._wait("containerd", lambda: self.ctr("version").returncode == 0, 30, proc)

    def ctr(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return _run(str(self.binaries["ctr"]), "--address", str(self.containerd_socket), "-n", "k8s.io",
                    *args, check=check)

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive), check=True)

    def _kubelet_config(self) -> dict[str, Any]:
        assert self.cluster is not None
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": GATEWAY, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 0,
            # The API server calls kubelet with the admin client certificate (logs, exec).
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.cluster.pki["ca_crt"])}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}", "cgroupsPerQOS": True,
            "failCgroupV1": False,  # kubelet 1.35+ refuses cgroup v1 otherwise
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "imageServiceEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.state / "pod-logs"),
            "volumePluginDir": str(self.state / "kubelet" / "volume-plugins"),
            "makeIPTablesUtilChains": False,
            "evictionHard": {"memory.available": self.eviction_hard},
            "evictionPressureTransitionPeriod": "30s",
            "nodeStatusUpdateFrequency": "5s", "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "serializeImagePulls": False,
        }

    def start_kubelet(self, eviction_hard: str | None = None) -> float:
        """Start (or restart) kubelet and wait for a fresh Ready heartbeat; returns seconds."""
        assert self.cluster is not None
        if eviction_hard is not None:
            self.eviction_hard = eviction_hard
        self.stop_kubelet()
        if not self.kubelet_port:
            self.kubelet_port = lc._free_port()
        for d in ("kubelet", "pod-logs"):
            (self.state / d).mkdir(parents=True, exist_ok=True)
        cfg = self.state / "kubelet-config.yaml"
        cfg.write_text(yaml.safe_dump(self._kubelet_config()))
        t0, wall0 = time.monotonic(), time.time()
        proc = self._spawn("kubelet", [
            str(self.binaries["kubelet"]), f"--config={cfg}", f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.state / 'kubelet'}", f"--cert-dir={self.state / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY}", "--v=2"])

        def ready() -> bool:
            node = self.get_json(f"/api/v1/nodes/{NODE_NAME}")
            cond = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            beat = lc_time(cond["lastHeartbeatTime"])
            return cond["status"] == "True" and beat >= int(wall0)
        self._wait("kubelet", ready, 120, proc)
        seconds = time.monotonic() - t0
        self.timings.setdefault("kubelet start -> node Ready", seconds)
        return seconds

    def stop_kubelet(self) -> None:
        proc = self.procs.pop("kubelet", None)
        if proc is not None:
            lc._terminate_pid(proc.pid, popen=proc, timeout=20)

    def _start_controllers(self) -> None:
        assert self.cluster is not None
        pki = self.cluster.pki
        cm = self._spawn("kube-controller-manager", [
            str(self.binaries["kube-controller-manager"]), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0", f"--root-ca-file={pki['ca_crt']}",
            f"--service-account-private-key-file={pki['sa_key']}",
            "--use-service-account-credentials=false", "--controllers=*",
            "--node-monitor-grace-period=40s", "--v=1"])
        sched = self._spawn("kube-scheduler", [
            str(self.binaries["kube-scheduler"]), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0", "--v=1"])
        time.sleep(0)  # both start in parallel with kubelet; their health shows in what follows
        for name, proc in (("kube-controller-manager", cm), ("kube-scheduler", sched)):
            if proc.poll() is not None:
                raise RealNodeError(f"{name} exited: {lc._tail(self.logs / (name + '.log'))}")

    def _wait_default_service_account(self) -> None:
        # kube-controller-manager's serviceaccount and root-ca-cert-publisher controllers: pods
        # need both (the ServiceAccount admission plugin is on, as in a real cluster).
        def ok() -> bool:
            return (self.get_json("/api/v1/namespaces/default/serviceaccounts/default") is not None
                    and self.get_json("/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is not None)
        self._wait("kube-controller-manager", ok, 60, self.procs["kube-controller-manager"])

    def get_json(self, path: str) -> Any:
        assert self.cluster is not None
        status, body = self.cluster.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise RealNodeError(f"GET {path}: {status} {body}")
        return body

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RealNodeError("kubectl not found on PATH")
        proc = subprocess.run([kubectl, "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RealNodeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def stats_summary(self) -> dict:
        """kubelet's own /stats/summary (what its eviction manager sees)."""
        assert self.cluster is not None
        status, body = self.cluster.request("GET", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary")
        if status != 200:
            raise RealNodeError(f"stats/summary: {status} {body}")
        return body

    def container_pids(self, container_id: str) -> list[int]:
        """Every process in a container's memory cgroup (found below this node's cgroup root)."""
        for d in self.memory_cgroup_root.rglob(container_id):
            if d.is_dir():
                return [int(p) for p in (d / "cgroup.procs").read_text().split()]
        return []

    def stop(self) -> list[str]:
        """Stop everything, by PID, and put the host back as it was. Returns what could not be
        undone (also logged)."""
        problems: list[str] = []
        if self.work is None:
            return problems
        if "kubelet" in self.procs and self.cluster is not None and self.cluster.is_ready():
            # kubelet stops the sandboxes itself (CNI DEL, netns, mounts) when pods go away.
            with contextlib.suppress(Exception):
                self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0",
                             "--force", "--wait=false", check=False)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if not self.ctr("task", "ls", "-q").stdout.strip():
                        break
                    time.sleep(0.5)
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                lc._terminate_pid(proc.pid, popen=proc, timeout=20)
        if "containerd" in self.procs:
            for task in self.ctr("task", "ls", "-q").stdout.split():
                self.ctr("task", "kill", "-s", "SIGKILL", task)
            deadline = time.monotonic() + 10
            while self.ctr("task", "ls", "-q").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
            for task in self.ctr("task", "ls", "-q").stdout.split():
                self.ctr("task", "rm", "-f", task)
            for c in self.ctr("containers", "ls", "-q").stdout.split():
                self.ctr("containers", "rm", c)
            # Sandboxes' network namespaces: CNI DEL happens through kubelet; anything left
            # (kubelet gone first) goes with the bridge below.
            proc = self.procs.pop("containerd")
            lc._terminate_pid(proc.pid, popen=proc, timeout=20)
        # Shims outlive containerd on purpose; ours are the ones that name our socket.
        for pid in _pids_with(str(self.containerd_socket)):
            lc._terminate_pid(pid, must_contain=str(self.containerd_socket), timeout=10)
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        for m in _mounts_below(str(self.work)):
            _umount(m)
        deadline = time.monotonic() + 20
        for h in _cgroup_hierarchies():
            problems += _rmdir_tree(h / CGROUP_ROOT, deadline)
        if self._bridge_made:
            _run("ip", "link", "del", BRIDGE, check=False)
            self._bridge_made = False
        if self.host is not None:
            problems += self.host.restore()
        left = _mounts_below(str(self.work))
        if left:
            problems.append(f"still mounted: {left}")
        else:
            shutil.rmtree(self.work, ignore_errors=True) if not self.work_arg else None
        for p in problems:
            _log(f"stop: could not undo: {p}")
        return problems


def lc_time(value: str) -> int:
    """RFC 3339 seconds (metav1.Time) to POSIX seconds."""
    import calendar
    return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))


def _pids_with(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and text in lc._pid_cmdline(int(p)):
            out.append(int(p))
    return [p for p in out if p != os.getpid()]


# --------------------------------------------------------------------------- CLI


def _serve(state_file: Path) -> int:
    """The demo's node: up until a signal, then down (scripts/demo; `kill PID` stops it)."""
    stop = {"now": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    install_packages()
    binaries = lc.ensure_binaries(install_etcd=True)
    etcd = lc.build_etcd()
    node = RealNode(cluster_binaries={**binaries, "etcd": etcd, "etcd_version": lc._binary_version(etcd)})
    node.start()
    try:
        state_file.write_text(json.dumps({"pid": os.getpid(), "kubeconfig": str(node.kubeconfig),
                                          "server": node.cluster.server if node.cluster else None,
                                          "timings": node.timings, "started_at": node.started_at,
                                          **node.api_env()}))
        _log(f"node {NODE_NAME} Ready ({', '.join(f'{k} {v:.1f}s' for k, v in node.timings.items())})")
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        problems = node.stop()
        state_file.unlink(missing_ok=True)
        _log("stopped; the host is as it was" if not problems else f"stopped; NOT undone: {problems}")
    return 0 if not problems else 1



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build/find kubelet, kube-scheduler, kube-controller-manager, "
                                     "containerd and the test images (installs apt packages as root)")
    b.add_argument("--force", action="store_true")
    sub.add_parser("check", help="say whether this machine can run the real node")
    sv = sub.add_parser("serve", help="start the node, write STATE (JSON: pid, kubeconfig, server), "
                                      "stay up until SIGTERM/SIGINT, then stop it and restore the host")
    sv.add_argument("--state-file", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(Path(args.state_file))
        if args.command == "check":
            problems = host_problems()
            print("ok" if not problems else "\n".join(problems))
            return 0 if not problems else 1
        install_packages()
        info = build_binaries(force=args.force)
        for k, v in info.items():
            print(f"{k}: {v}")
        return 0
    except (RealNodeError, lc.LocalClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
