"""`memory-hygiene audit` on each seed scenario in examples/: the verdicts the articles tell."""

import json
from pathlib import Path

import pytest

from memory_hygiene.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def audit(capsys, *args):
    code = main(["audit", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def audit_json(capsys, example, *extra):
    code, out, err = audit(capsys, "-f", str(EXAMPLES / example), "-o", "json", *extra)
    assert code in (0, 1), err
    return code, json.loads(out)


def rules_of(report):
    return sorted((v["rule"], v["kind"], v["namespace"], v["name"], v["container"]) for v in report["violations"])


def test_seed000_case1_1_non_pid1_kill_is_silent_and_named_by_memcg(capsys):
    code, r = audit_json(capsys, "seed000-case1-1-silent-oom.yaml")
    assert code == 1
    [kill] = r["oomKills"]
    assert (kill["pod"], kill["namespace"], kill["container"]) == ("case1-1", "default", "p1")
    assert kill["attribution"] == "memcg" and kill["silent"] is True
    assert (kill["pid"], kill["process"], kill["oomScoreAdj"]) == (7, "mem-alloc", 941)
    assert rules_of(r) == [("SilentOOMKill", "Pod", "default", "case1-1", "p1")]
    message = r["violations"][0]["message"]
    assert "mem-alloc (pid 7)" in message and "1.9Gi" in message and "did not restart" in message
    assert r["summary"]["silentOOMKills"] == 1
    [node] = r["nodes"]
    assert node["overcommitted"] is False and node["limitsBytes"] == 2_500_000_000


def test_seed000_case1_2_pid1_kill_restarted_is_not_silent(capsys):
    code, r = audit_json(capsys, "seed000-case1-2-visible-oom.yaml")
    assert code == 0, r["violations"]
    [kill] = r["oomKills"]
    assert kill["silent"] is False
    # NPD's line has no memcg path; 941 = 1000 - 1000*1G/16393148Ki is p1's fingerprint alone.
    assert (kill["attribution"], kill["pod"], kill["container"]) == ("oomScoreAdj", "case1-2", "p1")
    assert r["summary"]["silentOOMKills"] == 0 and r["violations"] == []


def test_seed000_case2_limits_far_past_allocatable(capsys):
    code, r = audit_json(capsys, "seed000-case2-overcommitted.yaml")
    assert code == 1
    [node] = r["nodes"]
    assert node["limitsBytes"] == 4 * 3_000_000_000
    assert node["requestsBytes"] == 4 * 128_000_000
    assert node["allocatableBytes"] == 3810236 * 1024
    assert node["limitsPercent"] == pytest.approx(307.6)
    assert node["overcommitted"] is True and node["memoryPressure"] is False
    assert rules_of(r) == [("NodeOvercommitted", "Node", None, "pve-vm-dev", None)]
    assert r["summary"]["overcommittedNodes"] == 1


def test_seed000_case2_memory_pressure_names_the_evicted_pods(capsys):
    code, r = audit_json(capsys, "seed000-case2-memory-pressure.yaml")
    assert code == 1
    [node] = r["nodes"]
    assert node["memoryPressure"] is True
    assert node["memoryEvictions"] == ["default/case2-2", "default/case2-4"]
    # the two evicted pods hold no memory any more; the two left still have 6G of limits
    assert node["limitsBytes"] == 2 * 3_000_000_000 and node["limitsPercent"] == pytest.approx(153.8)
    assert rules_of(r) == [
        ("NodeMemoryPressure", "Node", None, "pve-vm-dev", None),
        ("NodeOvercommitted", "Node", None, "pve-vm-dev", None),
    ]
    pressure = next(v for v in r["violations"] if v["rule"] == "NodeMemoryPressure")["message"]
    assert "also overcommitted" in pressure and "default/case2-2, default/case2-4" in pressure
    assert r["violations"][0]["rule"] == "NodeMemoryPressure", "more severe first"


def test_seed001_besteffort_missing_request_and_unattributed_silent_kill(capsys):
    code, r = audit_json(capsys, "seed001-besteffort.yaml")
    assert code == 1
    assert rules_of(r) == [
        ("MissingMemoryRequest", "Pod", "stress", "stress-12-besteffort", "ctr"),
        ("SilentOOMKill", "Node", None, "node-82-174", None),
    ]
    [kill] = r["oomKills"]
    assert (kill["attribution"], kill["pod"], kill["silent"]) == ("none", None, True)
    assert (kill["pid"], kill["process"]) == (27672, "stress-12-BestE")
    [node] = r["nodes"]
    assert node["podsWithoutLimit"] == 2  # BestEffort, and Burstable with a request only
    assert node["limitsBytes"] == 13 * 2**30
    assert node["capacityBytes"] - node["allocatableBytes"] == 100 * 2**20


def test_seed003_limits_at_180_percent_of_capacity(capsys):
    code, r = audit_json(capsys, "seed003-limits-180-percent.yaml")
    assert code == 1
    [node] = r["nodes"]
    assert node["limitsPercent"] == pytest.approx(189.5)  # of allocatable, the default basis
    assert node["memoryPressure"] is False  # the condition is Unknown, not True
    code, r = audit_json(
        capsys, "seed003-limits-180-percent.yaml", "--policy", str(EXAMPLES / "memorypolicy-capacity.yaml")
    )
    assert r["policy"] == "dev-tolerant"
    [node] = r["nodes"]
    assert node["limitsPercent"] == pytest.approx(180.0) and node["overcommitted"] is True
    assert rules_of(r) == [("NodeOvercommitted", "Node", None, "docker-for-desktop", None)]
    assert "180% of capacity" in r["violations"][0]["message"]


def test_seed004_gke_kill_attributed_by_oom_score_adj(capsys):
    code, r = audit_json(capsys, "seed004-gke-oom-score-adj.yaml")
    assert code == 1
    [kill] = r["oomKills"]
    assert (kill["attribution"], kill["namespace"], kill["pod"], kill["container"]) == (
        "oomScoreAdj", "default", "api-server-7d9f8b6c5-xk2lp", "api-server",
    )
    assert kill["oomScoreAdj"] == 980 and kill["silent"] is False  # PID 1 died: OOMKilled restart
    assert rules_of(r) == [
        ("MissingMemoryRequest", "Pod", "default", "api-server-7d9f8b6c5-xk2lp", "cloud-sql-proxy"),
        ("MissingMemoryRequest", "Pod", "kube-system", "kube-proxy-gke-prod-pool-1-3f2a9c1e-x7k2", "kube-proxy"),
    ]


def test_sample_policy_selects_and_requires_limits(capsys):
    code, r = audit_json(capsys, "seed001-besteffort.yaml", "--policy", str(EXAMPLES / "memorypolicy.yaml"))
    assert r["policy"] == "cluster-memory"
    assert ("MissingMemoryLimit", "Pod", "stress", "stress-12-burstable", "ctr") in rules_of(r)
    assert r["summary"]["missingLimits"] == 2


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("seed*.yaml")))
def test_table_is_readable_at_120_columns(capsys, example):
    code, out, err = audit(capsys, "-f", str(EXAMPLES / example))
    assert code in (0, 1) and not err
    assert "MemoryPolicy default" in out and "Summary:" in out
    assert max(len(line) for line in out.splitlines()) <= 120


def test_several_files_in_one_run_and_now(capsys):
    args = ["-f", str(EXAMPLES / "seed001-besteffort.yaml"), "-f", str(EXAMPLES / "seed004-gke-oom-score-adj.yaml")]
    code, out, err = audit(capsys, *args, "-o", "json", "--now", "2021-08-16T10:30:00Z")
    r = json.loads(out)
    assert [n["name"] for n in r["nodes"]] == ["gke-prod-pool-1-3f2a9c1e-x7k2", "node-82-174"]
    # as of 2021-08-16 the GKE kill of 2021-03 is far past the default one-hour lookback
    assert [k["node"] for k in r["oomKills"]] == ["node-82-174"]
    code, out, err = audit(capsys, *args, "--now", "yesterday")
    assert code == 2 and "--now" in err


BILLION_LAUGHS = "kind: Pod\nmetadata: {name: p, namespace: d}\nx:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
"""Under 1 KB, 9**9 strings to whoever walks it."""

OOM_EVENT = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default", "uid": "x"},
             "reason": "OOMKilling", "involvedObject": {"kind": "Node", "name": "n1"},
             "message": "Killed process 1 (a) total-vm:1kB, anon-rss:1kB, file-rss:1kB"}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("kind: Pod\nmetadata: {name: x, namespace: d}\nspec:\n  containers:\n  - name: c\n    resources: {limits: {memory: lots}}\n",
         "lots"),
        ("items: [{kind: Pod, metadata: {name: x}\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a Kubernetes object"),
        ("apiVersion: v1\nkind: List\nitems:\n- {metadata: {name: x}}\n", "without kind"),
        # hostile or malformed: each exits 2 with one line, never a traceback
        (BILLION_LAUGHS, "not accepted"),
        ("[" * 100_000 + "]" * 100_000, "nesting"),
        ("kind: Pod\nmetadata: {name: p, namespace: d, uid: u}\nspec: {containers: [{name: c, resources: "
         "{limits: {memory: " + "9" * 5000 + "}}}]}\n",
         "Pod d/p: spec.containers[0].resources.limits.memory: not a usable number at line 3"),
        ("apiVersion: v1\nkind: List\nitems:\n- kind: Event\n  metadata: {name: e, namespace: default}\n"
         "  count: " + "9" * 5000 + "\n", "items[0] Event default/e: count: not a usable number at line 6"),
        (json.dumps({**OOM_EVENT, "message": 5}), "message: expected a string, got int"),
        (json.dumps({**OOM_EVENT, "count": [1]}), "count: expected an integer, got list"),
        (json.dumps({**OOM_EVENT, "involvedObject": "n1"}), "involvedObject: expected an object, got str"),
        ("kind: Pod\nitems: [{kind: Pod, metadata: {name: a, namespace: d, uid: u}}]\n", "items outside a List"),
        ("kind: Pod\nmetadata: !!python/object:os.system {name: x}\n", "not accepted"),
        ("apiVersion: v1\nkind: Event\nmetadata: &m {name: e, namespace: default}\nreason: OOMKilling\n", "anchors"),
        # a JSON dump (read by the JSON fast path): the same one line
        ('{"kind": "List", "items": [' + json.dumps(OOM_EVENT) + ", " + "[" * 100_000 + "]" * 100_000 + "]}",
         "items[1]: nesting deeper than 200"),
        ('{"kind": "List", "items": [' + json.dumps({**OOM_EVENT, "count": 0}).replace('"count": 0', '"count": ' + "9" * 5000) + "]}",
         "items[0] Event default/e: count: not a usable number at line 1"),
        ('{"kind": "Pod", "metadata": {"name": "p", "namespace": "d"},\n "spec": {"containers": [{"name": "c",\n'
         ' "resources": {"limits": {"memory": ' + "9" * 5000 + '}}}]}}',
         "Pod d/p: spec.containers[0].resources.limits.memory: not a usable number at line 3"),
        ('{"kind": "List", "items": [' + json.dumps(OOM_EVENT) + ', {"kind": "Pod"]}', "items[1]: not valid JSON at line 1"),
        ('{"kind": "List", "items": [' + json.dumps({**OOM_EVENT, "message": 5}) + "]}",
         "items[0] Event default/e: message: expected a string, got int"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_file_and_problem(capsys, tmp_path, content, problem):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    code, out, err = audit(capsys, "-f", str(f))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert str(f) in err and problem in err and "Traceback" not in err


def test_missing_file_and_bad_policy_exit_2(capsys, tmp_path):
    code, _, err = audit(capsys, "-f", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err and "cannot read" in err
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: memoryhygiene.io/v1alpha1\nkind: MemoryPolicy\nmetadata: {name: p}\n"
                      "spec: {rules: {overcommit: {maxLimitsPercent: -5}}}\n")
    code, _, err = audit(capsys, "-f", str(EXAMPLES / "seed003-limits-180-percent.yaml"), "--policy", str(policy))
    assert code == 2 and "spec.rules.overcommit.maxLimitsPercent" in err


def test_policy_files_may_use_anchors_but_not_explode(capsys, tmp_path):
    """kubectl accepts anchors in what it applies, so a policy file may share a selector; what its
    aliases stand for is bounded (the billion laughs exit 2, fast)."""
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: memoryhygiene.io/v1alpha1\nkind: MemoryPolicy\nmetadata: {name: p}\n"
                      "spec:\n  nodeSelector: &sel {matchLabels: {team: none}}\n  namespaceSelector: *sel\n")
    code, r = audit_json(capsys, "seed003-limits-180-percent.yaml", "--policy", str(policy))
    assert code == 0 and r["summary"]["evaluatedNodes"] == 0 and r["summary"]["evaluatedPods"] == 0
    bomb = BILLION_LAUGHS.replace("kind: Pod\nmetadata: {name: p, namespace: d}\n",
                                  "apiVersion: memoryhygiene.io/v1alpha1\nkind: MemoryPolicy\nmetadata: {name: p}\n")
    policy.write_text(bomb)
    code, _, err = audit(capsys, "-f", str(EXAMPLES / "seed003-limits-180-percent.yaml"), "--policy", str(policy))
    assert code == 2 and "p.yaml" in err and "aliases are expanded" in err and len(err.splitlines()) == 1


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["audit", "-o", "xml"])
    assert e.value.code == 2


def test_stdin(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO((EXAMPLES / "seed003-limits-180-percent.yaml").read_text()))
    code, out, err = audit(capsys, "-f", "-", "-o", "json")
    assert code == 1 and json.loads(out)["summary"]["overcommittedNodes"] == 1


def test_files_read_as_pyyamls_safe_loader_reads_them(tmp_path):
    """The streaming reader builds the same objects as yaml.safe_load (YAML 1.1 scalars
    included), and a List's items the same as separate documents."""
    import yaml

    from memory_hygiene.inputs import iter_documents

    text = (EXAMPLES / "seed000-case1-1-silent-oom.yaml").read_text()
    expected = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        expected.extend(doc["items"] if str(doc.get("kind", "")).endswith("List") else [doc])
    assert [obj for obj, _ in iter_documents(text, "f")] == expected
    scalars = ("a: true\nb: yes\nc: 8080\nd: 0x1F\ne: null\nf: ~\ng: 1.5\nh: '8080'\ni: 2026-11-20T10:00:00Z\n"
               "j: 256Mi\nk: -997\nl: ''\nm: [1, two]\nkind: X\n")
    assert [obj for obj, _ in iter_documents(scalars, "f")] == [yaml.safe_load(scalars)]
    as_list = {"apiVersion": "v1", "kind": "List", "items": expected}
    assert [obj for obj, _ in iter_documents(yaml.safe_dump(as_list), "f")] == expected
    assert [obj for obj, _ in iter_documents(json.dumps(as_list, default=str), "f")] == json.loads(
        json.dumps(expected, default=str))
