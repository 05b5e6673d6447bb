"""A small async Kubernetes API client: aiohttp, keep-alive, the admin client certificate.

The Python ``kubernetes`` client spends milliseconds per call on (de)serialisation and uses a
thread per request; the load generator needs thousands of writes a second, so it talks HTTP
directly with a pool of keep-alive connections.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

RETRY_STATUS = {429, 500, 502, 503, 504}


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: Any) -> None:
        super().__init__(f"{method} {path}: {status} {str(body)[:300]}")
        self.status = status
        self.body = body


class Kube:
    def __init__(self, server: str, ca: str, cert: str, key: str, concurrency: int = 32) -> None:
        self.server = server.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=ca)
        self.ssl.load_cert_chain(cert, key)
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    @classmethod
    def for_cluster(cls, cluster: Any, concurrency: int = 32) -> "Kube":
        return cls(cluster.server, str(cluster.pki["ca_crt"]), str(cluster.pki["admin_crt"]),
                   str(cluster.pki["admin_key"]), concurrency)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            conn = aiohttp.TCPConnector(ssl=self.ssl, limit=self.concurrency + 8, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json", ok: tuple[int, ...] = (200, 201),
                      retries: int = 8) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Accept": "application/json", "Content-Type": content_type}
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                async with self.session.request(method, self.server + path, data=data, headers=headers) as r:
                    raw = await r.read()
                    self.requests += 1
                    if r.status in ok:
                        return json.loads(raw) if raw else None
                    if r.status in RETRY_STATUS and attempt < retries:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5)
                        continue
                    try:
                        payload: Any = json.loads(raw)
                    except ValueError:
                        payload = raw[:300]
                    raise ApiError(r.status, method, path, payload)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                if attempt >= retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        raise AssertionError("unreachable")

    async def get(self, path: str, ok: tuple[int, ...] = (200,)) -> Any:
        return await self.request("GET", path, ok=ok)

    async def create(self, path: str, body: dict, exists_ok: bool = True) -> Any:
        return await self.request("POST", path, body, ok=(200, 201, 202, 409) if exists_ok else (200, 201, 202))

    async def merge_patch(self, path: str, body: dict) -> Any:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                   "gracePeriodSeconds": 0}, ok=(200, 202, 404))

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[dict]:
        """Watch events forever (reconnecting from the last resourceVersion)."""
        rv = params.get("resourceVersion")
        while True:
            q = {**params, "watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "1800"}
            if rv:
                q["resourceVersion"] = rv
            try:
                async with self.session.get(self.server + path, params=q,
                                            timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
                    if r.status != 200:
                        raise ApiError(r.status, "WATCH", path, await r.text())
                    async for line in r.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            rv = None
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if ev.get("type") != "BOOKMARK":
                            yield ev
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError, aiohttp.ClientPayloadError):
                await asyncio.sleep(0.5)
