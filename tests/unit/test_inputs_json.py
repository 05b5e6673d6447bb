"""The JSON fast path of ``audit -f`` (``inputs._iter_json``): a ``kubectl get -o json`` dump read
by the standard library's C scanner one List item at a time. It must read what the YAML reader
reads, the same way, and refuse what it refuses, with the same one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_hygiene import inputs
from memory_hygiene.inputs import MAX_DEPTH, InputError, iter_documents, load_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SNAPSHOTS = sorted(f for f in EXAMPLES.glob("*.yaml") if not f.name.startswith("memorypolicy"))
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "uid": "u"},
       "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "1Gi"}}}]}}


def _no_yaml(text, where):
    raise AssertionError(f"{where} went to the YAML reader")
    yield  # a generator, as the real one


@contextmanager
def json_only():
    """The YAML reader made unavailable: what is read is read by the JSON path, no fallback."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inputs, "_iter_documents", _no_yaml)
        yield


def read_json(text: str, where: str = "f.json") -> list:
    with json_only():
        return list(iter_documents(text, where))


def yaml_objects(text: str) -> list:
    return [obj for obj, _ in iter_documents(text, "f")]


def as_json(value) -> str:
    """kubectl's shape: indented, keys as they come; YAML timestamps as their text."""
    return json.dumps(value, indent=4, default=lambda t: t.isoformat().replace("+00:00", "Z"))


def test_the_examples_are_there():
    assert len(SNAPSHOTS) >= 8


@pytest.mark.parametrize("example", SNAPSHOTS, ids=lambda f: f.name)
def test_json_reads_the_examples_as_yaml_reads_them(example):
    objects = yaml_objects(example.read_text())
    assert objects
    expected = json.loads(as_json(objects))  # what JSON can say of them (timestamps as text)
    as_list = {"apiVersion": "v1", "items": objects, "kind": "List", "metadata": {"resourceVersion": ""}}
    got = read_json(as_json(as_list))
    assert [obj for obj, _ in got] == expected
    assert [w for _, w in got] == [w.replace("f ", "f.json ", 1) for _, w in iter_documents(
        yaml.safe_dump(json.loads(as_json(as_list))), "f")]
    # and one object per file, as `kubectl get pod x -o json` writes it
    for obj in expected:
        [(read, where)] = read_json(json.dumps(obj))
        assert read == obj and where.startswith("f.json ")


@pytest.fixture(scope="module")
def bench_dump(tmp_path_factory) -> tuple[Path, Path]:
    """The benchmark's own dump (bench/audit_file.py: nodes and pods with uids, managedFields and
    status as a real dump has them), small, in YAML and in JSON."""
    tmp = tmp_path_factory.mktemp("dump")
    y = tmp / "dump.yaml"
    subprocess.run([sys.executable, str(ROOT / "bench" / "audit_file.py"), "--pods", "300", "--write", str(y)],
                   check=True, capture_output=True, cwd=ROOT)
    j = tmp / "dump.json"
    j.write_text(as_json(yaml.safe_load(y.read_text())))
    return y, j


def test_a_generated_dump_loads_the_same_snapshot_from_json_and_yaml(bench_dump):
    y, j = bench_dump
    with json_only():
        from_json = load_files([str(j)])
    from_yaml = load_files([str(y)])
    assert len(from_yaml.pods) == 300 and from_yaml.nodes
    assert from_json.pods == from_yaml.pods and from_json.nodes == from_yaml.nodes
    assert from_json.namespaces == from_yaml.namespaces and from_json.events == from_yaml.events
    assert from_json.newest_time == from_yaml.newest_time


def test_items_are_given_out_as_they_are_read():
    """Streaming: the first items come out before the end of the text is reached (a List cut
    short gives its first items, then the error)."""
    text = as_json({"kind": "List", "items": [POD, {**POD, "metadata": {**POD["metadata"], "name": "q"}}]})
    cut = text[: text.rindex("]")]  # no end of the items array, nor of the List
    with json_only():
        docs = iter_documents(cut, "f.json")
        obj, where = next(docs)
        assert obj == POD and where == "f.json items[0] Pod d/p"
        assert next(docs)[1] == "f.json items[1] Pod d/q"
        with pytest.raises(InputError, match=r"^f\.json: not valid JSON at line \d+: expected ',' or ']'"):
            next(docs)


def test_yaml_flow_style_that_is_not_json_still_reads_as_yaml():
    assert yaml_objects("{kind: Pod, metadata: {name: x, namespace: d}}") == [
        {"kind": "Pod", "metadata": {"name": "x", "namespace": "d"}}]
    with pytest.raises(InputError, match="expected a Kubernetes object or List, got list"):
        yaml_objects('[{"kind": "Pod"}]')


def _list(*items: str) -> str:
    return '{"apiVersion": "v1", "kind": "List", "items": [' + ", ".join(items) + "]}"


@pytest.mark.parametrize(
    "text, problem",
    [
        # hostile
        ("[" * 100_000 + "]" * 100_000, r"f\.json: nesting deeper than 200 levels at line 1"),
        (_list(json.dumps(POD), "[" * 100_000 + "]" * 100_000), r"f\.json items\[1\]: nesting deeper than 200"),
        (_list(json.dumps(POD), '{"kind": "Pod", "x": ' + "9" * 5000 + "}"),
         r"f\.json items\[1\] Pod: x: not a usable number at line 1: Exceeds the limit"),
        (_list(json.dumps(POD), '{"kind": "Pod", "x": NaN}'), r"f\.json items\[1\]: not valid JSON at line 1: NaN"),
        (_list(json.dumps(POD), '{"kind": "Pod", "metadata": {"name": "\\ud800"}}'),
         r"f\.json items\[1\]: not valid JSON at line 1: a \\u escape of half a UTF-16 surrogate pair"),
        (_list(json.dumps(POD)) + "\n---\n", r"f\.json: not valid JSON at line 2: more after the end"),
        (_list(json.dumps(POD), '{"kind": "Pod", "x": "a\x01"}'), r"f\.json items\[1\]: not valid JSON at line 1: "
         r"Invalid control character"),
        # wrong shapes and types: the same errors as the YAML reader's
        ('{"kind": "Pod", "items": [' + json.dumps(POD) + "]}", r"f\.json: items outside a List \(kind 'Pod'\)"),
        ('[{"kind": "Pod"}]', r"f\.json: expected a Kubernetes object or List, got list"),
        (_list('{"metadata": {"name": "x"}}'), r"f\.json items\[0\]: object without kind"),
        ('{"kind": "List", "items": 5}', r"f\.json: items is not a list"),
        (_list(json.dumps({**POD, "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "lots"}}}]}})),
         r"f\.json items\[0\] Pod d/p: .*lots"),
        (_list(json.dumps({"kind": "Event", "metadata": {"name": "e", "namespace": "d"}, "reason": "OOMKilling",
                           "involvedObject": "n1"})), r"f\.json items\[0\] Event d/e: involvedObject: expected an object"),
        (_list(json.dumps({"kind": "Pod", "metadata": "p"})), r"f\.json items\[0\] Pod: Pod without metadata"),
    ],
)
def test_hostile_and_malformed_json_is_an_input_error_naming_file_and_object(tmp_path, text, problem):
    f = tmp_path / "f.json"
    f.write_text(text)
    with pytest.raises(InputError) as err:
        load_files([str(f)])
    message = str(err.value).replace(str(tmp_path) + "/", "")
    assert "\n" not in message
    assert re.match(problem, message), message


def test_nesting_is_bounded_where_the_yaml_reader_bounds_it():
    def item(depth: int) -> str:
        return "[" * depth + "]" * depth

    for depth, refused in ((MAX_DEPTH - 2, False), (MAX_DEPTH - 1, True)):
        for read in (read_json, yaml_objects):
            text = _list(item(depth)) if read is read_json else f"kind: List\nitems:\n- {item(depth)}\n"
            with pytest.raises(InputError) as err:  # a list is no Kubernetes object, if it is read at all
                read(text)
            assert ("nesting deeper than 200 levels" in str(err.value)) == refused, (read.__name__, depth, err.value)
    # a deep tree whose brackets are mostly empty pairs: the cheap bounds pass it, the walk decides
    wide = "[" + ", ".join(["{}"] * 500) + "]"
    assert [obj["x"] for obj, _ in read_json(_list(json.dumps({**POD, "x": json.loads(wide)})))] == [
        [{}] * 500]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
    | st.sampled_from(["256Mi", "1Gi", "true", "yes", "8080", "0x1F", "null", "~", "2999-01-01T00:00:00Z", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "status", "name", "namespace", "labels", "containers", "items",
                         "kind", "resources", "memory"]) | st.text(max_size=6), children, max_size=5),
    max_leaves=30,
)


@settings(derandomize=True, database=None, max_examples=150, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "items", "x"]), JSON_VALUES,
                                max_size=5), max_size=5),
       st.sampled_from(["Pod", "Node", "Event", "Namespace", "ConfigMap", "List"]))
def test_json_and_yaml_of_the_same_objects_read_the_same(objects, kind):
    """Random Kubernetes-shaped objects written as a JSON List and as YAML: the same objects come
    out, or both readers refuse them (the same first error, but for where JSON can tell a line)."""
    for obj in objects:
        obj["kind"] = kind
    as_list = {"apiVersion": "v1", "kind": "List", "items": objects}

    def read(text):
        try:
            return [obj for obj, _ in iter_documents(text, "f")], None
        except InputError as err:
            return None, str(err)

    from_json, json_err = read(json.dumps(as_list))
    from_yaml, yaml_err = read(yaml.safe_dump(as_list))
    assert from_json == from_yaml
    assert (json_err is None) == (yaml_err is None), (json_err, yaml_err)
