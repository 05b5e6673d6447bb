"""The kopf entry points: the operator's start and stop, and the MemoryPolicy watch.

kopf watches only the MemoryPolicies (``@kopf.on.event``: no progress or diff-base annotations
on them). Pods, Nodes, Namespaces and OOM Events are read by the operator's own list+watch
caches (``shell/reflector.py``; kopf's per-object machinery costs too much at 150,000 pods, see
docs/benchmarks.md), and everything else is a job of its own, started here (``shell/runtime.py``
lists them). What the handlers share is one ``Runtime``, in kopf's ``memo``.

House rule: the operator writes nothing but Events, MemoryPolicy status and the admission
policies a MemoryPolicy asks for (``shell/admission.py``).

Runnable as ``memory-hygiene run`` or as ``kopf run -m memory_hygiene.shell.operator -A`` (the
settings then come from the environment: ``shell/config.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from typing import Any

import kopf

from ..core import policy as P
from ..core import sources
from . import admission, config, metrics, permissions, policies, reconciler, status
from .api import ApiSession
from .events import EventSink
from .policyreports import ReportWriter
from .runtime import Runtime, reflectors


def runtime_of(memo: Any) -> Runtime:
    """The process's Runtime, in kopf's memo (put there by ``memory-hygiene run``, or by the
    startup handler under ``kopf run``)."""
    rt = getattr(memo, "runtime", None)
    if rt is None:
        rt = memo.runtime = Runtime(config.load())
    return rt


@kopf.on.event(P.GROUP, P.VERSION, P.PLURAL)
async def policy_event(type: str | None, name: str, body: kopf.Body, logger: logging.Logger, memo: kopf.Memo,
                       **_: Any) -> None:
    # async: kopf runs a sync handler in a thread, and the Runtime (its dicts, its asyncio
    # Events) belongs to the event loop's thread (a pass iterating the policies failed with
    # "dictionary changed size during iteration" in the benchmark)
    policies.observe(runtime_of(memo), type, name, body, logger)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, memo: kopf.Memo, **_: Any) -> None:
    from kubernetes import client
    from kubernetes import config as kubeconfig

    rt = runtime_of(memo)
    c = rt.config
    configure(settings, c)
    try:
        kubeconfig.load_incluster_config()
    except kubeconfig.ConfigException:
        await asyncio.to_thread(kubeconfig.load_kube_config, os.environ.get("KUBECONFIG"))
    lacking = await asyncio.to_thread(permissions.missing, client.ApiClient(), policy_reports=c.policy_reports)
    if lacking:
        for need in lacking:
            logger.error("RBAC: this service account may not %s, needed for %s", need, need.why)
        raise kopf.PermanentError(
            f"missing {len(lacking)} RBAC permissions (see manifests/base/clusterrole.yaml); stopping"
        )
    rt.admission_may_list = await asyncio.to_thread(admission.may_list, client.ApiClient())
    rt.admission_writer = admission.Writer(client.ApiClient())
    logger.info("admission enforcement RBAC (%s): %s", admission.OVERLAY,
                "present" if rt.admission_may_list else "absent: a MemoryPolicy that asks for enforcement will say so")
    rt.session = session = ApiSession()
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    rt.sink = sink = EventSink(session, instance, c.event_burst, c.event_refill_seconds, c.event_qps)
    logger.info("found %d events posted by earlier runs", await sink.preload())
    session.on_up.append(sink.retry_now)  # failed Event POSTs go again as soon as it answers
    rt.reflectors = reflectors(rt, session)
    for r in rt.reflectors:
        rt.tasks.append(asyncio.create_task(r.run(), name=f"memory-hygiene reflector {r.resource}"))
    rt.oneshots.append(asyncio.create_task(_synced(rt, logger), name="memory-hygiene synced"))

    def job(coro: Any, name: str) -> None:
        rt.tasks.append(asyncio.create_task(coro, name=f"memory-hygiene {name}"))

    job(sink.run(), "events")
    if c.policy_reports:
        rt.reports = ReportWriter(client.CustomObjectsApi(), c.policy_report_max_results, c.status_interval)
        logger.info("found %d PolicyReports written by earlier runs", await rt.reports.preload())
        job(rt.reports.run(), "policy reports")
    job(reconciler.reconcile_loop(rt), "reconcile")
    job(status.writer(rt), "status")
    job(policies.resync_loop(rt), "policy resync")
    job(admission.run(rt), "admission")
    job(metrics.loop_lag_probe(), "loop lag")


async def _synced(rt: Runtime, logger: logging.Logger) -> None:
    """Wait for every cache's initial state; then the reconcile loop may begin."""
    started = time.monotonic()
    # The caches grow by millions of small acyclic objects while they fill: the cyclic garbage
    # collector would scan them again and again (15-20 % of the CPU of a 150,000-pod sync).
    # Off until they are full, then what they hold is frozen out of its reach for good; what
    # comes later is collected as usual (and the acyclic rest by reference counting anyway).
    gc.disable()
    try:
        await asyncio.gather(*(r.synced.wait() for r in rt.reflectors))
    finally:
        gc.freeze()
        gc.enable()
    logger.info("caches filled in %.1fs: %s", time.monotonic() - started,
                ", ".join(f"{len(rt.stores[s.name])} {s.name}" for s in sources.SOURCES))
    rt.ready.set()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = runtime_of(memo)
    for t in rt.tasks + rt.oneshots:
        t.cancel()
    await asyncio.gather(*rt.tasks, *rt.oneshots, return_exceptions=True)
    rt.tasks.clear()
    rt.oneshots.clear()
    if rt.session is not None:
        await rt.session.close()
        rt.session = None


def configure(settings: kopf.OperatorSettings, c: config.Config) -> None:
    """kopf watches only MemoryPolicies (and CRDs, for discovery)."""
    settings.watching.chunk_size = c.chunk_size
    settings.posting.enabled = False  # kopf's own per-handler Events: we post our own
    # kopf removes its finalizer from any watched object that carries it (e.g. left by another
    # kopf operator): a name of our own, which nothing ever sets, means it never patches one.
    settings.persistence.finalizer = "memoryhygiene.io/never-set"
