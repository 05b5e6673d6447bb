"""One read of the cluster: the live audit (``memory-hygiene audit`` without -f) and the running
operator read the same objects (core/sources.py), so on the real API server they report the
same numbers and the same violations, also where the two used to read differently: Succeeded
pods (with and without an OOM record), Normal Events with an OOM reason, Warning OOMKilling
Events whose kill hit a pod that has completed since."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.e2e.conftest import wait_for
from devcluster.sim.kube import iso
from tests.e2e.test_crd_and_audit import policy_yaml
from tests.e2e.test_operator import killed_line, new_scenario, scoped_spec, violation_keys


def memcg_kill(pod: dict, container_id: str, pid: int, comm: str) -> str:
    """The kernel's two lines of a memcg OOM kill in a Burstable pod's container, as kubelet's
    cgroupfs driver lays it out (the header names the cgroups, core/kernel.py reads the path)."""
    uid = pod["metadata"]["uid"]
    path = f"/kubepods/burstable/pod{uid}"
    header = (f"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={path},"
              f"task_memcg={path}/{container_id},task={comm},pid={pid},uid=0")
    return header + "\n" + killed_line(pid, comm, 999)


def cid(pod: dict, previous: bool = False) -> str:
    """The container runtime's ID of the pod's only container: the current one, or (``previous``)
    the one that terminated before its restart."""
    cs = pod["status"]["containerStatuses"][0]
    raw = cs["lastState"]["terminated"]["containerID"] if previous else cs["containerID"]
    return raw.split("://", 1)[1]


def live_audit(cluster, policy: Path) -> dict:
    exe = str(Path(sys.executable).parent / "memory-hygiene")
    out = subprocess.run([exe, "audit", "--kubeconfig", str(cluster.kubeconfig), "--policy", str(policy),
                          "-o", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def test_live_audit_and_operator_agree_on_succeeded_pods_and_oom_events(cluster, operator, sim, kube, tmp_path):
    tag = uuid.uuid4().hex[:8]
    ns, node = new_scenario(sim, tag, ("8Gi", "7Gi"))
    burstable = {"requests": "64Mi", "limits": "128Mi"}
    sim.pod(ns, "running-ok", {"app": burstable}, node=node)
    sim.pod(ns, "running-norequest", {"app": {}}, node=node)
    # Completed Job pods: one that never had a memory request (a violation, were it running), one
    # whose container was OOM-killed, restarted and then succeeded, one where a child process was
    # killed and PID 1 exited 0 by itself (kubelet says OOMKilled, exit code 0).
    sim.pod(ns, "done-plain", {"app": {}}, node=node, restart_policy="OnFailure")
    sim.complete(ns, "done-plain")
    sim.pod(ns, "done-oom", {"app": burstable}, node=node, restart_policy="OnFailure")
    killed_at = iso(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=20))
    restarted = sim.oom_killed_restart(ns, "done-oom", "app", finished_at=killed_at)
    sim.complete(ns, "done-oom")
    child = sim.pod(ns, "done-child", {"app": burstable}, node=node, restart_policy="OnFailure")
    sim.complete(ns, "done-child", child_oom_killed=True)

    name = f"one-read-{tag}"
    spec = scoped_spec(tag)
    kube.apply_policy(name, spec)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(name, spec))

    # node-problem-detector's Warnings, posted once the pods had completed (the operator learns of
    # both kills from pods it only knows completed), and Normal Events with an OOM reason and a
    # kernel text naming a running pod, which no reporter posts.
    sim.npd_oom_killing(node, memcg_kill(restarted, cid(restarted, previous=True), 4242, "python3"), t=killed_at)
    sim.npd_oom_killing(node, memcg_kill(child, cid(child), 4343, "worker"))
    running = sim.read_pod(ns, "running-ok")
    sim.npd_oom_killing(node, memcg_kill(running, cid(running), 4444, "java"), event_type="Normal")
    sim._node_event(node, "SystemOOM", "System OOM encountered, victim process: java, pid: 4445", "kubelet", None,
                    event_type="Normal")

    last: dict = {}

    def agree():
        status = kube.settled(name)
        if status is None:
            return None
        audit = live_audit(cluster, policy)
        last["operator"] = ({k: status["summary"].get(k) for k in audit["summary"]}, violation_keys(status))
        last["audit"] = (audit["summary"], violation_keys(audit))
        judged = not any(k["pending"] for k in audit["oomKills"])  # rules.SETTLE_SECONDS after the kill
        return (status, audit) if last["operator"] == last["audit"] and audit["summary"]["oomKills"] == 2 \
            and judged else None

    try:
        status, audit = wait_for(agree, timeout=90, interval=1.0,
                                 what="the operator's status and the live audit to agree, with both kills")
    except AssertionError as err:
        raise AssertionError(f"{err}\noperator: {last.get('operator')}\naudit:    {last.get('audit')}") from None
    assert set(audit["summary"]) <= set(status["summary"])
    # done-plain is in neither (a Succeeded pod without an OOM record); the other four are
    assert audit["summary"]["evaluatedPods"] == 4
    kills = {(k["pod"], k["container"]): k["silent"] for k in audit["oomKills"]}
    # the restarted container's kill is visible (its lastState says OOMKilled), not blamed on the
    # node; the child's kill is silent, on its pod; the Normal Events are nobody's report
    assert kills == {("done-oom", "app"): False, ("done-child", "app"): True}
    assert ("SilentOOMKill", "Pod", ns, "done-child", "app") in violation_keys(audit)
    assert not [v for v in violation_keys(audit) if v[0] == "SilentOOMKill" and v[1] == "Node"]
    assert ("MissingMemoryRequest", "Pod", ns, "running-norequest", "app") in violation_keys(audit)
    assert not [v for v in violation_keys(audit) if v[3] in ("done-plain", "running-ok")]
