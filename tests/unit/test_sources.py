"""core/sources.py: what is read from the cluster is declared once, and both readers (the
operator's list+watch caches, the one-shot live audit) take it from there."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiohttp import web

from memory_hygiene.core import sources
from memory_hygiene.core.engine import UNSCHEDULED


def pod(name: str, phase: str, node: str | None = "n1", last_reason: str | None = None, exit_code: int = 137) -> dict:
    cs = {"name": "app", "restartCount": 1 if last_reason else 0,
          "state": {"terminated": {"reason": "Completed", "exitCode": 0}} if phase == "Succeeded"
          else {"running": {"startedAt": "2024-05-01T10:00:00Z"}}}
    if last_reason:
        cs["lastState"] = {"terminated": {"reason": last_reason, "exitCode": exit_code,
                                          "finishedAt": "2024-05-01T10:00:00Z"}}
    spec: dict = {"containers": [{"name": "app", "resources": {"requests": {"memory": "64Mi"}}}]}
    if node:
        spec["nodeName"] = node
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"}, "spec": spec,
            "status": {"phase": phase, "containerStatuses": [cs]}}


def test_a_succeeded_pod_is_kept_only_with_an_oom_record():
    assert sources.pod(pod("done", "Succeeded")) is None
    assert sources.pod(pod("done-error", "Succeeded", last_reason="Error", exit_code=1)) is None
    bucket, info = sources.pod(pod("done-oom", "Succeeded", last_reason="OOMKilled"))
    assert (bucket, info.name, info.containers[0].oom_finished != ()) == ("n1", "done-oom", True)
    # kubelet's OOMKilled with exit code 0 (a child was killed, PID 1 exited by itself): kept, so
    # that a kill in it finds its pod (rules: not a visible kill)
    assert sources.pod(pod("done-child", "Succeeded", last_reason="OOMKilled", exit_code=0)) is not None
    # other phases: always, whatever they hold
    for phase in ("Pending", "Running", "Failed", "Unknown"):
        assert sources.pod(pod(f"p-{phase}", phase))[1].phase == phase
    assert sources.pod(pod("unbound", "Pending", node=None))[0] == UNSCHEDULED


def test_a_malformed_succeeded_pod_is_refused_by_name_not_dropped_quietly():
    bad = pod("bad", "Succeeded")
    bad["status"]["containerStatuses"] = "oops"
    assert sources.oom_record(bad)
    with pytest.raises(ValueError, match="containerStatuses"):
        sources.pod(bad)


def test_oom_events_only_normal_or_other_reasons_give_nothing():
    ev = {"kind": "Event", "metadata": {"name": "e", "namespace": "default", "uid": "e1"},
          "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "OOMKilling", "type": "Warning",
          "message": "Out of memory: Killed process 1 (x)", "source": {"component": "kernel-monitor"},
          "lastTimestamp": "2024-05-01T10:00:00Z"}
    assert sources.oom_event(ev)[0] == "n1"
    assert sources.oom_event({**ev, "reason": "Rebooted"}) is None
    # the server-side selector is what keeps Normal events out: it says so
    assert "type=Warning" in sources.OOM_EVENTS.field_selector.split(",")
    assert "involvedObject.kind=Node" in sources.OOM_EVENTS.field_selector.split(",")


def test_the_declaration_names_every_cache_once():
    assert [s.name for s in sources.SOURCES] == ["pods", "nodes", "events", "namespaces"]
    assert len({s.path for s in sources.SOURCES}) == len(sources.SOURCES)
    from memory_hygiene.shell import runtime as op

    assert set(op.Runtime().stores) == {s.name for s in sources.SOURCES}


def marked(monkeypatch) -> tuple[tuple[sources.Source, ...], list[str]]:
    """SOURCES with a selector and a converter of the test's own in each: whoever reads from the
    declaration must show them."""
    seen: list[str] = []

    def conv(name, inner):
        def convert(obj):
            seen.append(name)
            return inner(obj)
        return convert

    patched = tuple(s._replace(field_selector=f"metadata.name!=not-{s.name}", convert=conv(s.name, s.convert))
                    for s in sources.SOURCES)
    monkeypatch.setattr(sources, "SOURCES", patched)
    return patched, seen


def test_the_operator_watches_what_is_declared(monkeypatch):
    from memory_hygiene.shell import runtime as op

    patched, _ = marked(monkeypatch)

    async def go():
        from memory_hygiene.shell.config import Config

        rt = op.Runtime(Config(chunk_size=7, watch_list=True))
        refl = op.reflectors(rt, SimpleNamespace())
        assert [(r.path, r.field_selector, r.convert, r.chunk, r.watch_list) for r in refl] == \
               [(s.path, s.field_selector, s.convert, 7, True) for s in patched]
        assert [r.store for r in refl] == [rt.stores[s.name] for s in patched]
        # a namespace change re-evaluates everything; the others mark their buckets
        by_name = dict(zip((s.name for s in patched), refl, strict=True))
        rt.full = False
        by_name["pods"].on_change(None, "n1")
        assert "n1" in rt.dirty and not rt.full
        by_name["namespaces"].on_change(None, "ns")
        assert rt.full

    asyncio.run(go())


def test_the_live_audit_reads_what_is_declared(monkeypatch):
    """``load_live``'s read against a fake API server: one request series per declared source,
    with its selector; what it returns converted by the declared converters."""
    from memory_hygiene import inputs

    patched, converted = marked(monkeypatch)
    served = {
        "/api/v1/pods": [pod("run", "Running"), pod("done", "Succeeded"),
                         pod("done-oom", "Succeeded", last_reason="OOMKilled")],
        "/api/v1/nodes": [{"kind": "Node", "metadata": {"name": "n1", "uid": "n1"},
                           "status": {"capacity": {"memory": "1Gi"}, "allocatable": {"memory": "1Gi"}}}],
        "/api/v1/events": [{"kind": "Event", "metadata": {"name": "e", "namespace": "default", "uid": "e1"},
                            "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "OOMKilling",
                            "type": "Warning", "message": "Out of memory: Killed process 1 (x)",
                            "lastTimestamp": "2024-05-01T10:00:00Z"}],
        "/api/v1/namespaces": [{"kind": "Namespace", "metadata": {"name": "ns", "labels": {"team": "a"}}}],
    }
    asked: dict[str, set[str | None]] = {}

    async def handle(request: web.Request) -> web.Response:
        q = dict(request.query)
        asked.setdefault(request.path, set()).add(q.get("fieldSelector"))
        if q.get("watch") == "1":  # no WatchList here: the reader falls back to the paged LIST
            return web.json_response({"kind": "Status", "code": 500, "message": "no watch list"}, status=500)
        return web.json_response({"items": served[request.path], "metadata": {"resourceVersion": "9"}})

    async def go():
        app = web.Application()
        for path in served:
            app.router.add_get(path, handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        cfg = SimpleNamespace(ssl_ca_cert=None, cert_file=None, key_file=None, verify_ssl=True,
                              host=f"http://127.0.0.1:{port}", get_api_key_with_prefix=lambda *_: None)
        snap = inputs.Snapshot()
        try:
            await inputs._read_live(cfg, snap)
        finally:
            await runner.cleanup()
        return snap

    snap = asyncio.run(go())
    assert asked == {s.path: {s.field_selector} for s in patched}
    assert sorted(set(converted)) == sorted(s.name for s in patched), "every object through the declared converter"
    assert sorted(p.name for p in snap.pods) == ["done-oom", "run"]
    assert [n.name for n in snap.nodes] == ["n1"] and [e.node for e in snap.events] == ["n1"]
    assert snap.namespaces == {"ns": {"team": "a"}}
