"""Prometheus metrics (``/metrics``). Names follow Prometheus conventions: ``memory_hygiene_``
prefix, base units in the name, ``_total`` on counters."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter, Gauge, Histogram

VIOLATIONS = Gauge(
    "memory_hygiene_violations",
    "Current violations, by policy and rule.",
    ["policy", "rule"],
)
NODE_LIMITS_RATIO = Gauge(
    "memory_hygiene_node_limits_ratio",
    "Sum of the finite memory limits of a node's pods over the policy's basis (1 = 100%).",
    ["policy", "node"],
)
OOM_KILLS = Gauge(
    "memory_hygiene_oom_kill_incidents",
    "OOM kill incidents within the policy's lookback, by attribution and whether Kubernetes saw them.",
    ["policy", "attribution", "silent"],
)
EVENTS_POSTED = Counter(
    "memory_hygiene_events_posted_total", "Kubernetes Events posted, by reason.", ["reason"]
)
EVENTS_DROPPED = Counter(
    "memory_hygiene_events_dropped_total",
    "Kubernetes Events not posted: object_rate_limit, queue_full, rejected (the API server refused it: "
    "400/403/404/422) or api_error (still failing 15 minutes after the first try).",
    ["cause"],
)
EVENTS_RETRIED = Counter(
    "memory_hygiene_events_retried_total",
    "Event POSTs that failed and were queued to be tried again (with backoff, or at once when the API "
    "server is seen back).",
)
RECONCILE_SECONDS = Histogram(
    "memory_hygiene_reconcile_duration_seconds",
    "Time to evaluate the changed part of the cluster for one policy.",
    ["policy"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STATUS_WRITES = Counter(
    "memory_hygiene_status_writes_total", "MemoryPolicy status writes, by result.", ["result"]
)
POLICY_RESYNCS = Counter(
    "memory_hygiene_policy_resyncs_total",
    "MemoryPolicies the watch missed (created, changed or deleted) and the periodic list found.",
)
UNPARSED_OOM_EVENTS = Counter(
    "memory_hygiene_unparsed_oom_events_total", "OOM Events whose message held no kernel OOM line."
)
OOM_SKIPPED = Counter(
    "memory_hygiene_oom_skipped_total",
    "OOM Events not believed or cut, each counted once: reporter (source not among the policy's "
    "reporters), namespace (not in default), future (dated past now + 120 s), kills_per_event (kills past "
    "maxKillsPerEvent), incidents_per_node (a node's incidents past maxIncidentsPerNode).",
    ["cause"],
)
API_UNREACHABLE_SECONDS = Histogram(
    "memory_hygiene_api_unreachable_seconds",
    "From a reflector finding the API server unreachable (or not ready) to a probe finding it back.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
WATCH_EVENTS = Counter(
    "memory_hygiene_watch_events_total", "Watch events handled, by resource.", ["resource"]
)
WATCH_RESTARTS = Counter(
    "memory_hygiene_watch_restarts_total",
    "Caches listed again: the watch ended with 410 Gone (resourceVersion too old) or failed.",
    ["resource"],
)

# --- where the time from a change in the cluster to its Event goes ------------------------------
# Each stage of the path watch event -> reconcile pass -> Event queue -> POST has its own
# histogram, so a slow violation-to-Event latency can be attributed (docs/benchmarks.md).

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)

WATCH_DELAY = Histogram(
    "memory_hygiene_watch_delay_seconds",
    "From an object's creationTimestamp (whole seconds, so up to 1 s too high) to its ADDED watch "
    "event being handled by the operator, by resource.",
    ["resource"],
    buckets=_LATENCY_BUCKETS,
)
CHANGE_EVALUATED = Histogram(
    "memory_hygiene_change_evaluated_seconds",
    "From the first watch event that made a node's part of the cluster dirty to the end of the "
    "reconcile pass that evaluated it again.",
    buckets=_LATENCY_BUCKETS,
)
PASS_SECONDS = Histogram(
    "memory_hygiene_reconcile_pass_seconds",
    "One whole reconcile pass: every policy evaluated, its Events queued, its status built and written.",
    buckets=_LATENCY_BUCKETS,
)
EVENT_QUEUE_SECONDS = Histogram(
    "memory_hygiene_event_queue_seconds",
    "From an Event being queued to its POST starting, by queue (live: news; backlog: a first evaluation).",
    ["queue"],
    buckets=_LATENCY_BUCKETS,
)
EVENT_POST_SECONDS = Histogram(
    "memory_hygiene_event_post_seconds", "One Event POST (or its update) to the API server.", buckets=_LATENCY_BUCKETS
)
LOOP_LAG = Histogram(
    "memory_hygiene_event_loop_lag_seconds",
    "How late a periodic timer fires: how long the operator's event loop was too busy to run it.",
    buckets=_LATENCY_BUCKETS,
)

POLICY_REPORT_WRITES = Counter(
    "memory_hygiene_policy_report_writes_total",
    "PolicyReport and ClusterPolicyReport writes (--policy-reports), by op (apply, delete) and result (ok, error).",
    ["op", "result"],
)


async def loop_lag_probe(period: float = 0.25) -> None:
    """Measure how late the event loop runs a timer (a pass or a page parsed in the loop blocks it)."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(period)
        LOOP_LAG.observe(max(0.0, time.monotonic() - t - period))
