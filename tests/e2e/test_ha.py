"""Two replicas at once (a rolling update's overlap, or replicas: 2 by mistake) tell each story once."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.e2e.conftest import OperatorProcess, wait_for
from tests.e2e.test_operator import new_scenario, scoped_spec, settled_with


def test_second_replica_does_not_double_post_events(operator, cluster, sim, kube, tmp_path):
    second = OperatorProcess(Path(cluster.kubeconfig), tmp_path / "second.log").start()
    try:
        tag = uuid.uuid4().hex[:8]
        ns, node = new_scenario(sim, tag, ("8Gi", "4Gi"))
        name = f"ha-{tag}"
        kube.apply_policy(name, scoped_spec(tag))
        settled_with(kube, name, lambda s: True)
        for i in range(5):
            sim.pod(ns, f"p{i}", {"c": {"requests": "1Gi", "limits": "2Gi"}}, node=node)
        sim.pod(ns, "no-request", {"c": {}}, node=node)
        settled_with(kube, name, lambda s: s["summary"]["overcommittedNodes"] == 1
                     and s["summary"]["missingRequests"] == 1)

        def ours():
            # the pod by its namespace too: test_operator.py has a "no-request" pod of its own
            return [e for e in kube.events() if e["involvedObject"]["name"] in (node, name)
                    or (e["involvedObject"]["name"], e["involvedObject"].get("namespace")) == ("no-request", ns)]

        events = wait_for(lambda: len(e := ours()) == 4 and e, what="4 events (2 violations x object + policy)")
        # both replicas saw both transitions; each Event exists once and was counted once
        assert sorted(e["count"] for e in events) == [1, 1, 1, 1]
        sim.core.delete_namespaced_pod("no-request", ns, grace_period_seconds=0)
        settled_with(kube, name, lambda s: s["summary"]["missingRequests"] == 0)
        resolved = wait_for(lambda: [e for e in ours() if e["reason"] == "MissingMemoryRequestResolved"],
                            what="resolved event on the policy")
        assert [e["count"] for e in resolved] == [1]
        assert all(e["count"] == 1 for e in ours())
    finally:
        second.stop()
