"""Reading cluster objects: from snapshot files (YAML/JSON) or from the live API, into the core's
plain data. This is shell, not core: it does I/O."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .core.events import OOM_REASONS, oom_event_info
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


def _scalar(ev: yaml.ScalarEvent) -> Any:
    """A scalar as PyYAML's safe loader makes it (YAML 1.1 plain-scalar resolution: kubectl's
    unquoted ``true``, ``8080``, ``null``)."""
    if ev.tag in (None, "!"):
        if not ev.implicit[0]:  # quoted
            return ev.value
        tag = _RESOLVER.resolve(yaml.ScalarNode, ev.value, ev.implicit)
    else:
        tag = ev.tag
    if tag == "tag:yaml.org,2002:str":
        return ev.value
    if tag not in _SCALARS:
        raise yaml.constructor.ConstructorError(None, None, f"the tag {tag} is not accepted in snapshots", ev.start_mark)
    node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark)
    return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)


def _events(text: str) -> Iterator[Any]:
    if _CLoader is not None:
        return yaml.parse(text, Loader=_CLoader)
    return yaml.parse(text, Loader=yaml.SafeLoader)


def iter_documents(text: str, where: str) -> Iterator[tuple[Any, str]]:
    """The objects of YAML (one or many documents) or JSON text, one at a time: a document, or
    each item of a document's top-level ``items`` (a ``kubectl get -o yaml`` List) as soon as it
    is read, so a 50 MB dump never stands in memory whole. Built from the parser's events, like
    PyYAML's safe loader, except:

    * aliases are refused: an alias makes one node a value in many places, and a document under
      1 KB can then stand for billions of values to whoever walks it (the "billion laughs";
      Kubernetes' own YAML decoding bounds alias expansion since CVE-2019-11253). ``kubectl``
      never writes anchors;
    * nesting deeper than MAX_DEPTH and tags other than the plain scalar ones are refused.

    Any problem: InputError naming ``where`` and the line."""
    try:
        yield from _iter_documents(text, where)
    except InputError:
        raise
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{where}: not valid YAML or JSON{at}: {problem}") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{where}: not a usable number: {str(err).split(';')[0]}") from None


def _iter_documents(text: str, where: str) -> Iterator[tuple[Any, str]]:
    # Each frame: [container, key or _NO_KEY]; a mapping's frame holds the key awaiting its value.
    no_key = object()
    stack: list[list[Any]] = []
    doc_index = -1
    doc: Any = None
    streamed = 0  # items of this document already given out

    def doc_where() -> str:
        return where if doc_index == 0 else f"{where} (document {doc_index + 1})"

    def streaming(depth: int) -> bool:
        # the top-level items sequence: root mapping (frame 0) -> key "items" -> sequence (frame 1)
        return depth == 1 and isinstance(stack[0][0], dict) and stack[0][1] == "items" and isinstance(stack[1][0], list)

    def add(value: Any) -> Iterator[tuple[Any, str]]:
        nonlocal doc, streamed
        if not stack:
            doc = value
            return
        frame = stack[-1]
        container = frame[0]
        if isinstance(container, list):
            if streaming(len(stack) - 1):
                i = streamed
                streamed += 1
                yield from _flatten(value, f"{doc_where()} items[{i}]")
                return
            container.append(value)
        elif frame[1] is no_key:
            if isinstance(value, (dict, list)):
                raise InputError(f"{where}: a mapping key that is not a scalar at line {mark.line + 1}")
            frame[1] = value
        else:
            container[frame[1]] = value
            frame[1] = no_key

    mark: Any = None
    for ev in _events(text):
        mark = ev.start_mark
        if isinstance(ev, yaml.ScalarEvent):
            yield from add(_scalar(ev))
        elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if ev.tag not in (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
                raise InputError(f"{where}: the tag {ev.tag} is not accepted in snapshots at line {mark.line + 1}")
            if len(stack) >= MAX_DEPTH:
                raise InputError(f"{where}: nested more than {MAX_DEPTH} deep at line {mark.line + 1}")
            stack.append([{} if isinstance(ev, yaml.MappingStartEvent) else [], no_key])
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            container = stack.pop()[0]
            yield from add(container)
        elif isinstance(ev, yaml.AliasEvent):
            raise InputError(f"{where}: YAML aliases (*{ev.anchor}) are not accepted in snapshots "
                             f"at line {mark.line + 1}")
        elif isinstance(ev, yaml.DocumentStartEvent):
            doc_index += 1
            doc, streamed = None, 0
        elif isinstance(ev, yaml.DocumentEndEvent):
            if streamed:
                kind = doc.get("kind") if isinstance(doc, dict) else None
                if not (isinstance(kind, str) and kind.endswith("List")):
                    raise InputError(f"{doc_where()}: items outside a List (kind {kind!r})")
            else:
                yield from _flatten(doc, doc_where())
        if getattr(ev, "anchor", None) is not None and not isinstance(ev, yaml.AliasEvent):
            raise InputError(f"{where}: YAML anchors (&{ev.anchor}) are not accepted in snapshots "
                             f"at line {mark.line + 1}")


def read_documents(text: str, where: str) -> list[Any]:
    """Every object of YAML or JSON text, as :func:`iter_documents` reads them (a policy file)."""
    return [obj for obj, _ in iter_documents(text, where)]


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
    one, in-cluster), the way the operator fills its caches: one watch stream per resource
    (``sendInitialEvents``) where the API server offers it, else paged LISTs; all at once."""
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
    from .shell.reflector import ApiSession, read_once

    def keep(convert: Any) -> Any:
        return lambda obj: ("", convert(obj))

    def event(obj: dict[str, Any]) -> tuple[str, OOMEventInfo] | None:
        info = oom_event_info(obj)
        return None if info is None else ("", info)

    def namespace(obj: dict[str, Any]) -> tuple[str, tuple[str, dict[str, str]]]:
        meta = obj.get("metadata") or {}
        return "", (meta.get("name") or "", dict(meta.get("labels") or {}))

    api = ApiSession(cfg)
    try:
        namespaces, nodes, pods, *events = await asyncio.gather(
            read_once(api, "/api/v1/namespaces", namespace),
            read_once(api, "/api/v1/nodes", keep(node_info)),
            read_once(api, "/api/v1/pods", keep(pod_info)),
            *(read_once(api, "/api/v1/events", event, field_selector=f"reason={reason}") for reason in OOM_REASONS),
        )
    finally:
        await api.close()
    snap.namespaces = dict(namespaces)
    snap.nodes, snap.pods, snap.events = nodes, pods, [e for es in events for e in es]
