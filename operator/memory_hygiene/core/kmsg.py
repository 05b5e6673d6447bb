"""``/dev/kmsg`` records -> one :class:`Kill` per kernel OOM report; Event names; counter kills.

Pure: no I/O. The node agent (``shell/node_agent.py``) reads the records and feeds them here.

Record format (``Documentation/ABI/testing/dev-kmsg``; ``kernel/printk/printk.c``
``info_print_ext_header()`` / ``msg_print_ext_body()``): each ``read()`` of ``/dev/kmsg``
returns one record::

    <prio>,<seq>,<usec>,<flags>[,<more fields>];<text>\\n
    [ KEY=value\\n ...]

``prio`` is ``facility << 3 | level``; ``seq`` the record's 64-bit sequence number (a gap
means records were overwritten before they were read: ``read()`` fails with ``EPIPE`` once,
then goes on with the oldest record left); ``usec`` the ``local_clock()`` time of the record in
microseconds since boot; ``flags`` ``-`` or ``c`` (``LOG_CONT``: a fragment of a line printed
with ``pr_cont``) and, on ``CONFIG_PRINTK_CALLER`` kernels, ``caller=T<pid>``/``C<cpu>`` among
the extra fields. Non-printable bytes (and ``\\``) in the text are escaped as ``\\xNN``; the text
is kept as the kernel escaped it. Lines starting with a space are the record's dictionary
(``SUBSYSTEM=``, ``DEVICE=``). ``cat /dev/kmsg`` prints the same records one after the other:
:func:`split_records` reads that form (the agent's ``--kmsg-file``).

An OOM report (``mm/oom_kill.c`` ``oom_kill_process()``; reports never interleave with each
other: ``out_of_memory()`` runs under ``oom_lock``, but other records may come in between)::

    <comm> invoked oom-killer: gfp_mask=..., order=..., oom_score_adj=...   dump_header()  \\
    ... stack, memory state, task dump ...                                                 | ratelimited:
    oom-kill:constraint=...,oom_memcg=...,task_memcg=...,task=<comm>,pid=<pid>,uid=<uid>  / 10 per 5 s
    Memory cgroup out of memory: Killed process <pid> (<comm>) total-vm:... oom_score_adj:...
    [Tasks in <memcg> are going to be killed due to memory.oom.group set             (cgroup v2)
     Memory cgroup out of memory: Killed process <pid> (<comm>) ...   one per other member]

Before 4.19 the ``oom-kill:`` line did not exist; before 5.0 the victim was announced by
``Kill process <pid> (<comm>) score <n> or sacrifice child`` and memcg OOMs printed ``Task in
<memcg> killed as a result of limit of <memcg>`` (or ``Memory limit reached of cgroup``) in
the header. The ``oom-kill:`` and ``Tasks in`` lines are built with ``pr_cont`` and may come as
several records when another CPU prints in between: :class:`Grouper` joins them again.

One :class:`Kill` per report: its message lines are the kernel's own (``oom-kill:``,
``Killed process``, ``Tasks in ...``, and the pre-5.0 ``Task in``/``Kill process`` lines), so
node-problem-detector's Events and the agent's go through the same parser
(``core/kernel.py``). A kill is named by the sequence number of its first ``Killed process``
record (the line that is never ratelimited and is the last of the report to be overwritten),
or of its ``oom-kill:`` record when the ``Killed process`` record was lost.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = [
    "Grouper", "Kill", "Record", "counter_event_name", "counter_kill_message", "kill_event_name",
    "parse_record", "split_records",
]


class Record(NamedTuple):
    seq: int
    usec: int
    prio: int
    flags: str
    """``-``, or ``c`` for a ``pr_cont`` fragment (``+`` on kernels before 4.x)."""
    caller: str | None
    """``T<pid>`` or ``C<cpu>`` (``CONFIG_PRINTK_CALLER``), else None."""
    text: str
    fields: tuple[tuple[str, str], ...] = ()


_HEADER_RE = re.compile(r"(?P<prio>\d+),(?P<seq>\d+),(?P<usec>\d+),(?P<flags>[^,;]*)(?P<extra>(?:,[^;]*)?);",
                        re.ASCII)


def parse_record(raw: bytes | str) -> Record | None:
    """One record as ``read()`` returns it; None when it is not one (logged and skipped by the caller)."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    m = _HEADER_RE.match(raw)
    if not m:
        return None
    body = raw[m.end():]
    text, _, rest = body.partition("\n")
    fields = []
    for line in rest.split("\n"):
        if line.startswith(" ") and "=" in line:
            k, _, v = line[1:].partition("=")
            fields.append((k, v))
    caller = None
    for part in m.group("extra").split(","):
        if part.startswith("caller="):
            caller = part[len("caller="):]
    return Record(int(m.group("seq")), int(m.group("usec")), int(m.group("prio")), m.group("flags"),
                  caller, text, tuple(fields))


def split_records(text: str) -> Iterator[str]:
    """The records of a ``cat /dev/kmsg`` stream: a line with a header, plus the `` KEY=value``
    lines after it. Lines that are neither are skipped."""
    cur: list[str] = []
    for line in text.splitlines():
        if line.startswith(" ") and cur:
            cur.append(line)
            continue
        if cur:
            yield "\n".join(cur) + "\n"
            cur = []
        if _HEADER_RE.match(line):
            cur = [line]
    if cur:
        yield "\n".join(cur) + "\n"


_SYSLOG_RE = re.compile(r"<(?P<prio>\d+)>\[\s*(?P<sec>\d+)\.(?P<usec>\d{6})\] ?", re.ASCII)


def parse_syslog_line(line: str) -> tuple[int, int, str] | None:
    """``(prio, usec, text)`` of a line of ``syslog(2)`` ``SYSLOG_ACTION_READ_ALL`` (what
    ``dmesg -r`` prints: ``<6>[ 9815.236013] text``); None without a printk timestamp. The
    syscall gives no sequence numbers: records are told apart by their time."""
    m = _SYSLOG_RE.match(line)
    if not m:
        return None
    return int(m.group("prio")), int(m.group("sec")) * 1_000_000 + int(m.group("usec")), line[m.end():]


# --- the report -----------------------------------------------------------------------------------

_OOM_HEADER = re.compile(r"invoked oom-killer:")
_SUMMARY = re.compile(r"^oom-kill:")
_SUMMARY_DONE = re.compile(r",task=.*,pid=\d+,uid=\d+\s*$", re.ASCII)
# "Killed process <pid> (<comm>) ..." (3.x-6.x), "Killed process <pid> (<comm>), UID <uid>, ..." (RHEL 7),
# "Killed process <pid>, UID <uid>, (<comm>) ..." (2.6.32).
_KILLED = re.compile(r"Killed process (?P<pid>\d+)\b(?=[ ,])", re.ASCII)
_KILL_ANNOUNCE = re.compile(r"[Kk]ill process (?P<pid>\d+) \(.*\) (?:score \d+|sharing same memory)", re.ASCII)
_SHARING = re.compile(r"[Kk]ill process \d+ \(.*\) sharing same memory", re.ASCII)
_LEGACY_MEMCG = re.compile(r"Task in /\S* killed as a result of limit of /|Memory limit reached of cgroup /")
_GROUP = re.compile(r"^Tasks in ")
_GROUP_DONE = re.compile(r"are going to be killed due to memory\.oom\.group set\s*$")
_GROUP_PATH = re.compile(r"^Tasks in (?P<path>/\S*) are going to be killed")
_TASK_MEMCG = re.compile(r",task_memcg=(?P<path>/[^,]*)")
_MAX_FRAGMENTS = 16


def _relevant(text: str) -> bool:
    """Part of an OOM report as far as the grouping goes."""
    return bool(_OOM_HEADER.search(text) or _SUMMARY.search(text) or _KILLED.search(text)
                or _GROUP.search(text) or _KILL_ANNOUNCE.search(text) or _LEGACY_MEMCG.search(text))


class Kill(NamedTuple):
    """One OOM kill (a whole report: the chosen victim and, for a group kill, the rest)."""

    seq: int
    """Sequence number of the first ``Killed process`` record (else of the ``oom-kill:`` record)."""
    usec: int
    """Kernel time of that record (µs since boot)."""
    lines: tuple[str, ...]
    """The kernel's lines, verbatim, in kernel order."""
    pids: tuple[int, ...]
    """Every pid a ``Killed process`` line names, the victim first."""
    task_memcg: str | None
    """The victim's memory cgroup (``oom-kill:`` ``task_memcg=``, or the pre-4.19 ``Task in``)."""
    group: str | None
    """The ``memory.oom.group`` cgroup whose every task was killed, if any."""
    complete: bool
    """False when records of the report were lost (ring buffer overrun) or it was cut short."""
    last_seq: int = 0
    """Sequence number of the report's last record that is in ``lines``."""


class _Building:
    __slots__ = ("lines", "seq", "usec", "killed_seq", "killed_usec", "pids", "memcg", "group", "state",
                 "complete", "last_seq")

    def __init__(self, r: Record) -> None:
        self.lines: list[str] = []
        self.seq, self.usec = r.seq, r.usec
        self.killed_seq: int | None = None
        self.killed_usec = 0
        self.pids: list[int] = []
        self.memcg: str | None = None
        self.group: str | None = None
        self.state = "header"  # header -> killed -> group
        self.complete = True
        self.last_seq = r.seq

    def has_kill(self) -> bool:
        return bool(self.pids) or any(_SUMMARY.search(x) for x in self.lines)

    def add(self, r: Record, text: str) -> None:
        self.lines.append(text)
        self.last_seq = max(self.last_seq, r.seq)

    def result(self) -> Kill:
        seq = self.killed_seq if self.killed_seq is not None else self.seq
        usec = self.killed_usec if self.killed_seq is not None else self.usec
        return Kill(seq, usec, tuple(self.lines), tuple(self.pids), self.memcg, self.group,
                    self.complete and self.killed_seq is not None, self.last_seq)


class Grouper:
    """Groups OOM-report records into kills. Feed records in sequence order:

    * :meth:`feed` a record; returns the kills it completed (a new report starts, or a second
      ``Killed process`` line outside a group kill: the next report's header was ratelimited);
    * :meth:`lost` when records were lost (a sequence gap): the report being read is finished,
      marked incomplete;
    * :meth:`flush` when the log has been quiet for a moment: the report being read is finished.

    Records that are not part of an OOM report are ignored, wherever they come.
    """

    def __init__(self, count_gaps: bool = True) -> None:
        self.count_gaps = count_gaps
        """False when the records' "sequence numbers" are their times (the syslog(2) reader)."""
        self.cur: _Building | None = None
        self.partial: tuple[Record, list[str]] | None = None
        self.last_seq: int | None = None
        self.lost_records = 0
        """Records lost in sequence gaps since the first record fed."""

    # -- input

    def feed(self, r: Record) -> list[Kill]:
        out: list[Kill] = []
        if self.count_gaps and self.last_seq is not None and r.seq > self.last_seq + 1:
            out += self.lost(r.seq - self.last_seq - 1)
        self.last_seq = r.seq if self.last_seq is None else max(self.last_seq, r.seq)
        text = r.text
        if self.partial is not None:
            first, parts = self.partial
            if self._continues(first, r, text):
                parts.append(text)
                joined = "".join(parts)
                if self._done(joined) or len(parts) >= _MAX_FRAGMENTS:
                    self.partial = None
                    out += self._line(first, joined, r.seq)
                return out
            if not _relevant(text):
                return out  # another CPU's record between two pieces: the line goes on after it
            self.partial = None
            out += self._line(first, "".join(parts), first.seq)
        if (_SUMMARY.search(text) or _GROUP.search(text)) and not self._done(text):
            self.partial = (r, [text])
            return out
        out += self._line(r, text, r.seq)
        return out

    def lost(self, n: int) -> list[Kill]:
        """``n`` records were lost before the next one: what was being read is finished, incomplete."""
        out: list[Kill] = []
        self.lost_records += n
        if self.partial is not None:
            first, parts = self.partial
            self.partial = None
            out += self._line(first, "".join(parts), first.seq)
        if self.cur is not None:
            self.cur.complete = False
            out += self._finish()
        return out

    def flush(self) -> list[Kill]:
        """The log went quiet: finish the report being read (a pr_cont line still waiting for
        its rest is taken as it is)."""
        out: list[Kill] = []
        if self.partial is not None:
            first, parts = self.partial
            self.partial = None
            out += self._line(first, "".join(parts), first.seq)
        if self.cur is not None and self.cur.state != "header":
            out += self._finish()
        return out

    def pending(self) -> bool:
        """A report is being read (a :meth:`flush` would finish it)."""
        return self.partial is not None or (self.cur is not None and self.cur.state != "header")

    # -- internals

    @staticmethod
    def _done(text: str) -> bool:
        if _SUMMARY.search(text):
            return bool(_SUMMARY_DONE.search(text))
        if _GROUP.search(text):
            return bool(_GROUP_DONE.search(text))
        return True

    @staticmethod
    def _continues(first: Record, r: Record, text: str) -> bool:
        if first.caller is not None and r.caller is not None and first.caller != r.caller:
            return False
        # pr_cont pieces of these two lines start with "," (",oom_memcg=", ",task_memcg=",
        # ",task=..."), "/" (pr_cont_cgroup_path) or " are going to be killed ...".
        return text.startswith((",", "/", " are going")) or r.flags in ("c", "+") and not _KILLED.search(text)

    def _finish(self) -> list[Kill]:
        cur, self.cur = self.cur, None
        if cur is None or not cur.has_kill():
            return []
        return [cur.result()]

    def _start(self, r: Record) -> list[Kill]:
        out = self._finish()
        self.cur = _Building(r)
        return out

    def _line(self, r: Record, text: str, last_seq: int) -> list[Kill]:
        out: list[Kill] = []
        cur = self.cur
        if _OOM_HEADER.search(text):
            return self._start(r)
        if _LEGACY_MEMCG.search(text):
            if cur is None or cur.state != "header" or cur.has_kill():
                out += self._start(r)
            self.cur.add(r, text)  # type: ignore[union-attr]
            m = re.search(r"Task in (/\S*) killed", text)
            if m:
                self.cur.memcg = m.group(1)  # type: ignore[union-attr]
            return out
        if _SUMMARY.search(text):
            if cur is None or cur.state != "header" or cur.has_kill():
                out += self._start(r)
            cur = self.cur
            assert cur is not None
            cur.add(r, text)
            cur.last_seq = max(cur.last_seq, last_seq)
            cur.seq, cur.usec = r.seq, r.usec
            m = _TASK_MEMCG.search(text)
            if m:
                cur.memcg = m.group("path")
            return out
        m = _KILLED.search(text)
        if m:
            pid = int(m.group("pid"))
            if cur is None or cur.state == "killed":
                out += self._start(r)
                cur = self.cur
            assert cur is not None
            cur.add(r, text)
            if pid not in cur.pids:  # a group kill names the victim again among the members
                cur.pids.append(pid)
            if cur.state == "header":
                cur.killed_seq, cur.killed_usec = r.seq, r.usec
                cur.state = "killed"
            return out
        if _KILL_ANNOUNCE.search(text):
            sharing = bool(_SHARING.search(text))
            if not sharing and (cur is None or cur.state != "header" or any(_KILL_ANNOUNCE.search(x) for x in cur.lines)):
                out += self._start(r)
            if self.cur is None:
                self.cur = _Building(r)
            self.cur.add(r, text)
            return out
        if _GROUP.search(text):
            if cur is not None and cur.state == "killed":
                cur.add(r, text)
                cur.last_seq = max(cur.last_seq, last_seq)
                cur.state = "group"
                g = _GROUP_PATH.search(text)
                cur.group = g.group("path") if g else None
            return out
        return out  # any other record: not part of the kill (task dump, stack, other subsystems)


# --- Events ---------------------------------------------------------------------------------------

_NAME_BAD = re.compile(r"[^a-z0-9.-]")


def _name(node: str, suffix: str) -> str:
    base = _NAME_BAD.sub("-", node.lower())[: 253 - len(suffix) - 1].strip(".-") or "node"
    return f"{base}.{suffix}"


def kill_event_name(node: str, boot_id: str, seq: int, by_time: bool = False) -> str:
    """The Event of the kill whose first ``Killed process`` record has sequence number ``seq``
    in boot ``boot_id`` (``/proc/sys/kernel/random/boot_id``): the same on every restart.
    ``by_time``: ``seq`` is the record's time in µs (the syslog(2) reader), spelled ``t<usec>``."""
    return _name(node, f"oom.{boot_id.replace('-', '').lower()}.{'t' if by_time else ''}{seq}")


def counter_event_name(node: str, boot_id: str, memcg: str, count: int) -> str:
    """The Event of the ``count``-th kill a memory cgroup's ``oom_kill`` counter shows."""
    digest = hashlib.sha256(f"{boot_id}\0{memcg}\0{count}".encode()).hexdigest()[:20]
    return _name(node, f"oomcg.{digest}")


def counter_kill_message(memcg: str, counter_file: str, before: int, after: int) -> str:
    """What a kill the kernel log did not report, seen in a memcg counter, says.

    The first line is in the form of the kernel's ``oom-kill:`` summary, which
    ``core/kernel.py`` reads (``task_memcg=`` names the container's cgroup; ``task=?``, ``pid=0``
    and ``uid=0``: the counter does not know them). The second line says where it came from
    and holds none of the parser's patterns."""
    return (
        f"oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg={memcg},task=?,pid=0,uid=0\n"
        f"memory-hygiene-node-agent: not in the kernel log; seen by the memcg counter {counter_file} "
        f"oom_kill {before} -> {after} of {memcg}"
    )


def boot_epoch(realtime: float, monotonic: float) -> float:
    """Wall-clock time of boot as printk counts it: printk stamps records with ``local_clock()``,
    which, like ``CLOCK_MONOTONIC``, stops while the machine is suspended."""
    return realtime - monotonic


def record_time(usec: int, boot: float) -> float:
    return boot + usec / 1e6


def explained(kills: Iterable[Kill], memcg: str) -> int:
    """How many of ``kills`` the ``oom_kill`` counter of ``memcg`` counts: the victim's own cgroup,
    and for a group kill one per other member inside the group's cgroup (an upper bound)."""
    n = 0
    for k in kills:
        if k.task_memcg == memcg:
            n += 1
        if k.group and (memcg == k.group or memcg.startswith(k.group.rstrip("/") + "/")):
            n += max(0, len(k.pids) - (1 if k.task_memcg == memcg else 0))
    return n
