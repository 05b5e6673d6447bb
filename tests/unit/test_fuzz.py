"""Fuzz tests (hypothesis) of what reads untrusted text: the snapshot loader (``audit -f``:
``inputs.iter_documents``/``load_files``, then the rules over what it loaded) and the kernel
parsers (``core/kernel.py``, ``core/kmsg.py``). Each property: no exception but the documented
one (``InputError`` for files; none at all for kernel text), and what comes out is clean
(process names printable, memcg paths canonical, caps kept).

Bounded in time: derandomized (the same examples every run: no flaky CI), a fixed number of
examples and a deadline per example; no example database is written (the machine is left as it
was found). The inputs are built from the real texts in tests/unit/data/kernel and examples/,
cut, spliced and mixed with random text, plus random Kubernetes-shaped objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_hygiene.core import kernel, kmsg
from memory_hygiene.core.engine import evaluate
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.inputs import InputError, iter_documents, load_files

ROOT = Path(__file__).resolve().parents[2]
KERNEL = Path(__file__).parent / "data" / "kernel"
EXAMPLES = ROOT / "examples"

FUZZ = settings(derandomize=True, database=None, max_examples=200, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HEAVY = settings(FUZZ, max_examples=60, deadline=timedelta(seconds=5))


def _kernel_lines() -> list[str]:
    lines = []
    for f in sorted([*KERNEL.glob("*.txt"), *(KERNEL / "published").glob("*.txt")]):
        lines += [ln for ln in f.read_text(errors="replace").splitlines() if ln and not ln.startswith("#")]
    return lines


KERNEL_LINES = _kernel_lines()
OOM_LINES = [ln for ln in KERNEL_LINES if any(k in ln for k in ("oom", "Killed process", "Kill process", "Task"))]
EXAMPLE_TEXTS = [f.read_text() for f in sorted(EXAMPLES.glob("*.yaml"))]
NASTY = ["..", "/", ",", "(", ")", ")", "\x1b[31m", "\x00", "\u202e", "\n", "\r", "pod", "kubepods", "=", ":",
         "Killed process ", "oom-kill:constraint=CONSTRAINT_MEMCG", ",task_memcg=", ",oom_memcg=", ",task=",
         ",pid=", ",uid=", "oom_score_adj:", "9" * 30, "-", "\\x1b", "\t", "\ufeff", "\u2028"]


def test_the_corpus_is_there():
    """A fuzz test without its corpus would test nothing: fail, not skip."""
    assert len(OOM_LINES) >= 20 and len(EXAMPLE_TEXTS) >= 8


@st.composite
def kernel_text(draw) -> str:
    """Real OOM lines, some cut or spliced with nasty pieces and random text, in random order."""
    pieces = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.integers(0, 4))
        if kind <= 1:
            line = draw(st.sampled_from(OOM_LINES))
        elif kind == 2:
            line = draw(st.sampled_from(KERNEL_LINES))
        elif kind == 3:
            line = "".join(draw(st.lists(st.sampled_from(NASTY), max_size=12)))
        else:
            line = draw(st.text(max_size=80))
        if draw(st.booleans()):
            i = draw(st.integers(0, len(line)))
            j = draw(st.integers(i, len(line)))
            line = line[:i] + draw(st.sampled_from(NASTY) | st.text(max_size=10)) + line[j:]
        pieces.append(line)
    return "\n".join(pieces)


def _check_kills(kills) -> None:
    for k in kills:
        assert isinstance(k, kernel.OOMKill)
        assert k.pid >= 0
        assert k.process == kernel.clean_text(k.process) and (k.process == "" or k.process.isprintable())
        for path in (k.task_memcg, k.oom_memcg):
            assert path is None or kernel.canonical_memcg(path), path
        assert k.bad_memcg is None or k.bad_memcg.isprintable()
        if k.pod_uid is not None:
            assert k.pod_uid == k.pod_uid.lower() and len(k.pod_uid) in (32, 36)
        if k.container_id is not None:
            assert len(k.container_id) == 64


@FUZZ
@given(kernel_text())
def test_kernel_parser_never_raises_and_copies_out_only_clean_text(text):
    kills = kernel.parse_oom_text(text)
    _check_kills(kills)
    capped, more = kernel.parse_oom_text_capped(text, 3)
    assert len(capped) <= 3
    if not more:
        assert list(capped) == kills, "not capped: everything was read"
    _check_kills(capped)


@FUZZ
@given(st.text(max_size=400))
def test_kernel_parser_on_any_text(text):
    _check_kills(kernel.parse_oom_text(text))
    _check_kills(kernel.parse_oom_text(text.encode("utf-8", "surrogatepass")))


@FUZZ
@given(st.lists(st.sampled_from(["kubepods", "burstable", "besteffort", "..", ".", "", "pod" + "a" * 32,
                                 "pod0f3c2b1a-1111-4222-8333-444455556666", "b" * 64, "cri-containerd-" + "c" * 64 +
                                 ".scope", "kubepods-burstable-pod0f3c2b1a_1111_4222_8333_444455556666.slice"])
                | st.text(max_size=20), max_size=8), st.booleans())
def test_memcg_paths_name_a_pod_only_when_canonical(segments, absolute):
    path = ("/" if absolute else "") + "/".join(segments)
    uid, cid = kernel.parse_memcg_path(path)
    if uid is not None or cid is not None:
        assert kernel.canonical_memcg(path.strip()), path
        assert all(s not in ("..", ".") for s in path.split("/"))


@FUZZ
@given(st.binary(max_size=300) | kernel_text().map(lambda t: f"6,{len(t)},{len(t) * 1000},-;{t}"))
def test_kmsg_records_never_raise(raw):
    r = kmsg.parse_record(raw)
    assert r is None or isinstance(r, kmsg.Record)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for rec in kmsg.split_records(text):
        assert isinstance(rec, str)
    kmsg.parse_syslog_line(text)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["-", "c", "+"]), kernel_text()), max_size=12),
       st.booleans())
def test_the_kmsg_grouper_takes_any_sequence_of_records(records, gaps):
    g = kmsg.Grouper(count_gaps=gaps)
    seq, kills = 100, []
    for step, flags, text in records:
        seq += step  # gaps: records overwritten before they were read
        for line in text.splitlines() or [""]:
            kills += g.feed(kmsg.Record(seq, seq * 10, 6, flags, None, line))
            seq += 1
    kills += g.flush()
    for k in kills:
        _check_kills(kernel.parse_oom_text("\n".join(k.lines)))


# --- the snapshot loader ---------------------------------------------------------------------------


def _load(text: str):
    """`audit -f FILE` as far as it goes: load the file, evaluate the default policy over it."""
    fd, path = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        try:
            snap = load_files([path])
        except InputError as err:
            assert str(err).startswith(path), err  # names the file
            return None
    finally:
        os.unlink(path)
    report = evaluate("fuzz", parse_spec({}), snap.nodes, snap.pods, snap.events,
                      snap.newest_time or 1_800_000_000.0, snap.namespaces)
    json.dumps(report.as_dict())  # what `-o json` prints
    for v in report.violations:
        assert "\x1b" not in v.message
    return report


@st.composite
def mutated_example(draw) -> str:
    text = draw(st.sampled_from(EXAMPLE_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + draw(st.integers(0, 200)))))
        how = draw(st.integers(0, 2))
        if how == 0:
            text = text[:i] + text[j:]
        elif how == 1:
            text = text[:i] + draw(st.sampled_from([*NASTY, "&a ", "*a", "!!python/object ", "[", "{", ": ", "- ",
                                                    "\n  ", "\t", "2999-01-01T00:00:00Z", "'", '"'])) + text[j:]
        else:
            text = text[:i] + text[i:j] * draw(st.integers(2, 4)) + text[j:]
    return text


@HEAVY
@given(mutated_example())
def test_loader_on_mutated_examples_gives_a_report_or_a_clear_error(text):
    _load(text)


EXAMPLE_JSON = [json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    d for d in yaml.safe_load_all(t) if d is not None]}, indent=2, default=str) for t in EXAMPLE_TEXTS]
"""The examples as `kubectl get -o json` dumps: what the JSON fast path reads."""


@HEAVY
@given(st.sampled_from(EXAMPLE_JSON), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 60),
                                                          st.sampled_from([*NASTY, "[", "]", "{", "}", ",", ":", '"',
                                                                           "\\ud800", "NaN", "1e400", "null"])),
                                                min_size=1, max_size=4))
def test_loader_on_mutated_json_dumps_gives_a_report_or_a_clear_error(text, cuts):
    for at, length, insert in cuts:
        at %= len(text) + 1
        text = text[:at] + insert + text[at + length:]
    _load(text)


@FUZZ
@given(st.text(max_size=300))
def test_loader_on_any_text(text):
    _load(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["256Mi", "1Gi", "-1", "1e400", "0.5", "2999-01-01T00:00:00Z", "OOMKilled", "Running",
                       "Killed process 1 (x) total-vm:1kB, anon-rss:1kB, file-rss:1kB", "Node", "Pod"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "status", "name", "uid", "namespace", "labels", "containers",
                         "resources", "requests", "limits", "memory", "nodeName", "containerStatuses", "state",
                         "lastState", "terminated", "reason", "finishedAt", "involvedObject", "kind", "message",
                         "source", "component", "count", "firstTimestamp", "lastTimestamp", "capacity",
                         "allocatable", "conditions", "type", "items", "initContainers", "overhead"])
        | st.text(max_size=6), children, max_size=5),
    max_leaves=30,
)


@st.composite
def k8s_object(draw) -> dict:
    obj = draw(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "involvedObject", "reason", "message",
                                                "source", "firstTimestamp", "lastTimestamp", "count", "type"]),
                               json_values, max_size=8))
    obj["kind"] = draw(st.sampled_from(["Pod", "Node", "Event", "Namespace", "List", "ConfigMap"]))
    if obj["kind"] == "Event" and draw(st.booleans()):
        obj["reason"] = draw(st.sampled_from(["OOMKilling", "SystemOOM"]))
    if obj["kind"] == "List":
        obj["items"] = draw(st.lists(json_values, max_size=3))
    return obj


@HEAVY
@given(st.lists(k8s_object(), max_size=6), st.booleans())
def test_loader_on_random_kubernetes_shaped_objects(objects, as_json):
    text = (json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}) if as_json
            else yaml.safe_dump_all(objects))
    _load(text)
    # the streaming reader agrees with itself on what it accepts: every object it yields is a dict
    try:
        for obj, where in iter_documents(text, "f"):
            assert isinstance(obj, dict) and where.startswith("f")
    except InputError:
        pass
