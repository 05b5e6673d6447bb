"""``memory-hygiene run``: the operator process (kopf + the HTTP endpoints)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
from typing import Any

from . import config

log = logging.getLogger("memory_hygiene")


async def _http(rt: Any, host: str, port: int) -> Any:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    started = time.monotonic()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        # Alive while the reconcile loop task runs (it only ends by crashing or shutdown).
        dead = [t.get_name() for t in rt.tasks if t.done()]
        if dead:
            return web.Response(status=500, text=f"stopped: {', '.join(dead)}\n")
        return web.Response(text=f"ok, up {time.monotonic() - started:.0f}s\n")

    async def readyz(_: web.Request) -> web.Response:
        if not rt.ready.is_set():
            return web.Response(status=503, text="caches are still filling from the initial LIST\n")
        stale = rt.stale()
        if stale:  # the reports would be about the cluster as it was
            return web.Response(status=503, text="caches are stale: " + "; ".join(stale) + "\n")
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving /metrics, /healthz and /readyz on %s:%d", host, port)
    return runner


async def _main(args: argparse.Namespace, settings: config.Config) -> None:
    import kopf

    import importlib

    from .runtime import Runtime

    importlib.import_module(f"{__package__}.operator")  # registers the kopf handlers
    rt = Runtime(settings)
    runner = await _http(rt, settings.http_host, settings.http_port) if settings.http_port else None
    try:
        # One replica (Deployment strategy Recreate). No kopf peering: a paused peer would keep
        # evaluating from stale caches. Two replicas at once (a rollout's overlap) are harmless:
        # they write the same status and each Event once (see docs/design.md).
        # identity given, so kopf does not ask getpass for a user name a random UID may not have
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        await kopf.operator(clusterwide=True, standalone=True, identity=identity, memo=kopf.Memo(runtime=rt))
    finally:
        if runner is not None:
            await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:  # kopf logs every handler call at INFO: 150,000 pods, 150,000 lines
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for h in logging.getLogger().handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if args.kubeconfig:  # before the kubernetes client is imported: it reads KUBECONFIG once, then
        os.environ["KUBECONFIG"] = args.kubeconfig  # (kopf's login uses its default)
    try:
        settings = config.load(args)
    except config.ConfigError as err:
        log.error("%s", err)
        return 2
    try:
        asyncio.run(_main(args, settings))
    except KeyboardInterrupt:
        pass
    except Exception as err:  # noqa: BLE001 - the reason was logged by the handler; exit visibly
        cause = err.__cause__ or err
        log.error("memory-hygiene stopped: %s", cause)
        return 1
    return 0
