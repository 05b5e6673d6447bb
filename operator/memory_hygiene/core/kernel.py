"""Kernel OOM-kill text -> plain data.

Pure: no I/O. :func:`parse_oom_text` reads an Event message (node-problem-detector's
``OOMKilling``, kubelet's ``SystemOOM``, or anything else using those reasons) or a chunk of
kernel log (``/dev/kmsg`` records, ``dmesg``, ``journalctl -k``, syslog) and returns one
:class:`OOMKill` per killed process. :func:`parse_memcg_path` turns a memory cgroup path
printed by the kernel into the pod UID and container ID kubelet and the runtime encoded in it.

Formats handled, with where they come from (read upstream before changing a pattern):

* ``mm/oom_kill.c`` ``__oom_kill_process()`` (5.x and later)::

      <message>: Killed process <pid> (<comm>) total-vm:<n>kB, anon-rss:<n>kB, file-rss:<n>kB,
      shmem-rss:<n>kB, UID:<uid> pgtables:<n>kB oom_score_adj:<adj>

  where ``<message>`` is ``"Memory cgroup out of memory"`` (``mem_cgroup_out_of_memory``),
  ``"Out of memory"`` or ``"Out of memory (oom_kill_allocating_task)"`` (``out_of_memory``).
  Older kernels print the same line without the ``<message>:`` prefix and without the
  ``UID``/``pgtables``/``oom_score_adj`` fields (4.x: up to ``shmem-rss``; 3.x upstream: up to
  ``file-rss``), RHEL/CentOS 7's 3.10 prints ``Killed process <pid> (<comm>), UID <uid>,
  total-vm:...`` and RHEL 6's 2.6.32 ``vsz:`` instead of ``total-vm:``.
* ``mm/oom_kill.c`` before 5.0: ``<message>: Kill process <pid> (<comm>) score <n> or sacrifice
  child`` announces the selected task; the next ``Killed process`` line names who really died
  (the task itself, or one of its children "sacrificed" in its place). ``Kill process <pid>
  (<comm>) sharing same memory`` lines that follow are further kills (same ``mm``).
* ``mm/oom_kill.c`` ``dump_oom_summary()``/``dump_oom_victim()`` (4.19 and later), one line
  per kill, built with ``pr_cont`` (so it can come out split when CPUs interleave printk)::

      oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
      oom_memcg=/kubepods/...,task_memcg=/kubepods/...,task=<comm>,pid=<pid>,uid=<uid>

  ``,oom_memcg=<path>`` or ``,global_oom`` and ``,task_memcg=<path>`` come from
  ``mm/memcontrol.c`` ``mem_cgroup_print_oom_context()`` (4.19: not yet in the line).
* ``mm/memcontrol.c`` ``mem_cgroup_print_oom_info()`` before 4.19: ``Task in <task memcg>
  killed as a result of limit of <oom memcg>`` (or ``Memory limit reached of cgroup <oom
  memcg>``), printed in the report header, before the ``Kill process`` line, memcg OOMs only.
* ``mm/memcontrol.c`` ``mem_cgroup_print_oom_group()``: ``Tasks in <cgroup> are going to be
  killed due to memory.oom.group set``, followed by one ``Killed process`` line per member.
* ``invoked oom-killer:`` (``dump_header()``) starts a report.
* kubelet ``pkg/kubelet/oom/oom_watcher_linux.go``: Node event ``SystemOOM`` with message
  ``System OOM encountered, victim process: <name>, pid: <pid>`` (just ``System OOM
  encountered`` when cadvisor's ``utils/oomparser`` found no victim); posted only when
  cadvisor saw the victim's cgroup as ``/``, i.e. a node-level (global) OOM.

node-problem-detector (``config/kernel-monitor.json``, rule ``OOMKilling``) matches ``Killed
process \\d+ (.+) total-vm:\\d+kB, anon-rss:\\d+kB, file-rss:\\d+kB.*`` and posts the whole
matching kmsg line(s) as the event message (``pkg/systemlogmonitor``: ``generateMessage``
joins the matched log lines with newlines): so a 5.x message starts with ``Memory cgroup out
of memory:`` (seed 004), a 4.x one with ``Killed process``, and it never carries the
``oom-kill:`` line. Kernel lines are accepted with or without any prefix in front of them
(``/dev/kmsg`` ``6,1234,5678,-;``, ``dmesg`` ``[12345.678]``, syslog ``... kernel:``): the
patterns are searched for anywhere in a line.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Scope = Literal["memcg", "global", "system"]

__all__ = ["OOMKill", "Scope", "canonical_memcg", "clean_text", "parse_memcg_path", "parse_oom_text",
           "parse_oom_text_capped"]


class OOMKill(NamedTuple):
    """One process the kernel killed (or kubelet reported killed) for lack of memory."""

    pid: int
    """The victim's pid (host pid namespace). 0 only for kubelet's bare ``System OOM
    encountered`` message, which names no victim."""
    process: str
    """The victim's kernel ``comm``: at most 15 bytes, may contain spaces and parentheses
    ("" when unknown)."""
    scope: Scope
    """"memcg": a memory cgroup hit its limit (``Memory cgroup out of memory``,
    ``CONSTRAINT_MEMCG``); "global": the node ran out (``Out of memory``,
    ``CONSTRAINT_NONE``/``CPUSET``/``MEMORY_POLICY``); "system": kubelet's ``SystemOOM`` event.
    A bare ``Killed process`` line (pre-5.0 kernels, where the prefix was on the preceding
    ``Kill process`` line) with nothing else to go on is taken as "memcg", by far the common
    case on a Kubernetes node; kubelet's SystemOOM event is the authority for node-level OOMs."""
    oom_score_adj: int | None
    anon_rss_bytes: int | None
    total_vm_bytes: int | None
    uid: int | None
    task_memcg: str | None
    """Memory cgroup of the victim, as the kernel printed it."""
    oom_memcg: str | None
    """Memory cgroup whose limit was hit (None for a global OOM or when not printed)."""
    pod_uid: str | None
    """Pod UID from the victim's cgroup (:func:`parse_memcg_path`)."""
    container_id: str | None
    """Container ID (no ``containerd://`` scheme) from the victim's cgroup."""
    bad_memcg: str | None = None
    """A memcg path the text gave that is not canonical (``..``, ``.``, empty segments, not
    absolute): the kernel never prints one (``cgroup_path()``), so it is refused, not normalized,
    and nothing is attributed from it. ``task_memcg``/``oom_memcg`` are then None."""


# Terminal escape sequences (ECMA-48 CSI and OSC, and two-character ESC sequences) go whole;
# then every character Python does not call printable: controls (C0, DEL, C1), format
# characters (zero-width, bidi overrides and isolates, which reorder what a terminal shows:
# CVE-2021-42574), line and paragraph separators, surrogates, unassigned code points. A kernel
# comm may hold any byte but NUL (prctl(PR_SET_NAME)); /dev/kmsg escapes them as \\xNN, other
# log paths may not.
_ESCAPE_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_])")


def clean_text(text: str) -> str:
    """``text`` without terminal escape sequences or anything unprintable (a space stays): what
    is copied out of kernel text (process names, cgroup paths) into status and Events."""
    if text.isprintable():
        return text
    return "".join(ch for ch in _ESCAPE_RE.sub("", text) if ch.isprintable())


def canonical_memcg(path: str) -> bool:
    """A cgroup path as the kernel prints it (``cgroup_path()``): absolute, no empty, ``.`` or
    ``..`` segment (a trailing ``/`` is let pass), nothing unprintable. Anything else was not
    printed by a kernel and is refused, never normalized: ``/kubepods/podA/../podB`` must not
    be read as pod B's cgroup."""
    if not isinstance(path, str) or not path.startswith("/") or not path.isprintable():
        return False
    inner = path[1:-1] if path.endswith("/") else path[1:]
    return inner == "" or all(seg not in ("", ".", "..") for seg in inner.split("/"))


def _compile(pattern: str) -> re.Pattern[str]:
    # ASCII: \d must not match other scripts' digits (int() takes some of them, not all).
    return re.compile(pattern, re.ASCII)


# --------------------------------------------------------------------------------------------
# cgroup paths
# --------------------------------------------------------------------------------------------

_HEX = "0-9a-fA-F"
# Kubernetes pod UIDs are RFC 4122 UUIDs; static pods use the 32-hex md5 of their manifest
# (kubelet pkg/kubelet/config/common.go), and kubelet names the pod cgroup "pod" + UID
# (pkg/kubelet/cm: GetPodCgroupNameSuffix).
_UUID_RE = _compile(rf"[{_HEX}]{{8}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{12}}")
_HASH_UID_RE = _compile(rf"[{_HEX}]{{32}}")
# cgroupfs driver: "pod<uid>". systemd driver (pkg/kubelet/cm/cgroup_manager_linux.go
# ToSystemd + escapeSystemdCgroupName): every level joined with "-", "-" inside a level
# escaped to "_", expanded as slices: "kubepods-burstable-pod<uid with _>.slice",
# "kubepods-pod<uid>.slice" (Guaranteed), "kubelet-kubepods-...-pod<uid>.slice" (kind, which
# runs kubelet with cgroupRoot /kubelet).
_POD_CGROUPFS_RE = _compile(rf"pod(?P<uid>[{_HEX}-]{{32,36}})")
_POD_SYSTEMD_RE = _compile(rf"(?P<parents>[\w.-]+-)?pod(?P<uid>[{_HEX}_]{{32,36}})\.slice")
# Container leaf under the pod cgroup: cgroupfs "<64 hex>" (containerd, dockershim) or
# "crio-<64 hex>" (CRI-O), systemd "<prefix>-<64 hex>.scope" with prefix "cri-containerd"
# (pkg/kubelet/cm SystemdPathPrefixOfRuntime), "crio" or "docker" (cri-dockerd).
# "crio-conmon-<id>" is CRI-O's monitor process, not the container.
_CID_RE = _compile(r"(?:(?P<runtime>[a-z][a-z0-9-]*?)-)?(?P<id>[0-9a-fA-F]{64})(?:\.scope)?")


def _is_kubepods(segment: str) -> bool:
    if segment == "kubepods":
        return True
    if segment.endswith(".slice"):
        return "kubepods" in segment[: -len(".slice")].split("-")
    return False


def _pod_uid(segment: str, under_kubepods: bool) -> str | None:
    m = _POD_CGROUPFS_RE.fullmatch(segment)
    if m:
        if not under_kubepods:
            return None
        uid = m.group("uid")
    else:
        m = _POD_SYSTEMD_RE.fullmatch(segment)
        # A systemd slice name spells out its ancestors: "kubepods-burstable-pod<uid>.slice".
        if not m or "kubepods" not in (m.group("parents") or "").split("-"):
            return None
        uid = m.group("uid").replace("_", "-")
    if _UUID_RE.fullmatch(uid) or _HASH_UID_RE.fullmatch(uid):
        return uid.lower()
    return None


def _container_id(segment: str) -> str | None:
    m = _CID_RE.fullmatch(segment)
    if not m:
        return None
    runtime = m.group("runtime")
    if runtime is not None and runtime.endswith("conmon"):
        return None
    if segment.endswith(".scope") and runtime is None:
        return None
    return m.group("id").lower()


def parse_memcg_path(path: str) -> tuple[str | None, str | None]:
    """``(pod_uid, container_id)`` encoded in a memory cgroup path, ``(None, None)`` outside
    ``kubepods``.

    The pod UID comes back in the form the API server shows (``metadata.uid``: lowercase,
    dashed; a static pod's 32-hex config hash stays as it is). The container ID is the
    runtime's 64-hex id, None for a pod-level cgroup. Anything before the ``kubepods`` level
    (``/kubelet.slice/...`` on kind, the kind node's own container cgroup on the host, a
    ``--cgroup-root``) and anything below the container level (a cgroup the container made
    for itself) is ignored. A path that is not canonical (:func:`canonical_memcg`) names nothing.
    """
    if not isinstance(path, str):
        return None, None
    path = path.strip()
    if not canonical_memcg(path):
        return None, None
    segments = [s for s in path.split("/") if s]
    under_kubepods = False
    for i, segment in enumerate(segments):
        if segment.count(":") == 2:
            # runc's systemd cgroupsPath "<slice>:<prefix>:<id>" (what kubelet's systemd driver
            # makes containerd pass) taken literally as a directory name by a runtime using
            # the cgroupfs driver, under the runtime's own cgroup:
            # /system.slice/containerd.service/kubepods-burstable-pod<uid>.slice:cri-containerd:<id>
            slice_, prefix, cid = segment.split(":")
            uid = _pod_uid(slice_, under_kubepods)
            if uid is not None:
                return uid, _container_id(f"{prefix}-{cid}" if prefix else cid)
        uid = _pod_uid(segment, under_kubepods)
        if uid is not None:
            cid = _container_id(segments[i + 1]) if i + 1 < len(segments) else None
            return uid, cid
        under_kubepods = under_kubepods or _is_kubepods(segment)
    return None, None


# --------------------------------------------------------------------------------------------
# OOM text
# --------------------------------------------------------------------------------------------

# mm/oom_kill.c: the "message" argument of oom_kill_process().
_PREFIX = (
    r"(?:(?P<prefix>Memory cgroup out of memory|Out of memory(?: \([a-z_ ]{1,40}\))?): )?"
)
# What may follow the ")" closing the comm on a Killed line; lets a comm hold ") ".
_KILLED_TAIL = r"(?=,? UID[ :]\d|,? total-vm:|,? vsz:|,? anon-rss:|\s*$)"
_KILLED_RE = _compile(_PREFIX + r"Killed process (?P<pid>\d+) \((?P<comm>.*?)\)" + _KILLED_TAIL)
# Truncated line ("... (comm) total-v"): the first ")" followed by a separator ends the comm.
_KILLED_LOOSE_RE = _compile(
    _PREFIX + r"Killed process (?P<pid>\d+) \((?P<comm>.*?)\)(?=[\s,;]|$)"
)
# "Kill process N (comm) score S or sacrifice child" (2.6.32: "kill process ... or a child").
_KILL_RE = _compile(
    _PREFIX
    + r"[Kk]ill process (?P<pid>\d+) \((?P<comm>.*?)\)"
    + r"(?P<rest> score \d|(?P<sharing> sharing same memory)|\s*$)"
)
_SUMMARY_RE = _compile(r"oom-kill:constraint=(?P<constraint>[A-Z_]*)")
_SUMMARY_TASK_RE = _compile(r",task=(?P<comm>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)")
# Searched in the text between "constraint=" and ",task=".
_SUMMARY_OOM_MEMCG_RE = _compile(r",oom_memcg=(?P<path>.*?)(?=,task_memcg=|$)")
_SUMMARY_TASK_MEMCG_RE = _compile(r",task_memcg=(?P<path>.*)$")
_SUMMARY_GLOBAL_RE = _compile(r",global_oom(?=,|\s*$)")
_TASK_IN_RE = _compile(r"Task in (?P<task>/\S*) killed as a result of limit of (?P<oom>/\S*)")
_LIMIT_REACHED_RE = _compile(r"Memory limit reached of cgroup (?P<oom>/\S*)")
_GROUP_RE = _compile(
    r"Tasks in (?P<group>/\S*) are going to be killed due to memory\.oom\.group set"
)
_HEADER_RE = _compile(r"invoked oom-killer:")
_SYSTEM_RE = _compile(
    r"System OOM encountered(?:, victim process: (?P<comm>.*), pid: (?P<pid>\d+))?"
)
_TOTAL_VM_RE = _compile(r"(?:total-vm|vsz):(\d+)kB")
_ANON_RSS_RE = _compile(r"anon-rss:(\d+)kB")
_UID_RE = _compile(r"UID[: ](\d+)")
_ADJ_RE = _compile(r"oom_score_adj:(-?\d+)")

# Cheap pre-filter: a line without any of these cannot match any pattern above.
_KEYWORDS = ("process", "oom", "Task", "Memory limit reached", "System OOM")
# Kernel records are at most ~1 KiB; longer lines are not kernel lines, and capping them
# keeps every search linear-ish whatever the input.
_MAX_LINE = 4096
# Fields are unsigned longs in kB; pids are at most 4194304 (PID_MAX_LIMIT). More digits than
# this is garbage (and int() refuses strings over 4300 digits).
_MAX_DIGITS = 20

_CONSTRAINT_SCOPE: dict[str, Scope] = {
    "CONSTRAINT_MEMCG": "memcg",
    "CONSTRAINT_NONE": "global",
    "CONSTRAINT_CPUSET": "global",
    "CONSTRAINT_MEMORY_POLICY": "global",
}

# How sure a piece of evidence is about the scope / the memcg paths.
_DEFAULT, _INHERITED, _SYSTEM, _PREFIXED, _OWN = 0, 1, 2, 3, 4


def _int(digits: str | None) -> int | None:
    if digits is None:
        return None
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("-")
    if not digits or len(digits) > _MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return sign * int(digits)


def _kb(match: re.Match[str] | None) -> int | None:
    value = _int(match.group(1)) if match else None
    return None if value is None else value * 1024


def _prefix_scope(prefix: str | None) -> Scope | None:
    if prefix is None:
        return None
    return "memcg" if prefix.startswith("Memory cgroup") else "global"


class _Kill:
    """A kill being assembled from the lines that mention its pid."""

    __slots__ = (
        "pid", "process", "scope", "scope_rank", "adj", "anon", "vm", "uid",
        "task_memcg", "oom_memcg", "memcg_rank", "announced_only",
    )

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.process = ""
        self.scope: Scope = "memcg"
        self.scope_rank = _DEFAULT
        self.adj: int | None = None
        self.anon: int | None = None
        self.vm: int | None = None
        self.uid: int | None = None
        self.task_memcg: str | None = None
        self.oom_memcg: str | None = None
        self.memcg_rank = _DEFAULT
        self.announced_only = True

    def set_scope(self, scope: Scope | None, rank: int) -> None:
        if scope is not None and rank > self.scope_rank:
            self.scope, self.scope_rank = scope, rank

    def set_memcgs(self, task: str | None, oom: str | None, rank: int) -> None:
        if task is None and oom is None:
            return
        if rank > self.memcg_rank:
            self.task_memcg = task if task is not None else self.task_memcg
            self.oom_memcg = oom if oom is not None else self.oom_memcg
            self.memcg_rank = rank
        elif rank == self.memcg_rank:
            self.task_memcg = self.task_memcg or task
            self.oom_memcg = self.oom_memcg or oom

    def fill(self, *, process: str | None = None, adj: int | None = None,
             anon: int | None = None, vm: int | None = None, uid: int | None = None) -> None:
        if process and not self.process:
            self.process = process
        self.adj = self.adj if self.adj is not None else adj
        self.anon = self.anon if self.anon is not None else anon
        self.vm = self.vm if self.vm is not None else vm
        self.uid = self.uid if self.uid is not None else uid

    def result(self) -> OOMKill:
        task_memcg, oom_memcg = (_strip(self.task_memcg), _strip(self.oom_memcg))
        bad = next((p for p in (task_memcg, oom_memcg) if p is not None and not canonical_memcg(p)), None)
        if bad is not None:  # one forged path discredits both: nothing is attributed from them
            task_memcg = oom_memcg = None
            bad = clean_text(bad)[:256]
        pod_uid, container_id = parse_memcg_path(task_memcg) if task_memcg else (None, None)
        if pod_uid is None and self.scope == "memcg" and oom_memcg:
            # A memcg OOM only ever picks a victim inside the OOMing cgroup's subtree
            # (mem_cgroup_out_of_memory -> mem_cgroup_scan_tasks), so a pod or container
            # named by oom_memcg holds the victim.
            pod_uid, container_id = parse_memcg_path(oom_memcg)
        return OOMKill(
            pid=self.pid, process=clean_text(self.process), scope=self.scope, oom_score_adj=self.adj,
            anon_rss_bytes=self.anon, total_vm_bytes=self.vm, uid=self.uid,
            task_memcg=task_memcg, oom_memcg=oom_memcg,
            pod_uid=pod_uid, container_id=container_id, bad_memcg=bad,
        )


def _strip(path: str | None) -> str | None:
    return path.strip() if path is not None else None


class _Context:
    """What the current OOM report said that applies to kills whose own lines do not say it.

    kind: "none"; "legacy" (a ``Task in``/``Memory limit reached`` header: applies to the
    announced victim, the child killed in its place and the ``sharing same memory`` kills of
    that one report); "summary" (an ``oom-kill:`` line: applies to its own pid only);
    "group" (``memory.oom.group``: applies to every ``Killed process`` line that follows, up
    to the next report). The report header (``dump_header()``, which prints the ``oom-kill:``
    line) is ratelimited while the kill lines are not: a header-less kill right after a
    group kill in the same chunk of text would be taken for one more group member.
    """

    __slots__ = ("kind", "scope", "task_memcg", "oom_memcg", "killed_seen")

    def __init__(self, kind: str = "none", scope: Scope | None = None,
                 task_memcg: str | None = None, oom_memcg: str | None = None) -> None:
        self.kind = kind
        self.scope = scope
        self.task_memcg = task_memcg
        self.oom_memcg = oom_memcg
        self.killed_seen = False

    def apply(self, kill: _Kill) -> None:
        if self.kind in ("legacy", "group"):
            kill.set_memcgs(self.task_memcg, self.oom_memcg, _INHERITED)
            kill.set_scope(self.scope, _INHERITED)


class _Parser:
    def __init__(self) -> None:
        self.kills: list[_Kill] = []
        self.by_pid: dict[int, _Kill] = {}
        self.ctx = _Context()
        self.announced: _Kill | None = None
        self.pending_constraint: str | None = None
        self.last_scope: Scope | None = None

    def kill(self, pid: int) -> _Kill:
        found = self.by_pid.get(pid)
        if found is None:
            found = _Kill(pid)
            self.kills.append(found)
            if pid:
                self.by_pid[pid] = found
        return found

    def drop(self, kill: _Kill) -> None:
        self.kills.remove(kill)
        if self.by_pid.get(kill.pid) is kill:
            del self.by_pid[kill.pid]

    def line(self, line: str) -> None:
        if len(line) > _MAX_LINE:
            line = line[:_MAX_LINE]
        if not any(k in line for k in _KEYWORDS):
            return
        if _HEADER_RE.search(line):
            self.ctx = _Context()
            self.announced = None
            return
        m = _TASK_IN_RE.search(line)
        if m:
            self.ctx = _Context("legacy", "memcg", m.group("task"), m.group("oom"))
            self.announced = None
            return
        m = _LIMIT_REACHED_RE.search(line)
        if m:
            self.ctx = _Context("legacy", "memcg", None, m.group("oom"))
            self.announced = None
            return
        m = _GROUP_RE.search(line)
        if m:
            self.ctx = _Context("group", self.ctx.scope, m.group("group"), self.ctx.oom_memcg)
            return
        if self.summary(line):
            return
        m = _KILLED_RE.search(line) or _KILLED_LOOSE_RE.search(line)
        if m:
            self.killed(line, m)
            return
        m = _KILL_RE.search(line)
        if m:
            self.kill_announced(m)
            return
        m = _SYSTEM_RE.search(line)
        if m:
            pid = _int(m.group("pid")) if m.group("pid") is not None else 0
            if pid is None:
                return
            kill = self.kill(pid)
            kill.announced_only = False
            kill.fill(process=m.group("comm") or "")
            kill.set_scope("system", _SYSTEM)

    def summary(self, line: str) -> bool:
        """The ``oom-kill:`` line, or the tail of one printk split off (``,oom_memcg=...``)."""
        head = _SUMMARY_RE.search(line)
        task = _SUMMARY_TASK_RE.search(line)
        if head is None:
            if task is None or not any(
                k in line for k in (",oom_memcg=", ",global_oom", ",task_memcg=")
            ):
                return False
            constraint = self.pending_constraint
            start = 0
        else:
            constraint = head.group("constraint")
            start = head.end()
        self.pending_constraint = None
        if task is None:
            # pr_cont pieces came out as separate records: the rest is on a later line.
            self.pending_constraint = constraint
            return True
        pid = _int(task.group("pid"))
        if pid is None:
            return True
        middle = line[start:task.start()]
        oom_m = _SUMMARY_OOM_MEMCG_RE.search(middle)
        task_m = _SUMMARY_TASK_MEMCG_RE.search(middle)
        oom_memcg = oom_m.group("path") if oom_m else None
        task_memcg = task_m.group("path") if task_m else None
        scope = _CONSTRAINT_SCOPE.get(constraint or "")
        if scope is None:
            if _SUMMARY_GLOBAL_RE.search(middle):
                scope = "global"
            elif oom_memcg is not None:
                scope = "memcg"
        kill = self.kill(pid)
        kill.announced_only = False
        kill.fill(process=task.group("comm"), uid=_int(task.group("uid")))
        kill.set_scope(scope, _OWN)
        kill.set_memcgs(task_memcg or None, oom_memcg or None, _OWN)
        self.ctx = _Context("summary", scope, task_memcg, oom_memcg)
        self.announced = None
        self.last_scope = kill.scope
        return True

    def killed(self, line: str, m: re.Match[str]) -> None:
        pid = _int(m.group("pid"))
        if pid is None:
            return
        announced = self.announced
        self.announced = None
        if announced is not None and announced.pid != pid and announced.announced_only:
            # Pre-5.0 oom_kill_process(): the announced task had a child with a higher
            # badness score, and the child was killed in its place ("or sacrifice child").
            self.drop(announced)
        rest = line[m.end():]
        kill = self.kill(pid)
        kill.announced_only = False
        kill.fill(
            process=m.group("comm"), adj=_int(_first(_ADJ_RE, rest)),
            anon=_kb(_ANON_RSS_RE.search(rest)), vm=_kb(_TOTAL_VM_RE.search(rest)),
            uid=_int(_first(_UID_RE, rest)),
        )
        kill.set_scope(_prefix_scope(m.group("prefix")), _PREFIXED)
        if self.ctx.kind == "group" or (self.ctx.kind == "legacy" and not self.ctx.killed_seen):
            self.ctx.apply(kill)
        self.ctx.killed_seen = True
        self.last_scope = kill.scope

    def kill_announced(self, m: re.Match[str]) -> None:
        pid = _int(m.group("pid"))
        if pid is None:
            return
        sharing = m.group("sharing") is not None
        if not sharing and self.ctx.killed_seen:
            # A new report whose header was ratelimited away: the old context is stale.
            self.ctx = _Context()
        kill = self.kill(pid)
        kill.fill(process=m.group("comm"))
        kill.set_scope(_prefix_scope(m.group("prefix")), _PREFIXED)
        if self.ctx.kind == "legacy":
            self.ctx.apply(kill)
        if sharing:
            # Sent SIGKILL for sharing the victim's mm: a kill in its own right.
            kill.announced_only = False
            kill.set_scope(self.ctx.scope or self.last_scope, _INHERITED)
        else:
            self.announced = kill if kill.announced_only else None
            self.last_scope = kill.scope


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    m = pattern.search(text)
    return m.group(1) if m else None


def parse_oom_text(text: str) -> list[OOMKill]:
    """Every OOM kill described in ``text``, in order of first mention; [] when none.

    Lines about the same pid are merged into one :class:`OOMKill`: memcg paths and constraint
    from the ``oom-kill:`` line, rss/oom_score_adj from the ``Killed process`` line. A ``Kill
    process ... or sacrifice child`` line counts as a kill on its own, unless the ``Killed
    process`` line after it names another pid (a child died in its place). Never raises.
    """
    return list(parse_oom_text_capped(text, None)[0])


MAX_KILLS_PER_TEXT = 100_000
"""Kills read from one Event's text at most, when it arrives (``core/events.py``); a policy's
``maxKillsPerEvent`` may ask for fewer, never more."""


def _parse(text: str, max_kills: int | None) -> tuple[tuple[OOMKill, ...], bool]:
    parser = _Parser()
    capped = False
    for line in text.splitlines():
        parser.line(line)
        if max_kills is not None and len(parser.kills) > max_kills:
            capped = True  # the kill past the cap has begun: the ones before it are complete
            break
    kills = parser.kills[:max_kills] if capped else parser.kills
    return tuple(k.result() for k in kills), capped


def parse_oom_text_capped(text: str, max_kills: int | None) -> tuple[tuple[OOMKill, ...], bool]:
    """The first ``max_kills`` kills of ``text`` (all when None), and whether there were more.

    The text is read no further than the kill past the cap, so one Event holding thousands of
    kill lines costs what the cap allows. Never raises."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str) or not text:
        return (), False
    return _parse(text, max_kills)
