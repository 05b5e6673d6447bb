"""shell/policyreports.py's ReportWriter against a fake CustomObjectsApi: only the scopes a pass
changed are applied again, an emptied scope's report is deleted, a report an earlier run left is
deleted once the policy is evaluated without it, and a deleted policy takes its reports along."""

from __future__ import annotations

import asyncio
from typing import Any

from memory_hygiene.core.rules import MISSING_REQUEST, OVERCOMMITTED, Violation
from memory_hygiene.shell.policyreports import ReportWriter


class FakeCustom:
    def __init__(self, existing: list[dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple] = []
        self.existing = existing or []

    def list_cluster_custom_object(self, group, version, plural, label_selector=None):
        assert label_selector == "app.kubernetes.io/managed-by=memory-hygiene"
        return {"items": [o for o in self.existing if o["plural"] == plural]}

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body, **kw):
        assert kw == {"field_manager": "memory-hygiene", "force": True, "_content_type": "application/apply-patch+yaml"}
        self.calls.append(("apply", plural, ns, name, body))

    def patch_cluster_custom_object(self, group, version, plural, name, body, **kw):
        assert kw["_content_type"] == "application/apply-patch+yaml"
        self.calls.append(("apply", plural, "", name, body))

    def delete_namespaced_custom_object(self, group, version, ns, plural, name):
        self.calls.append(("delete", plural, ns, name))

    def delete_cluster_custom_object(self, group, version, plural, name):
        self.calls.append(("delete", plural, "", name))


class FakeEngine:
    def __init__(self, violations: list[Violation], now=None, gone=None) -> None:
        self._v, self._now, self._gone = violations, now or {}, gone or {}

    def violations(self):
        return iter(self._v)

    def transitions(self):
        return self._now, self._gone


def pv(ns: str, name: str) -> Violation:
    return Violation(MISSING_REQUEST, "Pod", ns, name, "app", "no request", f"u-{name}")


def nv(name: str, msg: str = "180%") -> Violation:
    return Violation(OVERCOMMITTED, "Node", None, name, None, msg, f"u-{name}")


async def drain(w: ReportWriter) -> None:
    task = asyncio.create_task(w.run())
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not w.wake.is_set() and all(not p.index.dirty for p in w.policies.values()):
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_writer() -> None:
    async def scenario() -> None:
        stale = {"plural": "policyreports", "metadata": {"name": "memory-hygiene-p", "namespace": "old",
                                                          "labels": {"memoryhygiene.io/policy": "p"}}}
        custom = FakeCustom([stale])
        w = ReportWriter(custom, cap=10, interval=0)
        assert await w.preload() == 1
        a, b, n = pv("a", "x"), pv("b", "y"), nv("n1")
        w.observe("p", FakeEngine([a, b, n]), True, lambda v: None)
        await drain(w)
        assert sorted(c[:3] for c in custom.calls) == [
            ("apply", "clusterpolicyreports", ""), ("apply", "policyreports", "a"), ("apply", "policyreports", "b"),
            ("delete", "policyreports", "old")]
        custom.calls.clear()

        n2 = nv("n1", "190%")  # a pass that changed one node's message and ended b's violation
        w.observe("p", FakeEngine([], now={n2.key: n2}, gone={b.key: b}), False, lambda v: None)
        await drain(w)
        assert sorted(c[:3] for c in custom.calls) == [("apply", "clusterpolicyreports", ""),
                                                       ("delete", "policyreports", "b")]
        [applied] = [c for c in custom.calls if c[0] == "apply"]
        assert applied[4]["results"][0]["message"] == "190%" and applied[4]["summary"]["fail"] == 1
        custom.calls.clear()

        w.observe("p", FakeEngine([], now={a.key: a}, gone={}), False, lambda v: None)  # nothing new
        await drain(w)
        assert custom.calls == []

        w.forget("p")
        await drain(w)
        assert sorted(c[:3] for c in custom.calls) == [("delete", "clusterpolicyreports", ""),
                                                       ("delete", "policyreports", "a")]

    asyncio.run(scenario())


def test_a_failed_write_is_tried_again_without_a_new_change(monkeypatch) -> None:
    import memory_hygiene.shell.policyreports as mod

    monkeypatch.setattr(mod, "RETRY_SECONDS", 0.05)

    class Flaky(FakeCustom):
        fails = 1

        def patch_namespaced_custom_object(self, *a, **kw):
            if self.fails:
                self.fails -= 1
                raise RuntimeError("503 from the API server")
            super().patch_namespaced_custom_object(*a, **kw)

    async def scenario() -> None:
        custom = Flaky()
        w = ReportWriter(custom, cap=10, interval=0)
        w.observe("p", FakeEngine([pv("a", "x")]), True, lambda v: None)
        task = asyncio.create_task(w.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if custom.calls:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [c[:3] for c in custom.calls] == [("apply", "policyreports", "a")]

    asyncio.run(scenario())
