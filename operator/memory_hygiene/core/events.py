"""OOM Events (node-problem-detector's OOMKilling, kubelet's SystemOOM) to plain data."""

from __future__ import annotations

import sys

from .kernel import MAX_KILLS_PER_TEXT, clean_text, parse_oom_text_capped
from .resources import mapping
from .snapshot import MalformedObjectError, _str, _time
from .types import OOMEventInfo

MESSAGE_EXCERPT = 200
"""Characters of an OOM Event's text kept for logs; its kills are read from all of it."""

OOM_REASONS = ("OOMKilling", "SystemOOM")
"""Event reasons that report a kernel OOM kill. Which sources a policy believes is its own
setting (``rules.silentOOM.reporters``, checked in ``rules.py`` with the namespace they post in)."""


def oom_event_info(event: dict) -> OOMEventInfo | None:
    """The OOM facts of a core/v1 (or events.k8s.io/v1) Event; None for any other Event.

    The node is the involved Node's name (NPD and kubelet both post on the Node), else the
    reporting host. Times fall back from firstTimestamp/lastTimestamp to eventTime and
    creationTimestamp, as ``kubectl get events`` does. A field of the wrong type raises
    ``MalformedObjectError`` (a ValueError) naming it.
    """
    if not isinstance(event, dict) or event.get("reason") not in OOM_REASONS:
        return None
    reason = event["reason"]
    meta = mapping(event, event.get("metadata"), "metadata")
    field = "involvedObject" if "involvedObject" in event else "regarding"
    involved = mapping(event, event.get(field), field)
    source = mapping(event, event.get("source"), "source")
    node = _str(event, involved.get("name"), f"{field}.name") if involved.get("kind") == "Node" else ""
    node = (node or _str(event, source.get("host"), "source.host")
            or _str(event, event.get("reportingInstance"), "reportingInstance"))
    node = clean_text(node)
    if not node:
        return None
    created = _time(event, meta.get("creationTimestamp"), "metadata.creationTimestamp")
    event_time = _time(event, event.get("eventTime"), "eventTime")
    series = mapping(event, event.get("series"), "series")
    first = _time(event, event.get("firstTimestamp"), "firstTimestamp") or event_time or created
    last = (
        _time(event, event.get("lastTimestamp"), "lastTimestamp")
        or _time(event, series.get("lastObservedTime"), "series.lastObservedTime")
        or first
    )
    count = event.get("count") or series.get("count") or 1
    if isinstance(count, bool) or not isinstance(count, int):
        raise MalformedObjectError(event, "count", f"expected an integer, got {type(count).__name__}")
    message_field = "message" if event.get("message") is not None else "note"
    text = _str(event, event.get(message_field), message_field)
    # The kernel's text is read here, once, when the Event arrives: not by every policy at every
    # pass, and a 700 KB Event is not kept, only its kills (at most MAX_KILLS_PER_TEXT).
    kills, more = parse_oom_text_capped(text, MAX_KILLS_PER_TEXT)
    name = _str(event, meta.get("name"), "metadata.name")
    return OOMEventInfo(
        uid=_str(event, meta.get("uid"), "metadata.uid")
        or f"{_str(event, meta.get('namespace'), 'metadata.namespace')}/{name}",
        reason=reason,
        node=node,
        message=text[:MESSAGE_EXCERPT],
        first_time=first,
        last_time=last,
        count=count,
        source=_str(event, source.get("component"), "source.component")
        or _str(event, event.get("reportingComponent"), "reportingComponent")  # core/v1, new recorders
        or _str(event, event.get("reportingController"), "reportingController"),  # events.k8s.io/v1
        name=name,
        namespace=sys.intern(_str(event, meta.get("namespace"), "metadata.namespace")),  # "default", shared
        kills=kills,
        more_kills=more,
    )
