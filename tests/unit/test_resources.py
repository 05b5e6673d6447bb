"""core.resources: effective memory requests and limits.

Most cases are our own memory versions of the cases in kubernetes/kubernetes
``staging/src/k8s.io/component-helpers/resource/helpers_test.go`` (v1.37.2:
TestPodRequestsAndLimits, TestPodResourceRequests, TestPodResourceLimits,
TestPodLevelResourceRequests, TestPodRequestsAndLimitsVerticalScalingWrappers). Upstream uses cpu
in many of them; the formula is the same for every resource, so we use memory with the same
numbers (in Mi). Upstream runs them
with various options; we always use the scheduler's 1.37 options (status resources on), which
gives the same answer whenever a case has no status. Where our *limit* differs from upstream
``PodLimits`` it is kubelet's finiteness rule (a container without a limit makes the pod
unbounded), marked "kubelet:".
"""

from __future__ import annotations

import pytest

from memory_hygiene.core.quantity import MalformedObjectError
from memory_hygiene.core.resources import ContainerMemory, container_memory, pod_memory

Ki, Mi, Gi = 1024, 1024**2, 1024**3


def ctr(name, req=None, lim=None, *, sidecar=False, cpu=None):
    """A container spec with memory request/limit (strings) and optional cpu request."""
    res: dict = {}
    if req is not None or cpu is not None:
        res["requests"] = {}
        if req is not None:
            res["requests"]["memory"] = req
        if cpu is not None:
            res["requests"]["cpu"] = cpu
    if lim is not None:
        res["limits"] = {"memory": lim}
    c = {"name": name, "image": "busybox", "resources": res}
    if sidecar:
        c["restartPolicy"] = "Always"
    return c


def cstatus(name, *, allocated=None, actual_req=None, actual_lim=None):
    """A container status with allocatedResources / resources (memory strings)."""
    s: dict = {"name": name}
    if allocated is not None:
        s["allocatedResources"] = {"memory": allocated}
    if actual_req is not None or actual_lim is not None:
        s["resources"] = {}
        if actual_req is not None:
            s["resources"]["requests"] = {"memory": actual_req}
        if actual_lim is not None:
            s["resources"]["limits"] = {"memory": actual_lim}
    return s


INFEASIBLE = [{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}]


def mkpod(containers=(), init=(), *, overhead=None, resources=None, statuses=(), init_statuses=(),
          conditions=None, status_extra=None):
    spec: dict = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    if overhead:
        spec["overhead"] = {"memory": overhead}
    if resources is not None:
        spec["resources"] = resources
    status: dict = {}
    if statuses:
        status["containerStatuses"] = list(statuses)
    if init_statuses:
        status["initContainerStatuses"] = list(init_statuses)
    if conditions:
        status["conditions"] = conditions
    status.update(status_extra or {})
    return {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": spec,
        "status": status,
    }


# -- TestPodRequestsAndLimits (overhead) -------------------------------------------------------


def test_just_overhead():
    assert pod_memory(mkpod([ctr("c")], overhead="5")) == (5, None)


def test_request_and_overhead():
    assert pod_memory(mkpod([ctr("c", "10")], overhead="5")) == (15, None)


def test_request_limit_and_overhead():
    assert pod_memory(mkpod([ctr("c", "10", "12")], overhead="5")) == (15, 17)


def test_overhead_is_not_added_to_a_missing_limit():
    # "pod overhead included": overhead only goes to non-zero limits.
    assert pod_memory(mkpod([ctr("a", "2Mi"), ctr("b", "3Mi")], [ctr("i", "2Mi")],
                            overhead="1Gi")) == (5 * Mi + Gi, None)
    assert pod_memory(mkpod([ctr("a", "2Mi", "2Mi"), ctr("b", "3Mi", "3Mi")],
                            [ctr("i", "2Mi", "2Mi")], overhead="1Gi")) == (5 * Mi + Gi, 5 * Mi + Gi)


# -- init / sidecar shapes (TestPodResourceRequests and TestPodResourceLimits) ------------------

SHAPES = [
    # (description, init containers [(name, Mi, sidecar?)], app containers [(name, Mi)],
    #  expected Mi)
    ("larger init container", [("i", 4, False)], [("c", 1)], 4),
    ("larger containers", [("i", 2, False)], [("c1", 2), ("c2", 3)], 5),
    ("restartable init container", [("s", 1, True)], [("c", 1)], 2),
    # max(5, sidecars 1+2+3 + app 1) = 7
    ("multiple restartable init containers",
     [("i1", 5, False), ("s1", 1, True), ("s2", 2, True), ("s3", 3, True)], [("c", 1)], 7),
    # init-2 needs 5 + the sidecars started before it (1+2) = 8; s3 starts after it.
    ("multiple restartable and regular init containers",
     [("i1", 5, False), ("s1", 1, True), ("s2", 2, True), ("i2", 5, False), ("s3", 3, True)],
     [("c", 1)], 8),
    ("restartable-init, init and regular", [("s", 10, True), ("i", 200, False)], [("c", 100)], 210),
]


@pytest.mark.parametrize(("init", "apps", "expected"), [s[1:] for s in SHAPES],
                         ids=[s[0] for s in SHAPES])
def test_init_and_sidecar_aggregation(init, apps, expected):
    as_req = mkpod([ctr(n, f"{v}Mi") for n, v in apps],
                   [ctr(n, f"{v}Mi", sidecar=s) for n, v, s in init])
    assert pod_memory(as_req) == (expected * Mi, None)
    as_both = mkpod([ctr(n, f"{v}Mi", f"{v}Mi") for n, v in apps],
                    [ctr(n, f"{v}Mi", f"{v}Mi", sidecar=s) for n, v, s in init])
    assert pod_memory(as_both) == (expected * Mi, expected * Mi)


def test_no_limited_containers_means_no_limit():
    assert pod_memory(mkpod([ctr("c")])) == (0, None)


def test_one_unlimited_container_makes_the_pod_unbounded():
    # upstream PodLimits: 2Gi (the limited container's). kubelet: the pod cgroup gets no limit.
    assert pod_memory(mkpod([ctr("a", "2Gi", "2Gi"), ctr("b")])) == (2 * Gi, None)


def test_one_unlimited_init_container_makes_the_pod_unbounded():
    # upstream PodLimits: 2Gi. kubelet (helpers_linux.go) looks at init containers too.
    pod = mkpod([ctr("c", "1Gi", "1Gi")], [ctr("i1", "2Gi", "2Gi"), ctr("i2")])
    assert pod_memory(pod) == (2 * Gi, None)


def test_zero_limit_is_no_limit():
    pod = mkpod([ctr("c", "0", "0")])
    assert pod_memory(pod) == (0, None)
    assert container_memory(pod) == [ContainerMemory("c", "app", 0, None)]


def test_request_defaults_from_limit_like_the_api_server():
    pod = mkpod([ctr("c", None, "1Gi")])
    assert pod_memory(pod) == (Gi, Gi)
    assert container_memory(pod) == [ContainerMemory("c", "app", Gi, Gi)]


# -- the seed case (seeds/000 case 2) ----------------------------------------------------------


def test_seed_000_case_2_four_pods_request_128M_limit_3G():
    pods = [mkpod([ctr("mem", "128M", "3G")]) for _ in range(4)]
    totals = [pod_memory(p) for p in pods]
    assert totals == [(128_000_000, 3_000_000_000)] * 4
    requests = sum(r for r, _ in totals)
    limits = sum(lim for _, lim in totals)
    allocatable = int(3.8 * Gi)  # the seed's node: 3.8Gi allocatable
    assert requests == 512_000_000 and requests < allocatable  # the scheduler sees room
    assert limits == 12_000_000_000 and limits > 2.9 * allocatable  # limits: ~294%


def test_seed_000_as_one_pod_with_four_containers():
    pod = mkpod([ctr(f"c{i}", "128M", "3G") for i in range(4)])
    assert pod_memory(pod) == (512_000_000, 12_000_000_000)
    assert [c.limit for c in container_memory(pod)] == [3_000_000_000] * 4


# -- in-place resize (TestPodResourceRequests / TestPodResourceLimits "resized", "scaled") -------


def test_resized_infeasible_uses_actual():
    pod = mkpod([ctr("c", "4Mi")], statuses=[cstatus("c", actual_req="2Mi")], conditions=INFEASIBLE)
    assert pod_memory(pod) == (2 * Mi, None)
    assert container_memory(pod)[0].request == 2 * Mi


def test_resized_infeasible_and_in_progress_uses_allocated():
    pod = mkpod([ctr("c", "6Mi")], statuses=[cstatus("c", allocated="4Mi", actual_req="2Mi")],
                conditions=INFEASIBLE)
    assert pod_memory(pod)[0] == 4 * Mi


def test_resized_without_resize_status_keeps_spec():
    pod = mkpod([ctr("c", "4Mi")], statuses=[cstatus("c", actual_req="2Mi")])
    assert pod_memory(pod)[0] == 4 * Mi


def test_resized_three_way_maximum():
    pod = mkpod([ctr("c", "20M")], statuses=[cstatus("c", allocated="10M", actual_req="30M")])
    assert pod_memory(pod)[0] == 30_000_000
    pod = mkpod([ctr("c", "20M")], statuses=[cstatus("c", allocated="40M", actual_req="30M")])
    assert pod_memory(pod)[0] == 40_000_000


def test_resized_sidecar_infeasible_and_not():
    init = [ctr("s", "4Mi", sidecar=True)]
    st = [cstatus("s", actual_req="2Mi")]
    assert pod_memory(mkpod([], init, init_statuses=st, conditions=INFEASIBLE))[0] == 2 * Mi
    assert pod_memory(mkpod([], init, init_statuses=st))[0] == 4 * Mi


def test_aggregate_request_is_max_of_sums_not_sum_of_maxes():
    pod = mkpod([ctr("c1", "1Mi"), ctr("c2", "2Mi")],
                statuses=[cstatus("c1", allocated="2Mi"), cstatus("c2", allocated="1Mi")])
    assert pod_memory(pod)[0] == 3 * Mi
    # ...while each container on its own is at its maximum.
    assert [c.request for c in container_memory(pod)] == [2 * Mi, 2 * Mi]


@pytest.mark.parametrize(("spec", "actual", "expected"),
                         [("2Gi", "1Gi", 2 * Gi), ("1Gi", "2Gi", 2 * Gi)],
                         ids=["scaled up", "scaled down"])
def test_limits_scaled(spec, actual, expected):
    pod = mkpod([ctr("c", "1Mi", spec)], statuses=[cstatus("c", actual_lim=actual)])
    assert pod_memory(pod)[1] == expected
    pod = mkpod([], [ctr("s", "1Mi", spec, sidecar=True)],
                init_statuses=[cstatus("s", actual_lim=actual)])
    assert pod_memory(pod)[1] == expected


def test_aggregate_limit_is_max_of_sums():
    pod = mkpod([ctr("c1", "1", "1Mi"), ctr("c2", "1", "2Mi")],
                statuses=[cstatus("c1", actual_lim="2Mi"), cstatus("c2", actual_lim="1Mi")])
    assert pod_memory(pod)[1] == 3 * Mi


def test_container_limits_with_infeasible_resize_use_actual():
    pod = mkpod([ctr("c", None, "10Mi")], statuses=[cstatus("c", actual_lim="6Mi")],
                conditions=INFEASIBLE)
    # requests: spec ignored, and neither allocated nor actual requests are reported.
    assert pod_memory(pod) == (0, 6 * Mi)


def test_only_the_first_resize_condition_counts():
    conditions = [{"type": "PodResizePending", "reason": "Deferred"}] + INFEASIBLE
    pod = mkpod([ctr("c", "4Mi")], statuses=[cstatus("c", actual_req="2Mi")], conditions=conditions)
    assert pod_memory(pod)[0] == 4 * Mi


# -- pod-level resources (TestPodLevelResourceRequests, VerticalScalingWrappers) ----------------


def test_pod_level_memory_request_alone():
    pod = mkpod([ctr("c")], resources={"requests": {"memory": "2Mi"}})
    assert pod_memory(pod)[0] == 2 * Mi


def test_pod_level_memory_with_container_cpu():
    pod = mkpod([ctr("c", cpu="2m")], resources={"requests": {"memory": "2Mi"}})
    assert pod_memory(pod)[0] == 2 * Mi


def test_pod_level_unsupported_resource_is_ignored():
    pod = mkpod([ctr("c", "3Mi")], resources={"requests": {"storage": "2Mi"}})
    assert pod_memory(pod)[0] == 3 * Mi


def test_pod_level_overrides_containers():
    pod = mkpod([ctr("c", "3Mi", cpu="2m")], resources={"requests": {"memory": "6Mi", "cpu": "8m"}})
    assert pod_memory(pod)[0] == 6 * Mi


def test_pod_level_cpu_only_keeps_container_memory():
    # "...hugepage request/limit multiple page sizes between pod-level and container-level"
    pod = mkpod([ctr("c", "4Mi")],
                resources={"requests": {"cpu": "1", "hugepages-2Mi": "10Mi"},
                           "limits": {"hugepages-2Mi": "10Mi"}})
    assert pod_memory(pod)[0] == 4 * Mi


def test_container_init_sidecar_without_and_with_pod_level():
    init = [ctr("s", "5Mi", sidecar=True), ctr("i", "6Mi")]
    assert pod_memory(mkpod([ctr("c", "3Mi")], init))[0] == 11 * Mi
    with_level = mkpod([ctr("c", "3Mi")], init, resources={"requests": {"memory": "15Mi"}})
    assert pod_memory(with_level)[0] == 15 * Mi


def test_pod_level_limit_bounds_unlimited_containers():
    pod = mkpod([ctr("a", "1Gi"), ctr("b")],
                resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "3Gi"}},
                overhead="100Mi")
    assert pod_memory(pod) == (2 * Gi + 100 * Mi, 3 * Gi + 100 * Mi)
    # a container without its own limit runs under the pod-level limit (getMemoryLimit)
    assert [c.limit for c in container_memory(pod)] == [3 * Gi, 3 * Gi]


def test_pod_level_requests_without_limits_leave_pod_unbounded():
    pod = mkpod([ctr("a", "1Gi")], resources={"requests": {"memory": "2Gi"}})
    assert pod_memory(pod) == (2 * Gi, None)


def test_pod_level_in_place_resize_status():
    pod = mkpod(
        [ctr("c", "1Gi", "2Gi")],
        resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        status_extra={
            "allocatedResources": {"memory": "3Gi"},
            "resources": {"requests": {"memory": "3584Mi"}, "limits": {"memory": "5Gi"}},
        },
    )
    assert pod_memory(pod) == (3584 * Mi, 5 * Gi)


def test_pod_level_in_place_resize_infeasible_ignores_spec():
    pod = mkpod(
        [ctr("c", "1Gi", "2Gi")],
        resources={"requests": {"memory": "10Gi"}, "limits": {"memory": "20Gi"}},
        conditions=INFEASIBLE,
        status_extra={
            "allocatedResources": {"memory": "3Gi"},
            "resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        },
    )
    assert pod_memory(pod) == (4 * Gi, 8 * Gi)


def test_pod_status_aggregates_replace_container_aggregates():
    # With InPlacePodLevelResourcesVerticalScaling (beta in 1.37) the pod-level status maps are
    # used as the allocated/actuated aggregates when both are present.
    pod = mkpod([ctr("c", "1Gi", "2Gi")], statuses=[cstatus("c", allocated="1Gi")],
                status_extra={"allocatedResources": {"memory": "1536Mi"},
                              "resources": {"requests": {"memory": "1Gi"},
                                            "limits": {"memory": "3Gi"}}})
    assert pod_memory(pod) == (1536 * Mi, 3 * Gi)


# -- per-container view ------------------------------------------------------------------------


def test_container_memory_kinds_and_order():
    pod = mkpod([ctr("app", "100Mi", "200Mi")],
                [ctr("setup", "50Mi", "50Mi"), ctr("proxy", "10Mi", sidecar=True)])
    assert container_memory(pod) == [
        ContainerMemory("setup", "init", 50 * Mi, 50 * Mi),
        ContainerMemory("proxy", "sidecar", 10 * Mi, None),
        ContainerMemory("app", "app", 100 * Mi, 200 * Mi),
    ]
    assert pod_memory(pod) == (110 * Mi, None)


def test_container_memory_in_place_resize():
    pod = mkpod([ctr("c", "100Mi", "200Mi")],
                statuses=[cstatus("c", allocated="150Mi", actual_req="120Mi", actual_lim="300Mi")])
    assert container_memory(pod) == [ContainerMemory("c", "app", 150 * Mi, 300 * Mi)]


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "field"),
    [
        (mkpod([ctr("c", "12 Mi")]), "spec.containers[0].resources.requests.memory"),
        (mkpod([ctr("c", "1Mi", "lots")]), "spec.containers[0].resources.limits.memory"),
        (mkpod([ctr("c", "-1Mi")]), "spec.containers[0].resources.requests.memory"),
        (mkpod([ctr("c")], overhead="1x"), "spec.overhead.memory"),
        (mkpod([ctr("c")], statuses=[cstatus("c", allocated="?")]),
         "status.containerStatuses[0].allocatedResources.memory"),
        ({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": {}}},
         "spec.containers"),
        ({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": []}, "spec"),
        ({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
          "spec": {"containers": [{"name": "c", "resources": {"limits": ["1Gi"]}}]}},
         "spec.containers[0].resources.limits"),
        ({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
          "spec": {"containers": [{"resources": {}}]}}, "spec.containers[0].name"),
    ],
)
def test_malformed_input_names_object_and_field(pod, field):
    with pytest.raises(MalformedObjectError) as info:
        pod_memory(pod)
    assert info.value.field == field
    assert str(info.value).startswith(f"Pod ns/p: {field}: ")
    assert isinstance(info.value, ValueError)
