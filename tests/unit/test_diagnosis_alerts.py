"""The diagnosis alerts follow the agent's own vocabulary: one alert per cause family, a rule
for every severity a family's causes have, and the explanations the promtool tests render
are the ones the agent exports (agent/collectors/diagnosis/causes.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from agent.collectors.diagnosis.causes import CAUSES, FAMILIES, FAMILY_OF

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "vigil.rules.yml"
PROMTOOL_TEST = ROOT / "alerts" / "tests" / "diagnosis.test.yml"
# Alert names spell the family as people say it.
ALERT_OF = {
    "cpu": "VigilDiagnosisCPU",
    "gpu": "VigilDiagnosisGPU",
    "drift": "VigilDiagnosisDrift",
    "service": "VigilDiagnosisService",
}
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def diagnosis_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == "vigil-diagnosis"]
    return list(group["rules"])


def test_one_alert_per_family_with_a_rule_for_each_severity_its_causes_have() -> None:
    assert set(ALERT_OF) == set(FAMILIES)
    # Every cause in exactly one family, so that exactly one alert can name it.
    assert sorted(c for causes in FAMILIES.values() for c in causes) == sorted(CAUSES)
    want = {(ALERT_OF[FAMILY_OF[c]], FAMILY_OF[c], info.severity) for c, info in CAUSES.items()}
    got = set()
    for r in diagnosis_rules():
        (severity,) = re.findall(r'vigil_diagnosis_cause\{severity="(\w+)"\}', r["expr"])
        (family,) = re.findall(r'vigil_diagnosis_cause_info\{family="(\w+)"\}', r["expr"])
        assert r["labels"]["severity"] == severity, r
        got.add((r["alert"], family, severity))
    assert got == want


def test_every_family_alert_shares_one_annotation_text() -> None:
    rules = diagnosis_rules()
    assert len({r["annotations"]["description"] for r in rules}) == 1
    assert len({r["annotations"]["summary"] for r in rules}) == 1


def test_the_promtool_tests_feed_the_explanations_the_agent_exports() -> None:
    text = PROMTOOL_TEST.read_text()
    doc = yaml.safe_load(text)
    seen = 0
    for case in doc["tests"]:
        for s in case["input_series"]:
            if not s["series"].startswith("vigil_diagnosis_cause_info{"):
                continue
            labels = dict(LABEL.findall(s["series"]))
            info = CAUSES[labels["cause"]]
            assert labels["family"] == FAMILY_OF[labels["cause"]]
            assert labels["severity"] == info.severity
            assert labels["explanation"] == info.why
            seen += 1
    assert seen == len(CAUSES) * len(doc["tests"])
