"""List+watch caches of small tuples, for Pods, Nodes, Events and Namespaces.

kopf gives every object event its own worker, Body wrappers, loggers and handler invocation:
about 10 ms of CPU per Pod on our machines, so 150,000 Pods take longer to sync than the
operator may (docs/benchmarks.md). A Reflector does what client-go's does, and no more: it
LISTs a resource in pages, then WATCHes it from the list's resourceVersion (with bookmarks),
and lists again after 410 Gone; each object is converted at once to the core's small tuple and
kept per bucket (node name). Read-only: GET requests only. kopf still watches the
MemoryPolicies (``shell/operator.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from ..core.snapshot import TimeFormatError, parse_time
from .api import ApiError, ApiSession, status_message, unreachable
from . import metrics

log = logging.getLogger("memory_hygiene.reflector")

Convert = Callable[[dict], "tuple[str, Any] | None"]
"""An object to (bucket, tuple), or None to keep nothing of it. May raise ValueError."""


class Buckets:
    """bucket -> {object key -> tuple}: what the engine reads (``ClusterView``)."""

    def __init__(self) -> None:
        self.by_bucket: dict[str, dict[str, Any]] = {}
        self.where: dict[str, str] = {}

    def values(self, bucket: str) -> Iterable[Any]:
        d = self.by_bucket.get(bucket)
        return list(d.values()) if d else ()

    def first(self, bucket: str) -> Any:
        d = self.by_bucket.get(bucket)
        return next(iter(d.values())) if d else None

    def buckets(self) -> Iterable[str]:
        return self.by_bucket.keys()

    def items(self) -> Iterator[tuple[str, Iterable[Any]]]:
        return ((k, d.values()) for k, d in self.by_bucket.items())

    def __len__(self) -> int:
        return len(self.where)

    def put(self, key: str, bucket: str, info: Any) -> str | None:
        """Store; returns the bucket the object was in before, if any."""
        old = self.where.get(key)
        if old is not None and old != bucket:
            self._drop(key, old)
        self.by_bucket.setdefault(bucket, {})[key] = info
        self.where[key] = bucket
        return old

    def remove(self, key: str) -> str | None:
        old = self.where.pop(key, None)
        if old is not None:
            self._drop(key, old)
        return old

    def _drop(self, key: str, bucket: str) -> None:
        d = self.by_bucket.get(bucket)
        if d is not None:
            d.pop(key, None)
            if not d:
                del self.by_bucket[bucket]


INITIAL_EVENTS_END = "k8s.io/initial-events-end"


MIN_RETRY_SECONDS = 0.25


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


class WatchListUnsupported(Exception):
    """The API server cannot stream the initial state (``sendInitialEvents``): list instead."""


class Reflector:
    """One resource's LIST+WATCH into a ``Buckets``; ``on_change(old_bucket, new_bucket)`` is
    called for every change, and ``synced`` is set once the initial state is complete.

    ``watch_list``: get the initial state as a watch stream (``sendInitialEvents=true``, what
    client-go calls WatchList: served from the API server's watch cache, one object at a time,
    no pages held in memory), falling back to the paged LIST for good the first time the server
    refuses it (it needs etcd >= 3.5.13 / 3.4.31 and the WatchList feature)."""

    def __init__(self, api: ApiSession, path: str, *, convert: Convert, store: Buckets,
                 on_change: Callable[[str | None, str | None], None], field_selector: str | None = None,
                 chunk: int = 500, watch_timeout: int = 300, watch_list: bool = False) -> None:
        self.api, self.path = api, path
        self.convert, self.store, self.on_change = convert, store, on_change
        self.field_selector, self.chunk, self.watch_timeout = field_selector, chunk, watch_timeout
        self.watch_list = watch_list
        self.resource = path.rstrip("/").rsplit("/", 1)[-1]
        self.synced = asyncio.Event()
        self.stale_since: float | None = None
        """time.monotonic() since when the cache is not being kept up to date (its watch failed
        and the list again has not completed); None while it is."""

    def _params(self, **extra: str) -> dict[str, str]:
        if self.field_selector:
            extra["fieldSelector"] = self.field_selector
        return extra

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                if self.watch_list:
                    try:
                        rv = await self._watch("", initial=True)
                    except WatchListUnsupported as err:
                        log.info("%s: the API server does not stream initial events (%s); listing in pages",
                                 self.path, err)
                        self.watch_list = False
                        continue
                else:
                    rv = await self._list()
                    self.synced.set()
                self.stale_since = None
                delay = 0.5
                while rv:
                    rv = await self._watch(rv)
                metrics.WATCH_RESTARTS.labels(resource=self.resource).inc()  # 410 Gone: list again
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure: list again after a pause
                metrics.WATCH_RESTARTS.labels(resource=self.resource).inc()
                if self.stale_since is None:
                    self.stale_since = time.monotonic()
                if unreachable(err):
                    # The API server is down or not ready: list again as soon as a probe says it
                    # is back (within PROBE_SECONDS), not when a backoff grown meanwhile ends.
                    log.warning("%s: %s; listing again when the API server answers (at most %.1fs)", self.path,
                                _describe(err), delay)
                    self.api.mark_down()
                    await asyncio.sleep(min(delay, MIN_RETRY_SECONDS))
                    await self.api.wait_up(delay)
                else:
                    log.warning("%s: %s; listing again in %.1fs", self.path, _describe(err), delay)
                    await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def fill(self) -> None:
        """The current state, once, and no watching on (the one-shot audit): the watch list where
        the API server offers it, else paged LISTs. Any failure raises."""
        if self.watch_list:
            try:
                await self._watch("", initial=True, then_stop=True)
            except WatchListUnsupported as err:
                log.info("%s: the API server does not stream initial events (%s); listing in pages",
                         self.path, err)
                self.watch_list = False
            else:
                if not self.synced.is_set():  # 410 Gone before the end bookmark
                    raise ApiError(f"WATCH {self.path}: 410 Gone before the end of the initial events")
                return
        await self._list()
        self.synced.set()

    async def _list(self) -> str:
        seen: set[str] = set()
        # Pages of `chunk` objects, read from etcd. Not resourceVersion=0 (client-go's way to read
        # from the watch cache): this API server then ignores the limit and sends every object in
        # one response (measured: 150,000 pods, 552 MB, 52 s, all of it in memory at once).

        def page(cont: str | None) -> asyncio.Task[tuple[int, Any]]:
            params = self._params(limit=str(self.chunk)) if self.chunk else self._params()
            if cont:
                params["continue"] = cont
            return asyncio.ensure_future(self.api.get_json(self.path, params))

        rv, cont = "", None
        pending = page(None)
        while pending is not None:
            status, body = await pending
            pending = None
            if status == 410 and cont:  # the continue token expired: start over
                rv, cont = "", None
                seen.clear()
                pending = page(None)
                continue
            if status != 200:
                raise ApiError(f"LIST {self.path}: HTTP {status}: {status_message(body)}", status)
            meta = body.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            cont = meta.get("continue")
            if cont:  # fetch the next page while this one is converted
                pending = page(cont)
            for obj in body.get("items") or []:
                key = self._apply(obj)
                if key:
                    seen.add(key)
            del body
        self._forget_unseen(seen)
        return rv

    def _forget_unseen(self, seen: set[str]) -> None:
        for key in [k for k in self.store.where if k not in seen]:  # gone while we were not watching
            self.on_change(self.store.remove(key), None)

    @staticmethod
    def _key(obj: dict) -> str:
        meta = obj.get("metadata") or {}
        return meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def _apply(self, obj: dict) -> str | None:
        metrics.WATCH_EVENTS.labels(resource=self.resource).inc()
        key = self._key(obj)
        try:
            conv = self.convert(obj)
        except ValueError as err:
            log.warning("%s %s left out: %s", self.resource, key, err)
            conv = None
        if conv is None:
            old = self.store.remove(key)
            if old is not None:
                self.on_change(old, None)
            return None
        bucket, info = conv
        old = self.store.put(key, bucket, info)
        self.on_change(old, bucket)
        return key

    def _observe_delay(self, obj: dict) -> None:
        try:
            created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
        except TimeFormatError:
            return
        if created is not None:
            metrics.WATCH_DELAY.labels(resource=self.resource).observe(max(0.0, time.time() - created))

    async def _watch(self, rv: str, initial: bool = False, then_stop: bool = False) -> str:
        """Watch until the server ends the stream; the resourceVersion to go on from, or "" when
        the cache must be listed again (410 Gone; a stream of initial events cut short raises).

        ``initial``: ask for the current state first (``sendInitialEvents``); its end is a
        bookmark annotated ``k8s.io/initial-events-end``, after which ``synced`` is set (and,
        with ``then_stop``, the stream is closed)."""
        if initial:
            params = self._params(watch="1", allowWatchBookmarks="true", sendInitialEvents="true",
                                  resourceVersionMatch="NotOlderThan", timeoutSeconds=str(self.watch_timeout))
        else:
            params = self._params(watch="1", allowWatchBookmarks="true", resourceVersion=rv,
                                  timeoutSeconds=str(self.watch_timeout))
        seen: set[str] = set()
        async with self.api.stream(self.path, params) as r:
            if r.status == 410:
                return ""
            if r.status != 200:
                # (a 500 is how a real API server refuses it: docs/benchmarks.md; 503/429: not ready, busy)
                if initial and r.status not in (429, 503):
                    raise WatchListUnsupported(f"HTTP {r.status}: {(await r.text())[:200]}")
                raise ApiError(f"WATCH {self.path}: HTTP {r.status}", r.status)
            async for line in r.content:
                if not line.strip():
                    continue
                ev = orjson.loads(line)
                obj = ev.get("object") or {}
                kind = ev.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return ""
                    if initial:
                        raise WatchListUnsupported(str(obj.get("message") or obj)[:200])
                    raise ApiError(f"WATCH {self.path}: {obj.get('message') or obj}")
                meta = obj.get("metadata") or {}
                rv = meta.get("resourceVersion") or rv
                if kind == "BOOKMARK":
                    if initial and (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                        self._forget_unseen(seen)
                        initial, seen = False, set()
                        self.synced.set()
                        self.stale_since = None  # up to date, and watching on
                        if then_stop:
                            return rv
                    continue
                if initial:
                    if kind == "ADDED":  # the current state, one object at a time
                        key = self._apply(obj)
                        if key:
                            seen.add(key)
                        continue
                if kind == "ADDED":
                    self._observe_delay(obj)
                if kind == "DELETED":
                    metrics.WATCH_EVENTS.labels(resource=self.resource).inc()
                    old = self.store.remove(self._key(obj))
                    if old is not None:
                        self.on_change(old, None)
                else:
                    self._apply(obj)
        if initial:  # list again, after the usual pause
            raise ApiError(f"WATCH {self.path}: the stream of initial events ended before its end bookmark")
        return rv


async def fill_once(api: ApiSession, path: str, convert: Convert, *, field_selector: str | None = None,
                    chunk: int = 500, watch_list: bool = True) -> Buckets:
    """Every object of one resource, converted and kept per bucket as a reflector keeps them,
    for a one-shot reader; what ``convert`` keeps nothing of (or refuses, logged) is left out."""
    store = Buckets()
    await Reflector(api, path, convert=convert, store=store, on_change=lambda old, new: None,
                    field_selector=field_selector, chunk=chunk, watch_list=watch_list).fill()
    return store


async def read_once(api: ApiSession, path: str, convert: Convert, *, field_selector: str | None = None,
                    chunk: int = 500, watch_list: bool = True) -> list[Any]:
    """``fill_once``'s tuples, without their buckets."""
    store = await fill_once(api, path, convert, field_selector=field_selector, chunk=chunk, watch_list=watch_list)
    return [info for _, infos in store.items() for info in infos]
