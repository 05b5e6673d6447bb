"""The operator's settings, declared once: each is a command-line flag of ``memory-hygiene run``
and an environment variable ``MEMORY_HYGIENE_<NAME>`` (for ``kopf run``, and for a container
whose args are not the place), with one default and one check.

A flag given wins over the variable, and the variable over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

ENV_PREFIX = "MEMORY_HYGIENE_"


def _setting(default: Any, help: str, metavar: str | None = None,
             check: tuple[Callable[[Any], bool], str] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "metavar": metavar, "check": check})


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_AT_LEAST_1 = (lambda v: v >= 1, "must be >= 1")
_POSITIVE = (lambda v: v > 0, "must be > 0")
_NOT_NEGATIVE = (lambda v: v >= 0, "must be >= 0")


@dataclass
class Config:
    """Every setting of the operator process (``memory-hygiene run``)."""

    http_port: int = _setting(
        8080, "serve /metrics (Prometheus), /healthz (liveness) and /readyz (readiness: caches filled) on this "
        "port; 0 turns it off", "PORT", (lambda v: 0 <= v <= 65535, "must be a port number or 0"))
    http_host: str = _setting("0.0.0.0", "address to serve on", "ADDR")
    max_status_violations: int = _setting(
        100, "at most N violations in a policy's status; the summary counts all", "N", _AT_LEAST_1)
    status_interval: float = _setting(
        2.0, "write a policy's status at most once every S seconds; the first write and a new spec's go at once",
        "S", _NOT_NEGATIVE)
    status_qps: float = _setting(
        10.0, "status writes per second at most, over all policies (a change that touches 300 policies would "
        "otherwise write 300 statuses every --status-interval); first writes go first; 0: no limit", "Q",
        _NOT_NEGATIVE)
    event_burst: int = _setting(25, "Events one object may get at once before rate limiting (client-go: 25)", "N",
                                _AT_LEAST_1)
    event_refill_seconds: float = _setting(300.0, "one more Event per object every S seconds (client-go: 300)", "S",
                                           _POSITIVE)
    event_qps: float = _setting(
        50.0, "Events posted per second at most, over all objects (kubelet's eventRecordQPS: 50); 0: no limit",
        "Q", _NOT_NEGATIVE)
    policy_reports: bool = _setting(
        False, "also write the violations as wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace with pod "
        "violations) and a ClusterPolicyReport (node violations) per policy; needs their CRDs and the RBAC of "
        "manifests/overlays/policyreports/")
    policy_report_max_results: int = _setting(
        1000, "at most N results in one report, most severe first; its summary counts all", "N", _AT_LEAST_1)
    resync_seconds: float = _setting(
        30.0, "every S seconds: nodes with OOM Events are evaluated again (kills age out of the lookback), and "
        "the MemoryPolicies and their admission objects are listed and compared with what the watches told",
        "S", _POSITIVE)
    watch_list: bool = _setting(
        True, "read each cache's initial state as one watch stream (sendInitialEvents) where the API server offers "
        "it; off: always LIST in pages")
    chunk_size: int = _setting(500, "page size of the LISTs (when there is no watch stream)", "N", _AT_LEAST_1)
    debounce_seconds: float = _setting(
        0.05, "wait this long after a change before evaluating, so that a burst of changes is evaluated once", "S",
        _NOT_NEGATIVE)


class ConfigError(ValueError):
    """A setting that cannot be used; the message names every one (flag and variable)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(f: Any) -> type:
    name = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float, "str": str, "bool": bool}[name]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """A flag per setting (its default None: the variable, then the default, decide when it is not given)."""
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    for f in fields(Config):
        meta, env = f.metadata, ENV_PREFIX + f.name.upper()
        default = f.default if f.default is not MISSING else None
        if _kind(f) is bool:
            p.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                           help=f"{meta['help']} (${env}; default {'on' if default else 'off'})")
        else:
            p.add_argument(_flag(f.name), type=_kind(f), default=None, metavar=meta["metavar"],
                           help=f"{meta['help']} (${env}; default {default})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs")


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The settings: each from its flag (``args``), else its variable, else its default.
    Raises ``ConfigError`` naming every setting that is malformed or out of range."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Config):
        kind, env = _kind(f), ENV_PREFIX + f.name.upper()
        given = getattr(args, f.name, None) if args is not None else None
        if given is not None:
            value, where = given, _flag(f.name)
        elif environ.get(env, "") != "":
            where = env
            try:
                value = _bool(environ[env]) if kind is bool else kind(environ[env])
            except ValueError:
                problems.append(f"{env}={environ[env]!r}: not a{'n' if kind is int else ''} {kind.__name__}")
                continue
        else:
            continue
        check = f.metadata["check"]
        if check is not None and not check[0](value):
            problems.append(f"{where} {value}: {check[1]}")
            continue
        values[f.name] = value
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(**values)
