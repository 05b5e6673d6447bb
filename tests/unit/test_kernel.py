"""memory_hygiene.core.kernel: kernel OOM text and memory cgroup paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_hygiene.core.kernel import OOMKill, parse_memcg_path, parse_oom_text

DATA = Path(__file__).parent / "data" / "kernel"

UID = "0f3c2b1a-1111-4222-8333-444455556666"
UID_ = UID.replace("-", "_")
CID = "4be3661456aa74304875c3a00646851baea21be3e0667e84dad7ae812d3d0169"
CID2 = "a" * 64


def one(text: str) -> OOMKill:
    kills = parse_oom_text(text)
    assert len(kills) == 1, kills
    return kills[0]


# ---------------------------------------------------------------------------------------------
# DOMAIN.md section 2 and the seeds
# ---------------------------------------------------------------------------------------------

MODERN_SUMMARY = (
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/oomtest,task_memcg=/oomtest,task=python3,pid=2380,uid=0"
)
MODERN_KILLED = (
    "Memory cgroup out of memory: Killed process 2380 (python3) total-vm:221368kB, "
    "anon-rss:43264kB, file-rss:4572kB, shmem-rss:0kB, UID:0 pgtables:144kB oom_score_adj:0"
)


def test_domain_modern_pair_merges_into_one_kill():
    kill = one(MODERN_SUMMARY + "\n" + MODERN_KILLED)
    assert kill == OOMKill(
        pid=2380, process="python3", scope="memcg", oom_score_adj=0,
        anon_rss_bytes=43264 * 1024, total_vm_bytes=221368 * 1024, uid=0,
        task_memcg="/oomtest", oom_memcg="/oomtest", pod_uid=None, container_id=None,
    )


def test_domain_modern_pair_in_either_order():
    assert parse_oom_text(MODERN_KILLED + "\n" + MODERN_SUMMARY) == parse_oom_text(
        MODERN_SUMMARY + "\n" + MODERN_KILLED
    )


def test_each_modern_line_alone():
    summary = one(MODERN_SUMMARY)
    assert (summary.pid, summary.process, summary.scope, summary.uid) == (2380, "python3", "memcg", 0)
    assert summary.anon_rss_bytes is None and summary.oom_score_adj is None
    killed = one(MODERN_KILLED)
    assert (killed.pid, killed.scope, killed.oom_score_adj) == (2380, "memcg", 0)
    assert killed.task_memcg is None and killed.oom_memcg is None


@pytest.mark.parametrize(
    ("line", "pid", "adj", "anon_kb", "vm_kb"),
    [
        # seed 004 (GKE): the kernel log line, and the NPD event messages.
        ("Memory cgroup out of memory: Killed process 2774370 (main) total-vm:1801348kB, "
         "anon-rss:1043688kB, file-rss:12884kB, shmem-rss:0kB, UID:0 pgtables:2236kB "
         "oom_score_adj:980", 2774370, 980, 1043688, 1801348),
        ("Memory cgroup out of memory: Killed process 1707107 (main) total-vm:1801412kB, "
         "anon-rss:1043284kB, file-rss:9732kB, shmem-rss:0kB, UID:0 pgtables:2224kB "
         "oom_score_adj:741", 1707107, 741, 1043284, 1801412),
        ("Memory cgroup out of memory: Killed process 2662217 (main) total-vm:1800900kB, "
         "anon-rss:1042888kB, file-rss:10384kB, shmem-rss:0kB, UID:0 pgtables:2224kB "
         "oom_score_adj:-998", 2662217, -998, 1042888, 1800900),
    ],
)
def test_seed_004_lines(line, pid, adj, anon_kb, vm_kb):
    kill = one(line)
    assert kill.pid == pid and kill.process == "main" and kill.scope == "memcg"
    assert kill.oom_score_adj == adj
    assert kill.anon_rss_bytes == anon_kb * 1024 and kill.total_vm_bytes == vm_kb * 1024
    assert kill.uid == 0
    assert kill.pod_uid is None and kill.container_id is None


# seed 001, CentOS 7 (3.10.0-1127.el7), as dmesg printed them.
SEED_001_DMESG = """\
[80389.171797] Memory cgroup out of memory: Kill process 27672 (stress-12-BestE) score 1105 or sacrifice child
[80389.202470] Killed process 27672 (stress-12-BestE), UID 0, total-vm:3189272kB, anon-rss:3145848kB, file-rss:4kB, shmem-rss:8kB
[80391.538015] stress-12-BestE invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=1000
[80391.538021] stress-12-BestE cpuset=597912cbecd66eccbd66c62dfd354bf5497db8e27a5bb04672ee5a84f217fbff mems_allowed=0-3
[80391.538026] CPU: 6 PID: 27991 Comm: stress-12-BestE Kdump: loaded Tainted: G ------------ T 3.10.0-1127.el7.x86_64 #1
"""
# and as syslog kept them
SEED_001_SYSLOG = """\
Oct 11 10:38:03 82-174-zhang kernel: [1266038.261910] Memory cgroup out of memory: Kill process 7017 (stress-4-BestEf) score 1070 or sacrifice child
Oct 11 10:38:03 82-174-zhang kernel: [1266038.267444] Killed process 7017 (stress-4-BestEf), UID 0, total-vm:2140696kB, anon-rss:2097272kB, file-rss:8kB, shmem-rss:4kB
"""


def test_seed_001_dmesg_3_10():
    kill = one(SEED_001_DMESG)
    assert kill == OOMKill(
        pid=27672, process="stress-12-BestE", scope="memcg", oom_score_adj=None,
        anon_rss_bytes=3145848 * 1024, total_vm_bytes=3189272 * 1024, uid=0,
        task_memcg=None, oom_memcg=None, pod_uid=None, container_id=None,
    )


def test_seed_001_syslog_3_10():
    kill = one(SEED_001_SYSLOG)
    assert (kill.pid, kill.process, kill.scope, kill.uid) == (7017, "stress-4-BestEf", "memcg", 0)
    assert kill.anon_rss_bytes == 2097272 * 1024


def test_seed_001_task_in_line_attributes_the_kill():
    # seed 001 line (syslog, 3.10): the header of the report that killed a Guaranteed pod's
    # process; the kill lines that follow it in such a report are added here.
    text = (
        "Sep 28 09:54:39 82-174-zhang kernel: [140244.941467] stress-20-Guara invoked oom-killer: "
        "gfp_mask=0x50, order=0, oom_score_adj=1000\n"
        "Sep 28 09:54:39 82-174-zhang kernel: [140244.941538] Task in /kubepods/"
        "podff2a4320-67f9-4afc-b1a8-0aa39caa8904/4be3661456aa74304875c3a00646851baea21be3e0667e84"
        "dad7ae812d3d0169 killed as a result of limit of /kubepods\n"
        "Sep 28 09:54:39 82-174-zhang kernel: [140244.941540] memory: usage 29763384kB, "
        "limit 29763384kB, failcnt 734923\n"
        "Sep 28 09:54:39 82-174-zhang kernel: [140244.951000] Memory cgroup out of memory: Kill "
        "process 10195 (stress-20-Guara) score 1001 or sacrifice child\n"
        "Sep 28 09:54:39 82-174-zhang kernel: [140244.952000] Killed process 10195 "
        "(stress-20-Guara), UID 0, total-vm:21000000kB, anon-rss:20971520kB, file-rss:4kB, "
        "shmem-rss:0kB\n"
    )
    kill = one(text)
    assert kill.pid == 10195 and kill.scope == "memcg"
    assert kill.task_memcg == f"/kubepods/podff2a4320-67f9-4afc-b1a8-0aa39caa8904/{CID}"
    assert kill.oom_memcg == "/kubepods"
    assert kill.pod_uid == "ff2a4320-67f9-4afc-b1a8-0aa39caa8904"
    assert kill.container_id == CID


def test_task_in_line_alone_is_not_a_kill():
    assert parse_oom_text(f"Task in /kubepods/pod{UID}/{CID} killed as a result of limit of /kubepods") == []


# ---------------------------------------------------------------------------------------------
# other kernel versions and variants
# ---------------------------------------------------------------------------------------------

def test_4x_killed_line_without_uid_or_score_adj():
    kill = one("Killed process 1234 (x) total-vm:1000kB, anon-rss:500kB, file-rss:20kB, shmem-rss:0kB")
    assert (kill.pid, kill.process, kill.scope) == (1234, "x", "memcg")
    assert kill.anon_rss_bytes == 500 * 1024 and kill.total_vm_bytes == 1000 * 1024
    assert kill.uid is None and kill.oom_score_adj is None


def test_upstream_3x_killed_line_and_rhel6_vsz():
    kill = one("Killed process 5 (a) total-vm:1kB, anon-rss:2kB, file-rss:3kB")
    assert (kill.pid, kill.total_vm_bytes, kill.anon_rss_bytes) == (5, 1024, 2048)
    kill = one("Killed process 6 (java) vsz:4096kB, anon-rss:1024kB, file-rss:0kB")
    assert (kill.pid, kill.process, kill.total_vm_bytes) == (6, "java", 4096 * 1024)


def test_4x_report_with_task_in_header():
    text = f"""\
[ 1000.000001] worker invoked oom-killer: gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=968
[ 1000.000100] Task in /kubepods/burstable/pod{UID}/{CID} killed as a result of limit of /kubepods/burstable/pod{UID}/{CID}
[ 1000.000101] memory: usage 262144kB, limit 262144kB, failcnt 51
[ 1000.000200] Memory cgroup out of memory: Kill process 4321 (worker) score 1968 or sacrifice child
[ 1000.000300] Killed process 4321 (worker) total-vm:400000kB, anon-rss:260000kB, file-rss:1000kB, shmem-rss:0kB
[ 1000.000400] oom_reaper: reaped process 4321 (worker), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB
"""
    kill = one(text)
    assert (kill.pid, kill.process, kill.scope) == (4321, "worker", "memcg")
    assert kill.task_memcg == kill.oom_memcg == f"/kubepods/burstable/pod{UID}/{CID}"
    assert (kill.pod_uid, kill.container_id) == (UID, CID)
    assert kill.anon_rss_bytes == 260000 * 1024


def test_memory_limit_reached_header_gives_oom_memcg():
    text = (
        f"Memory limit reached of cgroup /kubepods/burstable/pod{UID}\n"
        "Memory cgroup out of memory: Kill process 77 (app) score 900 or sacrifice child\n"
        "Killed process 77 (app) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB\n"
    )
    kill = one(text)
    assert kill.oom_memcg == f"/kubepods/burstable/pod{UID}" and kill.task_memcg is None
    assert (kill.pod_uid, kill.container_id) == (UID, None)


def test_sacrificed_child_replaces_the_announced_parent():
    text = (
        f"Task in /kubepods/besteffort/pod{UID}/{CID} killed as a result of limit of /kubepods/besteffort/pod{UID}/{CID}\n"
        "Memory cgroup out of memory: Kill process 100 (supervisor) score 1500 or sacrifice child\n"
        "Killed process 101 (worker-3) total-vm:9000kB, anon-rss:8000kB, file-rss:4kB, shmem-rss:0kB\n"
    )
    kill = one(text)
    assert (kill.pid, kill.process, kill.scope) == (101, "worker-3", "memcg")
    assert (kill.pod_uid, kill.container_id) == (UID, CID)


def test_kill_announcement_alone_is_a_kill():
    kill = one("[80389.171797] Memory cgroup out of memory: Kill process 27672 (stress-12-BestE) score 1105 or sacrifice child")
    assert (kill.pid, kill.process, kill.scope) == (27672, "stress-12-BestE", "memcg")
    assert kill.anon_rss_bytes is None
    kill = one("Out of memory: Kill process 9 (mysqld) score 800 or sacrifice child")
    assert (kill.pid, kill.scope) == (9, "global")
    kill = one("Out of memory: kill process 9 (mysqld) score 800 or a child")  # 2.6.32
    assert (kill.pid, kill.scope) == (9, "global")


def test_consecutive_announcements_without_killed_lines_are_all_kills():
    text = (
        "Memory cgroup out of memory: Kill process 1 (a) score 1 or sacrifice child\n"
        "Memory cgroup out of memory: Kill process 2 (b) score 1 or sacrifice child\n"
    )
    assert [k.pid for k in parse_oom_text(text)] == [1, 2]


def test_sharing_same_memory_kills():
    text = (
        "Memory cgroup out of memory: Kill process 10 (app) score 999 or sacrifice child\n"
        "Killed process 10 (app) total-vm:10kB, anon-rss:8kB, file-rss:0kB\n"
        "Kill process 11 (app-helper) sharing same memory\n"
    )
    kills = parse_oom_text(text)
    assert [(k.pid, k.process, k.scope) for k in kills] == [
        (10, "app", "memcg"), (11, "app-helper", "memcg")
    ]


def test_global_oom_modern():
    text = (
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,global_oom,"
        f"task_memcg=/kubepods/besteffort/pod{UID}/{CID},task=java,pid=3030,uid=1000\n"
        "Out of memory: Killed process 3030 (java) total-vm:8000000kB, anon-rss:7000000kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:14000kB oom_score_adj:1000\n"
    )
    kill = one(text)
    assert (kill.pid, kill.scope, kill.uid, kill.oom_score_adj) == (3030, "global", 1000, 1000)
    assert kill.oom_memcg is None
    assert (kill.pod_uid, kill.container_id) == (UID, CID)


def test_global_oom_allocating_task_and_cpuset_constraint():
    kill = one("Out of memory (oom_kill_allocating_task): Killed process 8 (x) total-vm:1kB, "
               "anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0")
    assert kill.scope == "global"
    kill = one("oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=(null),cpuset=/,mems_allowed=0,"
               "global_oom,task_memcg=/system.slice/foo.service,task=foo,pid=12,uid=0")
    assert (kill.scope, kill.pod_uid, kill.task_memcg) == ("global", None, "/system.slice/foo.service")


def test_constraint_beats_missing_prefix():
    # A 4.19-era pair: the summary (no memcg context yet) and a prefix-less Killed line.
    text = (
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,task=dd,pid=5,uid=0\n"
        "Killed process 5 (dd) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB\n"
    )
    kill = one(text)
    assert (kill.scope, kill.task_memcg, kill.anon_rss_bytes) == ("global", None, 5 * 1024)


def test_systemd_cgroup_kill_with_comm_with_spaces_and_parens():
    path = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
            f"cri-containerd-{CID}.scope")
    text = (
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-x.scope,"
        f"mems_allowed=0,oom_memcg={path},task_memcg={path},task=my (weird) p,pid=42,uid=65534\n"
        "Memory cgroup out of memory: Killed process 42 (my (weird) p) total-vm:100kB, "
        "anon-rss:60kB, file-rss:0kB, shmem-rss:0kB, UID:65534 pgtables:8kB oom_score_adj:999\n"
    )
    kill = one(text)
    assert (kill.pid, kill.process, kill.uid, kill.oom_score_adj) == (42, "my (weird) p", 65534, 999)
    assert (kill.pod_uid, kill.container_id) == (UID, CID)


@pytest.mark.parametrize("comm", ["(sd-pam)", "my (weird) p", "a) b", "x, y", "sh -c", "(", ")",
                                  "pid=1,uid=2", "", "kworker/0:1"])
def test_odd_comms(comm):
    text = (
        f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg=/kubepods/pod{UID},task_memcg=/kubepods/pod{UID}/{CID},task={comm},pid=77,uid=0\n"
        f"Memory cgroup out of memory: Killed process 77 ({comm}) total-vm:1kB, anon-rss:1kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB oom_score_adj:-997\n"
    )
    kill = one(text)
    assert (kill.pid, kill.process, kill.oom_score_adj) == (77, comm, -997)
    assert (kill.pod_uid, kill.container_id) == (UID, CID)
    assert one(text.splitlines()[1]).process == comm


@pytest.mark.parametrize("prefix", [
    "",
    "[12345.678] ",
    "[  123.456789][ T1234] ",
    "[Mon Sep 28 09:54:39 2020] ",
    "6,1234,5678,-;",
    "3,1234,5678,-,caller=T123;",
    "kernel: ",
    "Sep 28 09:54:39 node-1 kernel: [140244.941538] ",
    "2024-05-01T10:00:00.123456+00:00 node-1 kernel: ",
    "kern  :err   : [  100.000000] ",
])
def test_line_prefixes(prefix):
    text = prefix + MODERN_SUMMARY + "\n" + prefix + MODERN_KILLED + "\n"
    assert parse_oom_text(text) == parse_oom_text(MODERN_SUMMARY + "\n" + MODERN_KILLED)


def test_crlf_and_trailing_npd_suffix():
    kill = one(MODERN_SUMMARY + "\r\n" + MODERN_KILLED + "; node had 3 OOMs\r\n")
    assert (kill.pid, kill.oom_score_adj, kill.task_memcg) == (2380, 0, "/oomtest")


def test_summary_split_by_interleaved_printk():
    # dump_oom_summary() builds its line with pr_cont; another CPU's printk in between makes
    # the rest come out as a record of its own.
    text = (
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0\n"
        "eth0: link up\n"
        f",oom_memcg=/kubepods/burstable/pod{UID},task_memcg=/kubepods/burstable/pod{UID}/{CID},"
        "task=node,pid=900,uid=1000\n"
        "Memory cgroup out of memory: Killed process 900 (node) total-vm:1kB, anon-rss:1kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:0kB oom_score_adj:500\n"
    )
    kill = one(text)
    assert (kill.pid, kill.scope, kill.pod_uid, kill.container_id) == (900, "memcg", UID, CID)
    assert kill.oom_memcg == f"/kubepods/burstable/pod{UID}"


def test_group_kill_members_get_the_group_cgroup():
    path = f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"
    text = (
        f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg={path},task_memcg={path},task=python3,pid=10,uid=0\n"
        "Memory cgroup out of memory: Killed process 10 (python3) total-vm:1kB, anon-rss:9kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB oom_score_adj:-997\n"
        f"Tasks in {path} are going to be killed due to memory.oom.group set\n"
        "Memory cgroup out of memory: Killed process 11 (sh) total-vm:1kB, anon-rss:1kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB oom_score_adj:-997\n"
        "Memory cgroup out of memory: Killed process 12 (tini) total-vm:1kB, anon-rss:1kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB oom_score_adj:-997\n"
    )
    kills = parse_oom_text(text)
    assert [k.pid for k in kills] == [10, 11, 12]
    assert all((k.pod_uid, k.container_id, k.scope) == (UID, CID, "memcg") for k in kills)


def test_killed_line_for_another_pid_does_not_inherit_a_summary():
    text = (
        f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg=/kubepods/pod{UID}/{CID},task_memcg=/kubepods/pod{UID}/{CID},task=a,pid=1,uid=0\n"
        "Memory cgroup out of memory: Killed process 1 (a) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"
        "Memory cgroup out of memory: Killed process 2 (b) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"
    )
    first, second = parse_oom_text(text)
    assert first.pod_uid == UID
    assert second.pid == 2 and second.pod_uid is None and second.task_memcg is None


def test_two_reports_in_one_chunk():
    text = "\n".join([
        "a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg=/kubepods/pod{UID}/{CID},task_memcg=/kubepods/pod{UID}/{CID},task=a,pid=1,uid=0",
        "Memory cgroup out of memory: Killed process 1 (a) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
        "b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg=/kubepods/besteffort/pod{UID}/{CID2},task_memcg=/kubepods/besteffort/pod{UID}/{CID2},"
        "task=b,pid=2,uid=0",
        "Memory cgroup out of memory: Killed process 2 (b) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
    ])
    kills = parse_oom_text(text)
    assert [(k.pid, k.container_id) for k in kills] == [(1, CID), (2, CID2)]


def test_same_pid_repeated_is_one_kill():
    assert len(parse_oom_text(MODERN_KILLED + "\n" + MODERN_KILLED)) == 1


@pytest.mark.parametrize(("text", "pid", "process"), [
    ("System OOM encountered, victim process: kube-apiserver, pid: 4321", 4321, "kube-apiserver"),
    ("System OOM encountered, victim process: my, odd (p), pid: 7", 7, "my, odd (p)"),
    ("System OOM encountered", 0, ""),
])
def test_kubelet_system_oom(text, pid, process):
    kill = one(text)
    assert (kill.pid, kill.process, kill.scope) == (pid, process, "system")
    assert kill.pod_uid is None and kill.anon_rss_bytes is None


@pytest.mark.parametrize("text", [
    "",
    "hello world",
    "\n\n\n",
    "eth0: link up",
    "mh (oom) child invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=999",
    "Tasks state (memory values in pages):",
    "[  14317]     0 14317    19443    18034    17152      882         0   200704        0           999 mh (oom) child",
    "oom_reaper: reaped process 2380 (python3), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    "OOM victim 5 (x) is already exiting. Skip killing the task",
    "oom killer 5 (x) has mm pinned by 6 (y)",
    f"Memory cgroup stats for /kubepods/burstable/pod{UID}/{CID}:",
    f"Tasks in /kubepods/pod{UID} are going to be killed due to memory.oom.group set",
    "memory: usage 65536kB, limit 65536kB, failcnt 0",
    "Out of memory and no killable processes...",
    "Container was OOMKilled (exit code 137)",
    "Killed process",
    "Killed process abc (x) total-vm:1kB",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0",
    "systemd-oomd[123]: Killed /user.slice/user-1000.slice/session-2.scope due to memory pressure",
])
def test_non_oom_text_yields_nothing(text):
    assert parse_oom_text(text) == []


# ---------------------------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("full", [MODERN_SUMMARY, MODERN_KILLED, SEED_001_DMESG.splitlines()[0],
                                  SEED_001_DMESG.splitlines()[1],
                                  "System OOM encountered, victim process: kubelet, pid: 99"])
def test_every_truncation_of_a_line(full):
    for cut in range(len(full) + 1):
        kills = parse_oom_text(full[:cut])
        assert len(kills) <= 1
        for kill in kills:
            assert kill.pid == 0 or str(kill.pid) in full


def test_huge_numbers_and_long_lines():
    huge = "9" * 5000  # int() refuses more than 4300 digits
    assert parse_oom_text(f"Killed process {huge} (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB") == []
    assert one(f"Killed process 5 (x) total-vm:{huge}kB, anon-rss:1kB").total_vm_bytes is None
    big = "9" * 50
    kill = one(f"Killed process 5 (x) total-vm:{big}kB, anon-rss:{'1' * 19}kB, file-rss:0kB, "
               f"UID:{big} pgtables:1kB oom_score_adj:-{big}")
    assert kill.total_vm_bytes is None and kill.uid is None and kill.oom_score_adj is None
    assert kill.anon_rss_bytes == int("1" * 19) * 1024
    long_line = "Killed process 1 (" + "(" * 200_000 + ") total-vm:1kB"
    parse_oom_text(long_line)  # must finish quickly and not raise
    parse_oom_text("Task in " * 100_000)
    parse_oom_text(",task=" * 50_000 + ",pid=1,uid=1 oom-kill:constraint=X")


def test_non_ascii_digits_are_not_numbers():
    assert parse_oom_text("Killed process ١٢٣ (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB") == []
    assert one("Killed process 5 (x) total-vm:²kB, anon-rss:1kB, file-rss:0kB").total_vm_bytes is None


def test_bytes_and_non_str_input():
    assert parse_oom_text(MODERN_KILLED.encode()) == parse_oom_text(MODERN_KILLED)
    assert parse_oom_text(None) == []  # type: ignore[arg-type]


_FRAGMENTS = [
    MODERN_SUMMARY, MODERN_KILLED, *SEED_001_DMESG.splitlines(), "Killed process ", "Kill process ",
    "oom-kill:constraint=", ",oom_memcg=", ",task_memcg=", ",task=", ",pid=", ",uid=", " (", ")",
    " total-vm:", "kB", ", anon-rss:", " UID:", " oom_score_adj:", "Task in ", " killed as a result of limit of ",
    "Tasks in ", " are going to be killed due to memory.oom.group set", "System OOM encountered",
    ", victim process: ", ", pid: ", " invoked oom-killer:", "Memory cgroup out of memory: ",
    "Out of memory: ", " score 5 or sacrifice child", " sharing same memory", "\n", "/kubepods/",
    f"pod{UID}", CID, "-", "9" * 30,
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8),
                       st.integers(-10**30, 10**30).map(str)), max_size=40).map("".join),
))
def test_never_raises(text):
    kills = parse_oom_text(text)
    assert isinstance(kills, list)
    for kill in kills:
        assert isinstance(kill, OOMKill)
        assert isinstance(kill.pid, int) and kill.pid >= 0
        assert kill.scope in ("memcg", "global", "system")
        assert isinstance(kill.process, str)
        if kill.container_id is not None:
            assert kill.pod_uid is not None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_memcg_path_never_raises(path):
    pod, cid = parse_memcg_path(path)
    assert pod is None or isinstance(pod, str)
    assert cid is None or pod is not None


# ---------------------------------------------------------------------------------------------
# cgroup paths
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    # cgroupfs driver: containerd and dockershim name the leaf by id, CRI-O "crio-<id>"
    (f"/kubepods/burstable/pod{UID}/{CID}", (UID, CID)),
    (f"/kubepods/besteffort/pod{UID}/{CID}", (UID, CID)),
    (f"/kubepods/pod{UID}/{CID}", (UID, CID)),  # Guaranteed: no QoS level
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", (UID, CID)),
    (f"/kubepods/burstable/pod{UID}/crio-conmon-{CID}", (UID, None)),
    (f"/kubepods/burstable/pod{UID}", (UID, None)),
    (f"/kubepods/pod{UID}/", (UID, None)),
    (f"/kubepods/burstable/pod{UID}/{CID}/nested-by-the-app", (UID, CID)),
    (f"/kubelet/kubepods/burstable/pod{UID}/{CID}", (UID, CID)),  # --cgroup-root=/kubelet
    # systemd driver
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope", (UID, CID)),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope", (UID, CID)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope", (UID, CID)),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", (UID, CID)),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope/container", (UID, CID)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope", (UID, None)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", (UID, None)),
    # kind: kubelet's cgroupRoot is /kubelet; on the host the node container's cgroup is in front
    (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope", (UID, CID)),
    (f"/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", (UID, CID)),
    (f"/docker/{CID2}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope", (UID, CID)),
    # a cgroupfs runtime taking runc's systemd "slice:prefix:id" cgroupsPath literally
    (f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}", (UID, CID)),
    (f"/system.slice/containerd.service/kubepods-pod{UID_}.slice:cri-containerd:{CID}", (UID, CID)),
    # static pods: the UID is the 32-hex hash of the manifest
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8daa50c3a64c9ff60bb9eab7b44b56fd.slice/"
     f"cri-containerd-{CID}.scope", ("8daa50c3a64c9ff60bb9eab7b44b56fd", CID)),
    (f"/kubepods/burstable/pod8daa50c3a64c9ff60bb9eab7b44b56fd/{CID}", ("8daa50c3a64c9ff60bb9eab7b44b56fd", CID)),
    # upper case is normalised
    (f"/kubepods/pod{UID.upper()}/{CID.upper()}", (UID, CID)),
    # outside kubepods
    ("/", (None, None)),
    ("", (None, None)),
    ("/oomtest", (None, None)),
    ("/kubepods", (None, None)),
    ("/kubepods/burstable", (None, None)),
    ("/kubepods.slice/kubepods-burstable.slice", (None, None)),
    ("/system.slice/kubelet.service", (None, None)),
    ("/system.slice/containerd.service", (None, None)),
    ("/user.slice/user-0.slice/session-1.scope", (None, None)),
    (f"/docker/{CID}", (None, None)),
    (f"/pod{UID}/{CID}", (None, None)),
    (f"/machine.slice/libpod-pod{UID_}.slice/libpod-{CID}.scope", (None, None)),
    ("/kubepods/burstable/podnot-a-uid/x", (None, None)),
    (f"/kubepods/burstable/pod{UID}x/{CID}", (None, None)),
])
def test_parse_memcg_path(path, expected):
    assert parse_memcg_path(path) == expected


# ---------------------------------------------------------------------------------------------
# lines captured from a real OOM kill (devcluster/sim/kernel_oom.py --save)
# ---------------------------------------------------------------------------------------------

REAL_6_18_V1 = DATA / "real-6.18.44-fc-v595-cgroupv1.txt"


def test_real_kernel_6_18_cgroup_v1_capture():
    kill = one(REAL_6_18_V1.read_text())
    pod = "26d64e88-33d8-4504-af75-795a8a4ec180"
    cid = "70d8daa45d6b64ec147c1a5c30a6b15b89cdfb697767deb2a4231f28ed123fc0"
    path = f"/kubepods/burstable/pod{pod}/{cid}"
    assert kill == OOMKill(
        pid=14317, process="mh (oom) child", scope="memcg", oom_score_adj=999,
        anon_rss_bytes=68608 * 1024, total_vm_bytes=77772 * 1024, uid=0,
        task_memcg=path, oom_memcg=path, pod_uid=pod, container_id=cid,
    )


@pytest.mark.parametrize("path", sorted(DATA.glob("real-*.txt")), ids=lambda p: p.name)
def test_every_real_capture_attributes_its_kill(path):
    kills = parse_oom_text(path.read_text())
    assert kills, path
    for kill in kills:
        assert kill.scope == "memcg"
        assert kill.pod_uid and kill.container_id
        assert kill.process and kill.anon_rss_bytes and kill.oom_score_adj is not None
