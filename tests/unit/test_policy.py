"""The MemoryPolicy model: defaults, validation messages, selectors."""

import pytest

from memory_hygiene.core.policy import (
    Basis,
    PolicyError,
    parse_spec,
    policy_from_manifest,
)
from memory_hygiene.core.selectors import matches


def test_empty_spec_enables_every_rule_with_documented_defaults():
    spec = parse_spec({})
    r = spec.rules
    assert (r.overcommit.enabled, r.memory_pressure.enabled, r.missing_requests.enabled, r.silent_oom.enabled) == (
        True, True, True, True,
    )
    assert r.overcommit.basis is Basis.ALLOCATABLE
    assert r.overcommit.max_limits_percent == 100
    assert r.missing_requests.require_limits is False
    assert (r.silent_oom.correlation_window_seconds, r.silent_oom.lookback_seconds) == (60, 3600)
    assert spec.namespace_selector is None and spec.pod_selector is None and spec.node_selector is None
    assert parse_spec(None) == spec


def test_camel_case_fields_as_stored_in_the_api():
    spec = parse_spec(
        {
            "nodeSelector": {"matchLabels": {"pool": "a"}},
            "rules": {
                "overcommit": {"basis": "Capacity", "maxLimitsPercent": 150},
                "silentOOM": {"correlationWindowSeconds": 30, "lookbackSeconds": 600},
                "missingRequests": {"requireLimits": True},
            },
        }
    )
    assert spec.rules.overcommit.basis is Basis.CAPACITY
    assert spec.rules.overcommit.max_limits_percent == 150
    assert spec.rules.silent_oom.correlation_window_seconds == 30
    assert spec.rules.missing_requests.require_limits is True
    assert spec.node_selector.match_labels == {"pool": "a"}


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"rules": {"overcommit": {"maxLimitsPercent": 0}}}, "spec.rules.overcommit.maxLimitsPercent"),
        ({"rules": {"overcommit": {"maxLimitsPercent": "lots"}}}, "spec.rules.overcommit.maxLimitsPercent"),
        ({"rules": {"overcommit": {"basis": "Requests"}}}, "spec.rules.overcommit.basis"),
        ({"rules": {"silentOOM": {"lookbackSeconds": 10}}}, "spec.rules.silentOOM.lookbackSeconds"),
        ({"rules": {"silentOOM": {"correlationWindowSeconds": 600, "lookbackSeconds": 300}}}, "spec.rules.silentOOM"),
        ({"rules": {"overcomit": {}}}, "spec.rules.overcomit"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "spec.podSelector.matchExpressions.0"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
         "spec.podSelector.matchExpressions.0"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Like"}]}},
         "spec.podSelector.matchExpressions.0.operator"),
    ],
)
def test_invalid_values_fail_naming_the_field(spec, field):
    with pytest.raises(PolicyError) as err:
        parse_spec(spec)
    assert field in str(err.value)


def test_manifest_kind_and_api_version_are_checked():
    name, spec = policy_from_manifest(
        {"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy", "metadata": {"name": "p"}, "spec": {}}
    )
    assert name == "p" and spec == parse_spec({})
    with pytest.raises(PolicyError, match="kind"):
        policy_from_manifest({"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "Pod"})
    with pytest.raises(PolicyError, match="apiVersion"):
        policy_from_manifest({"apiVersion": "v1", "kind": "MemoryPolicy"})


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        (None, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchLabels": {"a": "1"}}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)
def test_label_selector_semantics(selector, labels, expected):
    sel = None if selector is None else parse_spec({"podSelector": selector}).pod_selector
    assert matches(sel, labels) is expected


def test_admission_is_opt_in_and_needs_what_it_enforces():
    spec = parse_spec({})
    assert spec.rules.missing_requests.admission is None and spec.rules.missing_requests.limit_admission is None
    assert spec.rules.limit_ratio.max_limit_to_request_ratio is None and spec.rules.limit_ratio.admission is None
    ok = parse_spec({"rules": {"missingRequests": {"admission": "Deny", "requireLimits": True, "limitAdmission": "Warn"},
                               "limitRatio": {"maxLimitToRequestRatio": 2.5, "admission": "Audit"}}})
    assert ok.rules.missing_requests.admission.value == "Deny"
    assert ok.rules.limit_ratio.max_limit_to_request_ratio == 2.5
    for bad, words in (
        ({"missingRequests": {"limitAdmission": "Warn"}}, "limitAdmission needs requireLimits"),
        ({"missingRequests": {"enabled": False, "admission": "Deny"}}, "admission needs the rule enabled"),
        ({"limitRatio": {"admission": "Deny"}}, "admission needs maxLimitToRequestRatio"),
        ({"limitRatio": {"maxLimitToRequestRatio": 0.5}}, "greater than or equal to 1"),
        ({"missingRequests": {"admission": "Refuse"}}, "spec.rules.missingRequests.admission"),
    ):
        with pytest.raises(PolicyError, match=words):
            parse_spec({"rules": bad})
