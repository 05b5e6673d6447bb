"""Prometheus metrics (``/metrics``). Names follow Prometheus conventions: ``memory_hygiene_``
prefix, base units in the name, ``_total`` on counters."""

from __future__ import annotations

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
    "Kubernetes Events not posted: object_rate_limit, queue_full or api_error.",
    ["cause"],
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
UNPARSED_OOM_EVENTS = Counter(
    "memory_hygiene_unparsed_oom_events_total", "OOM Events whose message held no kernel OOM line."
)
WATCH_EVENTS = Counter(
    "memory_hygiene_watch_events_total", "Watch events handled, by resource.", ["resource"]
)
WATCH_RESTARTS = Counter(
    "memory_hygiene_watch_restarts_total",
    "Caches listed again: the watch ended with 410 Gone (resourceVersion too old) or failed.",
    ["resource"],
)
