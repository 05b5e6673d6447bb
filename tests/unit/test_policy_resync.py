"""The periodic list of MemoryPolicies repairs what kopf's watch missed (when two lists in a row
saw it), and never undoes what the watch told after the list began (shell/policies.py
resync)."""

import asyncio
import time

from memory_hygiene.shell import policies, reconciler
from memory_hygiene.shell.runtime import Runtime


def body(name: str, uid: str, generation: int, spec: dict | None = None) -> dict:
    return {"metadata": {"name": name, "uid": uid, "generation": generation}, "spec": spec or {}}


def runtime() -> Runtime:
    async def make() -> Runtime:  # Runtime holds asyncio Events
        return Runtime()
    return asyncio.run(make())


def test_missed_creation_edit_and_deletion_are_repaired():
    rt = runtime()
    policies.observe(rt, None, "edited", body("edited", "u1", 1))
    policies.observe(rt, None, "deleted", body("deleted", "u2", 1))
    listed_since = time.monotonic()
    items = [body("edited", "u1", 2, {"rules": {"missingRequests": {"enabled": False}}}), body("new", "u3", 1)]
    assert policies.resync(rt, items, listed_since) == [], "the watch may be behind: not yet"
    repaired = policies.resync(rt, items, time.monotonic())
    assert sorted(repaired) == ["deleted", "edited", "new"]
    assert set(rt.policies) == {"edited", "new"}
    assert rt.policies["edited"].generation == 2
    assert rt.policies["edited"].engine.spec.rules.missing_requests.enabled is False
    assert policies.resync(rt, items, time.monotonic()) == [], "nothing twice"


def test_what_the_watch_told_after_the_list_began_stands():
    rt = runtime()
    listed_since = time.monotonic()
    time.sleep(0.001)
    policies.observe(rt, None, "created-later", body("created-later", "u1", 1))
    policies.observe(rt, None, "edited-later", body("edited-later", "u2", 3))
    policies.observe(rt, None, "recreated", body("recreated", "u-new", 1))
    policies.observe(rt, None, "deleted-later", body("deleted-later", "u4", 1))
    policies.observe(rt, "DELETED", "deleted-later", body("deleted-later", "u4", 1))
    items = [body("edited-later", "u2", 2), body("recreated", "u-old", 5), body("deleted-later", "u4", 1)]
    assert policies.resync(rt, items, listed_since) == []
    assert policies.resync(rt, items, listed_since) == [], "not on a second look either"
    assert set(rt.policies) == {"created-later", "edited-later", "recreated"}
    assert rt.policies["edited-later"].generation == 3
    assert rt.policies["recreated"].uid == "u-new"


def test_a_difference_the_watch_catches_up_with_is_not_repaired():
    rt = runtime()
    listed_since = time.monotonic()
    assert policies.resync(rt, [body("new", "u1", 1)], listed_since) == []
    policies.observe(rt, None, "new", body("new", "u1", 1))  # the watch tells it now
    policies.observe(rt, None, "new", body("new", "u1", 2))
    assert policies.resync(rt, [body("new", "u1", 2)], time.monotonic()) == []
    assert rt.resync_differed == {}


def test_first_seen_is_kept_once_for_every_policy_holding_a_violation():
    """300 policies held two dicts of every violation each (3.5 GB); now one entry per violation,
    counted by the policies holding it, that lives through edits and ends with the last one."""
    from memory_hygiene.core.snapshot import pod_info

    class Session:
        async def patch_json(self, path, body):
            return 200, {}

    def bare(name, uid, request):
        res = {"requests": {"memory": request}} if request else {}
        return pod_info({"kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": uid},
                         "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": res}]},
                         "status": {"phase": "Running"}})

    async def go():
        rt = Runtime()
        rt.session = Session()
        rt.stores["pods"].put("u-p", "n1", bare("p", "u-p", None))
        for name in ("a", "b"):
            policies.observe(rt, None, name, body(name, f"u-{name}", 1))
        await reconciler.reconcile_once(rt, None, 1000.0)
        key = ("MissingMemoryRequest", "Pod", "ns", "p", "c", "")
        assert rt.first_seen.get(key) == 1000.0 and rt.first_seen._seen[key][1] == 2
        policies.observe(rt, None, "a", body("a", "u-a", 2, {"rules": {"overcommit": {"maxLimitsPercent": 150}}}))
        await reconciler.reconcile_once(rt, None, 2000.0)
        assert rt.first_seen.get(key) == 1000.0 and rt.first_seen._seen[key][1] == 2, "an edit is no new start"
        policies.observe(rt, "DELETED", "b", body("b", "u-b", 1))
        assert rt.first_seen._seen[key][1] == 1
        rt.stores["pods"].put("u-p", "n1", bare("p", "u-p", "1Gi"))
        await reconciler.reconcile_once(rt, {"n1"}, 3000.0)
        assert len(rt.first_seen) == 0, "ended with its last holder"

    asyncio.run(go())


def test_a_pass_lets_the_event_loop_run_and_skips_a_policy_deleted_meanwhile(monkeypatch):
    """A pass over many policies yields to the event loop (the watches and Event posts go on);
    a policy deleted during one of those yields is not evaluated after it let go of what it held."""
    from memory_hygiene.core.snapshot import pod_info

    monkeypatch.setattr(reconciler, "YIELD_SECONDS", 0.0)  # yield after every policy

    async def go():
        rt = Runtime()
        rt.stores["pods"].put("u-p", "n1", pod_info({
            "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u-p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {"phase": "Running"}}))
        for i in range(20):
            policies.observe(rt, None, f"p{i}", body(f"p{i}", f"u{i}", 1))
        ran: list[int] = []

        async def other_task():
            for n in range(1000):
                ran.append(n)
                if n == 3:  # while the pass runs: the last policy is deleted
                    policies.observe(rt, "DELETED", "p19", body("p19", "u19", 1))
                await asyncio.sleep(0)

        other = asyncio.create_task(other_task())
        busy = await reconciler.reconcile_once(rt, None, 1000.0)
        other.cancel()
        assert len(ran) >= 10, "the event loop ran between policies"
        first_passes = sum(reconciler.metrics.RECONCILE_SECONDS.labels(policy=f"p{i}")._sum.get() for i in range(19))
        assert 0 <= busy < first_passes, "first passes of new policies are not news: no pause for them"
        assert await reconciler.reconcile_once(rt, None, 1001.0) > 0, "a pass over evaluated policies is news"
        key = ("MissingMemoryRequest", "Pod", "ns", "p", "c", "")
        assert rt.first_seen._seen[key][1] == 19, "held by the 19 policies left, not by the deleted one"
        assert "p19" not in rt.pending_status

    asyncio.run(go())


def test_the_loop_wakes_up_when_a_result_changes_with_time_alone():
    """A pending OOM kill is judged SETTLE_SECONDS after it: the reconcile loop wakes up for it
    (not only at the next resync, 30 s later)."""
    from types import SimpleNamespace

    rt = runtime()
    assert reconciler.next_wakeup(rt, 1000.0) == rt.config.resync_seconds
    rt.policies["p"] = SimpleNamespace(engine=SimpleNamespace(next_expiry=lambda: 1003.0))
    rt.policies["q"] = SimpleNamespace(engine=SimpleNamespace(next_expiry=lambda: None))
    rt.policies["bad"] = SimpleNamespace(engine=None)
    assert 3.0 <= reconciler.next_wakeup(rt, 1000.0) <= 3.1
    assert 0.0 <= reconciler.next_wakeup(rt, 1010.0) <= 0.1, "overdue: at once"


def test_kopf_delivers_policies_in_the_event_loop_not_in_a_thread():
    """kopf runs a sync handler in a thread pool: the Runtime's dicts and asyncio Events would be
    changed while a pass iterates them (seen: "dictionary changed size during iteration")."""
    import inspect

    from memory_hygiene.shell import operator

    assert inspect.iscoroutinefunction(operator.policy_event)
    for handler in (operator.startup, operator.cleanup):
        assert inspect.iscoroutinefunction(handler)


def test_reports_of_a_policy_deleted_while_no_operator_ran_are_deleted():
    """PolicyReports an earlier run wrote (ReportWriter.preload) for a MemoryPolicy that is gone
    now: nothing will evaluate it again, so the periodic list deletes them; those of a policy
    that exists, or that the watch told after the list began, stay."""
    from memory_hygiene.shell.policyreports import ReportWriter

    class Custom:
        def __init__(self) -> None:
            self.deleted: list[tuple[str, str]] = []

        def list_cluster_custom_object(self, group, version, plural, label_selector=None):
            def report(policy: str, ns: str | None) -> dict:
                meta = {"name": f"memory-hygiene-{policy}", "labels": {"memoryhygiene.io/policy": policy}}
                return {"metadata": {**meta, "namespace": ns} if ns else meta}
            if plural == "policyreports":
                return {"items": [report("gone", "a"), report("kept", "a"), report("told-later", "b")]}
            return {"items": [report("gone", None)]}

        def delete_namespaced_custom_object(self, group, version, ns, plural, name):
            self.deleted.append((ns, name))

        def delete_cluster_custom_object(self, group, version, plural, name):
            self.deleted.append(("", name))

    async def scenario() -> list[tuple[str, str]]:
        rt = Runtime()
        custom = Custom()
        rt.reports = ReportWriter(custom, cap=10, interval=0)
        assert await rt.reports.preload() == 4
        listed_since = time.monotonic()
        policies.observe(rt, None, "told-later", body("told-later", "u2", 1))
        policies.resync(rt, [body("kept", "u1", 1)], listed_since)
        assert {n for n, p in rt.reports.policies.items() if p.index.dirty} == {"gone"}
        task = asyncio.create_task(rt.reports.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(custom.deleted) >= 2:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sorted(custom.deleted)

    assert asyncio.run(scenario()) == [("", "memory-hygiene-gone"), ("a", "memory-hygiene-gone")]
