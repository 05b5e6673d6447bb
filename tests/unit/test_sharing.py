"""core.snapshot shares what cached pods repeat (bench/cache_memory.py measures what it saves):
one string object per namespace, node, phase, container name, label key and value; one tuple
per label set (and per label pair); one float per creation second. Nothing else changes."""

from __future__ import annotations

import copy
import sys

import orjson
import pytest

from memory_hygiene.core import snapshot
from memory_hygiene.core.snapshot import SharedValues, node_info, pod_info
from memory_hygiene.core.sources import NODES, PODS
from tests.unit.test_snapshot import NODE, POD


def served(obj: dict) -> dict:
    """As the reflector reads it from a watch line: every string a fresh object."""
    return orjson.loads(orjson.dumps(obj))


def replica(n: int, **labels: str) -> dict:
    """Pod ``n`` of one workload: its own name, uid and container ids, all the rest the same."""
    pod = copy.deepcopy(POD)
    pod["metadata"].update(name=f"api-{n}", uid=f"0b6a1c1e-1111-2222-3333-{n:012d}",
                           creationTimestamp="2024-05-01T10:00:00Z")
    pod["metadata"]["labels"].update(labels)
    for cs in pod["status"]["initContainerStatuses"] + pod["status"]["containerStatuses"]:
        cs["containerID"] = f"containerd://{cs['name']}{n:060d}"
    return served(pod)


def test_replicas_share_their_repeated_strings_label_set_and_creation_time():
    a, b = pod_info(replica(1)), pod_info(replica(2))
    assert a.namespace is b.namespace
    assert a.node is b.node
    assert a.phase is b.phase
    assert a.qos is b.qos
    assert a.reason is b.reason
    assert a.labels is b.labels
    assert a.created is b.created
    for ca, cb in zip(a.containers, b.containers, strict=True):
        assert ca.name is cb.name and ca.kind is cb.kind
        assert ca.container_id != cb.container_id
    assert a.uid != b.uid and a.name != b.name


def test_a_pod_s_own_label_leaves_the_other_pairs_shared():
    """A StatefulSet's pods: one label each of their own, the others their set's."""
    a = pod_info(replica(1, **{"statefulset.kubernetes.io/pod-name": "db-0"}))
    b = pod_info(replica(2, **{"statefulset.kubernetes.io/pod-name": "db-1"}))
    assert a.labels != b.labels
    shared = [(pa, pb) for pa, pb in zip(a.labels, b.labels, strict=True) if pa == pb]
    assert len(shared) == 2  # app, tier
    assert all(pa is pb for pa, pb in shared)
    assert [pa for pa, pb in zip(a.labels, b.labels) if pa != pb] == [("statefulset.kubernetes.io/pod-name", "db-0")]


def test_the_reflector_s_bucket_is_the_node_s_own_name_object():
    """The Pods' buckets (Buckets.where values, by_bucket keys) are one string per node, the
    NodeInfo's name."""
    node = copy.deepcopy(NODE)
    node["metadata"]["name"] = POD["spec"]["nodeName"]
    node_bucket, info = NODES.convert(served(node))
    bucket_a, _ = PODS.convert(replica(1))
    bucket_b, _ = PODS.convert(replica(2))
    assert bucket_a is bucket_b is node_bucket is info.name


def test_the_strings_each_pod_has_its_own_of_are_not_interned():
    """An entry in the interpreter's table per uid, name or container id would save nothing."""
    info = pod_info(replica(3))
    for own in (info.uid, info.name, info.containers[0].container_id):
        fresh = "".join(list(own))  # an equal string, not the same object
        assert sys.intern(fresh) is not own


def _no_sharing(monkeypatch: pytest.MonkeyPatch) -> None:
    class Identity:
        def get(self, value, make=None):
            return value

    monkeypatch.setattr(snapshot, "shared_str", lambda s: s)
    monkeypatch.setattr(snapshot, "shared_labels", lambda labels: labels)
    monkeypatch.setattr(snapshot, "_TIMES", Identity())


def test_shared_values_are_equal_to_unshared_ones(monkeypatch: pytest.MonkeyPatch):
    from tests.unit.test_qos import UPSTREAM_OOM_CASES

    pods = [served(case[1]) for case in UPSTREAM_OOM_CASES] + [replica(n) for n in range(3)] \
        + [replica(9, **{"x": "y"}), served(POD)]
    nodes = [served(NODE)]
    shared = [pod_info(p) for p in pods], [node_info(n) for n in nodes]
    with monkeypatch.context() as m:
        _no_sharing(m)
        plain = [pod_info(p) for p in pods], [node_info(n) for n in nodes]
    assert shared == plain
    for s, p in zip(shared[0], plain[0], strict=True):
        assert type(s.labels) is tuple and all(type(pair) is tuple for pair in s.labels)
        assert [type(x) for x in s] == [type(x) for x in p]


def test_shared_values_are_bounded_and_keep_what_is_still_repeated():
    table = SharedValues(4)
    kept = table.get(("kept", "x"))
    for n in range(100):
        table.get(("gone", str(n)))
        if n % 3 == 0:  # still seen now and then: stays the one object
            assert table.get(("kept", "x")) is kept
        assert len(table) <= 8
    first = ("gone", "0")
    assert first not in table.young and first not in table.old


def test_a_miss_makes_the_shared_value_once():
    table = SharedValues(10)
    made = []

    def make(v):
        made.append(v)
        return tuple(v)

    one = table.get(("a", "b"), make)
    assert table.get(("a", "b"), make) is one
    assert made == [("a", "b")]
