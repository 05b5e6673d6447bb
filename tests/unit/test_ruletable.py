"""The rule table (core/ruletable.py) is the one place a rule is declared: the report order, the
status summary and its schema, the metrics, the PolicyReport severity, the audit text and the docs
all follow it."""

from prometheus_client import REGISTRY

from memory_hygiene import report_table
from memory_hygiene.core import policy, policyreport, ruletable
from memory_hygiene.core.engine import PolicyEngine, evaluate, snapshot_view
from memory_hygiene.core.policy import parse_spec
from memory_hygiene.core.rules import RULES, summarize, violation_order
from memory_hygiene.crd import crd, reference_markdown
from memory_hygiene.shell import reconciler
from tests.unit.test_rules import node, pod

TODAYS_SUMMARY_KEYS = {
    # status.summary as released before the table: API, never to be renamed or dropped.
    "overcommittedNodes", "nodesUnderMemoryPressure", "silentOOMKills", "missingRequests", "missingLimits",
    "limitRatioExceeded", "oomKills", "violations", "evaluatedNodes", "evaluatedPods",
}
TODAYS_RULES = {
    # the rule names (Event reasons, metric labels) the alerts, dashboards and users already read
    "SilentOOMKill", "NodeMemoryPressure", "NodeOvercommitted", "NodeAllocatableAboveCapacity",
    "MissingMemoryRequest", "MissingMemoryLimit", "MemoryLimitRatioExceeded",
}


def test_the_table_is_well_formed():
    names = [r.name for r in ruletable.TABLE]
    assert len(set(names)) == len(names)
    keys = [r.summary_key for r in ruletable.TABLE if r.summary_key] + [k for k, _ in ruletable.OTHER_SUMMARY]
    assert len(set(keys)) == len(keys)
    knobs = {f.alias or n for n, f in policy.Rules.model_fields.items()}
    for r in ruletable.TABLE:
        assert r.kind in ("Node", "Pod"), r
        assert r.severity in ruletable.SEVERITIES, r
        assert r.knob in knobs, f"{r.name}: spec.rules has no {r.knob}"
        assert r.doc and r.label, r
        assert not r.summary_key or r.summary_doc, r
        assert r.reason == r.name == r.metric_label
    assert ruletable.BY_NAME["SilentOOMKill"].resolved_reason is None
    assert ruletable.BY_NAME["NodeReservationTooSmall"].resolved_reason == "NodeReservationTooSmallResolved"


def test_existing_names_and_status_keys_are_kept():
    assert TODAYS_RULES <= set(RULES)
    assert TODAYS_SUMMARY_KEYS <= {k for k, _ in ruletable.summary_fields()}
    assert "NodeReservationTooSmall" in RULES


def test_report_order_is_the_table_order():
    assert RULES == tuple(r.name for r in ruletable.TABLE)
    spec = parse_spec({"rules": {"nodeReservation": {"enabled": True}, "missingRequests": {"requireLimits": True}}})
    nodes = [node("a", capacity="8Gi", allocatable="7.9Gi", pressure=True),
             node("b", capacity="8Gi", allocatable="9Gi")]
    pods = [pod("p", {"c": {}}, node="a"), pod("q", {"c": {"requests": "9Gi", "limits": "9Gi"}}, node="a")]
    report = evaluate("p", spec, nodes, pods, [], 0.0)
    seen = [v.rule for v in report.violations]
    assert set(seen) == {"NodeMemoryPressure", "NodeOvercommitted", "NodeAllocatableAboveCapacity",
                         "NodeReservationTooSmall", "MissingMemoryRequest", "MissingMemoryLimit"}
    assert seen == sorted(seen, key=RULES.index)
    assert [violation_order(v) for v in report.violations] == sorted(violation_order(v) for v in report.violations)


def _cluster():
    spec = parse_spec({"rules": {"nodeReservation": {"enabled": True}, "limitRatio": {"maxLimitToRequestRatio": 2}}})
    nodes = [node("small", capacity="16Gi", allocatable="15.9Gi"), node("big", capacity="16Gi", allocatable="12Gi"),
             node("liar", capacity="4Gi", allocatable="8Gi")]
    pods = [pod("a", {"c": {}}, node="small"), pod("b", {"c": {"requests": "1Gi", "limits": "3Gi"}}, node="big")]
    return spec, nodes, pods


def test_summary_is_built_from_the_table_in_both_places():
    spec, nodes, pods = _cluster()
    report = evaluate("p", spec, nodes, pods, [], 0.0)
    engine = PolicyEngine("p", spec)
    engine.refresh(snapshot_view(nodes, pods, []), None, 0.0)
    s = engine.summary()
    assert s == report.summary() == summarize(report.violations, report.oom_kills, 3, 2)
    assert list(s) == [k for k, _ in ruletable.summary_fields()]
    by_rule = {r: sum(1 for v in report.violations if v.rule == r) for r in RULES}
    assert by_rule["NodeReservationTooSmall"] == 1 and by_rule["NodeAllocatableAboveCapacity"] == 1
    for r in ruletable.TABLE:
        if r.summary_key:
            assert s[r.summary_key] == by_rule[r.name] == engine.count(r.name), r.name
    assert s["reservationTooSmall"] == 1 and s["missingRequests"] == 1 and s["limitRatioExceeded"] == 1
    assert s["violations"] == sum(by_rule.values()) == len(report.violations)
    assert s["evaluatedNodes"] == 3 and s["evaluatedPods"] == 2
    policy.MemoryPolicyStatus.model_validate({"summary": s})  # the model takes every key


def test_status_schema_of_the_summary_follows_the_table():
    status = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    props = status["properties"]["summary"]["properties"]
    assert list(props) == [k for k, _ in ruletable.summary_fields()]
    for key, doc in ruletable.summary_fields():
        assert props[key] == {"default": 0, "description": doc, "type": "integer"}
    rule_doc = status["properties"]["violations"]["items"]["properties"]["rule"]["description"]
    assert all(name in rule_doc for name in RULES)


def test_policyreport_severity_is_the_tables():
    assert policyreport.SEVERITY == {r.name: r.severity for r in ruletable.TABLE}
    assert policyreport.SEVERITY["NodeReservationTooSmall"] == "medium"


def test_metrics_export_every_rule_from_the_table():
    spec, nodes, pods = _cluster()
    engine = PolicyEngine("tbl", spec)
    engine.refresh(snapshot_view(nodes, pods, []), None, 0.0)
    state = reconciler.PolicyState(name="tbl", uid="u", generation=1, engine=engine)
    reconciler.export_gauges(state)
    for r in ruletable.TABLE:
        got = REGISTRY.get_sample_value("memory_hygiene_violations", {"policy": "tbl", "rule": r.metric_label})
        assert got == engine.count(r.name), r.name
    assert REGISTRY.get_sample_value("memory_hygiene_violations",
                                     {"policy": "tbl", "rule": "NodeReservationTooSmall"}) == 1
    assert REGISTRY.get_sample_value("memory_hygiene_violations",
                                     {"policy": "tbl", "rule": "NodeAllocatableAboveCapacity"}) == 1


def test_the_audit_text_counts_every_rule():
    spec, nodes, pods = _cluster()
    text = report_table.render(evaluate("p", spec, nodes, pods, [], 0.0))
    line = " ".join(text[text.index("Summary:"):].split())
    for r in ruletable.TABLE:
        n = sum(1 for v in evaluate("p", spec, nodes, pods, [], 0.0).violations if v.rule == r.name)
        assert f"{n} {r.label}" in line, (r.name, line)
    assert "1 nodes with too small a reservation" in line and "3 nodes, 2 pods." in line


def test_the_docs_list_every_rule_from_the_table():
    doc = reference_markdown()
    section = doc[doc.index("## Rules"):]
    for r in ruletable.TABLE:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{r.name}` |"))
        assert r.severity in row and f"`{r.knob}`" in row and r.doc in row
        if r.summary_key:
            assert f"`{r.summary_key}`" in row
        if r.resolved_reason:
            assert f"`{r.resolved_reason}`" in row
    assert "plan-node-sizes" in section and "node-resource-reservations" in section
