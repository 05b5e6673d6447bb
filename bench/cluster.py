"""The local control plane of devcluster/localcluster.py, sized for the benchmark.

Differences from the e2e cluster (all done here by subclassing, nothing in devcluster/ changes):

* etcd gets ``--quota-backend-bytes`` (default 8 GiB; etcd's own default of 2 GiB fills up
  at ~100k pods with their status writes) and a larger ``--max-request-bytes``.
* kube-apiserver writes an audit log of the *operator's* requests only (audit policy: level
  Metadata for user ``memory-hygiene-operator``, None for everyone else), so the API load the
  operator adds can be counted exactly (verb, resource, time) without logging the load
  generator's hundreds of thousands of writes.
* The operator gets its own client certificate (CN=memory-hygiene-operator, O=system:masters)
  and kubeconfig, signed by the cluster CA.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # the development cluster package, devcluster/

from devcluster import localcluster as lc  # noqa: E402

OPERATOR_USER = "memory-hygiene-operator"

AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["{OPERATOR_USER}"]
- level: None
"""


class BenchCluster(lc.LocalCluster):
    def __init__(self, *, etcd_quota_bytes: int = 8 << 30, extra_apiserver_args: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        self.bench_dir = Path(tempfile.mkdtemp(prefix="mh-bench-"))
        self.audit_log = self.bench_dir / "audit.log"
        policy = self.bench_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        args = [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
            "--audit-log-mode=batch",
            "--audit-log-batch-max-wait=1s",
            *extra_apiserver_args,
        ]
        self.etcd_quota_bytes = etcd_quota_bytes
        super().__init__(extra_apiserver_args=args, **kwargs)
        self.operator_kubeconfig: Path | None = None

    def _spawn(self, name: str, argv: list[str]):  # type: ignore[override]
        if name == "etcd":
            argv = [*argv, f"--quota-backend-bytes={self.etcd_quota_bytes}",
                    "--max-request-bytes=10485760"]
        return super()._spawn(name, argv)

    def start(self) -> "BenchCluster":
        super().start()
        self.operator_kubeconfig = self._operator_kubeconfig()
        return self

    def _operator_kubeconfig(self) -> Path:
        assert self.root is not None
        d = self.root / "pki"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        lc._openssl("req", "-new", *ec, "-keyout", "operator.key", "-out", "operator.csr",
                    "-subj", f"/O=system:masters/CN={OPERATOR_USER}", cwd=d)
        lc._openssl("x509", "-req", "-in", "operator.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "30", "-extfile", "client.ext", "-out", "operator.crt",
                    cwd=d)
        return lc.write_kubeconfig(
            self.root / "operator.kubeconfig", server=self.server, ca_crt=self.pki["ca_crt"],
            user={"client-certificate-data": lc._b64file(d / "operator.crt"),
                  "client-key-data": lc._b64file(d / "operator.key")})

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.bench_dir, ignore_errors=True)  # the audit log: read before stopping

    def versions(self) -> dict[str, str]:
        b = self._binaries or {}
        return {"kubernetes": str(b.get("kubernetes_version", "?")), "etcd": str(b.get("etcd_version", "?"))}


def parse_audit(path: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """The operator's requests: one record per auditID (watches are logged at ResponseStarted
    and again at ResponseComplete)."""
    from datetime import datetime

    seen: dict[str, dict[str, Any]] = {}
    try:
        fh = open(path)
    except FileNotFoundError:
        return []
    with fh:
        for line in fh:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            aid = e.get("auditID")
            if aid in seen:
                continue
            t = datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if t < since:
                continue
            ref = e.get("objectRef") or {}
            seen[aid] = {"t": t, "verb": e.get("verb"), "resource": ref.get("resource", ""),
                         "name": ref.get("name", ""), "ns": ref.get("namespace", ""),
                         "sub": ref.get("subresource", ""), "code": (e.get("responseStatus") or {}).get("code"),
                         "ua": e.get("userAgent", ""), "uri": e.get("requestURI", "")}
    return sorted(seen.values(), key=lambda r: r["t"])
