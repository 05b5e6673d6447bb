"""NodeReservationTooSmall: capacity - allocatable (kube-reserved + system-reserved + the hard
eviction threshold, seeds 001 and 002) below the policy's minimum.

The "auto" minimum is computed here by hand from the published tiers, not from the code:
GKE https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes#memory_and_cpu_reservations
and AKS before 1.29 https://learn.microsoft.com/en-us/azure/aks/node-resource-reservations reserve
25% of the first 4 GiB, 20% of the next 4 GiB, 10% of the next 8 GiB, 6% of the next 112 GiB and 2%
of the memory above 128 GiB; kubelet's default evictionHard memory.available is 100Mi
(kubernetes/kubernetes pkg/kubelet/eviction/defaults_linux.go).
"""

import math
import re
from fractions import Fraction as F

import pytest

from memory_hygiene.core.engine import PolicyEngine, evaluate, snapshot_view
from memory_hygiene.core.policy import PolicyError, parse_spec
from memory_hygiene.core.rules import evaluate_reservation, recommended_reserve
from memory_hygiene.crd import crd
from tests.unit.test_rules import node

GI = 2**30
MI = 2**20
EVICTION = 100 * MI

# capacity -> the reserve, tier by tier, written out by hand
BY_HAND = {
    1 * GI: F(25, 100) * 1 * GI,
    2 * GI: F(25, 100) * 2 * GI,
    4 * GI: F(25, 100) * 4 * GI,  # 1 GiB
    6 * GI: F(25, 100) * 4 * GI + F(20, 100) * 2 * GI,  # 1.4 GiB
    8 * GI: F(25, 100) * 4 * GI + F(20, 100) * 4 * GI,  # 1.8 GiB
    16 * GI: F(25, 100) * 4 * GI + F(20, 100) * 4 * GI + F(10, 100) * 8 * GI,  # 2.6 GiB
    64 * GI: F(25, 100) * 4 * GI + F(20, 100) * 4 * GI + F(10, 100) * 8 * GI + F(6, 100) * 48 * GI,  # 5.48 GiB
    128 * GI: F(25, 100) * 4 * GI + F(20, 100) * 4 * GI + F(10, 100) * 8 * GI + F(6, 100) * 112 * GI,  # 9.32 GiB
    256 * GI: (F(25, 100) * 4 * GI + F(20, 100) * 4 * GI + F(10, 100) * 8 * GI + F(6, 100) * 112 * GI
               + F(2, 100) * 128 * GI),  # 11.88 GiB
    # a capacity as a kubelet reports it (a "16 GB" VM: 16,393,568 KiB), not a whole GiB
    16_393_568 * 1024: (F(25, 100) * 4 * GI + F(20, 100) * 4 * GI
                        + F(10, 100) * (16_393_568 * 1024 - 8 * GI)),
}


@pytest.mark.parametrize("capacity", sorted(BY_HAND))
def test_recommended_reserve_follows_the_published_tiers(capacity):
    assert recommended_reserve(capacity) == math.ceil(BY_HAND[capacity]) + EVICTION


def test_recommended_reserve_matches_round_figures():
    assert recommended_reserve(4 * GI) == 1 * GI + 100 * MI
    assert recommended_reserve(16 * GI) - EVICTION == math.ceil(F(26, 10) * GI)
    # a third-party calculator's worked example (github.com/hatemosphere/gke-node-allocatable-memory-calculator):
    # 150 GiB -> "Standard GKE reserved memory: 9.8577 GiB" (eviction threshold included)
    assert round(recommended_reserve(150 * GI) / GI, 4) == 9.8577
    # monotonic: a bigger node never needs less
    sizes = [GI * n // 4 for n in range(1, 4 * 300)]
    reserves = [recommended_reserve(c) for c in sizes]
    assert reserves == sorted(reserves)


def spec(**rule):
    return parse_spec({"rules": {"nodeReservation": rule}})


def test_off_by_default():
    assert parse_spec({}).rules.node_reservation.enabled is False
    bare = node(capacity="16Gi", allocatable=f"{16 * 1024 - 100}Mi")  # the e2e real node: eviction only
    assert evaluate_reservation(parse_spec({}).rules.node_reservation, bare) is None
    report = evaluate("p", parse_spec({}), [bare], [], [], 0.0)
    assert report.violations == [] and report.summary()["reservationTooSmall"] == 0


def test_fires_on_a_node_with_only_the_eviction_threshold_reserved():
    # seeds 001/002: capacity - allocatable is just the 100Mi eviction threshold
    bare = node(capacity="16Gi", allocatable=f"{16 * 1024 - 100}Mi")
    v = evaluate_reservation(spec(enabled=True).rules.node_reservation, bare)
    assert v is not None and v.rule == "NodeReservationTooSmall" and v.kind == "Node"
    assert v.name == "n1" and v.uid == "uid-n1" and v.namespace is None
    minimum = math.ceil(BY_HAND[16 * GI]) + EVICTION
    assert minimum == recommended_reserve(16 * GI)
    text = v.message
    for needed in ("capacity 16Gi", "allocatable 15.9Gi", "reserve of 100Mi", "at least 2.7Gi",
                   "--kube-reserved", "--system-reserved", "--eviction-hard", "evictionHard", "OOM"):
        assert needed in text, (needed, text)


def test_a_node_reserved_as_gke_does_is_fine_and_one_byte_less_is_not():
    rule = spec(enabled=True).rules.node_reservation
    need = math.ceil(BY_HAND[64 * GI]) + EVICTION
    assert evaluate_reservation(rule, node(capacity=str(64 * GI), allocatable=str(64 * GI - need))) is None
    assert evaluate_reservation(rule, node(capacity=str(64 * GI), allocatable=str(64 * GI - need + 1))) is not None


def test_seed_001_reservations_fall_short_of_the_auto_minimum_but_pass_a_fixed_one():
    # seed 001's kubelet config on a worker: kubeReserved 256Mi, systemReserved 1Gi, evictionHard 200Mi
    reserve = 256 * MI + 1 * GI + 200 * MI
    n = node(capacity="32Gi", allocatable=str(32 * GI - reserve))
    auto = evaluate_reservation(spec(enabled=True).rules.node_reservation, n)
    assert auto is not None  # 32Gi wants 3.56Gi + 100Mi by the tiers
    assert "reserve of 1.4Gi" in auto.message and "at least 3.7Gi" in auto.message
    assert evaluate_reservation(spec(enabled=True, minimum="1Gi").rules.node_reservation, n) is None
    fixed = evaluate_reservation(spec(enabled=True, minimum="2Gi").rules.node_reservation, n)
    assert fixed is not None and "at least 2Gi" in fixed.message and "rules.nodeReservation.minimum" in fixed.message


def test_allocatable_above_capacity_is_that_rule_alone():
    s = parse_spec({"rules": {"nodeReservation": {"enabled": True}}})
    liar = node(capacity="4Gi", allocatable="64Gi")
    assert evaluate_reservation(s.rules.node_reservation, liar) is None
    rules = [v.rule for v in evaluate("p", s, [liar], [], [], 0.0).violations]
    assert rules == ["NodeAllocatableAboveCapacity"]
    equal = node(capacity="4Gi", allocatable="4Gi")  # no reserve at all: this rule's business
    assert [v.rule for v in evaluate("p", s, [equal], [], [], 0.0).violations] == ["NodeReservationTooSmall"]


def test_unknown_memory_is_not_judged():
    rule = spec(enabled=True).rules.node_reservation
    n = node(capacity="8Gi", allocatable="7Gi")
    assert evaluate_reservation(rule, n._replace(allocatable=None)) is None
    assert evaluate_reservation(rule, n._replace(capacity=None)) is None


def test_it_resolves_when_the_node_gets_its_reservation():
    s = spec(enabled=True)
    engine = PolicyEngine("p", s)
    engine.refresh(snapshot_view([node(capacity="8Gi", allocatable="7.9Gi")], [], []), None, 0.0)
    assert engine.summary()["reservationTooSmall"] == 1
    now, gone = engine.transitions()
    assert [v.rule for v in now.values()] == ["NodeReservationTooSmall"] and not gone
    engine.refresh(snapshot_view([node(capacity="8Gi", allocatable="6Gi")], [], []), ["n1"], 1.0)
    now, gone = engine.transitions()
    assert [v.rule for v in gone.values()] == ["NodeReservationTooSmall"] and not now
    assert engine.summary()["reservationTooSmall"] == 0 and engine.summary()["violations"] == 0


VALID = ["auto", "1Gi", "512Mi", "1.5Gi", "2G", "1073741824", "0"]
INVALID = ["", "Auto", "-1Gi", "1gi", "lots", "1 Gi", "1e9", "100m"]


@pytest.mark.parametrize("value", VALID)
def test_minimum_accepts(value):
    assert spec(minimum=value).rules.node_reservation.minimum == value


@pytest.mark.parametrize("value", INVALID)
def test_minimum_refuses(value):
    with pytest.raises(PolicyError, match="nodeReservation.minimum"):
        spec(minimum=value)


def test_the_crd_checks_minimum_as_the_model_does():
    props = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    minimum = props["rules"]["properties"]["nodeReservation"]["properties"]["minimum"]
    assert minimum["default"] == "auto"
    pattern = re.compile(minimum["pattern"])  # the API server's pattern is ECMA 262; this one is plain
    for v in VALID:
        assert pattern.search(v), v
    for v in INVALID:
        assert not pattern.search(v), v
    enabled = props["rules"]["properties"]["nodeReservation"]["properties"]["enabled"]
    assert enabled["default"] is False
