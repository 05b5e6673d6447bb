"""Reading cluster objects: from snapshot files (YAML/JSON) or from the live API, into the core's
plain data. This is shell, not core: it does I/O."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .core.events import OOM_REASONS, oom_event_info
from .core.snapshot import node_info, parse_time, pod_info
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
        except ValueError as err:
            raise InputError(f"{where}: {err}") from None
        for cond in ((obj.get("status") or {}).get("conditions") or []) if kind == "Node" else []:
            self._saw(_safe_time(cond.get("lastTransitionTime")))

    def _saw(self, t: float | None) -> None:
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


def read_documents(text: str, where: str) -> list[Any]:
    """YAML (one or many documents) or JSON, as Python data."""
    try:
        return [d for d in yaml.safe_load_all(text)]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{where}: not valid YAML or JSON{at}: {problem}") from None


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
        for d, doc in enumerate(read_documents(text, where)):
            for obj, obj_where in _flatten(doc, f"{where}" if d == 0 else f"{where} (document {d + 1})"):
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
