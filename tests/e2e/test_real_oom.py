"""A real kernel OOM kill on this machine, parsed back by memory_hygiene.core.kernel.

Needs root and a memory cgroup controller. Without them these tests FAIL (with the reason):
they are never skipped, so a machine that cannot run them is noticed.
"""

from __future__ import annotations

import os
import uuid

import pytest

from memory_hygiene.core.kernel import parse_memcg_path, parse_oom_text
from devcluster.sim import kernel_oom



def _kill(qos: str):
    pod_uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    try:
        result = kernel_oom.real_oom_kill(pod_uid, container_id, qos=qos)
    except kernel_oom.RealOOMError as exc:
        pytest.fail(f"no real OOM kill on this machine: {exc}", pytrace=False)
    return pod_uid, container_id, result


@pytest.mark.parametrize("qos", ["burstable", "besteffort", "guaranteed"])
def test_real_oom_kill_is_attributed_to_pod_and_container(qos):
    pod_uid, container_id, result = _kill(qos)
    level = "" if qos == "guaranteed" else f"/{qos}"
    assert result.cgroup_path.endswith(f"/kubepods{level}/pod{pod_uid}/{container_id}")
    assert parse_memcg_path(result.cgroup_path) == (pod_uid, container_id)
    assert result.parent_pid != result.killed_pid
    assert result.oom_kill_count >= 1

    kills = [k for k in parse_oom_text("\n".join(result.lines)) if k.pid == result.killed_pid]
    assert len(kills) == 1, result.lines
    kill = kills[0]
    assert kill.process == result.child_comm == kernel_oom.CHILD_COMM
    assert kill.scope == "memcg"
    assert (kill.pod_uid, kill.container_id) == (pod_uid, container_id)
    assert kill.task_memcg == kill.oom_memcg == result.cgroup_path
    assert kill.oom_score_adj == result.child_oom_score_adj
    assert kill.uid == 0
    # the child was killed at the limit (64 MiB); its python interpreter adds a little
    assert 32 << 20 <= kill.anon_rss_bytes <= 128 << 20
    # nothing but the child died
    others = [k for k in parse_oom_text("\n".join(result.lines)) if k.pid == result.parent_pid]
    assert others == []


def test_real_oom_kill_each_line_alone():
    """What node-problem-detector would post (the Killed line) and the oom-kill: line."""
    pod_uid, container_id, result = _kill("burstable")
    killed = [ln for ln in result.lines if f"Killed process {result.killed_pid} (" in ln]
    summary = [ln for ln in result.lines if ln.startswith("oom-kill:") and f",pid={result.killed_pid}," in ln]
    assert len(killed) == 1 and len(summary) == 1, result.lines
    (npd,) = parse_oom_text(killed[0])
    assert (npd.pid, npd.process, npd.pod_uid) == (result.killed_pid, kernel_oom.CHILD_COMM, None)
    (summ,) = parse_oom_text(summary[0])
    assert (summ.pid, summ.process, summ.pod_uid, summ.container_id) == (
        result.killed_pid, kernel_oom.CHILD_COMM, pod_uid, container_id)


def test_without_root_it_fails_with_the_reason(monkeypatch):
    monkeypatch.setattr(kernel_oom.os, "geteuid", lambda: 1000)
    with pytest.raises(kernel_oom.RealOOMError, match="needs root.*euid 1000"):
        kernel_oom.real_oom_kill(str(uuid.uuid4()), "0" * 64)


def test_without_memory_cgroup_it_fails_with_the_reason(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n"
        f"30 22 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n"  # no cgroup.controllers there
        "31 22 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    with pytest.raises(kernel_oom.RealOOMError, match="no memory cgroup controller"):
        kernel_oom.memory_cgroup(mountinfo)


def test_memory_cgroup_of_this_machine():
    try:
        version, mount, root = kernel_oom.memory_cgroup()
    except kernel_oom.RealOOMError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert version in (1, 2)
    assert (mount / ("memory.limit_in_bytes" if version == 1 else "cgroup.controllers")).exists()
