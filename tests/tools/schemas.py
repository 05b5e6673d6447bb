#!/usr/bin/env python3
"""JSON schemas for kubeconform, made offline from sources pinned through the Go module proxy.

kubeconform fetches its schemas from GitHub by default; the tests have no network but the package
registries. So the schemas are made here, in the layout kubeconform's ``-schema-location``
template ``DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json`` reads (``deployment-apps-v1.json``):

* the built-in kinds from ``api/openapi-spec/swagger.json`` of the ``k8s.io/kubernetes`` module,
  at the version devcluster/apiserver/go.mod pins (the API server the e2e suite runs);
* the CRDs: memory-hygiene's own (crds/), and the upstream ones the chart can render objects of,
  taken from the Go modules pinned in ``crds/go.mod`` next to this file (the Prometheus Operator's
  ServiceMonitor and PrometheusRule; the ``wgpolicyk8s.io`` PolicyReports as Kyverno ships them).
  ``crds/go.sum`` holds their hashes, checked against what the proxy serves.

Every schema is "strict" (``additionalProperties: false`` wherever the API lists the properties,
as kubeconform's ``-strict`` schemas): a misspelt field in a template is an error.

    python tests/tools/schemas.py OUTDIR    # writes the schemas; prints the template to pass
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.append(str(ROOT))  # the development cluster package, devcluster/

from devcluster import localcluster  # noqa: E402

CRD_PINS = HERE / "crds"

#: Upstream CRD files, by module (a ``require`` in crds/go.mod) and path inside it.
UPSTREAM_CRDS: dict[str, tuple[str, ...]] = {
    "github.com/prometheus-operator/prometheus-operator": (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ),
    "github.com/kyverno/kyverno": (
        "config/crds/policyreport/wgpolicyk8s.io_policyreports.yaml",
        "config/crds/policyreport/wgpolicyk8s.io_clusterpolicyreports.yaml",
    ),
}


class SchemaError(RuntimeError):
    pass


def _pinned(go_mod: Path, module: str) -> str:
    m = re.search(rf"^(?:require)?\s+{re.escape(module)} (v\S+)(?:\s*//.*)?$", go_mod.read_text(), re.M)
    if not m:
        raise SchemaError(f"no `require {module} vX.Y.Z` in {go_mod}")
    return m.group(1)


def module_dir(module: str, version: str, go_sum: Path | None = None) -> Path:
    """The module's directory in the Go module cache (downloaded through the proxy if needed);
    with ``go_sum``, its hash must be the one recorded there."""
    env = dict(os.environ, GOFLAGS="-mod=mod", GO111MODULE="on")
    proc = subprocess.run([str(localcluster.find_go()), "mod", "download", "-json", f"{module}@{version}"],
                          cwd="/", env=env, capture_output=True, text=True)
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or "Dir" not in info:
        raise SchemaError(f"go mod download {module}@{version} failed (exit {proc.returncode}): "
                          f"{info.get('Error') or proc.stderr.strip()}")
    if go_sum is not None:
        want = f"{module} {version} {info['Sum']}"
        if want not in go_sum.read_text().splitlines():
            raise SchemaError(f"{module}@{version}: the proxy served {info['Sum']}, not the hash in {go_sum}")
    return Path(info["Dir"])


# --- conversion ------------------------------------------------------------------------------------

INT_OR_STRING = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"anyOf": [{"type": "string"}, {"type": "number"}]}


def _strict(node: Any) -> Any:
    """One schema: formats dropped (kubeconform would assert some), int-or-string and nullable
    made JSON Schema, and ``additionalProperties: false`` where the properties are listed.
    Walks only schema positions (a property may well be *named* ``format``)."""
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string":
        return dict(INT_OR_STRING)
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("format", "nullable"):
            continue
        if k in ("properties", "patternProperties", "definitions") and isinstance(v, dict):
            out[k] = {name: _strict(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = _strict(v)
        elif k in ("allOf", "anyOf", "oneOf") and isinstance(v, list):
            out[k] = [_strict(sub) for sub in v]
        else:
            out[k] = v
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs, stack) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):  # (JSONSchemaProps has a *property* named $ref)
        name = ref.rsplit("/", 1)[-1]
        if name.endswith("util.intstr.IntOrString"):
            return dict(INT_OR_STRING)
        if name.endswith("api.resource.Quantity"):
            return dict(QUANTITY)
        if name in stack:  # a recursive type (JSONSchemaProps): anything goes below here
            return {}
        return _inline(defs[name], defs, (*stack, name))
    return {k: _inline(v, defs, stack) for k, v in node.items()}


def _file_name(kind: str, group: str, version: str) -> str:
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def builtin_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    defs = swagger["definitions"]
    out: dict[str, dict[str, Any]] = {}
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            if "properties" not in d or "kind" not in d["properties"]:
                continue
            schema = _strict(_inline(d, defs, (name,)))
            out[_file_name(gvk["kind"], gvk["group"], gvk["version"])] = schema
    return out


def crd_schemas(crd: dict[str, Any], object_meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for v in crd["spec"]["versions"]:
        schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{group}/{v['name']}"]}
        props["kind"] = {"type": "string", "enum": [kind]}
        schema = _strict(schema)
        schema["properties"]["metadata"] = object_meta
        out[_file_name(kind, group, v["name"])] = schema
    return out


def write_schemas(outdir: Path) -> str:
    """Write every schema into ``outdir``; return kubeconform's ``-schema-location`` for them."""
    outdir.mkdir(parents=True, exist_ok=True)
    k8s = module_dir("k8s.io/kubernetes", localcluster.kubernetes_version())
    swagger = json.loads((k8s / "api" / "openapi-spec" / "swagger.json").read_text())
    schemas = builtin_schemas(swagger)
    object_meta = _strict(_inline(swagger["definitions"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"],
                                  swagger["definitions"]))
    crd_files = sorted((ROOT / "crds").glob("*.yaml"))
    for module, paths in UPSTREAM_CRDS.items():
        d = module_dir(module, _pinned(CRD_PINS / "go.mod", module), CRD_PINS / "go.sum")
        crd_files += [d / p for p in paths]
    for f in crd_files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                schemas.update(crd_schemas(doc, object_meta))
    for name, schema in schemas.items():
        (outdir / name).write_text(json.dumps(schema))
    return str(outdir) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json"


def upstream_crd_files() -> list[Path]:
    """The upstream CRD files (for installing them on the e2e API server)."""
    files = []
    for module, paths in UPSTREAM_CRDS.items():
        d = module_dir(module, _pinned(CRD_PINS / "go.mod", module), CRD_PINS / "go.sum")
        files += [d / p for p in paths]
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(write_schemas(Path(sys.argv[1])))
