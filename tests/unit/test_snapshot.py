"""core.snapshot: Pod/Node dicts -> PodInfo/NodeInfo."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_hygiene.core.snapshot import (
    MalformedObjectError,
    TimeFormatError,
    node_info,
    parse_time,
    pod_info,
)
from memory_hygiene.core.types import ContainerInfo, NodeInfo, PodInfo

Mi, Gi = 1024**2, 1024**3
T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc).timestamp()

# A Pod as `kubectl get pod -o json` prints it (trimmed): a Burstable pod with a sidecar whose
# app container was OOM-killed once and is running again.
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "api-7d9f",
        "namespace": "shop",
        "uid": "0b6a1c1e-1111-2222-3333-444455556666",
        "labels": {"app": "api", "tier": "backend"},
    },
    "spec": {
        "nodeName": "node-a",
        "initContainers": [
            {"name": "proxy", "restartPolicy": "Always",
             "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
        ],
        "containers": [
            {"name": "api",
             "resources": {"requests": {"cpu": "150m", "memory": "80Mi"},
                           "limits": {"cpu": "1", "memory": "1Gi"}}},
        ],
    },
    "status": {
        "phase": "Running",
        "qosClass": "Burstable",
        "initContainerStatuses": [
            {"name": "proxy", "containerID": "containerd://aaa111", "restartCount": 0,
             "state": {"running": {"startedAt": "2024-05-01T09:00:00Z"}}},
        ],
        "containerStatuses": [
            {"name": "api", "containerID": "containerd://bbb222", "restartCount": 1,
             "state": {"running": {"startedAt": "2024-05-01T10:00:05Z"}},
             "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                          "startedAt": "2024-05-01T09:00:00Z",
                                          "finishedAt": "2024-05-01T10:00:00Z"}}},
        ],
    },
}


def test_pod_info_full():
    info = pod_info(POD)
    assert info == PodInfo(
        uid="0b6a1c1e-1111-2222-3333-444455556666",
        namespace="shop",
        name="api-7d9f",
        node="node-a",
        phase="Running",
        labels=(("app", "api"), ("tier", "backend")),
        qos="Burstable",
        request=144 * Mi,  # 80Mi + the 64Mi sidecar
        limit=None,  # the sidecar has no limit
        containers=(
            # the sidecar is scored as if it requested the smallest app request (80Mi), no less
            ContainerInfo("proxy", "sidecar", 64 * Mi, None, "aaa111", True, (), 0, score_request=80 * Mi),
            ContainerInfo("api", "app", 80 * Mi, Gi, "bbb222", True, (T0,), 1, score_request=80 * Mi),
        ),
        reason="",
        message="",
    )
    assert not info.terminal and not info.memory_evicted


def test_pod_info_minimal_pending_pod():
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
           "spec": {"containers": [{"name": "c"}]}}
    info = pod_info(pod)
    assert info.node is None and info.phase == "Unknown" and info.labels == ()
    assert info.qos == "BestEffort" and (info.request, info.limit) == (0, None)
    assert info.containers == (ContainerInfo("c", "app", None, None, None, False, (), 0, score_request=0),)


def test_oom_in_current_state_and_last_state():
    pod = copy.deepcopy(POD)
    api = pod["status"]["containerStatuses"][0]
    api["state"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                   "finishedAt": "2024-05-01T10:05:00Z"}}
    info = pod_info(pod)
    assert info.containers[1].oom_finished == (T0, T0 + 300)
    assert info.containers[1].running is False


def test_non_oom_terminations_are_ignored():
    pod = copy.deepcopy(POD)
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] = "Error"
    assert pod_info(pod).containers[1].oom_finished == ()


def test_oomkilled_with_exit_code_0_is_not_the_kill():
    # A real kubelet (tests/e2e/realnode/test_seeds.py, and shared/realnode/FINDINGS.md (a2)):
    # a child was OOM-killed, then PID 1 exited 0; the container ends `OOMKilled`, exit code 0.
    pod = copy.deepcopy(POD)
    api = pod["status"]["containerStatuses"][0]
    api["lastState"]["terminated"]["exitCode"] = 0
    assert pod_info(pod).containers[1].oom_finished == ()
    api["lastState"]["terminated"]["exitCode"] = 137
    assert pod_info(pod).containers[1].oom_finished == (T0,)


def test_evicted_pod():
    pod = copy.deepcopy(POD)
    pod["status"] = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available "
                   "amount: 92Mi. Container api was using 1.1Gi, request is 80Mi.",
        "qosClass": "Burstable",
    }
    info = pod_info(pod)
    assert info.terminal and info.memory_evicted
    assert info.containers[1].container_id is None and info.containers[1].restart_count == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("containerd://abc", "abc"), ("cri-o://def", "def"), ("docker://0123", "0123"),
     ("plain", "plain"), ("", None)],
)
def test_container_id_scheme_is_stripped(raw, expected):
    pod = copy.deepcopy(POD)
    pod["status"]["containerStatuses"][0]["containerID"] = raw
    assert pod_info(pod).containers[1].container_id == expected


NODE = {
    "kind": "Node",
    "metadata": {"name": "node-a", "uid": "n-uid", "labels": {"kubernetes.io/os": "linux"}},
    "status": {
        "capacity": {"cpu": "2", "memory": "4025836Ki", "pods": "110"},
        "allocatable": {"cpu": "1930m", "memory": "2884652Ki", "pods": "110"},
        "conditions": [
            {"type": "Ready", "status": "True", "message": "kubelet is posting ready status"},
            {"type": "MemoryPressure", "status": "True",
             "message": "kubelet has insufficient memory available"},
        ],
    },
}


def test_node_info():
    assert node_info(NODE) == NodeInfo(
        name="node-a",
        uid="n-uid",
        labels=(("kubernetes.io/os", "linux"),),
        capacity=4025836 * 1024,
        allocatable=2884652 * 1024,
        memory_pressure=True,
        pressure_message="kubelet has insufficient memory available",
    )


def test_node_without_pressure_or_status():
    node = copy.deepcopy(NODE)
    node["status"]["conditions"][1] = {"type": "MemoryPressure", "status": "False",
                                       "message": "kubelet has sufficient memory available"}
    info = node_info(node)
    assert info.memory_pressure is False
    assert info.pressure_message == "kubelet has sufficient memory available"
    bare = node_info({"kind": "Node", "metadata": {"name": "n"}})
    assert (bare.capacity, bare.allocatable, bare.memory_pressure, bare.pressure_message) == (
        None, None, False, "")


# -- parse_time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", T0),
        ("2024-05-01T10:00:00z", T0),
        ("2024-05-01T12:00:00+02:00", T0),
        ("2024-05-01T05:30:00-04:30", T0),
        ("2024-05-01T10:00:00.5Z", T0 + 0.5),
        ("2024-05-01T10:00:00.123456Z", T0 + 0.123456),  # metav1.MicroTime (Event eventTime)
        ("2024-05-01T10:00:00.123456789Z", T0 + 0.123456789),  # RFC3339Nano
        ("1970-01-01T00:00:00Z", 0.0),
        (None, None),
        ("", None),
    ],
)
def test_parse_time(text, expected):
    got = parse_time(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    ["2024-05-01 10:00:00Z", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z",
     "2024-02-30T10:00:00Z", "2024-05-01T10:00:60Z", "2024-05-01T10:00:00+2:00",
     "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00.1234567890Z", "yesterday", 1714557600,
     "2024-05-01T10:00:00+24:00"],
)
def test_parse_time_rejects(text):
    with pytest.raises(TimeFormatError):
        parse_time(text)


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                    timezones=st.just(timezone.utc)))
def test_parse_time_round_trip(moment):
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_time(text) == pytest.approx(moment.timestamp(), abs=1e-6)


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                    timezones=st.just(timezone.utc)))
def test_parse_time_fast_path_for_metav1_time_agrees_with_the_general_one(moment):
    text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # what the API server writes: the fast path
    assert parse_time(text) == int(moment.timestamp()) == parse_time(text.replace("Z", "+00:00"))


# -- malformed input ---------------------------------------------------------------------------


def _broken(path, value):
    pod = copy.deepcopy(POD)
    target = pod
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return pod


@pytest.mark.parametrize(
    ("pod", "field"),
    [
        (_broken(("spec", "containers", 0, "resources", "limits", "memory"), "1 Gi"),
         "spec.containers[0].resources.limits.memory"),
        (_broken(("spec", "initContainers", 0, "resources", "requests", "memory"), "-5Mi"),
         "spec.initContainers[0].resources.requests.memory"),
        (_broken(("status", "containerStatuses", 0, "lastState", "terminated", "finishedAt"),
                 "10:00 yesterday"),
         "status.containerStatuses[0].lastState.terminated.finishedAt"),
        (_broken(("status", "containerStatuses", 0, "restartCount"), "one"),
         "status.containerStatuses[0].restartCount"),
        (_broken(("status", "containerStatuses", 0, "containerID"), 42),
         "status.containerStatuses[0].containerID"),
        (_broken(("status", "containerStatuses", 0, "state"), "running"),
         "status.containerStatuses[0].state"),
        (_broken(("status", "containerStatuses"), {"api": {}}), "status.containerStatuses"),
        (_broken(("metadata", "labels"), ["app=api"]), "metadata.labels"),
        (_broken(("status", "phase"), 3), "status.phase"),
        (_broken(("status", "qosClass"), "Gold"), "status.qosClass"),
        ({**POD, "spec": "oops"}, "spec"),
    ],
)
def test_malformed_pod_names_object_and_field(pod, field):
    with pytest.raises(MalformedObjectError) as info:
        pod_info(pod)
    assert info.value.field == field
    assert str(info.value).startswith(f"Pod shop/api-7d9f: {field}: ")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("status", "capacity", "memory"), "4 GB", "status.capacity.memory"),
        (("status", "allocatable", "memory"), "-1Ki", "status.allocatable.memory"),
        (("status", "conditions"), {"type": "MemoryPressure"}, "status.conditions"),
        (("status", "conditions", 1, "message"), ["x"], "status.conditions[1].message"),
    ],
)
def test_malformed_node_names_object_and_field(path, value, field):
    node = copy.deepcopy(NODE)
    target = node
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MalformedObjectError) as info:
        node_info(node)
    assert info.value.field == field
    assert str(info.value).startswith(f"Node node-a: {field}: ")


@pytest.mark.parametrize("obj", [None, [], "pod"])
def test_not_an_object(obj):
    with pytest.raises(MalformedObjectError):
        pod_info(obj)
    with pytest.raises(MalformedObjectError):
        node_info(obj)


def test_shape_cache_gives_the_same_answers_as_the_full_math():
    """Pods of one shape share their memory math; anything that the math reads changes the shape."""
    import copy

    from memory_hygiene.core import snapshot
    from tests.unit.test_qos import UPSTREAM_OOM_CASES

    pods = [case[1] for case in UPSTREAM_OOM_CASES] + [POD]
    snapshot._SHAPES.clear()
    cold = [pod_info(p) for p in pods]
    warm = [pod_info(p) for p in pods]
    assert cold == warm
    twin = copy.deepcopy(POD)
    twin["metadata"]["name"] = "api-other"
    assert pod_info(twin)._replace(name="api-7d9f") == pod_info(POD)
    resized = copy.deepcopy(POD)
    resized["status"]["containerStatuses"][0]["allocatedResources"] = {"memory": "2Gi"}
    assert pod_info(resized).request != pod_info(POD).request
