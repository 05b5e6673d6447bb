"""Writing PolicyReports (``memory-hygiene run --policy-reports``; off by default).

The reconcile pass hands each policy's changes to :meth:`ReportWriter.observe` (cheap: it updates
the policy's :class:`~memory_hygiene.core.policyreport.ScopeIndex`); a task of its own writes the
reports of the scopes that changed, at most once per ``interval`` per scope set, with server-side
apply (field manager ``memory-hygiene``), and deletes a scope's report when its last violation
ends. At start it lists the reports an earlier run wrote (label
``app.kubernetes.io/managed-by=memory-hygiene``), so that one whose violations ended while the
operator was down is deleted after the policy's first evaluation, and those of a policy deleted
meanwhile at the first periodic list of MemoryPolicies (``policies.resync``).

The operator writes only reports it owns (named ``memory-hygiene-<policy>``, labelled), in the
namespaces its violations are in. RBAC: manifests/overlays/policyreports/ (the chart's
``policyReports.enabled``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from ..core import policyreport as R
from ..core.engine import PolicyEngine
from ..core.rules import Violation
from . import metrics

log = logging.getLogger("memory_hygiene.policyreports")

RETRY_SECONDS = 5.0
"""A failed write or delete is tried again this much later (and on the next change of its scope)."""

PLURALS = {"PolicyReport": "policyreports", "ClusterPolicyReport": "clusterpolicyreports"}


@dataclass
class _Policy:
    index: R.ScopeIndex = field(default_factory=R.ScopeIndex)
    first_seen: Callable[[Violation], float | None] = lambda v: None
    written: dict[str, Any] = field(default_factory=dict)
    """scope -> the body last applied (None: known to exist from an earlier run, content unknown)."""


class ReportWriter:
    def __init__(self, custom: Any, cap: int, interval: float) -> None:
        self.custom = custom
        self.cap = cap
        self.interval = interval
        self.policies: dict[str, _Policy] = {}
        self.wake = asyncio.Event()

    # --- from the reconcile pass (synchronous, cheap) -------------------------------------------

    def observe(self, policy: str, engine: PolicyEngine, whole: bool,
                first_seen: Callable[[Violation], float | None]) -> None:
        p = self.policies.setdefault(policy, _Policy())
        p.first_seen = first_seen
        if whole:
            p.index.replace(engine.violations())
            p.index.dirty |= set(p.written)  # reports of an earlier run: rewritten or deleted
        else:
            p.index.update(*engine.transitions())
        if p.index.dirty:
            self.wake.set()

    def forget(self, policy: str) -> None:
        """The MemoryPolicy was deleted: its reports go too."""
        p = self.policies.get(policy)
        if p is not None:
            p.index.clear()
            p.index.dirty |= set(p.written)
            self.wake.set()

    def forget_all_but(self, policies: Collection[str]) -> list[str]:
        """Reports still standing of the MemoryPolicies not in ``policies`` (those that exist):
        a policy deleted while no operator ran, whose reports ``preload`` found. They go too."""
        gone = [name for name, p in self.policies.items() if name not in policies and p.written]
        for name in gone:
            self.forget(name)
        return gone

    # --- the writer task ------------------------------------------------------------------------

    async def preload(self) -> int:
        """Reports an earlier run wrote: policy -> scopes (deleted if no longer needed)."""
        n = 0
        selector = ",".join(f"{k}={v}" for k, v in R.MANAGED_BY.items())
        for plural in PLURALS.values():
            resp = await asyncio.to_thread(self.custom.list_cluster_custom_object, R.GROUP, R.VERSION, plural,
                                           label_selector=selector)
            for item in resp.get("items") or []:
                meta = item.get("metadata") or {}
                policy = (meta.get("labels") or {}).get(R.POLICY_LABEL)
                if policy and meta.get("name") == R.report_name(policy):
                    scope = meta.get("namespace") or R.CLUSTER
                    self.policies.setdefault(policy, _Policy()).written[scope] = None
                    n += 1
        return n

    async def run(self) -> None:
        last = float("-inf")
        while True:
            await self.wake.wait()
            wait = last + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.wake.clear()
            last = time.monotonic()
            for name, p in list(self.policies.items()):
                for scope in sorted(p.index.take()):
                    await self._write(name, p, scope)
            if any(p.index.dirty for p in self.policies.values()):  # a write failed: try again later
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self.wake.set)

    async def _write(self, policy: str, p: _Policy, scope: str) -> None:
        body = R.build_report(policy, scope, (p.index.scopes.get(scope) or {}).values(), self.cap, p.first_seen)
        known = scope in p.written
        if body is not None and known and p.written[scope] == body:
            return
        if body is None and not known:
            return
        kind = body["kind"] if body else ("PolicyReport" if scope != R.CLUSTER else "ClusterPolicyReport")
        name = R.report_name(policy)
        try:
            if body is None:
                await asyncio.to_thread(self._delete, kind, scope, name)
                p.written.pop(scope, None)
                metrics.POLICY_REPORT_WRITES.labels(op="delete", result="ok").inc()
            else:
                await asyncio.to_thread(self._apply, kind, scope, name, body)
                p.written[scope] = body
                metrics.POLICY_REPORT_WRITES.labels(op="apply", result="ok").inc()
        except Exception as err:  # noqa: BLE001 - logged, tried again on the next change of the scope
            metrics.POLICY_REPORT_WRITES.labels(op="delete" if body is None else "apply", result="error").inc()
            p.index.dirty.add(scope)
            log.warning("could not %s %s %s%s: %s", "delete" if body is None else "write", kind,
                        f"{scope}/" if scope else "", name, err)

    def _apply(self, kind: str, scope: str, name: str, body: dict[str, Any]) -> None:
        # The client sends a dict as JSON, which is YAML: the apply patch content type takes it.
        data = body
        kw = {"field_manager": "memory-hygiene", "force": True, "_content_type": "application/apply-patch+yaml"}
        if scope == R.CLUSTER:
            self.custom.patch_cluster_custom_object(R.GROUP, R.VERSION, PLURALS[kind], name, data, **kw)
        else:
            self.custom.patch_namespaced_custom_object(R.GROUP, R.VERSION, scope, PLURALS[kind], name, data, **kw)

    def _delete(self, kind: str, scope: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            if scope == R.CLUSTER:
                self.custom.delete_cluster_custom_object(R.GROUP, R.VERSION, PLURALS[kind], name)
            else:
                self.custom.delete_namespaced_custom_object(R.GROUP, R.VERSION, scope, PLURALS[kind], name)
        except ApiException as err:
            if err.status != 404:
                raise
