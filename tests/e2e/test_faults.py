"""Faults, with the properties as assertions (issue 13): 0 Events lost, 0 duplicated, the status
converged within a bound, the operator alive.

- the API server SIGKILLed 0.3 s after 20 violating pods were created, down 20 s, restarted;
- the operator SIGKILLed ten times during 100 pod operations (half of them while it is down);
- etcd paused (SIGSTOP) for 15 s, then resumed (SIGCONT);
- a node-problem-detector flood: 1,100 OOMKilling Events on one node, one Event of 10,000 kill
  lines (700 KB), and forged ones (an unknown reporter, another namespace, the year 2999).

These tests kill and pause their own control plane, so they start one of their own (the
packaged etcd), not the session's. The times measured are printed; the bounds asserted are
generous (a shared 2-core machine), the targets are in docs/benchmarks.md.
"""

from __future__ import annotations

import calendar
import random
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from devcluster import localcluster
from tests.e2e.conftest import CRD_FILE, Kube, OperatorProcess, find_kubectl, wait_for
from tests.e2e.test_operator import killed_line, new_scenario, scoped_spec, settled_with

CONVERGE_SECONDS = 60
"""After a fault ends, the status and the Events must be complete within this."""


@pytest.fixture(scope="module")
def faulty():
    """A control plane of this module's own: its API server is killed, its etcd paused."""
    import subprocess

    local = localcluster.LocalCluster(binaries=localcluster.ensure_binaries()).start()
    try:
        proc = subprocess.run([find_kubectl(), "--kubeconfig", str(local.kubeconfig), "apply", "-f", str(CRD_FILE)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr

        def established() -> bool:
            out = subprocess.run([find_kubectl(), "--kubeconfig", str(local.kubeconfig), "get",
                                  "crd/memorypolicies.memoryhygiene.io", "-o",
                                  'jsonpath={.status.conditions[?(@.type=="Established")].status}'],
                                 capture_output=True, text=True, timeout=60)
            return out.returncode == 0 and out.stdout.strip() == "True"

        wait_for(established, timeout=60, what="the CRD Established")
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def fsim(faulty):
    from devcluster.sim.kube import Sim

    return Sim(faulty.kubeconfig)


@pytest.fixture(scope="module")
def fkube(faulty):
    return Kube(Path(faulty.kubeconfig))


@pytest.fixture
def operator(faulty, tmp_path):
    """The operator on this module's control plane (named as conftest's, whose failure hook then
    attaches its log to a failing test's report)."""
    # A burst big enough for the policy's own Events (30 transitions in the churn test).
    op = OperatorProcess(Path(faulty.kubeconfig), tmp_path / "operator.log", ("--event-burst", "200"))
    op.start()
    try:
        yield op
    finally:
        op.stop()


def readyz(op: OperatorProcess) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/readyz", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metrics(op: OperatorProcess) -> dict[str, float]:
    out = {}
    for line in op.get("/metrics").splitlines():
        if line.startswith("memory_hygiene_"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def our_events(kube: Kube, tag_ns: str, policy: str) -> tuple[list[dict], list[dict]]:
    """(Events on the scenario's pods, Events on the policy)."""
    events = kube.events()
    on_pods = [e for e in events if e["involvedObject"].get("namespace") == tag_ns]
    on_policy = [e for e in events if e["involvedObject"]["kind"] == "MemoryPolicy"
                 and e["involvedObject"]["name"] == policy]
    return on_pods, on_policy


def pod_of(e: dict) -> str:
    """The pod a policy Event is about ("Pod ns/p3 container c: ...")."""
    return e["message"].split()[1].split("/")[1]


def assert_no_duplicates(events: list[dict]) -> None:
    assert all(e["count"] == 1 for e in events), [(e["reason"], e["involvedObject"]["name"], e["count"])
                                                 for e in events if e["count"] != 1]


def test_api_server_killed_and_restarted_loses_no_event(faulty, fsim, fkube, operator):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(fsim, tag, ("64Gi", "64Gi"))
    name = f"outage-{tag}"
    fkube.apply_policy(name, scoped_spec(tag))
    settled_with(fkube, name, lambda s: True)
    for i in range(20):
        fsim.pod(ns, f"p{i}", {"c": {}}, node=node)  # no memory request: MissingMemoryRequest
    time.sleep(0.3)  # the fault's timing (issue 13): the API server goes 0.3 s after the pods came
    faulty.kill_apiserver()
    down = time.monotonic()
    try:
        status, text = wait_for(lambda: (r := readyz(operator))[0] == 503 and r, timeout=15,
                                what="/readyz to say the caches are stale")
        assert "stale" in text, text
        while time.monotonic() - down < 20:  # the outage lasts 20 s
            assert operator.proc.poll() is None, "the operator died during the outage"
            time.sleep(1)
    finally:
        startup = faulty.start_apiserver_again()
    back = time.monotonic()
    wait_for(lambda: readyz(operator)[0] == 200, timeout=30, what="/readyz 200 after the API server came back")
    ready_after = time.monotonic() - back

    def complete():
        on_pods, on_policy = our_events(fkube, ns, name)
        warned = sorted(e["involvedObject"]["name"] for e in on_pods if e["reason"] == "MissingMemoryRequest")
        return (warned == sorted(f"p{i}" for i in range(20)) and len(on_policy) == 20
                and (fkube.settled(name) or {}).get("summary", {}).get("missingRequests") == 20
                and (on_pods, on_policy))

    on_pods, on_policy = wait_for(complete, timeout=CONVERGE_SECONDS, what="20 Events on the pods and 20 on the policy")
    converged_after = time.monotonic() - back
    print(f"\n[API server down {back - down:.1f}s (restart took {startup:.1f}s); operator ready "
          f"{ready_after:.1f}s and every Event posted {converged_after:.1f}s after it came back]")
    assert len(on_pods) == 20, "nothing more than the 20 Warnings"
    assert_no_duplicates(on_pods + on_policy)
    m = metrics(operator)
    assert m.get('memory_hygiene_events_dropped_total{cause="api_error"}', 0) == 0
    assert ready_after < 2, f"caches fresh {ready_after:.1f}s after the API server came back (issue 13: within 2 s)"


def test_operator_sigkilled_during_churn_loses_and_duplicates_nothing(faulty, fsim, fkube, operator):
    """100 pod operations, the operator SIGKILLed ten times, five operations each time while no
    operator runs: every violation's Warning once, and every one that ended its Resolved once."""
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(fsim, tag, ("64Gi", "64Gi"))
    name = f"churn-{tag}"
    fkube.apply_policy(name, scoped_spec(tag))
    settled_with(fkube, name, lambda s: True)
    rng = random.Random(tag)
    # 20 violating pods (10 deleted again later), 50 compliant ones (20 deleted again): 100 operations
    creates = [("create", f"p{i}", True) for i in range(20)] + [("create", f"q{i}", False) for i in range(50)]
    rng.shuffle(creates)
    ops: list[tuple[str, str, bool]] = []
    doomed = {f"p{i}" for i in range(10)} | {f"q{i}" for i in range(20)}
    alive: list[str] = []
    for op in creates:
        ops.append(op)
        alive.append(op[1])
        if rng.random() < 0.5:
            ready = [p for p in alive if p in doomed]
            if ready:
                victim = rng.choice(ready)
                alive.remove(victim)
                doomed.discard(victim)
                ops.append(("delete", victim, victim.startswith("p")))
    ops += [("delete", p, p.startswith("p")) for p in sorted(doomed)]
    assert len(ops) == 100

    def do(op: tuple[str, str, bool]) -> None:
        what, pod, violating = op
        if what == "create":
            fsim.pod(ns, pod, {"c": {} if violating else {"requests": "64Mi", "limits": "64Mi"}}, node=node)
        else:
            fsim.core.delete_namespaced_pod(pod, ns, grace_period_seconds=0)

    kills = 0
    for k in range(10):
        for op in ops[k * 10:k * 10 + 5]:
            do(op)
        operator.proc.kill()  # SIGKILL: no cleanup, Events in flight lost with it
        operator.proc.wait(10)
        kills += 1
        for op in ops[k * 10 + 5:k * 10 + 10]:
            do(op)
        operator.start()
    assert kills == 10
    remaining = {f"p{i}" for i in range(10, 20)}
    deleted = {f"p{i}" for i in range(10)}

    def complete():
        status = fkube.settled(name) or {}
        if status.get("summary", {}).get("missingRequests") != 10:
            return None
        on_pods, on_policy = our_events(fkube, ns, name)
        warned = {e["involvedObject"]["name"] for e in on_pods if e["reason"] == "MissingMemoryRequest"}
        started = {pod_of(e) for e in on_policy if e["reason"] == "MissingMemoryRequest"}
        resolved = {pod_of(e) for e in on_policy if e["reason"] == "MissingMemoryRequestResolved"}
        if not remaining <= warned or not remaining <= started or not (started & deleted) <= resolved:
            return None
        return on_pods, on_policy, started, resolved

    on_pods, on_policy, started, resolved = wait_for(complete, timeout=CONVERGE_SECONDS,
                                                     what="every Warning and every Resolved")
    print(f"\n[10 SIGKILLs: {len(started & deleted)} violations started and ended across them, "
          f"all {len(resolved)} resolved; {len(on_pods)} Events on pods, {len(on_policy)} on the policy]")
    assert resolved <= deleted, "no Resolved for a violation still going"
    assert not [e for e in on_pods if e["reason"] == "MissingMemoryRequest"
                and e["involvedObject"]["name"].startswith("q")], "compliant pods: no Warning"
    assert_no_duplicates(on_pods + on_policy)


def test_etcd_paused_then_resumed_converges(faulty, fsim, fkube, operator):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(fsim, tag, ("64Gi", "64Gi"))
    name = f"etcd-{tag}"
    fkube.apply_policy(name, scoped_spec(tag))
    for i in range(3):
        fsim.pod(ns, f"p{i}", {"c": {}}, node=node)
    settled_with(fkube, name, lambda s: s["summary"]["missingRequests"] == 3)
    pid = operator.proc.pid
    faulty.pause_etcd()
    paused = time.monotonic()
    try:
        while time.monotonic() - paused < 15:  # the pause lasts 15 s
            assert operator.proc.poll() is None, "the operator died while etcd was paused"
            time.sleep(1)
    finally:
        faulty.resume_etcd()
    resumed = time.monotonic()
    wait_for(faulty.is_ready, timeout=60, what="the API server ready again")
    for i in range(3, 8):
        fsim.pod(ns, f"p{i}", {"c": {}}, node=node)
    fsim.core.delete_namespaced_pod("p0", ns, grace_period_seconds=0)

    def complete():
        status = fkube.settled(name) or {}
        on_pods, on_policy = our_events(fkube, ns, name)
        warned = sorted(e["involvedObject"]["name"] for e in on_pods if e["reason"] == "MissingMemoryRequest")
        resolved = [e for e in on_policy if e["reason"] == "MissingMemoryRequestResolved"]
        ok = (status.get("summary", {}).get("missingRequests") == 7 and warned == [f"p{i}" for i in range(8)]
              and len(resolved) == 1)
        return ok and (on_pods, on_policy)

    on_pods, on_policy = wait_for(complete, timeout=CONVERGE_SECONDS, what="status and Events after etcd resumed")
    print(f"\n[etcd paused 15 s; status and Events complete {time.monotonic() - resumed:.1f}s after it resumed]")
    assert operator.proc.pid == pid and operator.proc.poll() is None, "the operator neither crashed nor restarted"
    assert_no_duplicates(on_pods + on_policy)
    assert operator.get("/healthz").startswith("ok")


def test_npd_flood_is_capped_and_forgeries_are_ignored(faulty, fsim, fkube, operator):
    from kubernetes.client import ApiException

    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(fsim, tag, ("64Gi", "64Gi"))
    name = f"flood-{tag}"
    fkube.apply_policy(name, scoped_spec(tag))
    settled_with(fkube, name, lambda s: True)
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731

    def post(message: str, t: float, source: str = "kernel-monitor", namespace: str = "default") -> None:
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{node}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
                # outside default the API server wants the involved object's namespace to be the
                # Event's (a Node has none; a forger writes one in)
                "involvedObject": {"kind": "Node", "name": node, "uid": node,
                                   **({"namespace": namespace} if namespace != "default" else {})},
                "reason": "OOMKilling",
                "message": message, "type": "Warning", "source": {"component": source, "host": node},
                "firstTimestamp": iso(t), "lastTimestamp": iso(t), "count": 1}
        try:
            fsim.core.create_namespaced_event(namespace, body)
        except ApiException as err:
            raise AssertionError(f"could not post an Event: {err.status} {err.reason}") from None

    started = time.monotonic()
    for i in range(1100):  # 1,100 kills, 2 s apart: 1,100 incidents within the hour's lookback
        post(killed_line(20_000 + i, "worker", 999), now - 3000 + 2 * i)
    # 10,000 kills in one message, 4.x kernel lines as NPD posts them (no score: 10,000 incidents)
    huge = "\n".join(f"Killed process {40_000 + i} (forker) total-vm:9kB, anon-rss:9kB, file-rss:0kB"
                      for i in range(10_000))
    assert len(huge) > 700_000
    post(huge, now - 5)
    for i in range(5):
        post(killed_line(60_000 + i, "x", 999), now - 10, source="curl")  # an unknown reporter
        post(killed_line(61_000 + i, "x", 999), now - 10, namespace=ns)  # a tenant's namespace
    post(killed_line(62_000, "x", 999), calendar.timegm((2999, 1, 1, 0, 0, 0)))  # the year 2999
    posted = time.monotonic() - started
    control_at = time.monotonic()
    fsim.pod(ns, "control", {"c": {}}, node=node)

    def control_event():
        on_pods, _ = our_events(fkube, ns, name)
        return [e for e in on_pods if e["involvedObject"]["name"] == "control"]

    wait_for(control_event, timeout=CONVERGE_SECONDS, what="the control pod's Warning during the flood")
    control_latency = time.monotonic() - control_at
    # at most maxIncidentsPerNode (1,000) incidents, the newest: the 500 read of the 10,000-kill Event among them
    status = settled_with(fkube, name, lambda s: s["summary"]["oomKills"] == 1000 and s["summary"]["missingRequests"] == 1,
                          timeout=CONVERGE_SECONDS, what="1,000 incidents (the cap) and the control pod")
    assert status["summary"]["silentOOMKills"] == 1000
    assert len(status["violations"]) <= 100, "status bounded (--max-status-violations)"

    def skipped():
        m = metrics(operator)
        got = {c: m.get(f'memory_hygiene_oom_skipped_total{{cause="{c}"}}', 0)
               for c in ("incidents_per_node", "kills_per_event", "reporter", "namespace", "future")}
        return got if all(got.values()) else None

    got = wait_for(skipped, timeout=30, what="every kind of skip counted")
    assert got["reporter"] == 5 and got["namespace"] == 5 and got["future"] == 1, got
    assert got["kills_per_event"] == 1 and got["incidents_per_node"] >= 1, got
    assert operator.proc.poll() is None
    logs = Path(operator.log_path).read_text()
    assert logs.count("only the first 500 kills were read") == 1, "one warning when the cap bites"
    print(f"\n[NPD flood: 1,112 Events posted in {posted:.1f}s; the control pod's Warning "
          f"{control_latency:.1f}s after it was created; skipped {got}]")


def test_crd_deleted_and_created_again_policies_still_followed(faulty, fkube, operator):
    """The CRD deleted and created again while the operator runs (`kubectl delete -k` then
    `apply -k`, a reinstall): kopf stops watching, and its rescan can miss the CRD's return when
    discovery lags behind the CRD's last event (seen: 1 re-creation in 3); or its watch gets a
    404 first, which stops the operator (kubelet starts it again; here the test does). The periodic list
    (``policies.resync``) takes up what the watch missed: every new policy gets its status, an
    edit its new generation's. Runs last in this module: it restores the CRD it deletes."""
    import subprocess

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([find_kubectl(), "--kubeconfig", str(faulty.kubeconfig), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc

    def established() -> bool:
        return kubectl("get", "crd", "-o", "name").stdout.count("memorypolicies.memoryhygiene.io") == 1 and \
            kubectl("get", "crd/memorypolicies.memoryhygiene.io", "-o",
                    'jsonpath={.status.conditions[?(@.type=="Established")].status}').stdout.strip() == "True"

    bound = 3 * 5 + 30  # the resync (5 s in these tests) three times, and a pass on a busy machine
    took, restarts = [], 0
    for round_ in range(4):
        kubectl("delete", "-f", str(CRD_FILE), "--wait=true")
        kubectl("apply", "-f", str(CRD_FILE))
        wait_for(established, timeout=60, what="the CRD Established again")
        if operator.proc.poll() is not None:
            # kopf's watch got 404 while the CRD was gone, which stops kopf (and the operator):
            # kubelet would start it again, and so does the test; it must then follow as well
            restarts += 1
            operator.start()
        name = f"recreated-{round_}-{uuid.uuid4().hex[:4]}"
        fkube.apply_policy(name, {})
        t0 = time.monotonic()
        wait_for(lambda: fkube.settled(name), timeout=bound, what=f"the status of {name} (round {round_})")
        fkube.apply_policy(name, {"rules": {"missingRequests": {"enabled": False}}})
        wait_for(lambda: fkube.settled(name), timeout=bound, what=f"the edit of {name} read (round {round_})")
        took.append(round(time.monotonic() - t0, 1))
    print(f"[faults] CRD deleted and created again 4 times: status, then the edit's, after {took} s; "
          f"operator restarts {restarts}; repaired by the list (since the last start): "
          f"{metrics(operator).get('memory_hygiene_policy_resyncs_total', 0):g}")
    assert operator.proc is not None and operator.proc.poll() is None, operator.logs()
