"""The node agent as a real process: this machine's real /dev/kmsg, real OOM kills in
kubelet-shaped memory cgroups (devcluster/sim/kernel_oom.py), a real API server, the operator.

Needs root (real OOM kills, /dev/kmsg with kernel.dmesg_restrict=1). Without it these tests FAIL.

The 1,000-kill burst is fed as a recorded kmsg stream (--kmsg-file), built from the records of
one real kill on this machine with new sequence numbers, pids and container cgroups, rather than
made by 1,000 real kills: the kernel ratelimits the OOM report header and the oom-kill: line to
10 per 5 s for the whole machine (mm/oom_kill.c oom_rs), so a real burst would take the oom-kill:
lines from the real-OOM tests other sessions run on this shared machine at the same time (their
kernel_oom.real_oom_kill waits for that line and fails), would fill the shared ring buffer they
read, and would cost minutes of the 2 CPUs. The agent's grouping, naming, rate limit and posting
are the same code for both inputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from memory_hygiene.core import kmsg
from memory_hygiene.core.snapshot import parse_time
from devcluster import localcluster
from tests.e2e.conftest import wait_for
from devcluster.sim import kernel_oom
from tests.e2e.test_operator import new_scenario, scoped_spec, settled_with

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "kernel" / "kmsg-6.18.44-fc-v1252-cgroupv1.txt"
COMPONENT = "memory-hygiene-node-agent"


# What the DaemonSet gives the agent (manifests/node-agent/daemonset.yaml): uid 0, no capability but
# CAP_SYSLOG (capabilities drop ALL, add SYSLOG), no_new_privs (allowPrivilegeEscalation: false).
ONLY_CAP_SYSLOG = ("setpriv", "--no-new-privs", "--inh-caps", "-all", "--bounding-set", "-all,+syslog", "--")


class AgentProcess:
    def __init__(self, kubeconfig: Path, node: str, log_path: Path, *args: str,
                 prefix: tuple[str, ...] = ONLY_CAP_SYSLOG) -> None:
        self.kubeconfig, self.node, self.log_path, self.args = kubeconfig, node, log_path, args
        self.prefix = prefix
        self.port = localcluster._free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        import urllib.request

        exe = Path(sys.executable).parent / "memory-hygiene"
        cmd = [*self.prefix, str(exe), "node-agent", "--kubeconfig", str(self.kubeconfig), "--node-name", self.node,
               "--http-host", "127.0.0.1", "--http-port", str(self.port), *self.args]
        log = open(self.log_path, "a")
        log.write(f"\n===== start: {' '.join(cmd)}\n")
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, timeout=60, what="the node agent's /readyz")
        assert self.proc.poll() is None, f"node agent exited {self.proc.returncode}:\n{self.logs()}"
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

    def rss(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB: what docs/install.md sizes the DaemonSet's memory by."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        get = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1))  # noqa: E731
        return get("VmRSS"), get("VmHWM")

    def logs(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metrics(self) -> dict[str, float]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("memory_hygiene_node_agent") and " " in line:
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


@pytest.fixture
def agents(cluster, tmp_path):
    started: list[AgentProcess] = []

    def start(node: str, *args: str, **kw) -> AgentProcess:
        a = AgentProcess(Path(cluster.kubeconfig), node, tmp_path / f"agent-{node}.log", *args, **kw).start()
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


def agent_events(kube, node: str) -> list[dict]:
    out = kube.core.list_namespaced_event(
        "default", field_selector=f"source={COMPONENT},involvedObject.name={node}")
    return kube.api_client.sanitize_for_serialization(out).get("items") or []


def _kill(uid: str, cid: str, qos: str) -> kernel_oom.RealOOM:
    try:
        return kernel_oom.real_oom_kill(uid, cid, qos=qos)
    except kernel_oom.RealOOMError as exc:
        pytest.fail(f"no real OOM kill on this machine: {exc}", pytrace=False)


def _cid(pod: dict) -> str:
    return pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]


@pytest.mark.parametrize("kernel_log", ["kmsg", "syslog"])
def test_real_kills_reach_the_right_pods_once_across_restarts(operator, sim, kube, agents, kernel_log):
    """Two BestEffort pods (both score 1000) and two Guaranteed pods on one node: the
    fingerprint alone cannot tell them apart; the agent's Event carries the memcg path. The
    agent runs with CAP_SYSLOG as its only capability, reading /dev/kmsg or syslog(2)."""
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    be = [sim.pod(ns, f"be-{i}", {"app": {}}, node=node) for i in range(2)]
    gu = [sim.pod(ns, f"gu-{i}", {"app": {"requests": "256Mi", "limits": "256Mi"}}, node=node) for i in range(2)]
    policy = f"agent-{tag}"
    kube.apply_policy(policy, scoped_spec(tag))
    settled_with(kube, policy, lambda s: s["summary"]["evaluatedPods"] == 4)
    # Other OOM kills on this machine (earlier tests, other sessions) are posted too, about this
    # node; the assertions are about our pids and our pods.
    agent = agents(node, "--lookback", "300", "--settle-seconds", "0.5", "--kernel-log", kernel_log,
                   "--syslog-interval", "0.3")

    victims = [(be[1], "besteffort", "be-1"), (gu[0], "guaranteed", "gu-0")]
    kills = []
    for pod, qos, name in victims:
        oom = _kill(pod["metadata"]["uid"], _cid(pod), qos)
        kills.append((oom, name))

        def one_event(pid=oom.killed_pid):
            evs = [e for e in agent_events(kube, node) if f"Killed process {pid} (" in e["message"]]
            return evs if evs else None

        (ev,) = wait_for(one_event, timeout=30, what=f"the agent's Event for pid {oom.killed_pid}")
        assert ev["reason"] == "OOMKilling" and ev["type"] == "Warning"
        assert ev["involvedObject"] == {"kind": "Node", "name": node, "uid": node, "apiVersion": "v1"}
        assert ev["metadata"]["namespace"] == "default"
        assert ev["source"] == {"component": COMPONENT, "host": node}
        lines = ev["message"].split("\n")
        assert lines[0].startswith("oom-kill:constraint=CONSTRAINT_MEMCG,") and f",pid={oom.killed_pid}," in lines[0]
        assert lines[1].startswith(f"Memory cgroup out of memory: Killed process {oom.killed_pid} (")
        assert set(lines) <= set(oom.lines), "the message is the kernel's lines, verbatim"
        assert ev["metadata"]["annotations"]["memoryhygiene.io/oom-source"] == "kmsg"
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        key = r"t\d+" if kernel_log == "syslog" else r"\d+"
        assert re.fullmatch(rf"{re.escape(node)}\.oom\.{boot.replace('-', '')}\.{key}", ev["metadata"]["name"])
        # the kernel's time of the record, not the time of posting
        assert abs(parse_time(ev["firstTimestamp"]) - time.time()) < 60
        kernel_time = parse_time(ev["metadata"]["annotations"]["memoryhygiene.io/kernel-time"])
        assert int(kernel_time) == int(parse_time(ev["firstTimestamp"]))

    def pod_kills(s):
        return sorted((v["name"], v["container"]) for v in s["violations"]
                      if v["rule"] == "SilentOOMKill" and v["kind"] == "Pod")

    status = settled_with(kube, policy, lambda s: len(pod_kills(s)) == 2, timeout=60)
    assert pod_kills(status) == [("be-1", "app"), ("gu-0", "app")]
    for v in status["violations"]:
        if v["rule"] == "SilentOOMKill" and v["kind"] == "Pod":
            assert "memcg path" in v["message"]
            assert any(f"(pid {oom.killed_pid})" in v["message"] for oom, _ in kills)

    rss, hwm = agent.rss()
    print(f"\n[node-agent ({kernel_log}) RSS following the real kernel log: {rss} KiB, peak {hwm} KiB]")
    assert hwm < 96 * 1024, "the DaemonSet's memory limit (manifests/node-agent/daemonset.yaml) is 128Mi"
    # Restart: the ring buffer still holds both reports; nothing is posted twice.
    names = sorted(e["metadata"]["name"] for e in agent_events(kube, node))
    before = agent.metrics()
    agent.stop()
    agent.start()
    wait_for(lambda: agent.metrics().get("memory_hygiene_node_agent_kills_already_posted_total", 0) >= 2,
             timeout=30, what="the restarted agent to find its Events posted")
    m = agent.metrics()
    assert m.get("memory_hygiene_node_agent_events_posted_total", 0) == 0, agent.logs()
    assert sorted(e["metadata"]["name"] for e in agent_events(kube, node)) == names
    assert before.get('memory_hygiene_node_agent_kills_seen_total{source="kmsg"}', 0) >= 2


def test_counter_source_names_the_container_when_the_log_has_nothing(operator, sim, kube, agents, tmp_path):
    """No kernel log at all (an empty --kmsg-file): the memcg oom_kill counter of the victim's
    container rises, and the agent posts the kill naming the container's cgroup."""
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    pod = sim.pod(ns, "victim", {"app": {"requests": "128Mi", "limits": "256Mi"}}, node=node)
    policy = f"counter-{tag}"
    kube.apply_policy(policy, scoped_spec(tag))
    settled_with(kube, policy, lambda s: s["summary"]["evaluatedPods"] == 1)
    empty = tmp_path / "empty.kmsg"
    empty.write_text("")
    agent = agents(node, "--kmsg-file", str(empty), "--cgroup-interval", "0.2", "--counter-grace-seconds", "0.5",
                   "--settle-seconds", "0.2")
    # A silent kill: the container (its cgroup) lives on after it. The helper removes the cgroup it
    # made right after the kill unless a cgroup lives below it: hold one there from the start.
    uid, cid = pod["metadata"]["uid"], _cid(pod)
    version, mount, _ = kernel_oom.memory_cgroup()
    chain = [mount / "kubepods", mount / "kubepods" / "burstable", mount / "kubepods" / "burstable" / f"pod{uid}",
             mount / "kubepods" / "burstable" / f"pod{uid}" / cid]
    existed = {p for p in chain if p.exists()}
    hold = chain[-1] / "hold"
    stop = threading.Event()

    def holder():
        while not stop.is_set():
            if chain[-1].is_dir():
                try:
                    hold.mkdir()
                    return
                except FileExistsError:
                    return
                except OSError:
                    pass
            stop.wait(0.001)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    try:
        oom = _kill(uid, cid, "burstable")
        assert hold.is_dir(), "the holder did not get its cgroup in"
        _check_counter_event(kube, node, policy, oom)
    finally:
        stop.set()
        t.join(5)
        for p in [hold] + [p for p in reversed(chain) if p not in existed]:
            deadline = time.monotonic() + 5
            while p.exists():
                try:
                    p.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)


def _check_counter_event(kube, node, policy, oom):

    def event():
        evs = [e for e in agent_events(kube, node) if f"task_memcg={oom.cgroup_path}," in e["message"]]
        return evs if evs else None

    (ev,) = wait_for(event, timeout=30, what="the agent's counter Event")
    assert ev["metadata"]["annotations"]["memoryhygiene.io/oom-source"] == "memcg"
    assert f"task_memcg={oom.cgroup_path}," in ev["message"]
    assert "memory.oom_control" in ev["message"] or "memory.events" in ev["message"]
    status = settled_with(kube, policy, lambda s: any(v["kind"] == "Pod" for v in s["violations"]), timeout=60)
    [v] = [v for v in status["violations"] if v["rule"] == "SilentOOMKill" and v["kind"] == "Pod"]
    assert (v["kind"], v["name"], v["container"]) == ("Pod", "victim", "app")


def _burst_stream(n: int, pod_uid_of, cid_of) -> str:
    """n copies of the real report's oom-kill: and Killed process records (and a few of its
    other records), each with its own sequence numbers, pid and container cgroup, stamped now."""
    records = [kmsg.parse_record(r) for r in kmsg.split_records(DATA.read_text())]
    summary = next(r for r in records if r.text.startswith("oom-kill:"))
    killed = next(r for r in records if "Killed process" in r.text)
    header = records[0]
    old_cg = re.search(r"task_memcg=(\S+?),task=", summary.text).group(1)
    now_usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
    out, seq = [], 1_000_000
    for i in range(n):
        pid = 100_000 + i
        cg = f"/kubepods/besteffort/pod{pod_uid_of(i)}/{cid_of(i)}"
        usec = now_usec - (n - i) * 1000
        for r, text in ((header, header.text), (summary, summary.text.replace(old_cg, cg).replace("pid=23239", f"pid={pid}")),
                        (killed, killed.text.replace("23239", str(pid)))):
            out.append(f"{r.prio},{seq},{usec},-;{text}\n")
            seq += 1
            usec += 1
    return "".join(out)


def test_burst_of_1000_kills_is_rate_limited_and_none_lost(operator, sim, kube, agents, tmp_path):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    policy = f"burst-{tag}"
    kube.apply_policy(policy, {**scoped_spec(tag)})
    settled_with(kube, policy, lambda s: s["summary"]["evaluatedNodes"] == 1)
    stream = tmp_path / "burst.kmsg"
    stream.write_text(_burst_stream(1000, lambda i: str(uuid.UUID(int=i + 1)), lambda i: f"{i:064x}"))
    agent = agents(node, "--kmsg-file", str(stream), "--cgroup-interval", "0", "--event-burst", "25",
                   "--event-refill-seconds", "1", "--max-kills-per-event", "100")

    def all_posted():
        m = agent.metrics()
        return m if m.get('memory_hygiene_node_agent_kills_posted_total{source="kmsg"}', 0) == 1000 else None

    try:
        m = wait_for(all_posted, timeout=120, what="all 1000 kills posted")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{agent.metrics()}\n{agent.logs()}") from None
    rss, hwm = agent.rss()
    print(f"\n[node-agent RSS after a 1000-kill burst: {rss} KiB, peak {hwm} KiB]")
    assert hwm < 96 * 1024, "the DaemonSet's memory limit (manifests/node-agent/daemonset.yaml) is 128Mi"
    assert m['memory_hygiene_node_agent_kills_seen_total{source="kmsg"}'] == 1000
    assert m["memory_hygiene_node_agent_kills_rate_limited_total"] >= 1000 - 25 - 1
    assert m.get("memory_hygiene_node_agent_kills_pending", 0) == 0
    events = agent_events(kube, node)
    assert 25 < len(events) <= 25 + 10 + 10, len(events)
    assert sum(e["count"] for e in events) == 1000
    pids = {int(p) for e in events for p in re.findall(r"Killed process (\d+) \(", e["message"])}
    assert pids == set(range(100_000, 101_000))
    # the operator: 1000 incidents (pods unknown: on the node), none lost from the status
    status = settled_with(kube, policy, lambda s: s["summary"]["oomKills"] == 1000, timeout=120,
                          what="1000 OOM kill incidents")
    assert status["summary"]["silentOOMKills"] == 1000
