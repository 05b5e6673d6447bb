"""The YAML fast path of ``audit -f`` (``inputs._iter_yaml_fast``): the items of a ``kubectl get -o
yaml`` List read by rapidyaml where a guard finds nothing it may read otherwise than the reference
reader (``inputs._iter_documents``: libyaml's events, PyYAML's YAML 1.1 scalars). Whatever it
reads must come out exactly as the reference reader gives it, types included, and what the
reference refuses it must refuse with the same message."""

from __future__ import annotations

import datetime
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_hygiene import inputs
from memory_hygiene.inputs import InputError, iter_documents

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "yaml_fast"


def test_ryml_and_libyaml_are_installed():
    assert inputs._ryml is not None, "rapidyaml (ryml) is a dependency: pip install rapidyaml"
    assert inputs._CLoader is not None, "PyYAML without libyaml: the reference reader would be pure Python"


def reference(text: str, where: str = "f") -> list:
    try:
        return list(inputs._iter_documents(text, where))
    except InputError:
        raise
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise inputs._input_error(err, where) from None


def outcome(read, text: str):
    try:
        return ("ok", read(text))
    except InputError as err:
        return ("error", str(err))


def fast(text: str, where: str = "f") -> list:
    return list(iter_documents(text, where))


def typed(value):
    """The value with every scalar's type spelled out (True == 1 and 1.0 == 1 in Python)."""
    if isinstance(value, dict):
        return {typed(k): typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, tuple):
        return tuple(typed(v) for v in value)
    return (type(value).__name__, repr(value))


def same(text: str) -> tuple[int, int]:
    """Both readers give the same (objects, where) or the same error; the fast path's counts."""
    before = dict(inputs.FAST_ITEMS)
    got, want = outcome(fast, text), outcome(reference, text)
    assert typed(got) == typed(want), text
    return inputs.FAST_ITEMS["fast"] - before["fast"], inputs.FAST_ITEMS["reference"] - before["reference"]


# --- (a) differential: random Kubernetes-like objects --------------------------------------------

SPECIAL = ["yes", "no", "on", "off", "Yes", "NO", "On", "OFF", "y", "n", "true", "false", "True", "TRUE",
           "False", "null", "Null", "NULL", "~", "", "<<", "=", "1e9", "1.5e3", "1.5e+3", "1E5", "-1", "+12",
           "0", "-0", "00", "012", "0x1F", "0b101", "0o17", "1_000", "1:30", "190:20:30", "1.", ".5", "-.5",
           ".inf", "-.inf", ".nan", "NaN", "inf", "1.0", "-0.0", "2024-01-01", "2001-12-14t21:59:43.10-05:00",
           "2026-12-01T10:00:00Z", "10.1.0.1", "15800m", "64Gi", "'", '"', "a'b", 'a"b', "a: b", "a #b", "#x",
           "- x", "[x]", "{x}", "[]", "{}", "&a", "*a", "!x", "%x", "@x", "`x", "?x", ":x", "|", ">", "-",
           "---", "...", "12345678901234567890", "1" * 30, "f:metadata", "k:{\"name\":\"c\"}", ".", "é日本",
           "\u2028", "\x85", "tab\there", "back\\slash", "line1\nline2", "line1\n\nline2\n", " lead", "trail ",
           "x" * 100, " ".join(["word"] * 30), "\U0001F600"]

scalars = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
    st.text("abc01:.-_ #'\"\n", max_size=15),
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.just(datetime.date(2024, 1, 1)),
)
keys = st.one_of(st.sampled_from(SPECIAL), st.text("abcxyz09.-_: ", min_size=1, max_size=8), st.integers(0, 99))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=20)
objects = st.fixed_dictionaries({"kind": st.sampled_from(["Pod", "Node", "Event", "Namespace", "Thing"]),
                                 "metadata": st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "yes"])},
                                                                    optional={"namespace": scalars}),
                                 "spec": values})


class Indented(yaml.SafeDumper):
    """Sequences indented under their key (``key:\\n  - a``), as many tools write them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def dump_list(items, indented: bool, width: int) -> str:
    dumper = Indented if indented else yaml.CSafeDumper
    return yaml.dump({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}},
                     Dumper=dumper, default_flow_style=False, width=width, allow_unicode=True)


@settings(derandomize=True, database=None, max_examples=150, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(objects, min_size=1, max_size=4), indented=st.booleans(), width=st.sampled_from([20, 80, 1000]))
def test_pyyaml_dumps_read_alike(items, indented, width):
    same(dump_list(items, indented, width))


def go_yaml(value, indent: int = 0) -> list[str]:
    """Lines as go-yaml v2 (kubectl) writes ``value`` at ``indent``: ``- `` at the key's column,
    '...' around strings that would read as something else, |- for multi-line strings, long plain
    strings wrapped at 80 columns."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        out = []
        for k, v in value.items():
            head = f"{pad}{scalar_text(k, indent, wrap=False)}:"  # a key is never wrapped
            out += entry(head, v, indent, indent)
        return out
    if not value:
        return [pad + "[]"]
    out = []
    for v in value:
        out += entry(f"{pad}-", v, indent, indent + 2, item=True)
    return out


def entry(head: str, v, indent: int, inner: int, item: bool = False) -> list[str]:
    if isinstance(v, dict) and v:
        if item:
            lines = go_yaml(v, inner)
            return [head + " " + lines[0].lstrip()] + lines[1:]
        return [head] + go_yaml(v, indent + 2)
    if isinstance(v, list) and v:
        if item:
            lines = go_yaml(v, inner)
            return [head + " " + lines[0].lstrip()] + lines[1:]
        return [head] + go_yaml(v, indent)  # kubectl: a list's dashes at its key's column
    if isinstance(v, (dict, list)):
        return [f"{head} {'{}' if isinstance(v, dict) else '[]'}"]
    if (isinstance(v, str) and "\n" in v and not v.startswith(" ") and "\t" not in v
            and v.strip("\n") == v.rstrip("\n")
            and all((c.isprintable() or c == "\n") and c not in "\x85\u2028\u2029\ufeff" for c in v)):
        body = [(" " * (inner + 2) + line) if line else "" for line in v.rstrip("\n").split("\n")]
        return [f"{head} |{'-' if not v.endswith(chr(10)) else ''}"] + body
    text = scalar_text(v, inner)
    return [f"{head} {text}" if text else head]


def scalar_text(v, indent: int, wrap: bool = True) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, datetime.date)):
        return str(v) if not isinstance(v, float) else repr(v)
    s = str(v)
    if _plain_safe(s):
        words = s.split(" ")
        if wrap and len(s) > 80 and "" not in words:
            lines, cur = [], words[0]
            for w in words[1:]:
                if len(cur) + 1 + len(w) > 80:
                    lines.append(cur)
                    cur = w
                else:
                    cur += " " + w
            lines.append(cur)
            return ("\n" + " " * (indent + 2)).join(lines)
        return s
    if any(not c.isprintable() or c in "\\\n" for c in s):
        return '"' + "".join(_escape(c) for c in s) + '"'
    return "'" + s.replace("'", "''") + "'"


def _escape(c: str) -> str:
    if c in '\\"':
        return "\\" + c
    if c == "\n":
        return "\\n"
    if c.isprintable() and c not in "\x85\u2028\u2029\ufeff":
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def _plain_safe(s: str) -> bool:
    if not s or s != s.strip() or any(c in s for c in "\n\t\\\x85\u2028\u2029") or s[0] in "-?:,[]{}#&*!|>'\"%@`~":
        return False
    if ": " in s or " #" in s or s.endswith(":"):
        return False
    try:
        return type(yaml.safe_load(s)) is str and yaml.safe_load(s) == s
    except (yaml.YAMLError, ValueError):  # ValueError: PyYAML's int("0b_")
        return False


def go_dump(items) -> str:
    return "\n".join(["apiVersion: v1", "items:", *go_yaml(items), "kind: List", "metadata:",
                      "  resourceVersion: \"\"", ""])


@settings(derandomize=True, database=None, max_examples=150, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(objects, min_size=1, max_size=4))
def test_go_yaml_dumps_read_alike(items):
    text = go_dump(items)
    reference(text)  # the generator writes valid YAML: the test would be empty otherwise
    same(text)


# --- (b) mutations of a valid dump ----------------------------------------------------------------

BASE = go_dump([
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "labels": {"app": "x"}},
     "spec": {"containers": [{"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 8080}],
                              "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}}, "args": ["a b", "-v"]}],
              "nodeName": "n1"},
     "status": {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 3, "ready": True,
                                                           "lastState": {"terminated": {"reason": "OOMKilled",
                                                                                        "exitCode": 137}}}]}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
     "status": {"capacity": {"memory": "64Gi", "pods": "110"}, "conditions": []}},
])

ALPHABET = " \n-:'\"#&*!|>[]{},.0123456789abeyn~%@`?\\\t"


REAL_BASE = (DATA / "pods.yaml").read_text() if (DATA / "pods.yaml").exists() else ""


def edits_of(base: str):
    """Up to three insertions, deletions or replacements of a few characters anywhere in base."""
    return st.lists(st.tuples(st.integers(0, max(len(base), 1)), st.sampled_from(["ins", "del", "rep"]),
                              st.text(ALPHABET, min_size=1, max_size=3)), min_size=1, max_size=3)


def mutated(text: str, edits) -> str:
    for pos, op, s in edits:
        pos = min(pos, len(text))
        text = (text[:pos] + s + text[pos:] if op == "ins" else text[:pos] + text[pos + len(s):] if op == "del"
                else text[:pos] + s + text[pos + len(s):])
    return text


@settings(derandomize=True, database=None, max_examples=300, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(edits=edits_of(BASE))
def test_mutated_dumps_read_alike(edits):
    same(mutated(BASE, edits))


@settings(derandomize=True, database=None, max_examples=300, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(edits=edits_of(REAL_BASE))
def test_mutated_real_dumps_read_alike(edits):
    """As above, on real kubectl output (literal block scalars, quoted strings wrapped over lines)."""
    assert REAL_BASE, "tests/unit/data/yaml_fast/pods.yaml"
    same(mutated(REAL_BASE, edits))


# --- (c) each guard rule sends its case to the reference reader -----------------------------------

POD_LINES = ["- apiVersion: v1", "  kind: Pod", "  metadata:", "    name: p", "    namespace: d", "  spec:",
             "    containers:", "    - name: c"]


def pod_with(line: str) -> str:
    return "\n".join(["apiVersion: v1", "items:", *POD_LINES, line, "kind: List", ""])


GUARDED = [
    "    - name: !!str 5", "    - name: &a x", "    - name: *a", "    - name: '%x'\n      x: %y", "      x: @y",
    "      x: `y", "      ? x\n      : y", "      x: [a]", "      x: {a: 1}", "      x: a\\b", "      x: \"a\\tb\"",
    "      x: yes", "      x: No", "      x: ON", "      x: off", "      x: True", "      x: FALSE",
    "      x: Null", "      x: ~", "      x: <<", "      x: =", "      x: +12", "      x: .5", "      x: -.5",
    "      x: .inf", "      x: 012", "      x: 0x1F", "      x: 0b101", "      x: 1_000", "      x: 1:30",
    "      x: 1.", "      x: 2024-01-01", "      x: 2001-12-14t21:59:43.10-05:00", "      1: x", "      true: x",
    "      null: x", "      x: 1 # c", "      # c", "      x: |2\n         y", "      x: a\tb",
    "      x: a\u2028b", "      x: a\x85b", "      x:\n" + "  " * 45 + "- y",
    # block scalars other than kubectl's | and |- (folding, kept trailing lines), and a literal
    # block whose leading blank line has more spaces than its first line (libyaml refuses it)
    "      x: >\n        a\n        b", "      x: >-\n        a", "      x: |+\n        a\n",
    "      x: |\n            \n        a",
]


@pytest.mark.parametrize("line", GUARDED)
def test_guard_sends_item_to_reference(line):
    text = pod_with(line)
    assert inputs._cut_list(text) is not None, "the List itself is read by the fast path"
    n_fast, n_ref = same(text)
    assert (n_fast, n_ref) in ((0, 1), (0, 0)), (n_fast, n_ref)  # (0, 0): the reference reader refused it


@pytest.mark.parametrize("line", ["      x: 1e9", "      x: 1.5e3", "      x: -0", "      x: 8080", "      x: true",
                                  "      x: null", "      x: '012'", "      x: \"yes\"", "      .: {}", "      x: []",
                                  "      x: |-\n        a\n        b", "      f:metadata: {}",
                                  # a literal block's lines are text: what the guard refuses
                                  # elsewhere does not count in them
                                  "      x: |\n        {\"a\":yes, \"b\": [012]} # &x *y !z ? ~\n        - c\n      y: 1",
                                  "      args:\n      - |-\n        key: 'open\n        --- {}\n      - z"])
def test_fast_path_reads_common_forms(line):
    assert same(pod_with(line)) == (1, 0)


@pytest.mark.parametrize("text", [
    "items:\n- kind: Pod\n  metadata: {name: a}\n",  # no List: the reference reader says so
    "---\napiVersion: v1\nitems:\n- kind: Pod\nkind: List\n",
    "apiVersion: v1\r\nitems:\r\n- kind: Pod\r\nkind: List\r\n",
    "\ufeffapiVersion: v1\nitems:\n- kind: Pod\nkind: List\n",
    "kind: List\nitems:\n- kind: Pod\n# x\n- kind: Pod\n",
    "kind: List\nitems:\n- kind: Pod\nitems:\n- kind: Node\n",
    "kind: List\nitems: [{kind: Pod}]\n",
    "kind: List\na: 'x\nitems:\n- kind: Pod\nb: y'\n",
])
def test_unusual_text_goes_whole_to_reference(text):
    assert same(text) == (0, 0)


# --- (d) the bench dump, rapidyaml absent, real kubectl output ------------------------------------

def test_bench_dump_goes_through_fast_path(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from audit_file import write_dump
    finally:
        sys.path.remove(str(ROOT / "bench"))
    dump = tmp_path / "dump.yaml"
    objects = write_dump(300, dump)
    n_fast, n_ref = same(dump.read_text())
    assert n_fast + n_ref == objects
    assert n_fast >= 0.99 * objects, (n_fast, n_ref)


def test_without_ryml_the_reference_reader_reads(monkeypatch):
    text = pod_with("      x: 1")
    want = reference(text)
    monkeypatch.setattr(inputs, "_ryml", None)
    before = dict(inputs.FAST_ITEMS)
    assert typed(fast(text)) == typed(want) and want
    assert inputs.FAST_ITEMS == before


REAL = sorted(DATA.glob("*.yaml"))


def test_real_fixtures_exist():
    assert len(REAL) >= 2


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_kubectl_output_reads_alike(path):
    text = path.read_text()
    n_fast, n_ref = same(text)
    assert reference(text), "the fixture has objects"
    assert n_fast >= 1, (n_fast, n_ref)


@pytest.mark.parametrize("line", ["      x: 'a'    y: b", "      x: \"a\" y", "      x: 'a\n        b'",
                                  "      x: \"a\n        b\"", "      x: inf", "      x: NaN"])
def test_guard_found_by_the_fuzz(line):
    """Divergences the differential tests found: rapidyaml reads ``'a'  b`` (libyaml refuses it)
    and writes ``inf``, ``nan`` as ``.inf``, ``.nan``."""
    text = pod_with(line)
    assert same(text)[0] == 0
