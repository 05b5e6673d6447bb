"""core.kmsg: /dev/kmsg records -> one kill per OOM report, with real kernel records.

Data:
* tests/unit/data/kernel/kmsg-6.18.44-fc-v1252-cgroupv1.txt: the 79 raw /dev/kmsg records
  (headers included, exactly as read()) of one real memcg OOM kill on this machine (kernel
  6.18.44-fc-v1252, cgroup v1), made by devcluster/sim/kernel_oom.py real_oom_kill(qos="burstable")
  and read from /dev/kmsg by a follower opened before it.
* The real kubelet node's lines in ../shared/realnode/FINDINGS.md (kubelet v1.37.2,
  containerd 1.6.20, cgroupRoot /realnode; oom_memcg = the pod's cgroup), given here the kmsg
  header the kernel prints (their dmesg timestamps as usec).
* The group-kill line is mm/memcontrol.c mem_cgroup_print_oom_group()'s format; the pre-5.0
  lines are those of RHEL 7 (3.10) reports, in core/kernel.py's formats.
"""

from __future__ import annotations

from pathlib import Path

from memory_hygiene.core import kernel, kmsg

DATA = Path(__file__).parent / "data" / "kernel" / "kmsg-6.18.44-fc-v1252-cgroupv1.txt"
REAL = DATA.read_text()
REAL_RECORDS = list(kmsg.split_records(REAL))
CGROUP = ("/kubepods/burstable/pode4975a88-bce9-4830-9f63-ede1e0dee02a/"
          "2d8347eb7a81f2d20785bce338e460d55001f4e12bfda4cbd99ee6ca74d75a35")

# ../shared/realnode/FINDINGS.md, case (a): dmesg [1460.860887] ... -> usec 1460860887.
REALNODE = [
    "4,900,1460860887,-;memhog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=999",
    "6,901,1460861055,-;memory: usage 102400kB, limit 102400kB, failcnt 118",
    "6,902,1460861594,-;Memory cgroup stats for /realnode/kubepods/burstable/pod52d72f35-0cbf-4c64-9fc4-9f941d4f243a:",
    "6,903,1460861790,-;[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
    "6,904,1460861794,-;[   5738]     0  5738      247      137        0      137         0    36864        0             0 pause",
    "6,905,1460861876,-;[   5785]     0  5785    25873    25513    25376      137         0   241664        0           999 memhog",
    "6,906,1460861880,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=2e626fb42002566e7b1e489c7a4b275dfe9fc4f25c002a8705345186e5a394e1,mems_allowed=0,oom_memcg=/realnode/kubepods/burstable/pod52d72f35-0cbf-4c64-9fc4-9f941d4f243a,task_memcg=/realnode/kubepods/burstable/pod52d72f35-0cbf-4c64-9fc4-9f941d4f243a/2e626fb42002566e7b1e489c7a4b275dfe9fc4f25c002a8705345186e5a394e1,task=memhog,pid=5785,uid=0",
    "3,907,1460861908,-;Memory cgroup out of memory: Killed process 5785 (memhog) total-vm:103492kB, anon-rss:101504kB, file-rss:548kB, shmem-rss:0kB, UID:0 pgtables:236kB oom_score_adj:999",
]


def _feed(records, grouper=None):
    g = grouper or kmsg.Grouper()
    kills = []
    for raw in records:
        r = kmsg.parse_record(raw)
        assert r is not None, raw
        kills += g.feed(r)
    return kills + g.flush(), g


def _shift(raw: str, delta: int) -> str:
    r = kmsg.parse_record(raw)
    head = f"{r.prio},{r.seq + delta},{r.usec},{r.flags};"
    return head + raw.split(";", 1)[1]


def test_parse_record_header_and_dictionary():
    r = kmsg.parse_record(b"6,1234,5678901,-,caller=T42;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n")
    assert (r.prio, r.seq, r.usec, r.flags, r.caller, r.text) == (6, 1234, 5678901, "-", "T42", "usb 1-1: new device")
    assert r.fields == (("SUBSYSTEM", "usb"), ("DEVICE", "c189:1"))
    assert kmsg.parse_record("not a record") is None
    assert kmsg.parse_record(REAL_RECORDS[0]).text.startswith("mh (oom) child invoked oom-killer:")


def test_real_report_is_one_kill_with_the_kernel_lines():
    assert len(REAL_RECORDS) == 79
    kills, g = _feed(REAL_RECORDS)
    assert len(kills) == 1 and g.lost_records == 0
    (k,) = kills
    assert k.complete
    assert k.pids == (23239,)
    assert k.seq == 465  # the Killed process record
    assert k.usec == 9815236013
    assert k.task_memcg == CGROUP and k.group is None
    assert k.lines[0].startswith("oom-kill:constraint=CONSTRAINT_MEMCG,") and k.lines[0].endswith(",pid=23239,uid=0")
    assert k.lines[1].startswith("Memory cgroup out of memory: Killed process 23239 (mh (oom) child) total-vm:")
    assert len(k.lines) == 2
    # The operator reads the same message to the pod and container, as NPD's Events.
    (parsed,) = kernel.parse_oom_text("\n".join(k.lines))
    assert (parsed.pid, parsed.process, parsed.oom_score_adj) == (23239, "mh (oom) child", 999)
    assert parsed.pod_uid == "e4975a88-bce9-4830-9f63-ede1e0dee02a"
    assert parsed.container_id == CGROUP.rsplit("/", 1)[1]


def test_realnode_report_pod_level_oom_memcg():
    kills, _ = _feed(REALNODE)
    (k,) = kills
    assert k.pids == (5785,) and k.seq == 907 and k.complete
    assert k.task_memcg.endswith("/2e626fb42002566e7b1e489c7a4b275dfe9fc4f25c002a8705345186e5a394e1")
    (parsed,) = kernel.parse_oom_text("\n".join(k.lines))
    assert parsed.pod_uid == "52d72f35-0cbf-4c64-9fc4-9f941d4f243a"


def test_interleaved_records_are_ignored():
    noise = ["6,{},1,-;eth0: link up", "4,{},2,-; <TASK>", "6,{},3,-;audit: type=1400 apparmor=DENIED"]
    out, seq = [], 0
    for i, raw in enumerate(REAL_RECORDS):
        out.append(_shift(raw, seq))
        if i % 10 == 5 or i == len(REAL_RECORDS) - 2:  # also right between oom-kill: and Killed
            seq += 1
            r = kmsg.parse_record(_shift(raw, seq - 1))
            out.append(noise[i % 3].format(r.seq + 1))
    kills, g = _feed(out)
    (k,) = kills
    assert k.pids == (23239,) and k.complete and g.lost_records == 0 and len(k.lines) == 2


def test_pr_cont_split_summary_is_joined():
    summary = next(r for r in REAL_RECORDS if ";oom-kill:" in r)
    killed = next(r for r in REAL_RECORDS if "Killed process" in r)
    text = kmsg.parse_record(summary).text
    a, rest = text.split(",oom_memcg=", 1)
    b, c = rest.split(",task_memcg=", 1)
    records = [
        REAL_RECORDS[0],
        f"6,464,9815235990,-;{a}",
        "6,465,9815235991,-;eth0: link down",  # another CPU's record in between
        "6,466,9815235992,c;,oom_memcg=",
        f"6,467,9815235993,c;{b}",
        f"6,468,9815235994,c;,task_memcg={c}",
        _shift(killed, 4),
    ]
    kills, _ = _feed(records)
    (k,) = kills
    assert k.lines[0] == text
    assert k.task_memcg == CGROUP and k.pids == (23239,)


def test_header_ratelimited_kills_are_separate():
    """After 10 reports in 5 s the kernel prints only the Killed lines (dump_header ratelimit)."""
    killed = kmsg.parse_record(next(r for r in REAL_RECORDS if "Killed process" in r)).text
    records = [f"3,{100 + i},{1000 + i},-;" + killed.replace("23239", str(500 + i)) for i in range(3)]
    kills, _ = _feed(records)
    assert [k.pids for k in kills] == [(500,), (501,), (502,)]
    assert [k.seq for k in kills] == [100, 101, 102]
    assert all(k.task_memcg is None for k in kills)


def test_group_kill_is_one_kill():
    group = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0aa4b5b0_9b63_4a7e_8c3f_0d3a1f5b9e11.slice"
    cont = group + "/cri-containerd-" + "ab" * 32 + ".scope"
    records = [
        "4,10,100,-;stress-ng invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=1000",
        f"6,11,101,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={cont},task_memcg={cont},task=stress-ng,pid=41,uid=0",
        "3,12,102,-;Memory cgroup out of memory: Killed process 41 (stress-ng) total-vm:100kB, anon-rss:90kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:1000",
        "6,13,103,-;Tasks in ",
        f"6,14,104,c;{cont}",
        "6,15,105,c; are going to be killed due to memory.oom.group set",
        "3,16,106,-;Memory cgroup out of memory: Killed process 40 (sh) total-vm:10kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:1000",
        "3,17,107,-;Memory cgroup out of memory: Killed process 42 (stress-ng) total-vm:10kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:1000",
        "6,18,108,-;oom_reaper: reaped process 41 (stress-ng), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    ]
    kills, _ = _feed(records)
    (k,) = kills
    assert k.pids == (41, 40, 42) and k.seq == 12 and k.group == cont
    assert k.lines[2] == f"Tasks in {cont} are going to be killed due to memory.oom.group set"
    assert kmsg.explained([k], cont) == 3


def test_overrun_cuts_a_report_and_counts_the_lost_records():
    summary = next(r for r in REAL_RECORDS if ";oom-kill:" in r)
    # The report's Killed record (465) and 9 more were overwritten: the next record is 475.
    records = REAL_RECORDS[:10] + [summary, "6,475,9815300000,-;eth0: link up"] + [
        _shift(r, 1000) for r in REAL_RECORDS]
    kills, g = _feed(records)
    assert g.lost_records == (464 - 397) + 10 + (1387 - 476)
    first, second = kills
    assert not first.complete and first.pids == () and first.seq == 464  # named by its oom-kill: record
    (parsed,) = kernel.parse_oom_text("\n".join(first.lines))
    assert parsed.pid == 23239 and parsed.container_id == CGROUP.rsplit("/", 1)[1]
    assert second.complete and second.seq == 1465


def test_report_start_lost_still_names_the_same_kill():
    """A restart that finds the report's first records overwritten names the kill the same."""
    kills, _ = _feed(REAL_RECORDS[-2:])
    (k,) = kills
    assert k.seq == 465 and k.pids == (23239,)
    assert kmsg.kill_event_name("n1", "7e9a7af3-a748-4763-beff-9c50723c3188", k.seq) == \
        kmsg.kill_event_name("n1", "7e9a7af3-a748-4763-beff-9c50723c3188", _feed(REAL_RECORDS)[0][0].seq)


def test_legacy_report_rhel7():
    records = [
        "4,1,1,-;java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=999",
        "6,2,2,-;Task in /kubepods/burstable/pod5b9e6c1e-0d7f-11e9-9a3f-0050568b3c3c/5f0d2e3c" + "0" * 56 +
        " killed as a result of limit of /kubepods/burstable/pod5b9e6c1e-0d7f-11e9-9a3f-0050568b3c3c",
        "3,3,3,-;Memory cgroup out of memory: Kill process 9876 (java) score 1979 or sacrifice child",
        "3,4,4,-;Killed process 9876 (java) total-vm:3946468kB, anon-rss:1041444kB, file-rss:15032kB, shmem-rss:0kB",
    ]
    kills, _ = _feed(records)
    (k,) = kills
    assert k.pids == (9876,) and k.seq == 4 and len(k.lines) == 3
    (parsed,) = kernel.parse_oom_text("\n".join(k.lines))
    assert parsed.pod_uid == "5b9e6c1e-0d7f-11e9-9a3f-0050568b3c3c"


def test_split_records_reads_cat_dev_kmsg():
    text = "6,1,2,-;first\n SUBSYSTEM=usb\n6,2,3,-;second\ngarbage\n"
    records = list(kmsg.split_records(text))
    assert records == ["6,1,2,-;first\n SUBSYSTEM=usb\n", "6,2,3,-;second\n"]
    assert len(list(kmsg.split_records(REAL))) == 79


def test_event_names_are_dns_subdomains_and_stable():
    boot = "7e9a7af3-a748-4763-beff-9c50723c3188"
    name = kmsg.kill_event_name("ip-10-0-0-1.ec2.internal", boot, 465)
    assert name == "ip-10-0-0-1.ec2.internal.oom.7e9a7af3a7484763beff9c50723c3188.465"
    long = kmsg.kill_event_name("n" * 253, boot, 2 ** 63)
    assert len(long) <= 253
    a = kmsg.counter_event_name("n1", boot, CGROUP, 3)
    assert a == kmsg.counter_event_name("n1", boot, CGROUP, 3) != kmsg.counter_event_name("n1", boot, CGROUP, 4)


def test_counter_message_goes_through_the_operator_parser():
    msg = kmsg.counter_kill_message(CGROUP, "memory.oom_control", 2, 3)
    (parsed,) = kernel.parse_oom_text(msg)
    assert parsed.pid == 0 and parsed.scope == "memcg"
    assert parsed.pod_uid == "e4975a88-bce9-4830-9f63-ede1e0dee02a"
    assert parsed.container_id == CGROUP.rsplit("/", 1)[1]
    assert "memcg counter memory.oom_control" in msg


def test_record_time():
    boot = kmsg.boot_epoch(1_796_476_747.5, 100.25)
    assert kmsg.record_time(9815236013, boot) == boot + 9815.236013


def test_syslog_read_all_lines():
    """syslog(2) SYSLOG_ACTION_READ_ALL, as read on this machine (klogctl(3), kernel 6.18.44)."""
    assert kmsg.parse_syslog_line("<6>[10066.184270] mhnode0: port 3(vethaeaf6093) entered disabled state") == (
        6, 10066184270, "mhnode0: port 3(vethaeaf6093) entered disabled state")
    assert kmsg.parse_syslog_line("<3>[    1.000001] x") == (3, 1000001, "x")
    assert kmsg.parse_syslog_line("no stamp") is None
    killed = kmsg.parse_record(next(r for r in REAL_RECORDS if "Killed process" in r))
    g = kmsg.Grouper(count_gaps=False)
    kills = g.feed(kmsg.Record(killed.usec, killed.usec, 3, "-", None, killed.text)) + g.flush()
    assert [k.seq for k in kills] == [killed.usec] and g.lost_records == 0
    assert kmsg.kill_event_name("n1", "ab", killed.usec, by_time=True) == f"n1.oom.ab.t{killed.usec}"


def test_old_killed_line_formats():
    """The Killed line as RHEL 7's 3.10 and RHEL 6's 2.6.32 print it (core/kernel.py's formats)."""
    records = [
        "3,1,1,-;Memory cgroup out of memory: Kill process 9876 (java) score 999 or sacrifice child",
        "3,2,2,-;Killed process 9876 (java), UID 1001, total-vm:3946468kB, anon-rss:1041444kB, file-rss:15032kB",
        "3,3,3,-;Memory cgroup out of memory: Kill process 1200 (mysqld) score 5 or sacrifice child",
        "3,4,4,-;Killed process 1200, UID 27, (mysqld) total-vm:1463928kB, anon-rss:300kB, file-rss:4kB",
    ]
    kills, _ = _feed(records)
    assert [k.pids for k in kills] == [(9876,), (1200,)]
    assert [k.seq for k in kills] == [2, 4]


def _from_dmesg(lines: list[str], first_seq: int) -> list[str]:
    """dmesg lines "[  2993.794008] text" as the kmsg records they were (prio 6, consecutive seq)."""
    out = []
    for i, line in enumerate(lines):
        stamp, _, text = line.partition("] ")
        sec, _, frac = stamp.strip("[ ").partition(".")
        out.append(f"6,{first_seq + i},{int(sec) * 1_000_000 + int(frac)},-;{text}")
    return out


# A cgroup v2 group kill on AKS (systemd driver, containerd), from
# https://github.com/egachi/nodejs-MemoryQoS-kubernetes (README.md): the victim is named again
# among the group's members.
AKS_V2_GROUP = [
    "[ 2993.661240] Thread-2 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=969",
    "[ 2993.664084]  oom_kill_process+0xfc/0x210",
    "[ 2993.664150] memory: usage 4194304kB, limit 4194304kB, failcnt 1273284",
    "[ 2993.782678] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-46b3e0a4df44b752b841aecca454e6e78995d567912a84950390bae6f6777a63.scope,mems_allowed=0,oom_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod94eb36cd_29e1_478b_b365_4cb5dfc7d6fb.slice,task_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod94eb36cd_29e1_478b_b365_4cb5dfc7d6fb.slice/cri-containerd-46b3e0a4df44b752b841aecca454e6e78995d567912a84950390bae6f6777a63.scope,task=node,pid=22609,uid=0",
    "[ 2993.794008] Memory cgroup out of memory: Killed process 22609 (node) total-vm:9923620kB, anon-rss:4116684kB, file-rss:23132kB, shmem-rss:0kB, UID:0 pgtables:10964kB oom_score_adj:969",
    "[ 2993.798222] Tasks in /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod94eb36cd_29e1_478b_b365_4cb5dfc7d6fb.slice/cri-containerd-46b3e0a4df44b752b841aecca454e6e78995d567912a84950390bae6f6777a63.scope are going to be killed due to memory.oom.group set",
    "[ 2993.804150] Memory cgroup out of memory: Killed process 22609 (node) total-vm:9923620kB, anon-rss:4116684kB, file-rss:23132kB, shmem-rss:0kB, UID:0 pgtables:10964kB oom_score_adj:969",
]

# The first memory.oom.group report (4.19, before the oom-kill: line), from the patch review
# https://lkml.kernel.org/r/20180801055503.GB16767@dhcp22.suse.cz ("mm, oom: introduce memory.oom.group").
LKML_GROUP = [
    "[   52.835327] Out of memory: Kill process 1221 (allocate) score 241 or sacrifice child",
    "[   52.836625] Killed process 1221 (allocate) total-vm:2257144kB, anon-rss:2009128kB, file-rss:4kB, shmem-rss:0kB",
    "[   52.841431] Tasks in /A1 are going to be killed due to memory.oom.group set",
    "[   52.869439] Killed process 1217 (allocate) total-vm:2052344kB, anon-rss:1704036kB, file-rss:0kB, shmem-rss:0kB",
    "[   52.875601] Killed process 1218 (allocate) total-vm:106668kB, anon-rss:24668kB, file-rss:0kB, shmem-rss:0kB",
    "[   52.882914] Killed process 1219 (allocate) total-vm:106668kB, anon-rss:21528kB, file-rss:0kB, shmem-rss:0kB",
    "[   52.891806] Killed process 1220 (allocate) total-vm:2257144kB, anon-rss:1984120kB, file-rss:4kB, shmem-rss:0kB",
    "[   52.903770] Killed process 1221 (allocate) total-vm:2257144kB, anon-rss:2009128kB, file-rss:4kB, shmem-rss:0kB",
    "[   52.905574] Killed process 1222 (allocate) total-vm:2257144kB, anon-rss:2063640kB, file-rss:0kB, shmem-rss:0kB",
    "[   53.202153] oom_reaper: reaped process 1222 (allocate), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
]


def test_real_v2_group_kill_is_one_kill_victim_first():
    kills, _ = _feed(_from_dmesg(AKS_V2_GROUP, 5000))
    (k,) = kills
    assert k.pids == (22609,) and k.seq == 5004 and k.usec == 2993794008
    assert k.group == k.task_memcg and k.group.endswith(".scope")
    parsed = kernel.parse_oom_text("\n".join(k.lines))
    assert [p.pid for p in parsed] == [22609]
    assert parsed[0].pod_uid == "94eb36cd-29e1-478b-b365-4cb5dfc7d6fb"
    assert parsed[0].container_id == "46b3e0a4df44b752b841aecca454e6e78995d567912a84950390bae6f6777a63"


def test_real_legacy_group_kill_is_one_kill():
    kills, _ = _feed(_from_dmesg(LKML_GROUP, 10))
    (k,) = kills
    assert k.pids == (1221, 1217, 1218, 1219, 1220, 1222) and k.seq == 11 and k.group == "/A1"
    assert len(k.lines) == 9  # the announce, the victim, Tasks in, six member lines; not the reaper
    assert not any("oom_reaper" in line for line in k.lines)
