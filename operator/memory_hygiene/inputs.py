"""Reading cluster objects: from snapshot files (YAML/JSON) or from the live API, into the core's
plain data. This is shell, not core: it does I/O."""

from __future__ import annotations

import asyncio
import bisect
import gc
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .core.events import oom_event_info
from .core.rules import MAX_CLOCK_SKEW_SECONDS
from .core.snapshot import MalformedObjectError, node_info, parse_time, pod_info
from .core.types import NodeInfo, OOMEventInfo, PodInfo


class InputError(ValueError):
    """Bad input: the message names the file (or source) and the problem, on one line."""


@dataclass
class Snapshot:
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: list[NodeInfo] = field(default_factory=list)
    pods: list[PodInfo] = field(default_factory=list)
    events: list[OOMEventInfo] = field(default_factory=list)
    newest_time: float | None = None
    """The newest timestamp seen in the objects: when a snapshot file was taken, roughly."""

    def add(self, obj: dict[str, Any], where: str) -> None:
        """Add one Kubernetes object; other kinds than Namespace, Node, Pod, Event are ignored."""
        if not isinstance(obj, dict):
            raise InputError(f"{where}: not a Kubernetes object (got {type(obj).__name__})")
        kind = obj.get("kind")
        meta = obj.get("metadata")
        if kind in ("Namespace", "Node", "Pod", "Event") and not isinstance(meta, dict):
            raise InputError(f"{where}: {kind} without metadata")
        try:
            if kind == "Namespace":
                name = meta.get("name")
                if not name:
                    raise InputError(f"{where}: Namespace without metadata.name")
                self.namespaces[name] = dict(meta.get("labels") or {})
            elif kind == "Node":
                self.nodes.append(node_info(obj))
            elif kind == "Pod":
                pod = pod_info(obj)
                self.pods.append(pod)
                for c in pod.containers:
                    for t in c.oom_finished:
                        self._saw(t)
            elif kind == "Event":
                ev = oom_event_info(obj)
                if ev is not None:
                    self.events.append(ev)
                    self._saw(ev.last_time)
        except InputError:
            raise
        except MalformedObjectError as err:  # its message names the object, as `where` does
            raise InputError(f"{where}: {err.field}: {err.problem}" if err.field else f"{where}: {err.problem}") from None
        except ValueError as err:
            raise InputError(f"{where}: {err}") from None
        for cond in ((obj.get("status") or {}).get("conditions") or []) if kind == "Node" else []:
            self._saw(_safe_time(cond.get("lastTransitionTime")))

    def _saw(self, t: float | None) -> None:
        # A time past the wall clock (an Event dated 2999) did not date the snapshot: taking it
        # for "now" would age every real kill out of the lookback and make that one current.
        if t is not None and t > time.time() + MAX_CLOCK_SKEW_SECONDS:
            return
        if t is not None and (self.newest_time is None or t > self.newest_time):
            self.newest_time = t


def _safe_time(value: Any) -> float | None:
    try:
        return parse_time(value)
    except ValueError:
        return None


def _flatten(doc: Any, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Objects of a document: a single object or a (possibly nested) v1 List."""
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a Kubernetes object or List, got {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise InputError(f"{where}: items is not a list")
        for i, item in enumerate(items):
            yield from _flatten(item, f"{where} items[{i}]")
        return
    if not kind:
        raise InputError(f"{where}: object without kind")
    yield doc, f"{where} {kind} {_name(doc)}".rstrip()


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        return ""
    ns, name = meta.get("namespace"), meta.get("name")
    return f"{ns}/{name}" if ns else (name or "")


_CLoader = getattr(yaml, "CSafeLoader", None)
"""libyaml's parser, when PyYAML was built with it (the wheels are): events at C speed."""

MAX_DEPTH = 200
"""Deepest nesting accepted in a snapshot (a Pod is about 12 deep)."""

_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALARS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}


_PLAIN: dict[str, Any] = {}
"""Plain scalars already resolved: Kubernetes objects repeat their keys and most values, and a
value's resolution depends on its text alone. Bounded; cleared when full."""
_PLAIN_MAX, _PLAIN_LEN = 1 << 16, 64


def _scalar(ev: yaml.ScalarEvent) -> Any:
    """A scalar as PyYAML's safe loader makes it (YAML 1.1 plain-scalar resolution: kubectl's
    unquoted ``true``, ``8080``, ``null``)."""
    tag = ev.tag
    if tag is None or tag == "!":
        if not ev.implicit[0]:  # quoted
            return ev.value
        hit = _PLAIN.get(ev.value, _PLAIN)  # (the hot path: most plain scalars repeat)
        return hit if hit is not _PLAIN else _plain(ev.value, ev.start_mark, ev.end_mark)
    if tag == "tag:yaml.org,2002:str":
        return ev.value
    return _construct(tag, ev.value, ev.start_mark, ev.end_mark)


def _plain(value: str, start_mark: Any = None, end_mark: Any = None) -> Any:
    """A plain scalar's value, resolved by its text alone (cached in ``_PLAIN``)."""
    hit = _PLAIN.get(value, _PLAIN)
    if hit is not _PLAIN:
        return hit
    tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    out = value if tag == "tag:yaml.org,2002:str" else _construct(tag, value, start_mark, end_mark)
    if len(value) <= _PLAIN_LEN:
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        _PLAIN[value] = out
    return out


def _construct(tag: str, value: str, start_mark: Any, end_mark: Any) -> Any:
    if tag not in _SCALARS:
        raise yaml.constructor.ConstructorError(None, None, f"the tag {tag} is not accepted in snapshots", start_mark)
    node = yaml.ScalarNode(tag, value, start_mark, end_mark)
    return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)


def _events(text: str) -> Iterator[Any]:
    if _CLoader is not None:
        return yaml.parse(text, Loader=_CLoader)
    return yaml.parse(text, Loader=yaml.SafeLoader)


def iter_documents(text: str, where: str) -> Iterator[tuple[Any, str]]:
    """The objects of YAML (one or many documents) or JSON text, one at a time: a document, or
    each item of a document's top-level ``items`` (a ``kubectl get -o yaml`` List) as soon as it
    is read, so a 50 MB dump never stands in memory whole.

    Text whose first non-blank character is ``{`` or ``[`` (``kubectl get -o json``) is read as
    JSON by the standard library's C scanner, one List item at a time (``_iter_json``): the fastest
    way in (docs/benchmarks.md). If it turns out not to be JSON before its first object was given
    out (YAML's flow style also starts with a brace), the YAML reader reads it whole.

    YAML is built from libyaml's events, like PyYAML's safe loader, except:

    * aliases are refused: an alias makes one node a value in many places, and a document under
      1 KB can then stand for billions of values to whoever walks it (the "billion laughs";
      Kubernetes' own YAML decoding bounds alias expansion since CVE-2019-11253). ``kubectl``
      never writes anchors;
    * nesting deeper than MAX_DEPTH and tags other than the plain scalar ones are refused.

    A ``kubectl get -o yaml`` List (one document, its ``items`` a block sequence) takes a fast
    path first (``_iter_yaml_fast``): items a guard finds nothing doubtful in are read by
    rapidyaml in batches and come out as the reader above gives them (numbers resolved as PyYAML
    does); any other item is read alone by the reader above; on any error or doubt the reader
    above reads the whole text again, skipping what was already given out. Without rapidyaml
    installed, the reader above reads it all.

    Either way, any problem: InputError naming ``where`` and the line."""
    looks_json = _JSON_START.match(text) is not None
    if looks_json:
        given = 0
        try:
            for obj in _iter_json(text, where):
                yield obj
                given += 1
            return
        except _NotJSON as err:
            if given:
                raise InputError(f"{err.where}: not valid JSON at line {_line(text, err.pos)}: {err.problem}") from None
    skip = 0
    if _ryml is not None and not looks_json:
        cut = _cut_list(text)
        if cut is not None:
            try:
                for obj in _iter_yaml_fast(text, where, cut):
                    yield obj
                    skip += 1
                return
            except _Doubt:
                pass  # the reference reader reads it all again; what was given out is skipped
    try:
        for obj in _iter_documents(text, where):
            if skip:
                skip -= 1
                continue
            yield obj
    except InputError:
        raise
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise _input_error(err, where) from None


def _input_error(err: Exception, where: str) -> InputError:
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        return InputError(f"{where}: not valid YAML or JSON{at}: {problem}")
    if isinstance(err, RecursionError):
        return InputError(f"{where}: nested too deep")
    return InputError(f"{where}: not a usable number: {str(err).split(';')[0]}")  # e.g. 5,000 digits


_SCALAR_EV, _ALIAS_EV = yaml.ScalarEvent, yaml.AliasEvent
_MAP_START, _SEQ_START = yaml.MappingStartEvent, yaml.SequenceStartEvent
_MAP_END, _SEQ_END = yaml.MappingEndEvent, yaml.SequenceEndEvent
_DOC_START, _DOC_END = yaml.DocumentStartEvent, yaml.DocumentEndEvent
_COLLECTION_TAGS = (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _iter_documents(text: str, where: str) -> Iterator[tuple[Any, str]]:
    # One frame per open collection: [container, key awaiting its value (mappings) or _NO_KEY].
    # The hot loop of `audit -f`: one pass over ~200 events per pod, dispatched on the event's type.
    no_key = object()
    stack: list[list[Any]] = []
    doc_index = -1
    doc: Any = None
    items: list[Any] | None = None  # the open top-level ``items`` sequence, streamed as it is read
    streamed = 0  # items of this document already given out

    def doc_where() -> str:
        return where if doc_index == 0 else f"{where} (document {doc_index + 1})"

    events = _events(text)
    while True:
        try:
            ev = next(events)
        except StopIteration:
            break
        except yaml.YAMLError as err:  # say which object and field it was in
            if not stack:
                raise
            raise _input_error(err, _where_in(stack, items, doc_where(), streamed)) from None
        t = type(ev)
        if t is _SCALAR_EV:
            if ev.anchor is not None:
                raise InputError(f"{where}: YAML anchors (&{ev.anchor}) are not accepted in snapshots "
                                 f"at line {ev.start_mark.line + 1}")
            try:
                value = _scalar(ev)
            except ValueError as err:  # e.g. 5,000 digits: say which object and field
                raise InputError(f"{_where_in(stack, items, doc_where(), streamed)}: not a usable number at line "
                                 f"{ev.start_mark.line + 1}: {str(err).split(';')[0]}") from None
        elif t is _MAP_START or t is _SEQ_START:
            line = ev.start_mark.line + 1
            if ev.anchor is not None:
                raise InputError(f"{where}: YAML anchors (&{ev.anchor}) are not accepted in snapshots at line {line}")
            if ev.tag not in _COLLECTION_TAGS:
                raise InputError(f"{where}: the tag {ev.tag} is not accepted in snapshots at line {line}")
            if len(stack) >= MAX_DEPTH:
                raise InputError(f"{where}: nesting deeper than {MAX_DEPTH} levels at line {line}")
            container: Any = {} if t is _MAP_START else []
            if len(stack) == 1 and t is _SEQ_START and stack[0][1] == "items" and type(stack[0][0]) is dict:
                items = container
            stack.append([container, no_key])
            continue
        elif t is _MAP_END or t is _SEQ_END:
            value = stack.pop()[0]
            if value is items:
                items = None
        elif t is _ALIAS_EV:
            raise InputError(f"{where}: YAML aliases (*{ev.anchor}) are not accepted in snapshots "
                             f"at line {ev.start_mark.line + 1}")
        elif t is _DOC_START:
            doc_index += 1
            doc, streamed = None, 0
            continue
        elif t is _DOC_END:
            if streamed:
                kind = doc.get("kind") if isinstance(doc, dict) else None
                if not (isinstance(kind, str) and kind.endswith("List")):
                    raise InputError(f"{doc_where()}: items outside a List (kind {kind!r})")
            else:
                yield from _flatten(doc, doc_where())
            continue
        else:  # stream start and end
            continue
        # `value` is complete: it goes into the collection that holds it
        if not stack:
            doc = value
            continue
        frame = stack[-1]
        container = frame[0]
        if container is items:
            yield from _flatten(value, f"{doc_where()} items[{streamed}]")
            streamed += 1
        elif type(container) is list:
            container.append(value)
        elif frame[1] is no_key:
            if type(value) is dict or type(value) is list:
                raise InputError(f"{where}: a mapping key that is not a scalar at line {ev.start_mark.line + 1}")
            frame[1] = value
        else:
            container[frame[1]] = value
            frame[1] = no_key


def _where_in(stack: list[list[Any]], items: list[Any] | None, where: str, streamed: int) -> str:
    """``where`` and the field being read (``spec.containers[0].resources``), for an error met
    inside an object: its List item and kind/name when read already (kubectl writes ``kind`` and
    ``metadata`` before ``spec`` and ``status``, though after an Event's ``count``)."""
    path: list[str] = []
    obj: Any = None
    for container, key in stack:
        if container is items:
            where, obj, path = f"{where} items[{streamed}]", None, []
            continue
        if obj is None and type(container) is dict:
            obj = container
        if type(container) is dict:
            path.append(str(key) if isinstance(key, (str, int, float, bool)) else "?")
        else:
            path.append(f"[{len(container)}]")
    return _in_object(where, obj, path)


def _in_object(where: str, obj: Any, path: list[str]) -> str:
    """``where``, the object (kind and name, when read already) and the field ``path`` leads to
    (``spec.containers[0].resources``)."""
    if isinstance(obj, dict) and isinstance(obj.get("kind"), str):
        where = f"{where} {obj['kind']} {_name(obj)}".rstrip()
    if len(path) > 12:  # nested too deep: where it began
        path = path[:8] + ["…"]
    return f"{where}: {'.'.join(path).replace('.[', '[')}" if path else where


_JSON_START = re.compile(r"[ \t\n\r]*[{\[]")
_JSON_BLANK = re.compile(r"[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""Where a JSON string may hold half of a UTF-16 pair (``"\\ud800"``): not a character."""


class _NotJSON(Exception):
    """The text is not JSON at ``pos`` (maybe it is YAML)."""

    def __init__(self, where: str, pos: int, problem: str) -> None:
        super().__init__(problem)
        self.where, self.pos, self.problem = where, pos, problem


class _Constant(Exception):
    """``NaN``, ``Infinity``: Python's json reads them, JSON has no such thing."""


def _no_constant(name: str) -> Any:
    raise _Constant(name)


_JSON = json.JSONDecoder(parse_constant=_no_constant)
"""The standard library's decoder: its scanner is C (``_json``); strict (no control characters in
strings), ints past ``sys.get_int_max_str_digits()`` refused, ``NaN``/``Infinity`` refused."""


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _iter_json(text: str, where: str) -> Iterator[tuple[Any, str]]:
    """The objects of a JSON document: a top-level object is read member by member, each item of
    its ``items`` array decoded and given out on its own (a ``kubectl get -o json`` List is
    never whole in memory as objects; its text is, as a YAML file's is). Values are decoded by
    the C scanner, then held to what the YAML reader allows (MAX_DEPTH, no lone surrogates).
    Syntax errors raise _NotJSON; any other problem InputError."""
    blank = _JSON_BLANK.match
    pos = blank(text).end()
    if not text.startswith("{", pos):  # a top-level array: not a Kubernetes object, read whole
        doc, pos = _json_value(text, pos, where, MAX_DEPTH)
        _json_end(text, blank(text, pos).end(), where)
        yield from _flatten(doc, where)
        return
    doc: dict[str, Any] = {}
    streamed = 0
    pos = blank(text, pos + 1).end()
    if text.startswith("}", pos):
        pos += 1
    else:
        while True:
            if not text.startswith('"', pos):
                raise _NotJSON(where, pos, "expected a member name in double quotes")
            key, pos = _json_value(text, pos, where, 0)
            pos = blank(text, pos).end()
            if not text.startswith(":", pos):
                raise _NotJSON(where, pos, "expected ':' after a member name")
            pos = blank(text, pos + 1).end()
            if key == "items" and text.startswith("[", pos):
                pos = blank(text, pos + 1).end()
                if text.startswith("]", pos):
                    pos += 1
                else:
                    while True:
                        item_where = f"{where} items[{streamed}]"
                        item, pos = _json_value(text, pos, item_where, MAX_DEPTH - 2)
                        yield from _flatten(item, item_where)
                        streamed += 1
                        pos = blank(text, pos).end()
                        if text.startswith(",", pos):
                            pos = blank(text, pos + 1).end()
                        elif text.startswith("]", pos):
                            pos += 1
                            break
                        else:
                            raise _NotJSON(where, pos, "expected ',' or ']' after an item")
                doc[key] = []
            else:
                doc[key], pos = _json_value(text, pos, where, MAX_DEPTH - 1, (doc, key))
            pos = blank(text, pos).end()
            if text.startswith(",", pos):
                pos = blank(text, pos + 1).end()
            elif text.startswith("}", pos):
                pos += 1
                break
            else:
                raise _NotJSON(where, pos, "expected ',' or '}' after a member")
    _json_end(text, blank(text, pos).end(), where)
    if streamed:
        kind = doc.get("kind")
        if not (isinstance(kind, str) and kind.endswith("List")):
            raise InputError(f"{where}: items outside a List (kind {kind!r})")
    else:
        yield from _flatten(doc, where)


def _json_end(text: str, pos: int, where: str) -> None:
    if pos != len(text):
        raise _NotJSON(where, pos, "more after the end of the document")


def _json_value(text: str, pos: int, where: str, depth: int,
                member_of: tuple[dict[str, Any], str] | None = None) -> tuple[Any, int]:
    """The value at ``pos`` and where it ends; refused if nested more than ``depth`` deep.
    ``member_of``: (the object read so far, the member's name) when it is a member's value."""
    try:
        value, end = _JSON.raw_decode(text, pos)
    except json.JSONDecodeError as err:
        raise _NotJSON(where, err.pos, err.msg) from None
    except _Constant as err:
        raise _NotJSON(where, pos, f"{err} is not JSON") from None
    except RecursionError:
        raise InputError(f"{where}: nesting deeper than {MAX_DEPTH} levels at line {_line(text, pos)}") from None
    except ValueError as err:  # an int of 5,000 digits: say which object and field
        raise _bad_json_number(text, pos, where, err, member_of) from None
    # Bounds of the depth counted at C speed, the walk only when they are not enough: no deeper
    # than it has opening brackets; and a container holding another is not empty, so its
    # opening bracket is not followed by its closing one (kubectl writes an empty one `{}`).
    if (text.count("{", pos, end) + text.count("[", pos, end) > depth
            and text.count("{", pos, end) - text.count("{}", pos, end)
            + text.count("[", pos, end) - text.count("[]", pos, end) + 1 > depth
            and not _within(value, depth)):
        raise InputError(f"{where}: nesting deeper than {MAX_DEPTH} levels at line {_line(text, pos)}")
    if _SURROGATE_ESCAPE.search(text, pos, end):
        _no_lone_surrogates(value, text, pos, where)
    return value, end


class _TooLong(str):
    """An integer's digits past ``sys.get_int_max_str_digits()``, kept as text to say where."""


def _int_or_too_long(digits: str) -> Any:
    try:
        return int(digits)
    except ValueError:
        return _TooLong(digits)


_JSON_MARKING = json.JSONDecoder(parse_int=_int_or_too_long, parse_constant=_no_constant)


def _bad_json_number(text: str, pos: int, where: str, err: ValueError,
                     member_of: tuple[dict[str, Any], str] | None) -> InputError:
    """The error for a number Python refuses in the JSON value at ``pos``, naming the object and
    the field (the value decoded again, the number kept as text)."""
    problem = str(err).split(";")[0]
    try:
        value, _ = _JSON_MARKING.raw_decode(text, pos)
    except (ValueError, RecursionError):
        value = None
    obj, path = (member_of[0], [member_of[1]]) if member_of is not None else (value, [])
    found = _path_to_too_long(value, path)
    if found is None:
        return InputError(f"{where}: not a usable number at line {_line(text, pos)}: {problem}")
    path, digits = found
    return InputError(f"{_in_object(where, obj, path)}: not a usable number at line "
                      f"{_line(text, text.find(digits, pos))}: {problem}")


def _path_to_too_long(value: Any, path: list[str]) -> tuple[list[str], str] | None:
    """The path to the first _TooLong in a decoded value (``path`` the way there so far), and it."""
    if type(value) is _TooLong:
        return path, value
    if isinstance(value, dict):
        children: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        children = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for seg, child in children:
        found = _path_to_too_long(child, path + [seg])
        if found is not None:
            return found
    return None


def _within(value: Any, depth: int) -> bool:
    """Whether ``value`` nests at most ``depth`` collections deep (a scalar: 0, ``[]``: 1)."""
    if type(value) is not dict and type(value) is not list:
        return True
    if depth < 1:
        return False
    for v in value.values() if type(value) is dict else value:
        if (type(v) is dict or type(v) is list) and not _within(v, depth - 1):
            return False
    return True


def _no_lone_surrogates(value: Any, text: str, pos: int, where: str) -> None:
    """``"\\ud800"`` decodes to half a UTF-16 pair, which is no character: it could not be
    printed as UTF-8 (the YAML reader refuses such an escape too)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"{where}: not valid JSON at line {_line(text, pos)}: a \\u escape of "
                                 "half a UTF-16 surrogate pair, not a character") from None


# --- The YAML fast path: rapidyaml (C++) for the items of a `kubectl get -o yaml` List ----------

try:
    import ryml as _ryml  # PyPI rapidyaml
except ImportError:  # pragma: no cover - a dependency; without it, the reference reader alone
    _ryml = None

FAST_ITEMS = {"fast": 0, "reference": 0}
"""Items of YAML Lists given out so far by the fast path: read by rapidyaml ("fast"), or by the
reference reader for that item alone ("reference"). When it gives up part-way (then the
reference reader reads the whole text again), what it counted stays counted. For tests and
benchmarks."""

_FAST_BATCH = 1 << 19
"""Characters of consecutive items handed to rapidyaml at once (its tree is ~10x the text)."""


class _Doubt(Exception):
    """The fast path cannot vouch for the text: the reference reader reads it all."""


_ITEMS_KEY = re.compile(r"\nitems:[ ]*\n")
_KEY_LINE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*:(?:[ ][^\n]*)?")
_SPACES = re.compile(r"[ ]*")
_ITEMS_END_0 = re.compile(r"\n(?:[^ \n-]|-[^ \n])")
_ITEMS_END = re.compile(r"\n[^ \n]")

# Where rapidyaml and PyYAML's safe loader (YAML 1.1, libyaml) may read the same text differently,
# or only one of them refuse it: such an item goes to the reference reader. A token starts after
# a line's indentation and sequence dashes, or after ": ". Each search has a literal or a small
# first character to look for: one regex of all the rules takes 10x longer.
_END = r"(?=[ ]*(?:$|:[ ]|:$))"
_FIRST = r"(?=[!&*%@`?~,\]}:|>\[{+.0-9<='\"-]|[yYnNoOtTfFiI])"
_BAD = "|".join([
    # indicators: tags, anchors, aliases, directives, reserved, complex keys, empty keys, flow
    # collections other than an empty one at the end of a line, block scalar headers other than
    # kubectl's | and |- at the end of a line (folding and keeping trailing lines: not ours)
    r"[!&*%@`?~,\]}:>]|\|(?!-?[ ]*$)|\[(?!\][ ]*$)|\{(?!\}[ ]*$)",
    # plain scalars YAML 1.1 resolves where YAML 1.2 (rapidyaml's JSON) does not
    r"(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|True|TRUE|False|FALSE|Null|NULL|<<|=)" + _END,
    r"[+]|-\.|\.(?:inf|Inf|INF|nan|NaN|NAN)" + _END,
    r"-?\.?(?:[iI][nN][fF]|[nN][aA][nN])",  # rapidyaml writes inf, nan, ... as .inf, .nan
    # quoted scalars: on more than one line, or followed by more than a key's colon (rapidyaml
    # reads `'a' b` where libyaml refuses it)
    r"'(?:[^'\n]|'')*+(?:$|'(?![ ]*(?:$|:[ ]|:$)))|\"[^\"\n]*+(?:$|\"(?![ ]*(?:$|:[ ]|:$)))",
    r"[0-9]{4}-[0-9][0-9]?-[0-9][0-9]?(?:[ Tt]|" + _END + r")",  # timestamps
    # PyYAML's ints and floats other than JSON's numbers (the parse_int/parse_float hooks resolve
    # those as PyYAML does)
    r"(?!-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?" + _END + r")(?:"
    r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
    r"|[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*)" + _END,
])
_GUARDS = [
    # a token at the start of a line; keys PyYAML reads as something else than a string (JSON's
    # keys are strings)
    re.compile(r"\n *+(?:- +)*+" + _FIRST + "(?:" + _BAD
               + r"|(?:[-+]?\.?[0-9][^\n]*?|true|false|null)[ ]*:(?:[ ]|$))", re.M),
    re.compile(r": ++" + _FIRST + "(?:" + _BAD + ")", re.M),  # a token after ": "
    # document markers; deep nesting (MAX_DEPTH is checked by the reference reader only)
    re.compile(r"\n(?:---|\.\.\.)(?:[ ]|$)|\n[ -]{80}", re.M),
]
_PLAIN_BYTES = b"\n" + bytes(c for c in range(0x20, 0x7F) if c != 0x5C) + bytes(range(0x80, 0x100))
"""Bytes that need no closer look: not tabs, control characters, backslashes (escapes: either
reader may refuse one the other reads)."""
_ODD = re.compile(r"[^\n -~\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\\\u2028\u2029\ufeff]")
"""The same, characters libyaml refuses or takes for a line break, a byte order mark."""
_COMMENT = re.compile(r"(?:^|[ ])#", re.M)


_LITERAL = re.compile(r"(?:: +|^[ ]*(?:- +)+)\|-?[ ]*\n", re.M)
"""The header of a literal block scalar (``key: |``, ``- |-``; kubectl writes a string with line
breaks so, e.g. ``last-applied-configuration``): its lines are text, the same to both readers."""
_PREFIX = re.compile(r"[ -]*")
_BLANKS = re.compile(r"(?:([ ]*)\n)*([ ]*)(?=[^ \n])")
_LESS_INDENTED: dict[int, re.Pattern[str]] = {}


def _literal_blocks(text: str, lo: int, hi: int) -> tuple[list[tuple[int, int]], int | None]:
    """The content lines of the literal block scalars in text[lo:hi], as (start, end) spans whose
    guard hits do not count, and where the first header is whose block is not plain text to
    both readers (blank lines before it with more spaces than its first line: libyaml refuses
    them), or None."""
    spans: list[tuple[int, int]] = []
    pos = lo
    while (m := _LITERAL.search(text, pos, hi)) is not None:
        start = m.end()
        line = text.rfind("\n", 0, m.start()) + 1
        prefix = _PREFIX.match(text, line, text.index("|", m.start())).end()
        # the parent's indentation, or more: the key's column (``key: |``), one past the dash's
        # (``- |``); a first line indented no deeper than that is not the block's
        column = prefix - line if text[m.start()] == ":" else text.rindex("-", line, prefix) + 1 - line
        first = _BLANKS.match(text, start, hi)
        if first is None:  # the item ends with it: an empty block
            pos = start
            continue
        indent = len(first.group(2))
        if indent <= column:  # empty: the next line is not its content
            pos = start
            continue
        if any(len(b) > indent for b in text[start:first.start(2)].split("\n")):
            return spans, m.start()
        less = _LESS_INDENTED.get(indent)
        if less is None:
            less = _LESS_INDENTED.setdefault(indent, re.compile(r"\n {0,%d}(?=[^ \n])" % (indent - 1)))
        end_m = less.search(text, start - 1, hi)
        end = end_m.start() if end_m is not None else hi
        spans.append((start, end))
        pos = end
    return spans, None


def _first_outside(pattern: re.Pattern[str], text: str, lo: int, hi: int, spans: list[tuple[int, int]]) -> int | None:
    """Where ``pattern`` first matches in text[lo:hi] (a line's start for a match of its newline)
    outside ``spans``."""
    pos, k = lo, 0
    while (m := pattern.search(text, pos, hi)) is not None:
        at = m.start() + (text[m.start()] == "\n")
        while k < len(spans) and spans[k][1] <= at:
            k += 1
        if k == len(spans) or at < spans[k][0]:
            return at
        pos = spans[k][1]
    return None


def _guard(text: str, lo: int, hi: int, data: bytes) -> int | None:
    """Where in text[lo:hi] (whole lines, after a newline; ``data`` its UTF-8) the first thing is
    that rapidyaml may read otherwise than the reference reader (not necessarily the first such
    thing). The lines of literal block scalars are text to both: only the characters libyaml
    refuses count there."""
    spans, bad = _literal_blocks(text, lo, hi) if data.find(b"|") >= 0 else ([], None)
    hits = [at for g in _GUARDS if (at := _first_outside(g, text, lo - 1, hi, spans)) is not None]
    if bad is not None:
        hits.append(bad)
    if data.translate(None, _PLAIN_BYTES) or not data.isascii():
        odd = _ODD.search(text, lo, hi)  # in block scalars too
        if odd is not None:
            hits.append(odd.start())
    if data.find(b"#") >= 0:
        at = _first_outside(_COMMENT, text, lo, hi, spans)
        if at is not None:
            hits.append(at)
    return min(hits) if hits else None


def _cut_list(text: str) -> tuple[str, str, list[int], int] | None:
    """A ``kubectl get -o yaml`` List cut at C speed: (the text before its ``items:`` key, the
    text after its items, where each item starts, where the last one ends). None for anything
    else."""
    if "\r" in text or text.startswith("\ufeff"):
        return None
    if text.startswith("items:"):
        m, key = _ITEMS_KEY.match("\n" + text[:200]), 0
        start = m.end() - 1 if m else 0
    else:
        m = _ITEMS_KEY.search(text)
        key, start = (m.start() + 1, m.end()) if m else (0, 0)
    if m is None or _ITEMS_KEY.search(text, start - 1) is not None:
        return None
    indent = _SPACES.match(text, start).end() - start
    pad = " " * indent
    if not text.startswith(pad + "- ", start):
        return None
    if indent == 0:  # kubectl's style: the items' dashes at column 0
        end_m = _ITEMS_END_0.search(text, start - 1)
    else:
        end_m = _ITEMS_END.search(text, start - 1)
    end = end_m.start() + 1 if end_m else len(text)
    # lines less indented than the items, or as indented and not an item, are not ours to read
    if indent and re.compile(r"^(?: {0,%d}[^ \n]|%s(?![ \n]|-[ \n]|-$))" % (indent - 1, pad), re.M).search(text, start, end):
        return None
    starts = [i.start() + 1 for i in re.compile(r"\n%s-(?: |$)" % pad, re.M).finditer(text, start - 1, end)]
    head, tail = text[:key], text[end:]
    for part in (head, tail):
        for line in part.split("\n"):
            if line and not line.startswith(" ") and not _KEY_LINE.fullmatch(line):
                return None
    return head, tail, starts, end


def _hook(token: str) -> Any:
    """A number rapidyaml wrote into its JSON, as PyYAML resolves the same plain scalar."""
    try:
        out = _plain(token)
    except (ValueError, yaml.YAMLError):  # too many digits: the reference reader says so
        raise _Doubt(token) from None
    if type(out) not in (str, int, float):
        raise _Doubt(token)
    return out


_RYML_JSON = json.JSONDecoder(parse_int=_hook, parse_float=_hook, parse_constant=_no_constant)


class _Quiet:
    """stderr (fd 2) sent to /dev/null: rapidyaml prints its parse errors there before raising."""

    def __enter__(self) -> None:
        self.saved: int | None = None
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except OSError:
            pass

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)


def _ryml_items(chunk: bytes) -> list[Any]:
    """The values of a block sequence's text (some items of the List), read by rapidyaml and
    Python's JSON scanner, scalars resolved as PyYAML does; _Doubt if either refuses it."""
    try:
        with _Quiet():
            tree = _ryml.parse_in_arena(chunk)
        out = _RYML_JSON.decode(_ryml.emit_json_malloc(tree, tree.root_id()))
    except _Doubt:
        raise
    except Exception as err:  # noqa: BLE001 - rapidyaml's errors, JSON's, numbers
        raise _Doubt(str(err)) from None
    if type(out) is not list:
        raise _Doubt("not a sequence")
    return out


def _reference_item(chunk: str, where: str, i: int) -> list[tuple[Any, str]]:
    """One item read by the reference reader, alone (as the whole text would read it)."""
    inner = f"{where} items[0]"
    try:
        got = list(_iter_documents("kind: List\nitems:\n" + chunk, where))
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # InputError is a ValueError
        raise _Doubt(str(err)) from None
    out = []
    for obj, w in got:
        if not w.startswith(inner):
            raise _Doubt(w)
        out.append((obj, f"{where} items[{i}]{w[len(inner):]}"))
    return out


def _iter_yaml_fast(text: str, where: str, cut: tuple[str, str, list[int], int]) -> Iterator[tuple[Any, str]]:
    """The items of a one-document YAML List (``kubectl get -o yaml``), as ``_iter_documents``
    gives them: consecutive items rapidyaml can be trusted with read by it in batches, any other
    item by the reference reader alone; the text without its items by the reference reader too.
    _Doubt when any of it is not certain (then the reference reader reads the whole text)."""
    head, tail, starts, end = cut
    try:  # the List itself: as the reference reader reads it, its items apart
        if list(_iter_documents(head + "items: []\n" + tail, where)):
            raise _Doubt("not a List")
        for part in (head, tail):  # each whole on its own: no scalar runs from one into the other
            for _ in _events(part):
                pass
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise _Doubt(str(err)) from None
    bounds = starts + [end]
    n = len(starts)
    i = 0
    while i < n:
        # the longest run of items from i within the batch size that the guard lets through
        j = i + 1
        while j < n and bounds[j + 1] - bounds[i] <= _FAST_BATCH:
            j += 1
        data = text[bounds[i]:bounds[j]].encode()
        hit = _guard(text, bounds[i], bounds[j], data)
        if hit is not None:
            j = bisect.bisect_right(bounds, hit) - 1  # the item holding it
            data = text[bounds[i]:bounds[j]].encode()
        if j > i:
            values = _ryml_items(data)
            if len(values) != j - i:
                raise _Doubt("items miscounted")
            for k, value in enumerate(values):
                FAST_ITEMS["fast"] += 1
                yield from _flatten(value, f"{where} items[{i + k}]")
            i = j
            continue
        FAST_ITEMS["reference"] += 1
        yield from _reference_item(text[bounds[i]:bounds[i + 1]], where, i)
        i += 1


POLICY_MAX_VALUES = 100_000
"""Most values a policy file may stand for, its aliases expanded (a MemoryPolicy has ~50)."""


def read_documents(text: str, where: str) -> list[Any]:
    """Every object of a policy file. Unlike a snapshot it may use anchors and aliases, as
    ``kubectl apply`` accepts them: libyaml's safe loader keeps an alias a shared reference, and
    what the aliases expand to is counted once, bounded, before anything else walks it (as
    Kubernetes' YAML decoding bounds it since CVE-2019-11253)."""
    try:
        docs = list(yaml.load_all(text, Loader=_CLoader or yaml.SafeLoader))
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise _input_error(err, where) from None
    budget = POLICY_MAX_VALUES
    stack: list[Any] = list(docs)
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            raise InputError(f"{where}: stands for more than {POLICY_MAX_VALUES} values once its YAML "
                             "aliases are expanded")
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return [obj for d, doc in enumerate(docs)
            for obj, _ in _flatten(doc, where if d == 0 else f"{where} (document {d + 1})")]


def load_files(paths: Iterable[str]) -> Snapshot:
    snap = Snapshot()
    for path in paths:
        where = "<stdin>" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as err:
            raise InputError(f"{where}: cannot read: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise InputError(f"{where}: not UTF-8 text") from None
        for obj, obj_where in iter_documents(text, where):
            snap.add(obj, obj_where)
    return snap


def load_policy(path: str) -> dict[str, Any]:
    where = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as err:
        raise InputError(f"{where}: cannot read: {err.strerror or err}") from None
    docs = [d for d in read_documents(text, where) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise InputError(f"{where}: expected exactly one MemoryPolicy object, found {len(docs)} documents")
    return docs[0]


def load_live(kubeconfig: str | None = None, context: str | None = None) -> Snapshot:
    """Read namespaces, nodes, pods and OOM events from the cluster of the kubeconfig (or, without
    one, in-cluster): what the operator watches (``core.sources.SOURCES``: the same paths,
    server-side filters and conversions), the way it fills its caches: one watch stream per
    resource (``sendInitialEvents``) where the API server offers it, else paged LISTs; all at once."""
    import aiohttp  # the live path only
    from kubernetes import client, config

    from .shell.reflector import ApiError

    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    except Exception as err:  # noqa: BLE001 - config errors come in many types
        try:
            config.load_incluster_config(client_configuration=cfg)
        except Exception:  # noqa: BLE001
            raise InputError(f"kubeconfig: {err}") from None
    # Millions of small acyclic objects: the cyclic GC would only scan them again and again.
    gc.disable()
    snap = Snapshot()
    try:
        # The coroutine fills `snap` and returns None: Python 3.11's asyncio.run formats the repr of
        # its main task, result included, when it restores the SIGINT handler (signal.getsignal
        # builds a ValueError naming the handler, a partial bound to that task): 200 MB of text
        # at 150,000 pods.
        asyncio.run(_read_live(cfg, snap))
        return snap
    except ApiError as err:
        raise InputError(f"cluster: {err}") from None
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as err:
        raise InputError(f"cluster: cannot connect: {err or type(err).__name__}") from None
    finally:
        gc.enable()


async def _read_live(cfg: Any, snap: Snapshot) -> None:
    """One read of each of ``core.sources.SOURCES``: the operator's caches hold the same."""
    from .core import sources
    from .shell.reflector import ApiSession, fill_once

    api = ApiSession(cfg)
    try:
        stores = await asyncio.gather(*(fill_once(api, s.path, s.convert, field_selector=s.field_selector)
                                        for s in sources.SOURCES))
    finally:
        await api.close()
    read = {s.name: store for s, store in zip(sources.SOURCES, stores, strict=True)}

    def infos(source: sources.Source) -> list[Any]:
        return [info for _, values in read[source.name].items() for info in values]

    snap.namespaces = {name: dict(labels) for name, values in read[sources.NAMESPACES.name].items()
                       for labels in values}
    snap.nodes, snap.pods, snap.events = infos(sources.NODES), infos(sources.PODS), infos(sources.OOM_EVENTS)
