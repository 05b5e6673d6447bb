"""The operator's one HTTP client for the API server: an aiohttp session with the kubernetes
client's configuration, used by the caches (``shell/reflector.py``), the Events
(``shell/events.py``), the MemoryPolicy status (``shell/reconciler.py``) and the node agent.
While the API server is unreachable it is probed, so that everything waiting on it goes again
as soon as it answers.

(kopf keeps its own client for the MemoryPolicy watch; the admission objects and PolicyReports
are written with the kubernetes client, in threads.)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from . import metrics

log = logging.getLogger("memory_hygiene.api")

REQUEST_TIMEOUT = 30.0
"""Seconds a request (not a watch) may take, answer included."""


class ApiError(RuntimeError):
    """The API server answered, but not with what was asked for (an HTTP error, a watch error,
    a stream cut short)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


PROBE_SECONDS = 0.25
"""While the API server is unreachable, it is probed (GET /readyz) this often."""


def status_message(body: Any) -> str:
    """What an error answer says: a Status's message, else its first bytes."""
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:300]
    return str(body)[:200]


def unreachable(err: BaseException) -> bool:
    """The API server could not be reached or is not ready (a connection refused or cut, a
    timeout, a 5xx or 429): worth probing for, unlike a refusal (403) that retrying at once
    would only repeat."""
    if isinstance(err, ApiError):
        return err.status is not None and (err.status >= 500 or err.status == 429)
    return isinstance(err, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError,
                            OSError))


class ApiSession:
    """Every request the operator makes to the API server for its own work (the caches' lists
    and watches, Events, MemoryPolicy status; the node agent's Events), with the kubernetes
    client's configuration (kubeconfig or in-cluster), over one aiohttp session. The bearer
    token is read again at every request, so a rotated service-account token is picked up."""

    def __init__(self, configuration: Any = None) -> None:
        from kubernetes import client

        self.cfg = configuration or client.Configuration.get_default_copy()
        ctx = ssl.create_default_context(cafile=self.cfg.ssl_ca_cert) if self.cfg.ssl_ca_cert \
            else ssl.create_default_context()
        if self.cfg.cert_file and self.cfg.key_file:
            ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        if not self.cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.server = self.cfg.host.rstrip("/")
        self._connector = aiohttp.TCPConnector(ssl=ctx, limit=16)
        self.session = aiohttp.ClientSession(connector=self._connector, read_bufsize=1 << 20)
        self.up = asyncio.Event()
        self.up.set()
        self.down_since: float | None = None
        """time.monotonic() since when the API server is unreachable (a reflector said so and
        no probe has answered since); None while it answers."""
        self.on_up: list[Callable[[], None]] = []
        """Called when a probe finds the API server back (e.g. failed Event POSTs go again)."""
        self._probe_task: asyncio.Task[None] | None = None

    def mark_down(self) -> None:
        """A request could not reach the API server: probe it until it answers."""
        if self.up.is_set():
            self.up.clear()
            self.down_since = time.monotonic()
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.ensure_future(self._probe())

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the API server answers a probe, at most ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.up.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _probe(self) -> None:
        """GET /readyz (granted to everyone by system:public-info-viewer) until it answers 200, or
        answers at all but 5xx (401/403 here: not ready is what we are after, not who may ask)."""
        timeout = aiohttp.ClientTimeout(total=2)
        while True:
            try:
                async with self.session.get(self.server + "/readyz", headers=self.headers(), timeout=timeout) as r:
                    await r.read()
                    if r.status < 500:
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(PROBE_SECONDS)
        down = time.monotonic() - (self.down_since or time.monotonic())
        self.down_since = None
        self.up.set()
        metrics.API_UNREACHABLE_SECONDS.observe(down)
        log.info("the API server answers again (unreachable for %.1fs)", down)
        for callback in self.on_up:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one listener's failure is not the probe's
                log.exception("on_up callback failed")

    def headers(self) -> dict[str, str]:
        hook = getattr(self.cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self.cfg)
        token = self.cfg.get_api_key_with_prefix("BearerToken") or self.cfg.get_api_key_with_prefix("authorization")
        # No gzip: on the cluster network it costs both ends more CPU than it saves in time (why
        # Kubernetes' own control plane turns it off, kubernetes#80919); inflating was 5 % of the
        # operator's CPU at start (docs/benchmarks.md), deflating is kube-apiserver's.
        h = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "memory-hygiene"}
        if token:
            h["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        return h

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None,
                      content_type: str = "application/json", timeout: float = REQUEST_TIMEOUT) -> tuple[int, Any]:
        """One request; (HTTP status, decoded JSON answer, or its first bytes when not JSON).
        Raises only when the API server could not be reached or did not answer in ``timeout``."""
        headers = self.headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        async with self.session.request(method, self.server + path, params=params, data=data, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            raw = await r.read()
            try:
                return r.status, orjson.loads(raw)
            except ValueError:
                return r.status, raw[:200]

    async def get_json(self, path: str, params: dict[str, str] | None = None,
                       timeout: float = REQUEST_TIMEOUT) -> tuple[int, Any]:
        return await self.request("GET", path, params=params, timeout=timeout)

    async def post_json(self, path: str, body: Any, timeout: float = REQUEST_TIMEOUT) -> tuple[int, Any]:
        """POST a JSON body (an Event); (status, decoded answer)."""
        return await self.request("POST", path, body=body, timeout=timeout)

    async def patch_json(self, path: str, body: Any, timeout: float = REQUEST_TIMEOUT) -> tuple[int, Any]:
        """A JSON merge patch (RFC 7386: a MemoryPolicy's status, an Event's count); (status, decoded answer)."""
        return await self.request("PATCH", path, body=body, content_type="application/merge-patch+json",
                                  timeout=timeout)

    async def list_all(self, path: str, params: dict[str, str] | None = None, limit: int = 500) -> list[dict]:
        """Every item of a collection, paged (``limit``/``continue``). Raises ``ApiError`` on an
        answer other than 200."""
        items: list[dict] = []
        query = {**(params or {}), "limit": str(limit)}
        while True:
            code, body = await self.get_json(path, query)
            if code != 200 or not isinstance(body, dict):
                raise ApiError(f"LIST {path}: HTTP {code}: {status_message(body)}", code)
            items.extend(body.get("items") or [])
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return items
            query = {**query, "continue": cont}

    def stream(self, path: str, params: dict[str, str]) -> Any:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
        return self.session.get(self.server + path, params=params, headers=self.headers(), timeout=timeout)

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        await self.session.close()
