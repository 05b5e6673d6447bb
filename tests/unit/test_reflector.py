"""The reflector against a small fake API server on loopback: paged LIST, WATCH (with bookmarks,
deletions, moves between buckets), 410 Gone -> LIST again, and what vanished meanwhile."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from aiohttp import web

from memory_hygiene.shell import metrics
from memory_hygiene.shell.reflector import ApiSession, Buckets, Reflector


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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.params.append(q)
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
             {"type": "ADDED", "object": pod("d", "", 103)},            # unscheduled
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
        task = asyncio.create_task(refl.run())
        await asyncio.wait_for(refl.synced.wait(), 5)
        await until(lambda: api.lists == 2 and len(store) == 3)
        assert sorted(store.values("n2")) == ["b", "c"] and list(store.values("")) == ["d"]
        assert (None, "n1") in changes[:4], "the first LIST filled n1"
        assert store.first("n1") is None and "n3" not in store.buckets()
        assert (None, "n1") in changes and ("n1", "n2") in changes and ("n1", None) in changes
        assert ("n3", None) in changes, "vanished between LISTs: reported gone"
        assert metrics.WATCH_RESTARTS.labels(resource="pods")._value.get() - before == 1
        lists = [p for p in api.params if p.get("watch") != "1"]
        watch = next(p for p in api.params if p.get("watch") == "1")
        assert lists[0]["limit"] == "2" and lists[1]["continue"] == "2"
        assert not any("resourceVersion" in p for p in lists), "consistent LISTs, in pages"
        assert all(p["fieldSelector"] == "status.phase!=Succeeded" for p in api.params)
        assert watch["resourceVersion"] == "100" and watch["allowWatchBookmarks"] == "true"
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
