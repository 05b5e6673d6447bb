"""The reflector against a small fake API server on loopback: paged LIST, WATCH (with bookmarks,
deletions, moves between buckets), 410 Gone -> LIST again, and what vanished meanwhile."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from aiohttp import web

from memory_hygiene.shell import metrics
from memory_hygiene.shell.reflector import ApiError, ApiSession, Buckets, Reflector, read_once


def pod(uid: str, node: str, rv: int) -> dict:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "ns", "resourceVersion": str(rv)},
            "spec": {"nodeName": node}}


class FakeApi:
    """Serves /api/v1/pods: pages of 2, and one scripted watch stream per connection."""

    def __init__(self, objects: list[dict] | list[list[dict]], watches: list[list[dict]]) -> None:
        # one list of objects for every LIST, or a list of them: what the n-th LIST returns
        self.snapshots = objects if objects and isinstance(objects[0], list) else [objects]
        self.watches = watches
        self.lists = 0
        self.params: list[dict] = []
        self.encodings: set[str | None] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.params.append(q)
        self.encodings.add(request.headers.get("Accept-Encoding"))
        if q.get("watch") == "1":
            resp = web.StreamResponse()
            await resp.prepare(request)
            events = self.watches.pop(0) if self.watches else []
            for ev in events:
                await resp.write((json.dumps(ev) + "\n").encode())
            if not self.watches and not events:
                await asyncio.sleep(30)  # the last stream stays open, as a quiet watch does
            return resp
        start = int(q.get("continue") or 0)
        if start == 0:
            self.lists += 1
        objects = self.snapshots[min(self.lists, len(self.snapshots)) - 1]
        limit = int(q.get("limit") or len(objects))
        page = objects[start:start + limit]
        cont = str(start + limit) if start + limit < len(objects) else None
        return web.json_response({"items": page, "metadata": {"resourceVersion": "100", "continue": cont}})


async def serve(api: FakeApi):
    app = web.Application()
    app.router.add_get("/api/v1/pods", api.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def session_for(server: str) -> ApiSession:
    cfg = SimpleNamespace(ssl_ca_cert=None, cert_file=None, key_file=None, verify_ssl=True, host=server,
                          get_api_key_with_prefix=lambda *_: None)
    return ApiSession(cfg)


async def until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_list_watch_relist():
    async def go():
        objects = [pod("a", "n1", 1), pod("b", "n1", 2), pod("c", "n2", 3), pod("gone", "n3", 4)]
        watches = [
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "101"}}},
             {"type": "MODIFIED", "object": pod("b", "n2", 102)},       # moved: n1 -> n2
             {"type": "ADDED", "object": {**pod("d", "", 103), "metadata": {
                 **pod("d", "", 103)["metadata"], "creationTimestamp": "2001-01-01T00:00:00Z"}}},  # unscheduled
             {"type": "DELETED", "object": pod("a", "n1", 104)},
             {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}],
        ]
        # after the 410, the second LIST no longer has "gone" (deleted while we were not watching)
        relisted = [pod("b", "n2", 105), pod("c", "n2", 106), pod("d", "", 107)]
        api = FakeApi([objects, relisted], watches)
        runner, server = await serve(api)
        store, changes = Buckets(), []
        session = session_for(server)
        refl = Reflector(session, "/api/v1/pods", store=store, chunk=2, field_selector="status.phase!=Succeeded",
                         convert=lambda o: (o["spec"]["nodeName"], o["metadata"]["uid"]),
                         on_change=lambda old, new: changes.append((old, new)))
        before = metrics.WATCH_RESTARTS.labels(resource="pods")._value.get()
        delays = metrics.WATCH_DELAY.labels(resource="pods")
        added_before = next(s.value for s in delays.collect()[0].samples if s.name.endswith("_count"))
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        await until(lambda: api.lists == 2 and len(store) == 3)
        assert sorted(store.values("n2")) == ["b", "c"] and list(store.values("")) == ["d"]
        assert (None, "n1") in changes[:4], "the first LIST filled n1"
        assert store.first("n1") is None and "n3" not in store.buckets()
        assert (None, "n1") in changes and ("n1", "n2") in changes and ("n1", None) in changes
        assert ("n3", None) in changes, "vanished between LISTs: reported gone"
        assert metrics.WATCH_RESTARTS.labels(resource="pods")._value.get() - before == 1
        samples = {s.name: s.value for s in delays.collect()[0].samples if not s.labels.get("le")}
        assert samples["memory_hygiene_watch_delay_seconds_count"] - added_before == 1, "one ADDED watch event"
        assert samples["memory_hygiene_watch_delay_seconds_sum"] > 1e6, "created in 2001: a delay of years"
        lists = [p for p in api.params if p.get("watch") != "1"]
        watch = next(p for p in api.params if p.get("watch") == "1")
        assert lists[0]["limit"] == "2" and lists[1]["continue"] == "2"
        assert not any("resourceVersion" in p for p in lists), "consistent LISTs, in pages"
        assert all(p["fieldSelector"] == "status.phase!=Succeeded" for p in api.params)
        assert watch["resourceVersion"] == "100" and watch["allowWatchBookmarks"] == "true"
        assert api.encodings == {"identity"}, "no gzip: it costs both ends CPU on a cluster network"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


def test_bad_objects_are_left_out_not_fatal():
    async def go():
        api = FakeApi([pod("a", "n1", 1), pod("bad", "n1", 2)], [])
        runner, server = await serve(api)
        store = Buckets()
        session = session_for(server)

        def convert(o):
            if o["metadata"]["uid"] == "bad":
                raise ValueError("Pod ns/bad: spec.containers[0].resources.limits.memory: 'lots'")
            return o["spec"]["nodeName"], o["metadata"]["uid"]

        refl = Reflector(session, "/api/v1/pods", store=store, convert=convert, on_change=lambda *_: None)
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        assert list(store.values("n1")) == ["a"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


def test_buckets():
    b = Buckets()
    assert b.put("k", "n1", 1) is None and b.put("k", "n2", 2) == "n1"
    assert list(b.values("n2")) == [2] and list(b.values("n1")) == [] and len(b) == 1
    assert b.remove("k") == "n2" and b.remove("k") is None and list(b.buckets()) == []


class StreamingApi(FakeApi):
    """Also answers ``sendInitialEvents=true`` watches: ``mode`` "stream" sends the objects as ADDED
    events, the initial-events-end bookmark, then ``after``; "http500" and "error-event" refuse as
    an API server without WatchList support does (a status, or an ERROR event in the stream)."""

    def __init__(self, objects: list[dict], after: list[dict], mode: str = "stream") -> None:
        super().__init__(objects, [])
        self.mode, self.after, self.streams = mode, after, 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        if q.get("sendInitialEvents") != "true":
            return await super().handle(request)
        self.params.append(q)
        self.streams += 1
        if self.mode == "http500":
            return web.json_response({"kind": "Status", "code": 500, "message": "RequestWatchProgress is disabled"},
                                     status=500)
        resp = web.StreamResponse()
        await resp.prepare(request)
        if self.mode == "cut-once" and self.streams == 1:  # some objects, then the stream ends
            await resp.write((json.dumps({"type": "ADDED", "object": pod("stale", "n9", 1)}) + "\n").encode())
            return resp
        if self.mode == "error-event":
            await resp.write((json.dumps({"type": "ERROR", "object": {
                "kind": "Status", "code": 500, "message": "RequestWatchProgress is disabled"}}) + "\n").encode())
            return resp
        for o in self.snapshots[0]:
            await resp.write((json.dumps({"type": "ADDED", "object": o}) + "\n").encode())
        end = {"metadata": {"resourceVersion": "200", "annotations": {"k8s.io/initial-events-end": "true"}}}
        await resp.write((json.dumps({"type": "BOOKMARK", "object": end}) + "\n").encode())
        for ev in self.after:
            await resp.write((json.dumps(ev) + "\n").encode())
        await asyncio.sleep(30)
        return resp


def _convert(o):
    return o["spec"]["nodeName"], o["metadata"]["uid"]


def test_watch_list_streams_the_initial_state_then_watches_on():
    async def go():
        api = StreamingApi([pod("a", "n1", 1), pod("b", "n2", 2)],
                           after=[{"type": "ADDED", "object": pod("c", "n1", 201)},
                                  {"type": "DELETED", "object": pod("b", "n2", 202)}])
        runner, server = await serve(api)
        store, session = Buckets(), session_for(server)
        changes = []
        refl = Reflector(session, "/api/v1/pods", store=store, convert=_convert, watch_list=True,
                         field_selector="status.phase!=Succeeded", on_change=lambda *c: changes.append(c))
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        await until(lambda: len(store) == 2 and store.first("n2") is None)
        assert sorted(store.values("n1")) == ["a", "c"]
        assert api.lists == 0 and api.streams == 1, "no LIST at all: one stream did it"
        q = api.params[0]
        assert q["resourceVersionMatch"] == "NotOlderThan" and "resourceVersion" not in q
        assert q["allowWatchBookmarks"] == "true" and q["fieldSelector"] == "status.phase!=Succeeded"
        assert refl.watch_list
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


@pytest.mark.parametrize("mode", ["http500", "error-event"])
def test_watch_list_refused_falls_back_to_pages_for_good(mode):
    async def go():
        api = StreamingApi([pod("a", "n1", 1), pod("b", "n1", 2), pod("c", "n2", 3)], after=[], mode=mode)
        runner, server = await serve(api)
        store, session = Buckets(), session_for(server)
        refl = Reflector(session, "/api/v1/pods", store=store, convert=_convert, watch_list=True, chunk=2,
                         on_change=lambda *_: None)
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        assert len(store) == 3 and api.streams == 1 and api.lists == 1
        assert not refl.watch_list, "asked once, not at every relist"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


def test_watch_list_cut_short_is_not_synced_and_starts_over():
    async def go():
        api = StreamingApi([pod("a", "n1", 1)], after=[], mode="cut-once")
        runner, server = await serve(api)
        store, session = Buckets(), session_for(server)
        refl = Reflector(session, "/api/v1/pods", store=store, convert=_convert, watch_list=True,
                         on_change=lambda *_: None)
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        assert api.streams == 2 and api.lists == 0 and refl.watch_list, "asked again (after a pause), no LIST"
        assert list(store.values("n1")) == ["a"] and store.first("n9") is None, "what only the cut stream had is gone"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


@pytest.mark.parametrize("mode", ["stream", "http500", "error-event"])
def test_read_once_returns_the_current_state_and_stops(mode):
    """The one-shot audit's read: the watch list closed at its end bookmark (the stream itself
    would stay open), or paged LISTs where it is refused; no watch after it either way."""
    async def go():
        api = StreamingApi([pod("a", "n1", 1), pod("b", "n2", 2), pod("c", "n2", 3)],
                           after=[{"type": "ADDED", "object": pod("late", "n1", 201)}], mode=mode)
        runner, server = await serve(api)
        session = session_for(server)
        got = await asyncio.wait_for(read_once(session, "/api/v1/pods", _convert, chunk=2), 5)
        assert sorted(got) == ["a", "b", "c"], "the state at the end bookmark, nothing after it"
        assert api.streams == 1
        assert api.lists == (0 if mode == "stream" else 1)
        assert not [q for q in api.params if q.get("watch") == "1" and q.get("sendInitialEvents") != "true"]
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


def test_read_once_raises_what_the_server_said():
    async def go():
        app = web.Application()

        async def forbidden(request: web.Request) -> web.Response:
            return web.json_response({"kind": "Status", "code": 403, "message": 'pods is forbidden: User "x"'},
                                     status=403)

        app.router.add_get("/api/v1/pods", forbidden)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        session = session_for(f"http://127.0.0.1:{port}")
        with pytest.raises(ApiError, match='LIST /api/v1/pods: HTTP 403: pods is forbidden: User "x"'):
            await read_once(session, "/api/v1/pods", _convert)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


@pytest.mark.parametrize("watch_list", [False, True])
def test_back_within_a_second_of_the_api_server_and_stale_meanwhile(watch_list):
    """The API server goes away for ~4 s, long enough for the backoff to grow to 4 s: the cache
    is stale meanwhile (what /readyz reports), and lists again within a second of the server's
    return, because a probe watches for it. Paged LISTs, or the watch list (whose stream goes
    on watching after the initial state: fresh again at its end bookmark)."""
    async def go():
        api = StreamingApi([pod("a", "n1", 1)], after=[])
        api.watches = []  # every watch stays open and quiet until the server goes
        app = web.Application()
        app.router.add_get("/api/v1/pods", api.handle)
        ready = {"ok": True}

        async def readyz(_):
            return web.Response(status=200 if ready["ok"] else 500, text="ok")

        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, reuse_address=True)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        session = session_for(f"http://127.0.0.1:{port}")
        store = Buckets()
        refl = Reflector(session, "/api/v1/pods", store=store, chunk=0, watch_list=watch_list,
                         convert=lambda o: (o["spec"]["nodeName"], o["metadata"]["uid"]),
                         on_change=lambda old, new: None)
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        assert refl.stale_since is None and session.down_since is None
        await runner.cleanup()  # the API server goes down
        await until(lambda: session.down_since is not None and refl.stale_since is not None)
        await asyncio.sleep(4.0)
        restarts_meanwhile = refl.stale_since
        api.snapshots = [[pod("a", "n1", 1), pod("b", "n1", 2)]]  # what changed meanwhile
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        loop = asyncio.get_running_loop()
        back = loop.time()
        await until(lambda: "b" in store.where and refl.stale_since is None, timeout=10)
        took = loop.time() - back
        print(f"\n[cache listed again {took:.2f}s after the API server came back]")
        assert took < 1.0, took
        assert session.down_since is None and restarts_meanwhile is not None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()

    asyncio.run(go())


def test_a_refusal_backs_off_instead_of_probing():
    """A 403 is not the API server away: no probe, the usual backoff (no hammering)."""
    from memory_hygiene.shell.reflector import unreachable

    assert not unreachable(ApiError("LIST: HTTP 403", 403))
    assert unreachable(ApiError("LIST: HTTP 503", 503)) and unreachable(ApiError("x", 429))
    assert unreachable(ConnectionRefusedError()) and unreachable(asyncio.TimeoutError())
    assert not unreachable(ValueError("bad json"))


def test_readyz_says_when_the_caches_are_stale():
    from memory_hygiene.shell.runtime import Runtime
    from memory_hygiene.shell.main import _http

    async def go():
        rt = Runtime()
        fresh, stale = SimpleNamespace(resource="pods", stale_since=None), SimpleNamespace(resource="nodes",
                                                                                          stale_since=None)
        rt.reflectors = [fresh, stale]
        rt.session = SimpleNamespace(down_since=None)
        runner = await _http(rt, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async def readyz():
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    return r.status, await r.text()

            assert (await readyz())[0] == 503  # not filled yet
            rt.ready.set()
            assert await readyz() == (200, "ok\n")
            import time

            stale.stale_since = time.monotonic() - 12
            status, text = await readyz()
            assert status == 503 and "nodes not updated for 12s" in text, text
            rt.session.down_since = time.monotonic() - 12
            status, text = await readyz()
            assert "the API server does not answer (for 12s)" in text
            stale.stale_since = rt.session.down_since = None
            assert (await readyz())[0] == 200
            stale.stale_since = time.monotonic()  # a watch reopened at once: no flap
            assert (await readyz())[0] == 200
        await runner.cleanup()

    asyncio.run(go())
