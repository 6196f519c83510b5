"""Recording rules: generated into the rule file after the alerts, named level:metric:operations
after a declared metric, each one unit-tested with promtool and read by a dashboard panel or
by another rule. An alert's own recording rules (a costly expression it reads more than
once) sit in its group, before it: they keep every label of the series."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from promql import Checker, output_labels, recording_rules, target_labels  # noqa: E402
from test_alerts_rules import gen_alerts  # noqa: E402

ALERTS = ROOT / "alerts"
RULES = ALERTS / "vigil.rules.yml"
NAME = re.compile(r"^([a-z][a-z0-9_]*):([a-z][a-z0-9_]*):([a-z0-9_]+)$")


def records() -> list[tuple[str, str]]:
    return recording_rules(RULES)


def fleet_records() -> list[tuple[str, str]]:
    """The rules of alerts/recording.tmpl.yml: aggregations for the fleet dashboards."""
    doc = yaml.safe_load(RULES.read_text())
    return [
        (r["record"], r["expr"])
        for g in doc["groups"]
        if g["name"].startswith("vigil-recording-")
        for r in g["rules"]
    ]


def alert_records() -> list[tuple[str, str]]:
    """The recording rules of the alert groups (alerts/rules.tmpl.yml)."""
    return [r for r in records() if r not in fleet_records()]


def alert_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_the_rule_file_holds_every_recording_rule_of_the_template() -> None:
    template = yaml.safe_load((ALERTS / "recording.tmpl.yml").read_text())
    want = [r["record"] for g in template["groups"] for r in g["rules"]]
    assert want, "no recording rule in the template"
    assert [name for name, _ in fleet_records()] == want
    cr = yaml.safe_load((ROOT / "deploy" / "prometheusrule.yaml").read_text())
    assert recording_rules(ROOT / "deploy" / "prometheusrule.yaml") == records()
    assert cr["spec"] == yaml.safe_load(RULES.read_text())


def test_names_are_level_metric_operations_of_a_declared_metric() -> None:
    from agent.catalogue import declarations

    declared = {n for m in declarations() for n in (m.name, *m.series_names)}
    for name, _ in records():
        m = NAME.match(name)
        assert m, f"{name}: not level:metric:operations"
        metric = m.group(2)
        assert {metric, metric + "_total"} & declared, f"{name}: {metric} is not a declared metric"


def test_recording_rules_read_only_declared_series_and_labels() -> None:
    from agent.catalogue import declarations

    c = Checker(declarations(), target_labels())
    assert c.problems == []
    assert set(c.recorded) == {name for name, _ in records()}
    # The labels the fleet dashboards filter and group on survive the aggregation.
    fleet = {name for name, _ in fleet_records()}
    for name, labels in c.recorded.items():
        if name not in fleet:
            continue
        assert "cluster" in labels, name
        level = NAME.match(name).group(1)  # type: ignore[union-attr]
        for part in ("node", "pod", "model", "version"):
            assert (part in level.split("_")) == (part in labels), (name, part)


def test_every_recorded_series_is_unit_tested() -> None:
    tested: set[str] = set()
    for path in (ALERTS / "tests").glob("recording*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("promql_expr_test", []):
                if check.get("exp_samples"):
                    tested |= set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", check["expr"]))
    # An intermediate series is tested through the rules that read it.
    read_by_rules = {n for n, _ in records() for _, e in records() if n in e and e}
    untested = {name for name, _ in records()} - tested - read_by_rules
    assert untested == set()


def test_every_recorded_series_is_read_by_a_dashboard_or_another_rule() -> None:
    exprs = [
        t["expr"]
        for path in (ROOT / "dashboards").glob("*.json")
        for p in _panels(json.loads(path.read_text()))
        for t in p.get("targets", [])
    ]
    rule_exprs = [e for _, e in records()] + alert_exprs()
    for name, _ in records():
        used = [e for e in exprs + rule_exprs if re.search(re.escape(name) + r"\b", e)]
        assert used, f"{name} is recorded for nobody"


def test_an_alerts_recording_rule_keeps_every_label_of_its_series_but_le() -> None:
    """What keeps the alert's labels (and so its routing, inhibitions and the rollback
    controller's targets) what they were before the expression was recorded."""
    from agent.catalogue import declarations

    c = Checker(declarations(), target_labels())
    assert alert_records(), "no alert reads a recording rule"
    for name, expr in alert_records():
        assert output_labels(expr) is None, f"{name}: aggregates away labels"
        (series,) = set(re.findall(r"\bvigil_[a-z0-9_]+_bucket\b", expr))
        assert c.recorded[name] == c.labels[series] - {"le"}, name


def _panels(board: dict) -> list[dict]:
    out = []
    for p in board.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_the_generator_refuses_alerts_and_thresholds_in_the_recording_template() -> None:
    gen = gen_alerts()
    ok = "groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: sum(up)\n"
    assert "record: a:b:c" in gen.recording_groups(ok)
    with pytest.raises(gen.GenError, match="only record rules"):
        gen.recording_groups(ok.replace("record: a:b:c", "alert: X"))
    with pytest.raises(gen.GenError, match=r"no .* thresholds"):
        gen.recording_groups(ok.replace("sum(up)", "sum(up) > ${x}"))
