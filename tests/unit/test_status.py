"""The status the operator writes: built from the engine, compared without its timestamps."""

from memory_hygiene.core.engine import PolicyEngine, snapshot_view
from memory_hygiene.core.policy import MemoryPolicyStatus, parse_spec
from memory_hygiene.shell.status import build_status, comparable, invalid_status, seen_from_status, status_key
from tests.unit.test_rules import node, pod


def NONE(v):
    return None


def engine_with(n_missing):
    e = PolicyEngine("p", parse_spec({}))
    pods = [pod(f"p{i}", {"c": {}}) for i in range(n_missing)]
    e.refresh(snapshot_view([node()], pods, []), None, 1_800_000_000.0)
    return e


def test_status_is_capped_counts_all_and_fits_the_crd_schema():
    status = build_status(engine_with(5), 3, NONE, None, cap=2, now=1_800_000_000.0)
    assert status["summary"]["missingRequests"] == 5 and status["summary"]["violations"] == 5
    assert len(status["violations"]) == 2
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Evaluated")
    assert "5 violations (2 shown" in ready["message"]
    assert status["observedGeneration"] == 3
    MemoryPolicyStatus.model_validate(status)  # what the CRD's status schema describes


def test_first_seen_survives_a_restart_through_the_status():
    first = build_status(engine_with(1), 1, NONE, None, cap=10, now=1_800_000_000.0)
    seen = seen_from_status(first)
    later = build_status(engine_with(1), 1, lambda v: seen.get(status_key(v)), first, cap=10, now=1_800_000_600.0)
    assert later["violations"][0]["firstSeen"] == first["violations"][0]["firstSeen"]
    assert later["violations"][0]["lastSeen"] != first["violations"][0]["lastSeen"]
    assert comparable(later) == comparable(first), "only timestamps moved: no write"
    assert later["conditions"][0]["lastTransitionTime"] == first["conditions"][0]["lastTransitionTime"]


def test_a_change_is_worth_writing():
    a = build_status(engine_with(1), 1, NONE, None, cap=10, now=1_800_000_000.0)
    b = build_status(engine_with(2), 1, NONE, a, cap=10, now=1_800_000_000.0)
    assert comparable(a) != comparable(b)


def test_invalid_spec_is_ready_false_naming_the_field():
    ok = build_status(engine_with(0), 1, NONE, None, cap=10, now=1_800_000_000.0)
    bad = invalid_status("spec.rules.overcommit.maxLimitsPercent: Input should be greater than or equal to 1", 2,
                         ok, 1_800_000_100.0)
    [ready] = bad["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.rules.overcommit.maxLimitsPercent" in ready["message"]
    assert ready["lastTransitionTime"] != ok["conditions"][0]["lastTransitionTime"]
    MemoryPolicyStatus.model_validate(bad)

