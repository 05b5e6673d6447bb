"""Hostile and careless input to the rules (issue 13, "Trust and hygiene", and the caps of
"Bounded cost"): OOM Events from unknown reporters, from other namespaces and from the future;
memcg paths with ``..``; terminal escapes in process names; a Node whose allocatable exceeds
its capacity; one Event with thousands of kills, a node with thousands of incidents."""

from __future__ import annotations

import time

import pytest

from memory_hygiene.core import kernel
from memory_hygiene.core.engine import evaluate
from memory_hygiene.core.events import oom_event_info
from memory_hygiene.core.policy import KNOWN_REPORTERS, PolicyError, parse_spec
from memory_hygiene.core.rules import MAX_CLOCK_SKEW_SECONDS, fmt_time
from memory_hygiene.core.snapshot import node_info, parse_time, pod_info

UID_A = "0f3c2b1a-1111-4222-8333-444455556666"
UID_B = "0f3c2b1a-1111-4222-8333-777788889999"
CID_A, CID_B = "a" * 64, "b" * 64
T = "2026-01-10T10:00:00Z"
NOW = parse_time(T) + 30


def node(name="n1", capacity="16Gi", allocatable=None):
    return node_info({"kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}"},
                      "status": {"capacity": {"memory": capacity}, "allocatable": {"memory": allocatable or capacity}}})


def pod(name, uid, cid, limit="1Gi", node_name="n1"):
    return pod_info({
        "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": uid,
                                    "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": node_name, "containers": [
            {"name": "app", "resources": {"requests": {"memory": limit}, "limits": {"memory": limit}}}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "restartCount": 0, "containerID": f"containerd://{cid}",
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
    })


def summary_line(uid, cid, pid=7, comm="worker", memcg=None):
    path = memcg or f"/kubepods/burstable/pod{uid}/{cid}"
    return (f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={path},"
            f"task_memcg={path},task={comm},pid={pid},uid=0")


def killed_line(pid=7, comm="worker", adj=999):
    return (f"Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:1000kB, anon-rss:900kB, "
            f"file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:{adj}")


def event(message, t=T, name="ev", source="memory-hygiene-node-agent", namespace="default", node_name="n1",
          last=None):
    return oom_event_info({
        "kind": "Event", "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "involvedObject": {"kind": "Node", "name": node_name}, "reason": "OOMKilling",
        "source": {"component": source, "host": node_name}, "message": message,
        "firstTimestamp": t, "lastTimestamp": last or t, "count": 1,
    })


def run(events, spec=None, nodes=None, pods=None, now=NOW):
    return evaluate("p", parse_spec(spec or {}), nodes or [node()],
                    pods if pods is not None else [pod("a", UID_A, CID_A), pod("b", UID_B, CID_B)], events, now)


def kill_text(uid=UID_A, cid=CID_A, pid=7, comm="worker"):
    return summary_line(uid, cid, pid, comm) + "\n" + killed_line(pid, comm)


# --- who is believed ------------------------------------------------------------------------


def test_known_reporters_are_believed_by_default():
    assert KNOWN_REPORTERS == ("kernel-monitor", "memory-hygiene-node-agent", "kubelet")
    for i, source in enumerate(KNOWN_REPORTERS):
        r = run([event(kill_text(pid=100 + i), name=f"e{i}", source=source)])
        assert [v.name for v in r.violations if v.rule == "SilentOOMKill"] == ["a"], source
        assert r.skipped == []


def test_an_unknown_reporter_is_not_believed_and_says_so():
    r = run([event(kill_text(), source="curl")])
    assert r.oom_kills == [] and r.violations == []
    [sk] = r.skipped
    assert (sk.cause, sk.node, sk.event.name) == ("reporter", "n1", "ev")
    assert "'curl'" in sk.detail


def test_a_policy_may_believe_other_reporters_or_any():
    spec = {"rules": {"silentOOM": {"reporters": ["oom-forwarder"]}}}
    assert len(run([event(kill_text(), source="oom-forwarder")], spec).oom_kills) == 1
    assert run([event(kill_text(), source="kernel-monitor")], spec).oom_kills == []  # the list replaces the default
    anyone = {"rules": {"silentOOM": {"reporters": ["*"]}}}
    assert len(run([event(kill_text(), source="whoever")], anyone).oom_kills) == 1
    with pytest.raises(PolicyError):
        parse_spec({"rules": {"silentOOM": {"reporters": []}}})


def test_an_oom_event_outside_default_is_not_believed():
    """A tenant who may create Events in its own namespace posts one about a Node there."""
    r = run([event(kill_text(), namespace="tenant")])
    assert r.oom_kills == []
    assert [s.cause for s in r.skipped] == ["namespace"]
    assert len(run([event(kill_text(), namespace="")]).oom_kills) == 1  # a hand-written file


def test_an_event_from_the_future_is_ignored_and_counted():
    r = run([event(kill_text(), t="2999-01-01T00:00:00Z")])
    assert r.oom_kills == [] and r.violations == []
    [sk] = r.skipped
    assert sk.cause == "future" and "2999-01-01" in sk.detail
    # a lastTimestamp far ahead would keep the kill in the lookback for ever: also refused
    assert [s.cause for s in run([event(kill_text(), last="2999-01-01T00:00:00Z")]).skipped] == ["future"]
    # within the clock skew it counts
    soon = fmt_time(NOW + MAX_CLOCK_SKEW_SECONDS - 5)
    assert len(run([event(kill_text(), t=soon)]).oom_kills) == 1


def test_audit_of_a_file_is_not_dated_by_an_event_from_the_future(tmp_path, caplog):
    """`audit -f` takes "now" from the newest time in the files: not from one in the future."""
    from memory_hygiene.cli import main
    from memory_hygiene.inputs import load_files

    future = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x", "namespace": "default", "uid": "x"},
              "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "OOMKilling", "type": "Warning",
              "source": {"component": "kernel-monitor"}, "message": killed_line(),
              "firstTimestamp": "2999-01-01T00:00:00Z", "lastTimestamp": "2999-01-01T00:00:00Z"}
    import json

    path = tmp_path / "f.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [future]}))
    snap = load_files([str(path)])
    assert snap.newest_time is None or snap.newest_time <= time.time() + MAX_CLOCK_SKEW_SECONDS
    assert main(["audit", "-f", str(path), "-o", "json"]) == 0
    assert "dated 2999-01-01T00:00:00Z, in the future" in caplog.text


# --- what is copied out of kernel text -------------------------------------------------------


def test_dotdot_in_a_memcg_path_is_refused_not_normalized():
    """`/kubepods/burstable/pod<A>/../pod<B>/<cid B>` normalizes to pod B's cgroup: the kernel
    never prints such a path, so it names nobody, and pod B is not blamed."""
    forged = f"/kubepods/burstable/pod{UID_A}/../pod{UID_B}/{CID_B}"
    assert kernel.parse_memcg_path(forged) == (None, None)
    for bad in (f"/kubepods/./burstable/pod{UID_B}/{CID_B}", f"/kubepods//burstable/pod{UID_B}/{CID_B}",
                f"kubepods/burstable/pod{UID_B}/{CID_B}", f"/kubepods/burstable/pod{UID_B}/{CID_B}/..",
                f"/kubepods/burstable/pod{UID_B}\x1b/{CID_B}"):
        assert kernel.parse_memcg_path(bad) == (None, None), bad
    assert kernel.parse_memcg_path(f"/kubepods/burstable/pod{UID_B}/{CID_B}") == (UID_B, CID_B)
    text = summary_line(UID_A, CID_A, memcg=forged) + "\n" + killed_line(adj=12345)
    [k] = kernel.parse_oom_text(text)
    assert (k.pod_uid, k.container_id, k.task_memcg, k.oom_memcg, k.bad_memcg) == (None, None, None, None, forged)
    r = run([event(text)])
    [inc] = r.oom_kills
    assert inc.pod is None and inc.pod_uid is None
    assert "not canonical" in inc.reason and forged in inc.reason
    assert not [v for v in r.violations if v.kind == "Pod"]


def test_escape_sequences_in_a_process_name_do_not_reach_status_or_events():
    comm = "\x1b[2J\x1b]0;pwned\x07evil\u202eexe\x07"
    text = summary_line(UID_A, CID_A, comm=comm) + "\n" + killed_line(comm=comm)
    [k] = kernel.parse_oom_text(text)
    assert k.process == "evilexe"
    [v] = run([event(text)]).violations
    assert "process evilexe (pid 7)" in v.message
    assert v.message.isprintable() and "\x1b" not in v.message
    assert kernel.clean_text("plain text (ok)") == "plain text (ok)"


def test_escape_sequences_in_an_events_node_name_are_stripped():
    ev = event(kill_text(), node_name="n1\x1b[31m")
    assert ev.node == "n1"


# --- nodes ------------------------------------------------------------------------------------


def test_allocatable_above_capacity_is_reported_and_capacity_is_the_basis():
    n = node(capacity="8Gi", allocatable="64Gi")
    pods = [pod(f"p{i}", f"0f3c2b1a-1111-4222-8333-00000000000{i}", str(i) * 64, limit="3Gi") for i in range(3)]
    r = evaluate("p", parse_spec({}), [n], pods, [], NOW)
    rules = sorted(v.rule for v in r.violations)
    assert rules == ["NodeAllocatableAboveCapacity", "NodeOvercommitted"]
    text = next(v.message for v in r.violations if v.rule == "NodeAllocatableAboveCapacity")
    assert "64Gi" in text and "8Gi" in text
    over = next(v.message for v in r.violations if v.rule == "NodeOvercommitted")
    assert "of capacity 8Gi" in over  # 9Gi of limits: over capacity, though far under the claimed 64Gi
    ok = evaluate("p", parse_spec({}), [node(capacity="8Gi", allocatable="7Gi")], [], [], NOW)
    assert ok.violations == []
    off = evaluate("p", parse_spec({"rules": {"overcommit": {"enabled": False}}}), [n], [], [], NOW)
    assert off.violations == []


# --- the caps -----------------------------------------------------------------------------------


def many_kills(n, first_pid=1000):
    return "\n".join(killed_line(pid=first_pid + i, adj=999) for i in range(n))


def test_one_event_with_ten_thousand_kills_is_read_up_to_the_cap():
    text = many_kills(10_000)
    assert len(text) > 700_000
    kills, capped = kernel.parse_oom_text_capped(text, 500)
    assert len(kills) == 500 and capped and kills[-1].pid == 1499
    kills, capped = kernel.parse_oom_text_capped(many_kills(500), 500)
    assert len(kills) == 500 and not capped
    r = run([event(text)], pods=[])  # one second, one score: one (group) incident of 500 kills
    assert sum(i.kills for i in r.oom_kills) == 500
    assert [s.cause for s in r.skipped] == ["kills_per_event"]
    r = run([event(text)], {"rules": {"silentOOM": {"maxKillsPerEvent": 20}}}, pods=[])
    assert sum(i.kills for i in r.oom_kills) == 20


def test_the_kernel_text_is_read_once_when_the_event_arrives(monkeypatch):
    """The Event's kills are read when it is converted; evaluating it (every policy, every pass)
    reads no text again, and a 700 KB message is not kept, only an excerpt for logs."""
    text = many_kills(10_000)
    ev = event(text)
    assert len(ev.kills) == 10_000 and not ev.more_kills and ev.kills[0].pid == 1000
    assert len(ev.message) <= 200 and text.startswith(ev.message)

    def no_parse(*_a, **_k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(kernel, "parse_oom_text_capped", no_parse)
    monkeypatch.setattr(kernel, "parse_oom_text", no_parse)
    for cap in (20, 500):
        r = run([ev], {"rules": {"silentOOM": {"maxKillsPerEvent": cap}}}, pods=[])
        assert sum(i.kills for i in r.oom_kills) == cap


def test_an_event_is_read_up_to_the_largest_cap_a_policy_may_ask_for():
    kills, more = kernel.parse_oom_text_capped(many_kills(12), 10)
    assert len(kills) == 10 and more
    from memory_hygiene.core import events as core_events

    saved = core_events.MAX_KILLS_PER_TEXT
    try:
        core_events.MAX_KILLS_PER_TEXT = 10
        ev = event(many_kills(12))
    finally:
        core_events.MAX_KILLS_PER_TEXT = saved
    assert len(ev.kills) == 10 and ev.more_kills
    r = run([ev], {"rules": {"silentOOM": {"maxKillsPerEvent": 10}}}, pods=[])
    assert [s.cause for s in r.skipped] == ["kills_per_event"], "more than the Event held: said"


def test_incidents_per_node_are_capped_newest_kept():
    events = [event(killed_line(pid=5000 + i, adj=999), t=fmt_time(NOW - 3000 + i * 2), name=f"e{i}")
              for i in range(50)]
    r = run(events, {"rules": {"silentOOM": {"maxIncidentsPerNode": 10}}}, pods=[])
    assert len(r.oom_kills) == 10
    assert sorted(k.pid for k in r.oom_kills) == list(range(5040, 5050))
    [sk] = r.skipped
    assert (sk.cause, sk.node, sk.event) == ("incidents_per_node", "n1", None)
    assert len(run(events, pods=[]).oom_kills) == 50  # under the default cap


def test_the_reporter_is_read_from_new_style_events_too():
    """A core/v1 Event from a newer recorder names its reporter in reportingComponent."""
    ev = oom_event_info({
        "kind": "Event", "metadata": {"name": "k", "namespace": "default", "uid": "k"},
        "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "SystemOOM", "source": {},
        "reportingComponent": "kubelet", "message": "System OOM encountered, victim process: java, pid: 4242",
        "firstTimestamp": T, "lastTimestamp": T,
    })
    assert ev.source == "kubelet"
    assert len(run([ev]).oom_kills) == 1
