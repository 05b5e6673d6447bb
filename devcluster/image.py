#!/usr/bin/env python3
"""The project's image, built from its Dockerfile without a Docker engine and without a registry.

Route (the facts behind it: devcluster/README.md, "The image"):

1. A stand-in for the Dockerfile's base image, made locally: ``mmdebstrap`` writes a minimal
   Debian trixie with python3, and a venv at ``/usr/local`` puts ``python``/``pip`` in
   ``/usr/local/bin`` as the official ``python:*-slim`` images do (pip in a venv is not
   "externally managed", and ``pip uninstall --yes pip`` works as the Dockerfile expects). It is
   named :data:`BASE_IMAGE`, **not** the official image's name: the Dockerfile takes it as
   ``--build-arg BASE_IMAGE=...``; its default stays the production base. Debian has no 3.12:
   this base runs Python 3.13 (``requires-python >=3.11``).
2. ``buildah bud --isolation chroot --pull=never`` builds the Dockerfile unchanged otherwise.
   pip inside the build trusts the host's CA bundle (mounted for the RUN steps only: this
   machine's egress re-signs TLS). crun refuses cgroup v1 hybrid hosts; ``chroot`` isolation
   runs no OCI runtime at all.
3. ``buildah push IMAGE oci-archive:...`` writes the OCI archive that ``ctr images import`` takes.

Everything lives below ``${XDG_CACHE_HOME:-~/.cache}/memory-hygiene/image/`` (container
storage through ``CONTAINERS_STORAGE_CONF``); the archive is cached by a hash of what goes into
it (Dockerfile, pyproject.toml, README.md, operator/, this recipe). Directories the tools make
elsewhere, which were not there before, are removed afterwards.

    python -m devcluster.image build      # prints the archive's path and the image name
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUITE = "trixie"
BASE_IMAGE = f"localhost/memory-hygiene/base-python:{SUITE}"
"""The local stand-in base, under a name of its own."""
IMAGE_REPO = "localhost/memory-hygiene"
RECIPE_VERSION = "1"
"""Bump to rebuild the base (what mmdebstrap installs changed)."""
BASE_PACKAGES = ("python3", "python3-venv", "passwd", "ca-certificates", "netbase")
APT_PACKAGES = ("buildah", "mmdebstrap")
SIDE_DIRS = ("/var/lib/containers", "/run/containers", "/run/buildah", "/run/libpod", "/run/runc",
             "/run/crun", "/etc/containers/certs.d")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageError(RuntimeError):
    """The image could not be built."""


def _log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memory-hygiene" / "image"


def _inputs_hash() -> str:
    """The archive's cache key: the build context's files with their paths (the Dockerfile copies
    them by path), and this recipe by its content alone (moving it does not change the key)."""
    h = hashlib.sha256(RECIPE_VERSION.encode())
    h.update(b"recipe\0" + Path(__file__).read_bytes() + b"\0")
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted(p for p in (ROOT / "operator").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".egg-info"))
                    and ".egg-info" not in str(p))
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _env() -> dict[str, str]:
    d = cache_dir()
    conf = d / "storage.conf"
    if not conf.exists():
        d.mkdir(parents=True, exist_ok=True)
        conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{d / "storage"}"\n'
                        f'runroot = "{d / "runroot"}"\n')
    return dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf), BUILDAH_ISOLATION="chroot")


def _run(*argv: str, env: dict[str, str] | None = None, what: str = "") -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or _env())
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise ImageError(f"{what or argv[0]} failed ({proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc.stdout


def install_tools() -> None:
    missing = [p for p in APT_PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ImageError(f"{', '.join(missing)} needed (Debian: apt-get install {' '.join(missing)})")
    _log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        _run(*cmd, env=env, what="apt-get install")


def _debian_mirror() -> str:
    """The host's own Debian mirror (its apt sources), for mmdebstrap."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.suffix in (".list", ".sources") or p.name == "sources.list":
            with contextlib.suppress(OSError):
                texts.append(p.read_text())
    for text in texts:
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and words[1].rstrip("/").endswith("/debian"):
                return words[1]
            if words[:1] == ["deb"]:
                uri = next((w for w in words[1:] if "://" in w), "")
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    raise ImageError("no Debian mirror in the host's apt sources (/etc/apt/sources.list*)")


def _image_exists(name: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True,
                          env=_env()).returncode == 0


def build_base(*, force: bool = False) -> str:
    """The local stand-in base image (cached in the container storage)."""
    if _image_exists(BASE_IMAGE) and not force:
        return BASE_IMAGE
    work = cache_dir() / "base"
    work.mkdir(parents=True, exist_ok=True)
    rootfs = work / f"{SUITE}.tar"
    t0 = time.monotonic()
    hooks = [
        'chroot "$1" python3 -m venv /usr/local',
        'rm -f "$1"/usr/local/bin/activate* "$1"/usr/local/bin/Activate.ps1',
        'chroot "$1" /usr/local/bin/pip --version',
        'find "$1"/var/cache "$1"/var/log -type f -delete',
    ]
    _run("mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
         "--dpkgopt=path-include=/usr/share/doc/*/copyright", "--dpkgopt=path-exclude=/usr/share/locale/*",
         *(f"--customize-hook={h}" for h in hooks), SUITE, str(rootfs), _debian_mirror(), what="mmdebstrap")
    ctr = _run("buildah", "from", "scratch").strip()
    try:
        _run("buildah", "add", ctr, str(rootfs), "/")
        _run("buildah", "config", "--env", "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--env", "LANG=C.UTF-8", "--cmd", "python3", "--os", "linux", "--arch", "amd64",
             "--label", f"org.opencontainers.image.description=local stand-in for python:*-slim "
                        f"(Debian {SUITE} python3, a venv at /usr/local)", ctr)
        _run("buildah", "commit", "--rm", ctr, BASE_IMAGE)
    except ImageError:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, env=_env())
        raise
    rootfs.unlink()
    _log(f"base {BASE_IMAGE} built in {time.monotonic() - t0:.1f}s")
    return BASE_IMAGE


def _side_dirs_before() -> set[str]:
    return {d for d in SIDE_DIRS if os.path.lexists(d)}


def _remove_side_dirs(before: set[str]) -> None:
    for d in SIDE_DIRS:
        if d not in before and os.path.lexists(d):
            shutil.rmtree(d, ignore_errors=True)


def build_image(*, force: bool = False) -> dict[str, Any]:
    """Build (or find cached) the project's image as an OCI archive.

    Returns ``{"archive": Path, "image": "localhost/memory-hygiene:test-<hash>", "cached": bool,
    "seconds": float, "archive_bytes": int}``.
    """
    key = _inputs_hash()[:12]
    image = f"{IMAGE_REPO}:test-{key}"
    out_dir = cache_dir() / "archives"
    archive = out_dir / f"memory-hygiene-{key}.tar"
    t0 = time.monotonic()
    def result(cached: bool) -> dict[str, Any]:
        return {"archive": archive, "image": image, "cached": cached, "seconds": time.monotonic() - t0,
                "archive_bytes": archive.stat().st_size}

    if archive.exists() and not force:
        return result(True)
    install_tools()
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if archive.exists() and not force:
            return result(True)
        before = _side_dirs_before()
        try:
            base = build_base()
            t1 = time.monotonic()
            pip_conf = cache_dir() / "pip.conf"
            pip_conf.write_text(f"[global]\ncert = {HOST_CA}\n")
            # No --layers: buildah's cache key for the final stage's `RUN --mount=...,from=builder`
            # is the instruction and its parent, not what the mount holds, so a cached layer would
            # install the wheel of older sources. The archive is cached by its inputs already.
            _run("buildah", "bud", "--isolation", "chroot", "--pull=never",
                 "--build-arg", f"BASE_IMAGE={base}",
                 "-v", f"{HOST_CA}:{HOST_CA}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro",
                 "-t", image, "-f", str(ROOT / "Dockerfile"), str(ROOT), what="buildah bud")
            _log(f"{image} built in {time.monotonic() - t1:.1f}s")
            tmp = archive.with_name(archive.name + f".tmp{os.getpid()}")
            _run("buildah", "push", image, f"oci-archive:{tmp}:{image}", what="buildah push")
            os.replace(tmp, archive)
            # old archives of earlier sources: one kept is enough
            for old in out_dir.glob("memory-hygiene-*.tar"):
                if old != archive:
                    old.unlink()
        finally:
            _remove_side_dirs(before)
    return result(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or find cached) the image's OCI archive")
    b.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        info = build_image(force=args.force)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"image: {info['image']}")
    print(f"archive: {info['archive']} ({info['archive_bytes'] / 2**20:.1f} MiB)")
    print(f"{'cached' if info['cached'] else 'built'} in {info['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
