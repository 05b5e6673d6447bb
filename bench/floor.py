#!/usr/bin/env python3
"""The floor under the operator's initial sync: a bare client that only receives what the
operator's caches are filled from, and throws it away.

    bench/.venv/bin/python bench/floor.py --kubeconfig K            # bytes only
    bench/.venv/bin/python bench/floor.py --kubeconfig K --decode   # + orjson.loads per line

The same watch-list requests as ``shell/reflector.py`` (``Reflector._watch(initial=True)``), one
per source of ``core/sources.py`` ``SOURCES`` (path and field selector, read from that file
without importing the package), all four at once, over one aiohttp session set up as
``ApiSession`` sets up its own (no gzip, ``read_bufsize`` 1 MiB, at most 16 connections). Each
stream is read line by line (``async for line in response.content``, as the reflector reads it)
until its bookmark annotated ``k8s.io/initial-events-end``, then closed. Nothing is kept: with
``--decode`` every line is parsed by ``orjson.loads`` (the reflector's decoder) and dropped,
without the conversion to tuples; without it, a line that starts as an ADDED event is not parsed
at all (only bookmarks and errors are). Prints one JSON object: wall time, CPU seconds and peak
RSS of this process, and per stream the lines, bytes and objects received and when its end
bookmark came. Exit 1 (and an ``error`` in the JSON) if a stream fails, e.g. where the API
server does not serve watch lists (etcd older than 3.4.31 / 3.5.13).

Importable: ``run_floor`` runs it as a child process (so that its RSS is its own) and adds the
parent's measurement of it (bench/run.py).
"""

from __future__ import annotations

import time

T_IMPORT = time.monotonic()

import argparse  # noqa: E402
import ast  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import ssl  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
SOURCES_PY = HERE.parent / "operator" / "memory_hygiene" / "core" / "sources.py"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
WATCH_TIMEOUT = 300  # Reflector's watch_timeout
READ_BUFSIZE = 1 << 20  # ApiSession's
CONNECTIONS = 16  # ApiSession's connector limit
ADDED_PREFIX = b'{"type":"ADDED"'
"""How kube-apiserver starts an ADDED watch event (its JSON encoding of metav1.WatchEvent: type,
then object). A line that starts otherwise is parsed (bookmarks, errors, anything unexpected)."""


class FloorError(RuntimeError):
    pass


# --- what to read: core/sources.py, read as data ------------------------------------------------


def read_sources(path: Path = SOURCES_PY) -> list[dict[str, Any]]:
    """``SOURCES`` of core/sources.py as [{name, path, field_selector}], in its order, from the
    source text (``Source("name", "/path", selector, convert)`` with literal strings or None):
    importing the package would add its imports to this process's RSS."""
    tree = ast.parse(path.read_text(), str(path))
    defined: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Source":
            if len(value.args) < 3:
                raise FloorError(f"{path}: Source() of {names} does not give name, path, selector as arguments")
            try:
                name, api_path, selector = (ast.literal_eval(a) for a in value.args[:3])
            except ValueError as exc:
                raise FloorError(f"{path}: Source() of {names}: not literals ({exc})") from None
            for n in names:
                defined[n] = {"name": name, "path": api_path, "field_selector": selector}
        if "SOURCES" in names:
            if not isinstance(value, ast.Tuple):
                raise FloorError(f"{path}: SOURCES is not a tuple of names")
            order = [e.id for e in value.elts if isinstance(e, ast.Name)]
    if not order or any(n not in defined for n in order):
        raise FloorError(f"{path}: cannot read SOURCES (found {order}, defined {sorted(defined)})")
    return [defined[n] for n in order]


# --- the kubeconfig ------------------------------------------------------------------------------


def load_kubeconfig(path: str, context: str | None = None) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    """(server, TLS context, auth headers) of a kubeconfig's context: CA, client certificate and
    key (files or ``-data``), token or tokenFile."""
    import yaml

    base = Path(path).resolve().parent
    cfg = yaml.safe_load(Path(path).read_text())
    ctx_name = context or cfg.get("current-context") or (cfg.get("contexts") or [{}])[0].get("name")
    ctx = next((c["context"] for c in cfg.get("contexts") or [] if c.get("name") == ctx_name), None)
    if ctx is None:
        raise FloorError(f"{path}: no context {ctx_name!r}")
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next((u.get("user") or {} for u in cfg.get("users") or [] if u["name"] == ctx.get("user")), {})

    def pem(key: str) -> bytes | None:
        src = cluster if key.startswith("certificate-authority") else user
        if src.get(f"{key}-data"):
            return base64.b64decode(src[f"{key}-data"])
        if src.get(key):
            return (base / src[key]).read_bytes()
        return None

    ca = pem("certificate-authority")
    tls = ssl.create_default_context(cadata=ca.decode()) if ca else ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    cert, key = pem("client-certificate"), pem("client-key")
    if cert and key:
        with tempfile.TemporaryDirectory() as d:  # load_cert_chain reads files only
            (Path(d) / "c").write_bytes(cert)
            (Path(d) / "k").write_bytes(key)
            tls.load_cert_chain(Path(d) / "c", Path(d) / "k")
    headers: dict[str, str] = {}
    token = user.get("token") or ((base / user["tokenFile"]).read_text().strip() if user.get("tokenFile") else None)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return cluster["server"].rstrip("/"), tls, headers


# --- the streams ---------------------------------------------------------------------------------


async def read_stream(session: Any, server: str, headers: dict[str, str], src: dict[str, Any],
                      decode: bool, t0: float) -> dict[str, Any]:
    import aiohttp

    loads = __import__("orjson").loads if decode else json.loads
    # The reflector's parameters, in its order (Reflector._params with _watch's initial=True).
    params = {"watch": "1", "allowWatchBookmarks": "true", "sendInitialEvents": "true",
              "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": str(WATCH_TIMEOUT)}
    if src["field_selector"]:
        params["fieldSelector"] = src["field_selector"]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    out: dict[str, Any] = {**src, "lines": 0, "bytes": 0, "added": 0}
    async with session.get(server + src["path"], params=params, headers=headers, timeout=timeout) as r:
        out["first_byte_s"] = round(time.monotonic() - t0, 3)
        if r.status != 200:
            raise FloorError(f"WATCH {src['path']}: HTTP {r.status}: {(await r.text())[:300]}")
        async for line in r.content:
            out["lines"] += 1
            out["bytes"] += len(line)
            if not decode and line.startswith(ADDED_PREFIX):
                out["added"] += 1
                continue
            if not line.strip():
                continue
            ev = loads(line)
            kind = ev.get("type")
            if kind == "ADDED":
                out["added"] += 1
            elif kind == "BOOKMARK":
                meta = (ev.get("object") or {}).get("metadata") or {}
                if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                    out["end_s"] = round(time.monotonic() - t0, 3)
                    out["resource_version"] = meta.get("resourceVersion")
                    return out  # closes the stream, as Reflector.fill does
            elif kind == "ERROR":
                raise FloorError(f"WATCH {src['path']}: {str(ev.get('object'))[:300]}")
            else:
                out.setdefault("other_events", 0)
                out["other_events"] += 1
    raise FloorError(f"WATCH {src['path']}: the stream ended before its initial-events-end bookmark "
                     f"({out['lines']} lines)")


async def floor(kubeconfig: str, decode: bool, context: str | None = None,
                sources_py: Path = SOURCES_PY) -> dict[str, Any]:
    import aiohttp

    sources = read_sources(sources_py)
    server, tls, auth = load_kubeconfig(kubeconfig, context)
    headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "memory-hygiene-floor",
               **auth}
    connector = aiohttp.TCPConnector(ssl=tls, limit=CONNECTIONS)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, read_bufsize=READ_BUFSIZE) as session:
        streams = await asyncio.gather(*(read_stream(session, server, headers, s, decode, t0) for s in sources))
    return {"mode": "decode" if decode else "bytes", "server": server, "sources_py": str(sources_py),
            "streams_s": round(max(s["end_s"] for s in streams), 3),
            "objects": sum(s["added"] for s in streams), "bytes": sum(s["bytes"] for s in streams),
            "streams": streams}


def peak_rss_mb() -> float | None:
    """VmHWM: this process's own peak RSS since its exec. Not ru_maxrss: exec keeps the maxrss of
    the process image it replaces, so a child's ru_maxrss is at least its spawner's peak RSS
    (bench/run.py's, tens to hundreds of MB, more than this process's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        pass
    return None


def process_seconds() -> float | None:
    """Seconds since this process started (the kernel's start time, so the interpreter's own
    start is counted); None where /proc cannot tell."""
    try:
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--context")
    ap.add_argument("--decode", action="store_true", help="orjson.loads every line (no conversion)")
    ap.add_argument("--sources-py", type=Path, default=SOURCES_PY,
                    help="the core/sources.py whose SOURCES are read (default: this tree's)")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after S seconds")
    args = ap.parse_args(argv)
    try:
        out = asyncio.run(asyncio.wait_for(floor(args.kubeconfig, args.decode, args.context, args.sources_py),
                                           args.timeout))
        rc = 0
    except Exception as exc:  # noqa: BLE001 - any failure (HTTP, TLS, kubeconfig, timeout): said in the JSON
        out = {"mode": "decode" if args.decode else "bytes", "error": f"{type(exc).__name__}: {exc}"}
        rc = 1
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.update({"process_s": process_seconds(), "since_import_s": round(time.monotonic() - T_IMPORT, 3),
                "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "peak_rss_mb": peak_rss_mb(),
                "ru_maxrss_mb": round(ru.ru_maxrss / 1024, 1),
                "python": sys.version.split()[0], "executable": sys.executable})
    try:
        import aiohttp

        out["aiohttp"] = aiohttp.__version__
        if args.decode:
            out["orjson"] = __import__("orjson").__version__
    except ImportError:
        pass
    print(json.dumps(out, indent=2))
    return rc


# --- for bench/run.py ------------------------------------------------------------------------------


def run_floor(kubeconfig: Path | str, decode: bool, workdir: Path, python: str = sys.executable,
              sources_py: Path = SOURCES_PY, timeout: float = 900) -> dict[str, Any]:
    """This script as a child process: its own JSON plus the parent's measurement of it (wall
    from spawn to exit and CPU seconds from its rusage; the peak RSS is its own VmHWM, see
    ``peak_rss_mb``)."""
    from measure import run_measured

    mode = "decode" if decode else "bytes"
    out_path = workdir / f"floor-{mode}.json"
    cmd = [python, str(Path(__file__).resolve()), "--kubeconfig", str(kubeconfig), "--sources-py", str(sources_py),
           "--timeout", str(timeout)] + (["--decode"] if decode else [])
    m = run_measured(cmd, stdout_path=out_path, timeout=timeout + 30)
    try:
        res: dict[str, Any] = json.loads(out_path.read_text())
    except (OSError, ValueError) as exc:
        res = {"mode": mode, "error": f"no result ({type(exc).__name__}: {exc}); stderr: "
               f"{out_path.with_suffix('.stderr').read_text(errors='replace')[-800:] if out_path.with_suffix('.stderr').exists() else ''}"}
    # Wall and CPU as the operator's are measured: from spawn, by the parent (rusage); the CPU
    # the child counted itself is kept as self_cpu_s. The peak RSS is the child's own VmHWM (the
    # rusage's, parent_ru_maxrss_mb, is at least this process's peak RSS: see peak_rss_mb).
    if "cpu_s" in res:
        res["self_cpu_s"] = res.pop("cpu_s")
    res["wall_s"] = m.get("wall_s")
    res["cpu_s"] = m.get("cpu_s")
    res["parent_ru_maxrss_mb"] = round(m["peak_rss_bytes"] / (1 << 20), 1) if m.get("peak_rss_bytes") else None
    res["exit"] = m.get("exit")
    if m.get("error") or m.get("timed_out"):
        res.setdefault("error", m.get("error") or f"timed out after {timeout + 30} s")
    return res


if __name__ == "__main__":
    sys.exit(main())
