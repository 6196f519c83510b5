"""max-exported-features: a wide reference's per-feature series stop at the limit, before
the collector's max-series cap ever sees them, while the test and its decisions still cover
every feature, and the gauge of features not exported says how many are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.collectors import SPECS
from agent.collectors.drift import metrics as m
from agent.collectors.drift.collector import not_exported, render
from agent.collectors.drift.monitor import DriftMonitor
from agent.collectors.drift.parse import parse_rows
from agent.collectors.drift.reference import Reference
from agent.collectors.drift.schema import Schema
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.store import MAX_FEATURES, ReferenceStore
from agent.config import ConfigError, resolve

FEATURES = 300
LIMIT = 20
SHIFTED = 250  # beyond the limit: only the decision and the explanation can show it
NAMES = tuple(f"f{i:03d}" for i in range(FEATURES))
PER_FEATURE = [s for s in m.METRICS if "feature" in s.labels]


def monitor(state: Path, **settings: int) -> DriftMonitor:
    rng = np.random.default_rng(7)
    ref = Reference.from_rows(rng.normal(size=(2000, FEATURES)), Schema.numeric(NAMES))
    ReferenceStore(state).save("wide", "v1", ref, "test")
    mon = DriftMonitor(state, DriftSettings(window=500, min_samples=100, **settings))
    mon.sync()
    window = rng.normal(size=(400, FEATURES))
    window[:, SHIFTED] += 3.0
    rows = [dict(zip(NAMES, map(float, row), strict=True)) for row in window]
    version, features = mon.resolve("wide", "v1")
    assert mon.accept("wide", version, parse_rows(rows, features, mon.bounds)) == 400
    mon.check("wide", "v1", force=True)
    return mon


def samples(mon: DriftMonitor) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for fam in render(mon):
        out.setdefault(fam.name, [])
        out[fam.name].extend(s.labels for s in fam.samples)
    return out


def value(mon: DriftMonitor, spec_name: str) -> float:
    (only,) = [s.value for f in render(mon) for s in f.samples if s.name == spec_name]
    return only


def test_features_past_the_limit_are_not_rendered_and_are_counted(tmp_path: Path) -> None:
    mon = monitor(tmp_path, max_exported_features=LIMIT)
    got = samples(mon)
    for spec in PER_FEATURE:
        features = {s["feature"] for s in got[spec.name]}
        if spec is m.EXPLANATION:
            continue
        assert features <= set(NAMES[:LIMIT]), spec.name
    # Every numeric per-feature family is there for each of the exported features.
    for spec in (m.KS_STATISTIC, m.P_VALUE, m.FEATURE_DRIFTED, m.EFFECT_SIZE, m.FEATURE_INFO):
        assert {s["feature"] for s in got[spec.name]} == set(NAMES[:LIMIT]), spec.name
    assert value(mon, m.FEATURES_NOT_EXPORTED.name) == FEATURES - LIMIT
    # 11 series per exported feature, not per feature of the reference.
    per_feature = sum(len(got[s.name]) for s in PER_FEATURE if s is not m.EXPLANATION)
    assert per_feature == 11 * LIMIT


def test_the_decision_and_the_explanation_still_cover_every_feature(tmp_path: Path) -> None:
    mon = monitor(tmp_path, max_exported_features=LIMIT)
    assert value(mon, m.DETECTED.name) == 1.0
    explained = [s["feature"] for s in samples(mon)[m.EXPLANATION.name]]
    assert explained == [NAMES[SHIFTED]]
    result = mon.tracked()[("wide", "v1")].last
    assert result is not None and result.result is not None
    assert len(result.result.pvalue) == FEATURES


def test_within_the_limit_every_feature_is_exported(tmp_path: Path) -> None:
    mon = monitor(tmp_path, max_exported_features=FEATURES)
    got = samples(mon)
    assert {s["feature"] for s in got[m.P_VALUE.name]} == set(NAMES)
    assert value(mon, m.FEATURES_NOT_EXPORTED.name) == 0.0


def test_the_default_covers_the_documented_maximum_node() -> None:
    # docs/scale.md: 32 drift features per model version at the maximum node.
    assert DriftSettings().max_exported_features >= 32


@pytest.mark.parametrize(
    ("features", "limit", "missing"), [(0, 5, 0), (5, 5, 0), (6, 5, 1), (10_000, 64, 9_936)]
)
def test_not_exported(features: int, limit: int, missing: int) -> None:
    assert not_exported(features, limit) == missing


def test_the_setting_is_read_from_flags_and_refuses_nonsense() -> None:
    key = "collector.drift.max-exported-features"
    cfg = resolve(SPECS, flag_values={key: "8"})
    assert cfg.settings["drift"].max_exported_features == 8
    for bad in ("0", str(MAX_FEATURES + 1), "many"):
        with pytest.raises(ConfigError, match="max-exported-features"):
            resolve(SPECS, flag_values={key: bad})
