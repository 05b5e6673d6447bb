"""A real kernel OOM kill, in a memory cgroup laid out the way kubelet lays out a container.

:func:`real_oom_kill` needs root and a memory cgroup controller (cgroup v1 ``memory``
hierarchy, or cgroup v2 with ``memory`` in the root's ``cgroup.controllers``). It:

1. creates ``kubepods[/<qos>]/pod<uid>/<container id>`` (kubelet's cgroupfs driver layout,
   ``pkg/kubelet/cm``: Guaranteed pods have no QoS level) under the memory hierarchy; on v2 it
   enables ``+memory`` in ``cgroup.subtree_control`` on the way down;
2. limits the leaf (v1 ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``; v2
   ``memory.max``, ``memory.swap.max=0`` and ``memory.oom.group=0``, so only one process dies,
   as on cgroup v1 nodes or with kubelet's ``singleProcessOOMKill``);
3. starts a parent process (``oom_score_adj`` -1000 if allowed), moves it into the leaf,
   opens ``/dev/kmsg`` and seeks to its end, then lets the parent fork a child (``oom_score_adj``
   set the way kubelet sets it for the QoS class) that allocates past the limit. Lowering
   ``oom_score_adj`` below its inherited floor needs ``CAP_SYS_RESOURCE``, which root in a
   sandbox may lack: then the parent keeps its value and a Guaranteed child keeps its
   parent's (the child is picked all the same: it holds far more memory);
4. reads the new kernel records until the ``oom-kill:`` and ``Killed process`` lines for the
   child are there, checks that the child died of SIGKILL and that the parent still runs;
5. stops the parent and removes the cgroups it created, leaf first.

Run it by hand to (re)capture the kernel's lines as unit-test data::

    sudo .venv/bin/python devcluster/sim/kernel_oom.py --save tests/unit/data/kernel
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

__all__ = ["RealOOM", "RealOOMError", "memory_cgroup", "real_oom_kill"]

CHILD_COMM = "mh (oom) child"
"""The victim's comm: spaces and parentheses on purpose (at most 15 bytes, TASK_COMM_LEN)."""
PARENT_COMM = "mh-oom-parent"

# kubelet pkg/kubelet/qos/policy.go: Guaranteed -997, BestEffort 1000, Burstable
# 1000 - 1000*request/capacity clamped to [3, 999]; 999 is a Burstable container that
# requests (almost) no memory.
QOS_OOM_SCORE_ADJ = {"guaranteed": -997, "burstable": 999, "besteffort": 1000}

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CID_RE = re.compile(r"[0-9a-f]{64}")


class RealOOMError(RuntimeError):
    """The machine cannot, or did not, produce the OOM kill."""


class RealOOM(NamedTuple):
    lines: tuple[str, ...]
    """Every kernel record logged from arming to the kill: the text after the kmsg header
    (``<prio>,<seq>,<usec>,<flags>;``), first line of each record."""
    killed_pid: int
    parent_pid: int
    cgroup_path: str
    """The leaf as the kernel names it in ``task_memcg=``: ``/kubepods/<qos>/pod<uid>/<id>``."""
    cgroup_version: int
    kernel: str
    """``uname -r``."""
    child_comm: str
    child_oom_score_adj: int
    """As read back in the child: kubelet's value for the QoS class, unless lowering it was
    not permitted (no ``CAP_SYS_RESOURCE``)."""
    oom_kill_count: int
    """The leaf's ``oom_kill`` counter (v1 ``memory.oom_control``, v2 ``memory.events``)."""


# ---------------------------------------------------------------------------------------------
# memory cgroup discovery
# ---------------------------------------------------------------------------------------------

def memory_cgroup(mountinfo_path: str | Path = "/proc/self/mountinfo") -> tuple[int, Path, str]:
    """``(version, mount point, kernel path of the mount's root)`` of the memory controller.

    cgroup v1 wins when its ``memory`` hierarchy is mounted (a controller lives in one
    hierarchy only, so a hybrid host's cgroup2 mount then has no memory controller).
    """
    v1: tuple[Path, str] | None = None
    v2: tuple[Path, str] | None = None
    try:
        mountinfo = Path(mountinfo_path).read_text().splitlines()
    except OSError as exc:
        raise RealOOMError(f"cannot read {mountinfo_path}: {exc}") from exc
    for line in mountinfo:
        # id parent major:minor root mountpoint options [optional...] - fstype source superopts
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, mountpoint = _unescape(fields[3]), Path(_unescape(fields[4]))
        fstype, superopts = rfields[0], rfields[2].split(",")
        if fstype == "cgroup" and "memory" in superopts and v1 is None:
            v1 = (mountpoint, root)
        elif fstype == "cgroup2" and v2 is None:
            try:
                controllers = (mountpoint / "cgroup.controllers").read_text().split()
            except OSError:
                continue
            if "memory" in controllers:
                v2 = (mountpoint, root)
    if v1 is not None:
        return 1, v1[0], _kernel_root(v1[1])
    if v2 is not None:
        return 2, v2[0], _kernel_root(v2[1])
    raise RealOOMError(
        "no memory cgroup controller on this machine: neither a cgroup v1 'memory' hierarchy "
        f"nor a cgroup2 mount whose cgroup.controllers lists 'memory' is in {mountinfo_path}"
    )


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _kernel_root(root: str) -> str:
    # The kernel prints cgroup paths from the hierarchy's real root; a mount of a subtree
    # (or a cgroup namespace) shows that subtree in mountinfo's root field.
    return "" if root in ("/", "") or ".." in root else root.rstrip("/")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

_PARENT_CODE = r"""
import json, os, sys
def put(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def write(path, value):
    with open(path, "w") as f:
        f.write(value)
limit, adj, child_comm, parent_comm = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def adjust(value):
    # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which even root may lack (sandboxes).
    try:
        write("/proc/self/oom_score_adj", value)
    except PermissionError:
        pass
    with open("/proc/self/oom_score_adj") as f:
        return int(f.read())
write("/proc/self/comm", parent_comm)
put({"ready": os.getpid(), "adj": adjust("-1000")})
if sys.stdin.readline().strip() != "go":
    sys.exit(2)
pid = os.fork()
if pid == 0:
    try:
        write("/proc/self/comm", child_comm)
        put({"child_adj": adjust(adj)})
        hold, chunk = [], 1 << 20
        while len(hold) * chunk < 4 * limit:
            hold.append(b"\x5a" * chunk)  # filled, so every page is really charged
        os._exit(3)  # never OOM-killed
    except BaseException:
        os._exit(4)
put({"child": pid})
_, status = os.waitpid(pid, 0)
put({"status": status})
sys.stdin.readline()  # stay alive until told to go
"""


class _Lines:
    """Line reader over a pipe with deadlines (no fixed sleeps)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

        self.got: dict = {}

    def drain(self) -> None:
        """Parse every complete line received so far into ``got``."""
        while True:
            line, nl, rest = self.buf.partition(b"\n")
            if not nl:
                return
            self.buf = rest
            self.got.update(json.loads(line))

    def feed(self) -> None:
        data = os.read(self.fd, 65536)
        if not data:
            self.eof = True
        self.buf += data

    def wait_for(self, key: str, deadline: float, what: str):
        while True:
            self.drain()
            if key in self.got:
                return self.got[key]
            if self.eof:
                raise RealOOMError(f"helper process exited while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RealOOMError(f"timed out waiting for {what}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                self.feed()


def _kmsg_records(fd: int) -> list[str]:
    """Every record readable now from a non-blocking /dev/kmsg fd (one record per read)."""
    out = []
    while True:
        try:
            raw = os.read(fd, 16384)
        except BlockingIOError:
            return out
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # older records were overwritten: keep going
                continue
            raise
        if not raw:
            return out
        # "<prio>,<seq>,<usec>,<flags>[,...];<message>\n[ KEY=value\n...]"
        header, _, rest = raw.partition(b";")
        if not re.fullmatch(rb"\d+,\d+,\d+,[^;]*", header):
            rest = raw
        out.append(rest.split(b"\n", 1)[0].decode("utf-8", "replace"))


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return -1


def _rmdir(path: Path, deadline: float) -> None:
    """Remove a cgroup we created; a just-emptied cgroup can be busy for a moment."""
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            if any(p.is_dir() for p in path.iterdir()):
                return  # someone else's cgroup lives below it now: leave it to them
            if time.monotonic() >= deadline:
                raise RealOOMError(f"cannot remove cgroup {path}: {exc}") from exc
            select.select([], [], [], 0.02)


# ---------------------------------------------------------------------------------------------
# the kill
# ---------------------------------------------------------------------------------------------

def real_oom_kill(pod_uid: str, container_id: str, qos: str = "burstable",
                  limit_bytes: int = 64 << 20, timeout: float = 30) -> RealOOM:
    """Make the kernel OOM-kill a process in ``kubepods/<qos>/pod<pod_uid>/<container_id>``.

    Raises :class:`RealOOMError` (with the reason) when not root, when the machine has no
    memory cgroup controller, or when the kill does not happen as expected within
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    qos = qos.lower()
    if qos not in QOS_OOM_SCORE_ADJ:
        raise ValueError(f"qos must be one of {sorted(QOS_OOM_SCORE_ADJ)}, not {qos!r}")
    if not _UUID_RE.fullmatch(pod_uid):
        raise ValueError(f"pod_uid must be a lowercase dashed UUID, not {pod_uid!r}")
    if not _CID_RE.fullmatch(container_id):
        raise ValueError(f"container_id must be 64 lowercase hex digits, not {container_id!r}")
    if os.geteuid() != 0:
        raise RealOOMError(
            f"a real OOM kill needs root (to create memory cgroups and read /dev/kmsg); "
            f"running as euid {os.geteuid()}"
        )
    version, mount, kroot = memory_cgroup()
    parts = ["kubepods"] + ([] if qos == "guaranteed" else [qos]) + [f"pod{pod_uid}", container_id]
    leaf = mount.joinpath(*parts)
    cgroup_path = kroot + "/" + "/".join(parts)
    child_adj = QOS_OOM_SCORE_ADJ[qos]

    created: list[Path] = []
    result: RealOOM | None = None
    proc: subprocess.Popen | None = None
    kmsg = -1
    try:
        for i in range(len(parts)):
            if version == 2:
                parent = mount.joinpath(*parts[:i])
                control = parent / "cgroup.subtree_control"
                if "memory" not in control.read_text().split():
                    _write(control, "+memory")
            level = mount.joinpath(*parts[: i + 1])
            try:
                level.mkdir()
                created.append(level)
            except FileExistsError:
                if i == len(parts) - 1:
                    raise RealOOMError(f"cgroup {level} already exists: use a fresh container id")
        if version == 1:
            _write(leaf / "memory.limit_in_bytes", str(limit_bytes))
            if (leaf / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                _write(leaf / "memory.memsw.limit_in_bytes", str(limit_bytes))
        else:
            _write(leaf / "memory.max", str(limit_bytes))
            if (leaf / "memory.swap.max").exists():
                _write(leaf / "memory.swap.max", "0")
            if (leaf / "memory.oom.group").exists():
                _write(leaf / "memory.oom.group", "0")

        proc = subprocess.Popen(
            [sys.executable, "-c", _PARENT_CODE, str(limit_bytes), str(child_adj),
             CHILD_COMM, PARENT_COMM],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )
        assert proc.stdout is not None and proc.stdin is not None
        out = _Lines(proc.stdout.fileno())
        out.wait_for("ready", deadline, "the helper parent to start")
        _write(leaf / "cgroup.procs", str(proc.pid))
        in_cgroup = Path(f"/proc/{proc.pid}/cgroup").read_text()
        if not any(line.endswith(":" + cgroup_path) for line in in_cgroup.splitlines()):
            raise RealOOMError(f"parent {proc.pid} did not land in {cgroup_path}: {in_cgroup!r}")

        kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(kmsg, 0, os.SEEK_END)  # only records logged from now on
        proc.stdin.write(b"go\n")
        child = int(out.wait_for("child", deadline, "the child's pid"))
        child_adj = int(out.wait_for("child_adj", deadline, "the child's oom_score_adj"))

        lines: list[str] = []
        killed_re = re.compile(rf"Killed process {child} \(")
        summary_re = re.compile(rf"oom-kill:.*,pid={child},uid=\d+")
        status: int | None = None
        while True:
            lines.extend(_kmsg_records(kmsg))
            have_killed = any(killed_re.search(line) for line in lines)
            have_summary = any(summary_re.search(line) for line in lines)
            out.drain()
            if status is None and "status" in out.got:
                status = int(out.got["status"])
                if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                    raise RealOOMError(
                        f"child {child} was not OOM-killed: wait status {status:#x} "
                        f"(exit 3 = allocated 4x the limit untouched); kernel said: {lines[-20:]}"
                    )
            if have_killed and have_summary and status is not None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise RealOOMError(
                    f"timed out after {timeout}s: child {child} killed line seen={have_killed}, "
                    f"oom-kill: line seen={have_summary} (dump_header is ratelimited: other "
                    f"OOMs at the same moment can suppress it), child exit status={status}; "
                    f"last kernel lines: {lines[-20:]}"
                )
            if out.eof and status is None:
                raise RealOOMError("helper parent exited before reporting the child's fate")
            select.select([kmsg, out.fd], [], [], min(left, 1.0))
            if select.select([out.fd], [], [], 0)[0]:
                out.feed()

        if proc.poll() is not None:
            raise RealOOMError(f"parent {proc.pid} died too (exit {proc.returncode})")
        counter = (leaf / "memory.oom_control", "oom_kill") if version == 1 else \
            (leaf / "memory.events", "oom_kill")
        result = RealOOM(
            lines=tuple(lines), killed_pid=child, parent_pid=proc.pid, cgroup_path=cgroup_path,
            cgroup_version=version, kernel=os.uname().release, child_comm=CHILD_COMM,
            child_oom_score_adj=child_adj, oom_kill_count=_counter(*counter),
        )
    finally:
        if kmsg >= 0:
            os.close(kmsg)
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()  # parent's readline() returns: it exits
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        cleanup_deadline = max(deadline, time.monotonic() + 5)
        errors = []
        for level in reversed(created):
            try:
                _rmdir(level, cleanup_deadline)
            except (OSError, RealOOMError) as exc:
                errors.append(str(exc))
        if errors and result is not None:  # don't mask the error already on its way out
            raise RealOOMError("; ".join(errors))
    return result


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", type=Path, help="directory to write real-<kernel>-cgroupv<N>.txt")
    ap.add_argument("--qos", default="burstable")
    args = ap.parse_args(argv)
    result = real_oom_kill(str(uuid.uuid4()), os.urandom(32).hex(), qos=args.qos)
    text = "".join(line + "\n" for line in result.lines)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        path = args.save / f"real-{result.kernel}-cgroupv{result.cgroup_version}.txt"
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({k: v for k, v in result._asdict().items() if k != "lines"}, indent=1))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
