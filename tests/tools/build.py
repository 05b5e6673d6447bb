#!/usr/bin/env python3
"""The packaging tools the tests run, built from the Go module proxy like kube-apiserver.

Each tool has a module of its own here (``<tool>/go.mod``: its ``require`` line is the one
source of the version, its ``tool`` line the command; separate modules so that helm's and
Prometheus' Kubernetes dependencies never have to agree). Binaries are cached in
``${XDG_CACHE_HOME:-~/.cache}/memory-hygiene/bin/<tool>-<version>`` and built under a file lock
(devcluster/localcluster.py ``_go_build``), so concurrent sessions build each once. A
build that fails raises with the build's last lines: nothing here is optional.

    python tests/tools/build.py            # build (or find cached) helm, promtool, kubeconform, dashlint
    python tests/tools/build.py helm       # one of them; prints the paths

``MEMORY_HYGIENE_HELM`` (``..._PROMTOOL``, ``..._KUBECONFORM``) names a binary to use instead.
To change a version: edit the ``require`` line, then ``go mod tidy`` in that directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parents[1]))  # the development cluster package, devcluster/

from devcluster import localcluster  # noqa: E402

# tool -> (module in the require line, package to build, -X flags stamping the version)
TOOLS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "helm": ("helm.sh/helm/v4", "helm.sh/helm/v4/cmd/helm",
             ("helm.sh/helm/v4/internal/version.version={version}",
              "helm.sh/helm/v4/internal/version.gitTreeState=clean")),
    # Prometheus tags v3.X.Y as the Go module version v0.3XX.Y.
    "promtool": ("github.com/prometheus/prometheus", "github.com/prometheus/prometheus/cmd/promtool",
                 ("github.com/prometheus/common/version.Version={version}",)),
    "kubeconform": ("github.com/yannh/kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform",
                    ("main.version={version}",)),
    # Our own main.go over the dashboard schema of Grafana's foundation SDK (the version is the
    # SDK's; the cached binary's name also carries a hash of main.go).
    "dashlint": ("github.com/grafana/grafana-foundation-sdk/go", ".", ()),
}


class ToolError(RuntimeError):
    pass


def pinned_version(tool: str) -> str:
    module = TOOLS[tool][0]
    text = (HERE / tool / "go.mod").read_text()
    m = re.search(rf"^(?:require)?\s+{re.escape(module)} (v\S+)(?:\s*//.*)?$", text, re.M)
    if not m:
        raise ToolError(f"no `require {module} vX.Y.Z` line in {HERE / tool / 'go.mod'}")
    return m.group(1)


def build(tool: str, *, force: bool = False) -> Path:
    """The cached binary of ``tool``, built first if needed (fails loudly if it cannot)."""
    if tool not in TOOLS:
        raise ToolError(f"unknown tool {tool!r}; one of {', '.join(TOOLS)}")
    override = os.environ.get(f"MEMORY_HYGIENE_{tool.upper()}")
    if override:
        if not os.access(override, os.X_OK):
            raise ToolError(f"MEMORY_HYGIENE_{tool.upper()}={override} is not executable")
        return Path(override)
    version = pinned_version(tool)
    _module, package, stamps = TOOLS[tool]
    name = f"{tool}-{version}"
    if package == ".":  # built from our own source here: a change to it is a new binary
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in sorted((HERE / tool).glob("*.go"))))
        name += "-" + digest.hexdigest()[:12]
    target = localcluster.bin_dir() / name
    if target.exists() and not force:
        return target
    ldflags = " ".join(["-s", "-w", *(f"-X {s.format(version=version)}" for s in stamps)])
    return localcluster._go_build(localcluster.find_go(), target, HERE / tool, package, ldflags,
                                  f"{tool} {version}", "a few minutes", force=force)


def main(argv: list[str]) -> int:
    tools = argv or list(TOOLS)
    for tool in tools:
        started = time.monotonic()
        path = build(tool)
        print(f"{tool}\t{path}\t{time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
