"""The drift alerts' promtool fixtures speak the agent's own words: every summary label
in alerts/tests/drift.test.yml is the text the agent renders for the shift it stands
for, so the promtool test proves the description a user will read."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from agent.collectors.drift.collector import explain
from agent.collectors.drift.reference import CHI2, KS, DriftResult, Shift
from agent.collectors.drift.schema import Schema

FIXTURE = Path(__file__).resolve().parents[2] / "alerts" / "tests" / "drift.test.yml"

# feature -> (test, effect size, shift) behind each summary of the fixture.
SHIFTS = {
    "amount": (KS, 0.84, Shift((40.0, 100.0, 160.0), (50.1, 112.3, 175.0))),
    "country": (
        CHI2,
        0.4,
        Shift(categories=(("BR", 0.10, 0.28), ("DE", 0.30, 0.17), ("FR", 0.20, 0.145))),
    ),
    "age": (KS, 0.6, Shift((30.0, 40.0, 52.0), (36.0, 47.0, 61.0))),
    "city": (CHI2, 0.21, Shift(categories=(("Paris", 0.3, 0.45), ("Lyon", 0.3, 0.2)))),
    "label": (CHI2, 0.27, Shift(categories=(("fraud", 0.02, 0.26), ("ok", 0.98, 0.74)))),
    "score": (KS, 0.9, Shift((0.6, 0.8, 0.9), (0.45, 0.62, 0.8))),
    "tenure": (KS, 9.0, Shift((20.0, 35.0, 50.0), (24.0, 44.0, 61.0))),
}


def rendered(feature: str) -> str:
    """The summary label the collector writes for this feature's shift."""
    test, effect, shift = SHIFTS[feature]
    r = DriftResult(
        feature_names=(feature,),
        statistic=np.zeros(1),
        pvalue=np.ones(1),
        method="exact",
        n_reference=1000,
        n_window=1000,
        tests=(test,),
        schema=Schema.numeric([feature]),
        effect=np.array([effect]),
        shifts=(shift,),
    )
    return f"{feature}: {explain(r, 0)}"


def fixture_summaries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(FIXTURE.read_text())
    out = []
    for case in doc["tests"]:
        for s in case.get("input_series", []):
            m = re.search(r'feature="([^"]+)".*summary="([^"]+)"', s["series"])
            if s["series"].startswith("vigil_drift_explanation") and m:
                out.append((m.group(1), m.group(2)))
    return out


def test_every_fixture_summary_is_what_the_agent_renders() -> None:
    found = fixture_summaries()
    assert {f for f, _ in found} == set(SHIFTS)
    for feature, summary in found:
        assert summary == rendered(feature)


def test_the_expected_descriptions_quote_rendered_summaries() -> None:
    doc = yaml.safe_load(FIXTURE.read_text())
    quoted = 0
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            for exp in check.get("exp_alerts") or []:
                text = exp["exp_annotations"]["description"]
                if "Largest shifts: " not in text:
                    continue
                for part in text.split("Largest shifts: ", 1)[1].rstrip(".").split("; "):
                    assert part == rendered(part.split(":", 1)[0])
                    quoted += 1
    assert quoted >= 5
