"""core.qos: QoS class and kubelet's oom_score_adj.

The oom_score_adj table is our transcription of ``TestGetContainerOOMScoreAdjust`` in
kubernetes/kubernetes ``pkg/kubelet/qos/policy_test.go`` (v1.37.2), minus the DRA cases (the
DRANodeAllocatableResources gate is alpha and off). Upstream asserts a [low, high] range per
container; we assert the exact value, which lies in that range. The QoS cases follow
``pkg/apis/core/v1/helper/qos/qos_test.go``.
"""

from __future__ import annotations

import pytest

from memory_hygiene.core.qos import (
    compute_qos_class,
    expected_score,
    expected_scores,
    is_critical,
    is_node_critical,
    oom_score_adj,
    qos_class,
)
from memory_hygiene.core.quantity import MalformedObjectError
from memory_hygiene.core.snapshot import pod_info

STANDARD = 8_000_000_000  # policy_test.go standardMemoryAmount
Mi = 1024**2


def c(name, requests=None, limits=None, *, sidecar=False):
    res = {}
    if requests is not None:
        res["requests"] = requests
    if limits is not None:
        res["limits"] = limits
    out = {"name": name, "resources": res}
    if sidecar:
        out["restartPolicy"] = "Always"
    return out


def pod(containers, init=(), *, resources=None, status=None, **spec_extra):
    spec = {"containers": list(containers), **spec_extra}
    if init:
        spec["initContainers"] = list(init)
    if resources is not None:
        spec["resources"] = resources
    return {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec,
            "status": status or {}}


def mem(v):
    return {"memory": str(v)}


# policy_test.go sample values
REQ = STANDARD // 8  # sampleDefaultMemRequest
LIM = 1000 + STANDARD // 8  # sampleDefaultMemLimit
POD_REQ = STANDARD // 4  # sampleDefaultPodMemRequest
POD_LIM = 1000 + STANDARD // 4  # sampleDefaultPodMemLimit

main_1 = c("main-1", mem(REQ), mem(LIM))
init_c = c("init-container", mem(REQ), mem(LIM))
sidecar = c("sidecar-container", mem(REQ), mem(LIM), sidecar=True)
small_sidecar = c("sidecar-small-container", mem(STANDARD // 20), mem(LIM), sidecar=True)
big_sidecar = c("sidecar-big-container", mem(STANDARD // 2), mem(LIM), sidecar=True)


def g(name, memory):  # a container whose cpu and memory requests equal its limits
    r = {"cpu": "5m", "memory": str(memory)}
    return c(name, dict(r), dict(r))


def pod_level(req_mem, lim_mem):
    return {"requests": {"cpu": "5m", "memory": str(req_mem)},
            "limits": {"cpu": "5m", "memory": str(lim_mem)}}


UPSTREAM_OOM_CASES = [
    # (name, pod, capacity, {container: score})
    ("cpu-limit", pod([c("cpu-limit", limits={"cpu": "10"})]), 4_000_000_000, {"cpu-limit": 999}),
    # Upstream feeds this pod undefaulted (request memory 0 -> 999). The API server defaults the
    # memory request to the 10G limit, and kubelet then computes 1000 - 1250 -> clamped to 3.
    ("memory-limit-cpu-request",
     pod([c("memory-limit-cpu-request", {"cpu": "0"}, {"memory": "10G"})]), STANDARD,
     {"memory-limit-cpu-request": 3}),
    ("zero-memory-limit", pod([c("zero-memory-limit", limits={"memory": "0"})]), 7_230_457_451,
     {"zero-memory-limit": 1000}),
    ("no-request-limit", pod([c("no-request-limit")]), 4_000_000_000, {"no-request-limit": 1000}),
    ("equal-request-limit-cpu-memory",
     pod([c("e", {"memory": "10G", "cpu": "5m"}, {"cpu": "5m", "memory": "10G"})]), 123_456_789,
     {"e": -997}),
    # 1000 - 1000 * 4e9 / 8e9 = 500 (upstream range 495..505)
    ("cpu-unlimited-memory-limited-with-requests",
     pod([c("x", {"memory": str(STANDARD // 2), "cpu": "5m"}, {"memory": "10G"})]), STANDARD,
     {"x": 500}),
    # 1000 - 1000 * (8e9 - 1) // 8e9 = 1000 - 999 = 1 -> clamped to 3
    ("request-no-limit", pod([c("r", {"memory": str(STANDARD - 1), "cpu": "5m"})]), STANDARD,
     {"r": 3}),
    ("cluster-critical",
     pod([c("cluster-critical")], priorityClassName="system-cluster-critical",
         priority=2_000_000_000), 4_000_000_000, {"cluster-critical": 1000}),
    ("node-critical",
     pod([c("node-critical")], priorityClassName="system-node-critical", priority=2_000_001_000),
     4_000_000_000, {"node-critical": -997}),
    # 1000 - 1000 * 1e9 / 8e9 = 875
    ("burstable-unique-container-pod", pod([c("b", mem(REQ), mem(LIM))]), STANDARD, {"b": 875}),
    ("burstable-mixed-unique-main-container-pod", pod([main_1], [init_c]), STANDARD,
     {"init-container": 875, "main-1": 875}),
    # sidecar 4e8 -> 950, but never above the smallest app container (875)
    ("burstable-mixed-multi-container-small-sidecar-pod", pod([main_1], [init_c, small_sidecar]),
     STANDARD, {"init-container": 875, "sidecar-small-container": 875, "main-1": 875}),
    ("burstable-mixed-multi-container-sample-request-pod", pod([main_1], [init_c, sidecar]),
     STANDARD, {"init-container": 875, "sidecar-container": 875, "main-1": 875}),
    # a sidecar bigger than the app keeps its own (lower) score: 1000 - 1000 * 4e9 / 8e9 = 500
    ("burstable-mixed-multi-container-big-sidecar-container-pod",
     pod([main_1], [init_c, big_sidecar]), STANDARD,
     {"init-container": 875, "sidecar-big-container": 500, "main-1": 875}),
    # pod-level resources
    ("guaranteed-pod-resources-no-container-resources",
     pod([c("n1"), c("n2")], resources=pod_level(POD_REQ, POD_REQ)), 4_000_000_000,
     {"n1": -997, "n2": -997}),
    ("guaranteed-pod-resources-equal-container-resources",
     pod([g("g1", REQ), g("g2", REQ)], resources=pod_level(POD_REQ, POD_REQ)), 4_000_000_000,
     {"g1": -997, "g2": -997}),
    ("guaranteed-pod-resources-unequal-container-requests",
     pod([c("b", {"cpu": "3m", "memory": str(REQ)}, {"cpu": "5m", "memory": str(LIM)}), c("be")],
         resources=pod_level(POD_REQ, POD_REQ)), 4_000_000_000, {"b": -997, "be": -997}),
    # share = (2e9 - 0) / 2 = 1e9 each: 1000 - 1000 * 1e9 / 4e9 = 750
    ("burstable-pod-resources-no-container-resources",
     pod([c("n1"), c("n2")], resources=pod_level(POD_REQ, POD_LIM)), 4_000_000_000,
     {"n1": 750, "n2": 750}),
    ("burstable-pod-resources-equal-container-requests",
     pod([g("g1", REQ), g("g2", REQ)], resources=pod_level(POD_REQ, POD_LIM)), 4_000_000_000,
     {"g1": 750, "g2": 750}),
    # share = (2e9 - 1e9) / 2 = 5e8: b -> 1.5e9 -> 625, be -> 5e8 -> 875
    ("burstable-pod-resources-unequal-container-requests",
     pod([c("b", {"cpu": "3m", "memory": str(REQ)}, {"cpu": "5m", "memory": str(REQ)}), c("be")],
         resources=pod_level(POD_REQ, POD_LIM)), 4_000_000_000, {"b": 625, "be": 875}),
    ("burstable-pod-resources-no-container-resources-with-sidecar",
     pod([c("n")], [c("ns", sidecar=True)], resources=pod_level(POD_REQ, POD_LIM)), 4_000_000_000,
     {"n": 750, "ns": 750}),
    ("burstable-pod-resources-equal-container-requests-with-sidecar",
     pod([c("b", {"cpu": "5m", "memory": str(REQ)}, {"cpu": "5m", "memory": str(LIM)})],
         [c("s", {"cpu": "5m", "memory": str(REQ)}, {"cpu": "5m", "memory": str(LIM)},
            sidecar=True)],
         resources=pod_level(POD_REQ, POD_LIM)), 4_000_000_000, {"b": 750, "s": 750}),
    # aggregate 1e9 + 5e8 + 2e8 = 1.7e9; share = 3e8 / 3 = 1e8.
    # b1: 1.1e9 -> 725; b2: 6e8 -> 850; s: 3e8 -> 925, capped by smallest app (6e8) -> 850
    ("burstable-pod-resources-unequal-container-requests-with-sidecar",
     pod([c("b1", {"cpu": "5m", "memory": "1000000000"}, {"cpu": "5m", "memory": str(POD_LIM)}),
          c("b2", {"cpu": "5m", "memory": "500000000"}, {"cpu": "5m", "memory": str(POD_LIM)})],
         [c("s", {"cpu": "5m", "memory": "200000000"}, {"cpu": "5m", "memory": str(POD_LIM)},
            sidecar=True)],
         resources=pod_level(2_000_000_000, POD_LIM)), 4_000_000_000,
     {"b1": 725, "b2": 850, "s": 850}),
    # "burstable-pod-with-dra-disabled": 1000 - 1000 * 500Mi // 4e9 = 1000 - 131 = 869
    ("burstable-pod-with-dra-disabled", pod([c("c1", mem("500Mi"))]), 4_000_000_000, {"c1": 869}),
]


@pytest.mark.parametrize(("p", "capacity", "expected"), [x[1:] for x in UPSTREAM_OOM_CASES],
                         ids=[x[0] for x in UPSTREAM_OOM_CASES])
def test_upstream_oom_score_adj(p, capacity, expected):
    assert expected_scores(p, capacity) == expected
    for name, score in expected.items():
        assert oom_score_adj(p, name, capacity) == score


# What a PodInfo cannot know: node-critical pods and pod-level request shares.
PODINFO_BLIND = {"node-critical"} | {x[0] for x in UPSTREAM_OOM_CASES if "pod-resources" in x[0]}


@pytest.mark.parametrize(("p", "capacity", "expected"),
                         [x[1:] for x in UPSTREAM_OOM_CASES if x[0] not in PODINFO_BLIND],
                         ids=[x[0] for x in UPSTREAM_OOM_CASES if x[0] not in PODINFO_BLIND])
def test_expected_score_from_pod_info_matches(p, capacity, expected):
    info = pod_info(p)
    assert {c.name: expected_score(info, c, capacity) for c in info.containers} == expected


@pytest.mark.parametrize("case", UPSTREAM_OOM_CASES, ids=lambda case: case[0])
def test_expected_score_from_pod_info_is_exact_on_every_upstream_case(case):
    """The stored tuples carry what kubelet scores (node-critical, pod-level share, allocated
    request, sidecar cap): the score from a PodInfo equals the score from the Pod object."""
    p = case[1]
    info = pod_info(p)
    for capacity in (4_000_000_000, 123_456_789_012):
        assert {c.name: expected_score(info, c, capacity) for c in info.containers} == expected_scores(p, capacity)


def test_seed_004_request_80Mi_gives_980():
    """Seed 004 (GKE): ``Killed process ... (main) ... oom_score_adj:980`` in a Burstable pod whose
    api-server container requests memory 80Mi (limit 1024Mi) beside a cloud-sql-proxy requesting
    only cpu.

    request = 80Mi = 80 * 1048576 = 83,886,080 bytes.
    score = 1000 - (1000 * 83,886,080) // capacity = 980
      <=> (83,886,080,000 // capacity) == 20
      <=> 83,886,080,000 / 21 < capacity <= 83,886,080,000 / 20
      <=> 3,994,575,238 (rounded down) < capacity <= 4,194,304,000 (= 4000Mi exactly)
    i.e. a node with about 3.72-3.91 GiB of memory: the request is ~2% of the node.
    """
    seed = pod(
        [
            c("api-server", {"cpu": "150m", "memory": "80Mi"}, {"cpu": "1", "memory": "1024Mi"}),
            c("cloud-sql-proxy", {"cpu": "100m"}),
        ]
    )
    assert qos_class(seed) == "Burstable"
    request = 80 * Mi
    assert request == 83_886_080
    capacity = 4_025_836 * 1024  # a ~3.84 GiB node ("4025836Ki")
    assert 1000 - (1000 * request) // capacity == 980
    assert oom_score_adj(seed, "api-server", capacity) == 980
    # the boundaries of the capacity interval
    assert oom_score_adj(seed, "api-server", 4_194_304_000) == 980
    assert oom_score_adj(seed, "api-server", 4_194_304_001) == 981
    assert oom_score_adj(seed, "api-server", 3_994_575_239) == 980
    assert oom_score_adj(seed, "api-server", 3_994_575_238) == 979
    # the proxy requests no memory: 1000 -> 999 (Burstable never gets BestEffort's 1000)
    assert oom_score_adj(seed, "cloud-sql-proxy", capacity) == 999
    # the same from the stored PodInfo
    info = pod_info(seed)
    assert [expected_score(info, c, capacity) for c in info.containers] == [980, 999]


def test_allocated_request_is_what_kubelet_scores():
    # kubelet scores the *allocated* pod: status.containerStatuses[].allocatedResources.
    p = pod([c("app", mem("1Gi"), mem("4Gi"))],
            status={"containerStatuses": [{"name": "app", "allocatedResources": mem("2Gi")}]})
    assert oom_score_adj(p, "app", 8 * 1024**3) == 750


def test_status_qos_class_wins():
    p = pod([c("a", {"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})],
            status={"qosClass": "Burstable"})
    assert compute_qos_class(p) == "Guaranteed"
    assert qos_class(p) == "Burstable"  # GetPodQOS: the recorded class wins
    assert oom_score_adj(p, "a", 4 * 1024**3) == 750
    del p["status"]["qosClass"]
    assert oom_score_adj(p, "a", 4 * 1024**3) == -997


def test_critical_pods():
    static = pod([c("a")])
    static["metadata"]["annotations"] = {"kubernetes.io/config.source": "file"}
    assert is_critical(static) and not is_node_critical(static)
    static["spec"]["priorityClassName"] = "system-node-critical"
    assert is_node_critical(static)
    assert oom_score_adj(static, "a", 10**9) == -997
    via_api = pod([c("a")], priorityClassName="system-node-critical")
    via_api["metadata"]["annotations"] = {"kubernetes.io/config.source": "api"}
    assert not is_node_critical(via_api)  # node-critical class but priority unset
    mirror = pod([c("a")], priorityClassName="system-node-critical")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert is_node_critical(mirror)


# -- QoS classes (qos_test.go) -----------------------------------------------------------------

GUARANTEED_RES = ({"cpu": "100m", "memory": "100Mi", "ephemeral-storage": "10Gi"},
                  {"cpu": "100m", "memory": "100Mi"})
BEST_EFFORT_RES = [
    (None, None),
    ({"cpu": "0", "memory": "0"}, None),
    ({"cpu": "0", "memory": "0"}, {"cpu": "0", "memory": "0"}),
    ({"ephemeral-storage": "10Gi"}, None),
    ({"ephemeral-storage": "10Gi"}, {"ephemeral-storage": "10Gi"}),
]
BURSTABLE_RES = [
    ({"cpu": "100m", "memory": "100Mi"}, {"cpu": "200m", "memory": "200Mi"}),
    ({"cpu": "100m", "memory": "100Mi"}, {"cpu": "100m", "memory": "200Mi"}),
    ({"cpu": "100m", "memory": "100Mi"}, {"cpu": "200m", "memory": "100Mi"}),
    ({"cpu": "100m", "memory": "100Mi"}, None),
    ({"cpu": "100m", "memory": "100Mi"}, {"cpu": "100m"}),
]


@pytest.mark.parametrize(
    ("res", "expected"),
    [(GUARANTEED_RES, "Guaranteed")]
    + [(r, "BestEffort") for r in BEST_EFFORT_RES]
    + [(r, "Burstable") for r in BURSTABLE_RES],
)
def test_single_container_qos(res, expected):
    assert qos_class(pod([c("a", *res)])) == expected


@pytest.mark.parametrize("as_init", [False, True])
def test_two_container_qos(as_init):
    def two(r1, r2):
        if as_init:  # upstream: "doesn't matter if second container is an init container or not"
            return pod([c("a", *r1)], [c("b", *r2)])
        return pod([c("a", *r1), c("b", *r2)])

    assert qos_class(two(GUARANTEED_RES, GUARANTEED_RES)) == "Guaranteed"
    assert qos_class(two(BEST_EFFORT_RES[0], BEST_EFFORT_RES[1])) == "BestEffort"
    assert qos_class(two(BURSTABLE_RES[0], BURSTABLE_RES[1])) == "Burstable"
    firsts = [GUARANTEED_RES, BEST_EFFORT_RES[0], BURSTABLE_RES[0]]
    seconds = [GUARANTEED_RES, BEST_EFFORT_RES[1], BURSTABLE_RES[1]]
    for i, r1 in enumerate(firsts):
        for j, r2 in enumerate(seconds):
            if i != j:  # mixed classes are always Burstable
                assert qos_class(two(r1, r2)) == "Burstable"


def test_limits_only_default_requests():
    # The API server defaults requests to limits, so a limits-only container is Guaranteed.
    assert qos_class(pod([c("a", None, {"cpu": "1", "memory": "1Gi"})])) == "Guaranteed"


def test_exact_comparison_not_bytes():
    # 1.5 and 2 bytes both round up to 2, but they are different quantities.
    assert qos_class(pod([c("a", {"cpu": "1", "memory": "1.5"},
                             {"cpu": "1", "memory": "2"})])) == "Burstable"
    assert qos_class(pod([c("a", {"cpu": "1000m", "memory": "1Gi"},
                             {"cpu": "1", "memory": "1024Mi"})])) == "Guaranteed"


def test_pod_level_resources_decide_qos():
    burstable_containers = [c("a", {"cpu": "1", "memory": "1Gi"})]
    assert qos_class(pod(burstable_containers,
                         resources={"requests": {"cpu": "1", "memory": "1Gi"},
                                    "limits": {"cpu": "1", "memory": "1Gi"}})) == "Guaranteed"
    # empty pod-level resources fall back to the containers
    assert qos_class(pod([c("a", *GUARANTEED_RES)], resources={})) == "Guaranteed"
    assert qos_class(pod([c("a", *GUARANTEED_RES)],
                         resources={"requests": {}, "limits": {}})) == "Guaranteed"
    # zero pod-level resources are "set" and make the pod BestEffort
    assert qos_class(pod([c("a", *GUARANTEED_RES)],
                         resources={"requests": {"cpu": "0", "memory": "0"},
                                    "limits": {"cpu": "0", "memory": "0"}})) == "BestEffort"


# -- errors ------------------------------------------------------------------------------------


def test_unknown_container():
    with pytest.raises(ValueError, match=r"Pod ns/p has no container 'nope'"):
        oom_score_adj(pod([c("a")]), "nope", 10**9)


@pytest.mark.parametrize("capacity", [0, -1])
def test_bad_capacity(capacity):
    with pytest.raises(ValueError):
        oom_score_adj(pod([c("a")]), "a", capacity)


def test_malformed_quantities_name_the_field():
    with pytest.raises(MalformedObjectError, match=r"Pod ns/p: spec.containers\[0\].resources"
                                                   r".requests.cpu: "):
        qos_class(pod([c("a", {"cpu": "lots"})]))
    with pytest.raises(MalformedObjectError, match=r"status.qosClass"):
        qos_class(pod([c("a")], status={"qosClass": "Platinum"}))
    with pytest.raises(MalformedObjectError, match=r"spec.priority"):
        is_critical(pod([c("a")], priority="high"))
