"""The CRD on the real server (schema, CEL, printer columns) and the audit against the live cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from devcluster.sim.kube import Sim, load_snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def policy_yaml(name: str, spec: dict) -> str:
    return yaml.safe_dump({"apiVersion": "memoryhygiene.io/v1alpha1", "kind": "MemoryPolicy",
                           "metadata": {"name": name}, "spec": spec})


def test_sample_policies_are_accepted_with_defaults_filled(crd, kubectl):
    for f in ("memorypolicy.yaml", "memorypolicy-capacity.yaml", "memorypolicy-enforce.yaml"):
        proc = kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES / f), "-o", "json")
        assert proc.returncode == 0, proc.stderr
    name = f"empty-{uuid.uuid4().hex[:8]}"
    proc = kubectl("apply", "-f", "-", "-o", "json", input=policy_yaml(name, {}))
    assert proc.returncode == 0, proc.stderr
    rules = json.loads(proc.stdout)["spec"]["rules"]
    # the API server applies the model's defaults: `kubectl get -o yaml` shows every setting in force
    assert rules["overcommit"] == {"enabled": True, "basis": "Allocatable", "maxLimitsPercent": 100}
    assert rules["silentOOM"] == {"enabled": True, "correlationWindowSeconds": 60, "lookbackSeconds": 3600,
                                  "reporters": ["kernel-monitor", "memory-hygiene-node-agent", "kubelet"],
                                  "maxKillsPerEvent": 500, "maxIncidentsPerNode": 1000}
    assert rules["missingRequests"] == {"enabled": True, "requireLimits": False}
    assert rules["nodeReservation"] == {"enabled": False, "minimum": "auto"}
    name = f"reserve-{uuid.uuid4().hex[:8]}"
    spec = {"rules": {"nodeReservation": {"enabled": True, "minimum": "1.5Gi"}}}
    proc = kubectl("apply", "--dry-run=server", "-f", "-", "-o", "json", input=policy_yaml(name, spec))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spec"]["rules"]["nodeReservation"] == {"enabled": True, "minimum": "1.5Gi"}


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"rules": {"overcommit": {"maxLimitsPercent": 0}}}, "spec.rules.overcommit.maxLimitsPercent",
         "should be greater than or equal to 1"),
        ({"rules": {"overcommit": {"basis": "Requests"}}}, "spec.rules.overcommit.basis", "Unsupported value"),
        ({"rules": {"silentOOM": {"correlationWindowSeconds": 600, "lookbackSeconds": 300}}},
         "spec.rules.silentOOM.correlationWindowSeconds", "must not exceed lookbackSeconds"),
        ({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}, "spec.podSelector",
         "values must be non-empty for In/NotIn"),
        ({"nodeSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}},
         "spec.nodeSelector", "empty for Exists/DoesNotExist"),
        ({"rules": {"silentOOM": {"lookbackSeconds": "an hour"}}}, "spec.rules.silentOOM.lookbackSeconds",
         "must be of type integer"),
        ({"rules": {"missingRequests": {"limitAdmission": "Deny"}}}, "spec.rules.missingRequests.limitAdmission",
         "limitAdmission needs requireLimits: true"),
        ({"rules": {"missingRequests": {"enabled": False, "admission": "Warn"}}},
         "spec.rules.missingRequests.admission", "admission needs the rule enabled"),
        ({"rules": {"limitRatio": {"admission": "Warn"}}}, "spec.rules.limitRatio.admission",
         "admission needs maxLimitToRequestRatio"),
        ({"rules": {"limitRatio": {"maxLimitToRequestRatio": 0.5}}}, "spec.rules.limitRatio.maxLimitToRequestRatio",
         "should be greater than or equal to 1"),
        ({"rules": {"missingRequests": {"admission": "Refuse"}}}, "spec.rules.missingRequests.admission",
         "Unsupported value"),
        ({"rules": {"nodeReservation": {"minimum": "lots"}}}, "spec.rules.nodeReservation.minimum", "should match"),
        ({"rules": {"nodeReservation": {"minimum": "-1Gi"}}}, "spec.rules.nodeReservation.minimum", "should match"),
    ],
)
def test_invalid_policy_is_refused_by_the_server_naming_the_field(crd, kubectl, spec, field, words):
    proc = kubectl("apply", "-f", "-", input=policy_yaml(f"bad-{uuid.uuid4().hex[:8]}", spec))
    assert proc.returncode != 0
    assert field in proc.stderr and words in proc.stderr, proc.stderr


def test_unknown_fields_are_refused(crd, kubectl):
    proc = kubectl("apply", "--validate=strict", "-f", "-",
                   input=policy_yaml(f"typo-{uuid.uuid4().hex[:8]}", {"rules": {"overcomit": {}}}))
    assert proc.returncode != 0 and "overcomit" in proc.stderr


def test_kubectl_explain_has_the_descriptions(crd, kubectl):
    out = kubectl("explain", "memorypolicy.spec.rules.overcommit.maxLimitsPercent", check=True).stdout
    assert "percentage of the basis" in out
    out = kubectl("explain", "mempol.status.summary", check=True).stdout
    assert "silentOOMKills" in out


@pytest.mark.parametrize("seed", sorted(p.name for p in EXAMPLES.glob("seed*.yaml")))
def test_audit_of_the_live_cluster_equals_audit_of_the_file(cluster, seed, tmp_path):
    """The snapshot loaded into the API server and audited live, as of the same moment, gives the
    file's JSON, once the scenario's names are mapped back and its times shifted back."""
    from memory_hygiene.core.rules import fmt_time
    from memory_hygiene.core.snapshot import parse_time
    from memory_hygiene.inputs import load_files

    tag = uuid.uuid4().hex[:8]
    loaded = load_snapshot(Sim(cluster.kubeconfig), EXAMPLES / seed, tag, labels={"mh-test": tag})
    sel = {"matchLabels": {"mh-test": tag}}
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml("default", {"nodeSelector": sel, "namespaceSelector": sel}))  # a YAML anchor
    exe = str(Path(sys.executable).parent / "memory-hygiene")
    from_file = subprocess.run([exe, "audit", "-f", str(EXAMPLES / seed), "-o", "json"], capture_output=True,
                               text=True, timeout=60)
    expected = json.loads(from_file.stdout)

    from memory_hygiene.core.rules import SETTLE_SECONDS

    # the file's own default: its kills judged (settled), SETTLE_SECONDS after its newest time
    now = fmt_time(load_files([str(EXAMPLES / seed)]).newest_time + SETTLE_SECONDS + loaded.shift_seconds)
    live = subprocess.run([exe, "audit", "--kubeconfig", str(cluster.kubeconfig), "--policy", str(policy),
                           "-o", "json", "--now", now], capture_output=True, text=True, timeout=60)
    assert live.returncode == from_file.returncode, live.stderr
    text = live.stdout
    for old, new in [*loaded.nodes.items(), *loaded.namespaces.items(), *loaded.uids.items()]:
        text = text.replace(new, old)  # tagged names and fresh UIDs: no accidental hits
    got = json.loads(text)
    for kill in got["oomKills"]:
        kill["time"] = fmt_time(parse_time(kill["time"]) - loaded.shift_seconds)
    for v in got["violations"]:  # SilentOOMKill messages say when
        for kill in got["oomKills"]:
            shifted = fmt_time(parse_time(kill["time"]) + loaded.shift_seconds)
            v["message"] = v["message"].replace(shifted, kill["time"])
    assert got == expected
