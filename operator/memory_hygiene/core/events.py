"""OOM Events (node-problem-detector's OOMKilling, kubelet's SystemOOM) to plain data."""

from __future__ import annotations

from .snapshot import parse_time
from .types import OOMEventInfo

OOM_REASONS = ("OOMKilling", "SystemOOM")
"""Event reasons that report a kernel OOM kill. OOMKilling is accepted from any source."""


def oom_event_info(event: dict) -> OOMEventInfo | None:
    """The OOM facts of a core/v1 (or events.k8s.io/v1) Event; None for any other Event.

    The node is the involved Node's name (NPD and kubelet both post on the Node), else the
    reporting host. Times fall back from firstTimestamp/lastTimestamp to eventTime and
    creationTimestamp, as ``kubectl get events`` does.
    """
    reason = event.get("reason")
    if reason not in OOM_REASONS:
        return None
    meta = event.get("metadata") or {}
    involved = event.get("involvedObject") or event.get("regarding") or {}
    source = event.get("source") or {}
    node = involved.get("name") if involved.get("kind") == "Node" else None
    node = node or source.get("host") or event.get("reportingInstance") or ""
    if not node:
        return None
    created = parse_time(meta.get("creationTimestamp"))
    event_time = parse_time(event.get("eventTime"))
    series = event.get("series") or {}
    first = parse_time(event.get("firstTimestamp")) or event_time or created
    last = (
        parse_time(event.get("lastTimestamp"))
        or parse_time(series.get("lastObservedTime"))
        or first
    )
    count = event.get("count") or series.get("count") or 1
    return OOMEventInfo(
        uid=meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        reason=reason,
        node=node,
        message=event.get("message") or event.get("note") or "",
        first_time=first,
        last_time=last,
        count=int(count),
        source=source.get("component") or event.get("reportingController") or "",
        name=meta.get("name") or "",
    )
