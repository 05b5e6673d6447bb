"""Process measurements: RSS/CPU from /proc, child rusage, and the operator as a process."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_cpu(pid: int) -> float:
    """utime + stime in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError):
        return 0.0


@dataclass
class Sampler:
    pid: int
    interval: float = 0.5
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    """(time, VmRSS bytes, cpu seconds)"""
    hwm: int = 0

    async def run(self) -> None:
        while True:
            m = proc_mem(self.pid)
            if not m:
                return
            self.hwm = max(self.hwm, m.get("VmHWM", 0))
            self.samples.append((time.time(), m.get("VmRSS", 0), proc_cpu(self.pid)))
            await asyncio.sleep(self.interval)

    def rss_at(self, t: float) -> int:
        best = 0
        for ts, rss, _ in self.samples:
            if ts <= t:
                best = rss
        return best

    def cpu_at(self, t: float) -> float:
        best = 0.0
        for ts, _, cpu in self.samples:
            if ts <= t:
                best = cpu
        return best

    def window(self, t0: float, t1: float) -> dict[str, float]:
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return {}
        return {"rss_mean": sum(x[1] for x in s) / len(s), "rss_max": max(x[1] for x in s),
                "cpu_seconds": s[-1][2] - s[0][2], "seconds": s[-1][0] - s[0][0]}


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600,
                 stdout_path: Path | None = None, rss_limit_bytes: int | None = None) -> dict[str, Any]:
    """Run a command to completion; wall time, peak RSS (rusage of the child) and CPU seconds.
    Killed (and said so) past ``timeout`` or past ``rss_limit_bytes`` of VmRSS."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    err_path = stdout_path.with_suffix(".stderr") if stdout_path else None
    err = open(err_path, "wb") if err_path else subprocess.DEVNULL
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "cmd": cmd}
    deadline = t0 + timeout
    killed_rss = None
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = proc_mem(proc.pid).get("VmRSS", 0) if rss_limit_bytes else 0
        if rss_limit_bytes and rss > rss_limit_bytes:
            killed_rss = rss
        if time.monotonic() > deadline or killed_rss:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for f in (out, err):
        if hasattr(f, "close"):
            f.close()
    out = {"cmd": cmd, "exit": proc.returncode, "wall_s": round(wall, 2),
           "peak_rss_bytes": ru.ru_maxrss * 1024, "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
           "timed_out": wall >= timeout}
    if killed_rss:
        out["killed_over_rss_limit_bytes"] = rss_limit_bytes
    return out


class Operator:
    """``memory-hygiene run`` as a child process, measured."""

    def __init__(self, exe: str, kubeconfig: Path, port: int, log: Path, env: dict[str, str],
                 args: tuple[str, ...] = ()) -> None:
        self.exe, self.kubeconfig, self.port, self.log, self.env, self.args = exe, kubeconfig, port, log, env, args
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.rusage: Any = None

    def start(self) -> None:
        cmd = [self.exe, "run", "--kubeconfig", str(self.kubeconfig), "--http-host", "127.0.0.1",
               "--http-port", str(self.port), *self.args]
        fh = open(self.log, "ab")
        fh.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        fh.flush()
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                     start_new_session=True)
        fh.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        if self.proc is None or self.proc.returncode is not None:
            return False
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid:
            self.rusage = ru
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            return False
        return self.proc.returncode is None

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                os.killpg(self.proc.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(self.proc.pid, 0)
                self.rusage = ru
        ru = self.rusage
        self.proc = None
        if ru is None:
            return {}
        return {"peak_rss_bytes": ru.ru_maxrss * 1024, "cpu_s": round(ru.ru_utime + ru.ru_stime, 2)}

    def get(self, path: str, timeout: float = 3) -> tuple[int, str]:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except OSError as exc:
            code = getattr(exc, "code", 0)
            return code or 0, str(exc)


_ = resource  # rusage fields are documented in resource(2)
