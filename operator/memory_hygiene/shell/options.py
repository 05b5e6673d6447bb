"""Command-line options of ``memory-hygiene run``."""

from __future__ import annotations

import argparse


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    p.add_argument("--http-port", type=int, default=8080, metavar="PORT",
                   help="serve /metrics (Prometheus), /healthz (liveness) and /readyz (readiness: caches "
                   "filled) on this port; 0 turns it off (default 8080)")
    p.add_argument("--http-host", default="0.0.0.0", metavar="ADDR", help="address to serve on (default 0.0.0.0)")
    p.add_argument("--max-status-violations", type=int, default=100, metavar="N",
                   help="at most N violations in a policy's status; the summary counts all (default 100)")
    p.add_argument("--status-interval", type=float, default=2.0, metavar="S",
                   help="write a policy's status at most once every S seconds; the first write and a new "
                   "spec's go at once (default 2)")
    p.add_argument("--event-burst", type=int, default=25, metavar="N",
                   help="Events one object may get at once before rate limiting (client-go: 25)")
    p.add_argument("--event-refill-seconds", type=float, default=300.0, metavar="S",
                   help="one more Event per object every S seconds (client-go: 300)")
    p.add_argument("--event-qps", type=float, default=50.0, metavar="Q",
                   help="Events posted per second at most, over all objects (default 50, kubelet's eventRecordQPS)")
    p.add_argument("--policy-reports", action="store_true",
                   help="also write the violations as wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace "
                   "with pod violations) and a ClusterPolicyReport (node violations) per policy; needs their "
                   "CRDs and the RBAC of manifests/overlays/policyreports/ (default off)")
    p.add_argument("--policy-report-max-results", type=int, default=1000, metavar="N",
                   help="at most N results in one report, most severe first; its summary counts all (default 1000)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs")
