"""Kubernetes label-selector matching (apimachinery's labels.Selector semantics)."""

from __future__ import annotations

from collections.abc import Mapping

from .policy import LabelSelector, SelectorOperator


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """True when ``labels`` satisfy ``selector``. None and the empty selector match everything."""
    if selector is None:
        return True
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator is SelectorOperator.IN:
            if not present or labels[req.key] not in req.values:
                return False
        elif req.operator is SelectorOperator.NOT_IN:
            if present and labels[req.key] in req.values:
                return False
        elif req.operator is SelectorOperator.EXISTS:
            if not present:
                return False
        elif req.operator is SelectorOperator.DOES_NOT_EXIST:
            if present:
                return False
    return True
