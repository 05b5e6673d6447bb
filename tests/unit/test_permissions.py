"""The startup RBAC self-check asks for exactly what manifests/base/clusterrole.yaml grants."""

from pathlib import Path

import yaml

from memory_hygiene.shell.permissions import NEEDS

ROLE = Path(__file__).resolve().parents[2] / "manifests" / "base" / "clusterrole.yaml"


def test_needs_equal_the_cluster_role():
    role = yaml.safe_load(ROLE.read_text())
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    needed = {(n.group, f"{n.resource}/{n.subresource}" if n.subresource else n.resource, n.verb) for n in NEEDS}
    assert needed == granted
    assert all(n.why for n in NEEDS)
