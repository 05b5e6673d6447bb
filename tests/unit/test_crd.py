"""The CRD in crds/ is generated from the pydantic model and must not drift from it."""

from pathlib import Path

import yaml

from memory_hygiene.core import policy
from memory_hygiene.crd import CRD_FILE, crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def _walk(schema, path=""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")


def test_committed_crd_matches_the_model():
    committed = (ROOT / "crds" / CRD_FILE).read_text()
    assert committed == crd_yaml(), (
        "crds/ drifted from the model: run `memory-hygiene crd > crds/" + CRD_FILE + "`"
    )


def test_schema_is_structural_and_documented():
    version = crd()["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(root["properties"]["spec"], "spec"):
        assert "type" in node, f"{path} has no type (not structural)"
        assert "$ref" not in node and "anyOf" not in node, path
        if not path.endswith("[]") or node.get("type") == "object":
            assert node.get("description"), f"{path} has no description (kubectl explain needs one)"
        if "properties" in node:
            assert "additionalProperties" not in node, path


def test_names_columns_and_subresources():
    spec = crd()["spec"]
    assert spec["scope"] == "Cluster"
    assert spec["names"]["shortNames"] == ["mempol"]
    assert spec["group"] == policy.GROUP
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Overcommitted", "SilentOOMs", "MissingRequests", "Ready", "Age"]


def test_defaults_in_the_schema_equal_the_model_defaults():
    rules = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]
    model = policy.parse_spec({}).rules
    props = rules["properties"]
    assert props["overcommit"]["properties"]["maxLimitsPercent"]["default"] == model.overcommit.max_limits_percent
    assert props["overcommit"]["properties"]["basis"]["default"] == model.overcommit.basis.value
    assert props["silentOOM"]["properties"]["lookbackSeconds"]["default"] == model.silent_oom.lookback_seconds
    assert props["silentOOM"]["x-kubernetes-validations"], "CEL rule for window <= lookback"
    yaml.safe_load(crd_yaml())


def test_reference_doc_matches_the_model():
    from memory_hygiene.crd import reference_markdown

    assert (ROOT / "docs" / "memorypolicy.md").read_text() == reference_markdown(), (
        "docs/memorypolicy.md drifted: run `memory-hygiene crd --reference > docs/memorypolicy.md`"
    )
