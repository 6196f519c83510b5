"""The drift collector: a background check of every window against its reference, the
ingest routes and the tailer, and the monitor's results as metric families."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric

from agent.collectors.drift import metrics as m
from agent.collectors.drift.effect import QUANTILES
from agent.collectors.drift.ingest import DriftApi
from agent.collectors.drift.monitor import (
    CONFIDENCE_BUCKETS,
    UNKNOWN_MODEL_LABEL,
    DriftMonitor,
    Tracked,
)
from agent.collectors.drift.reference import CHI2, DriftResult, Shift
from agent.collectors.drift.schema import CONFIDENCE
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.tail import Tailer
from agent.httpbody import MAX_BODY_BYTES
from agent.metrics import MetricSpec
from agent.registry import Context, SnapshotCollector


class DriftCollector(SnapshotCollector):
    name = "drift"

    def __init__(self, monitor: DriftMonitor, interval: float, tail_file: str = "") -> None:
        super().__init__(interval)
        self.monitor = monitor
        self.tailer = Tailer(tail_file, monitor) if tail_file else None

    def open(self) -> None:
        self.monitor.sync()  # references are there for the very first ingest
        if self.tailer is not None:
            self.tailer.start()

    def refresh(self) -> bool:
        self.monitor.sync()
        self.monitor.check_all()
        return True

    def shutdown(self) -> None:
        if self.tailer is not None:
            self.tailer.close()

    def render(self, snapshot: Any) -> Iterable[Metric]:
        return render(self.monitor)


def render(monitor: DriftMonitor) -> list[Metric]:
    """Families from the monitor's latest checks and live counters; all always present."""
    fam: dict[str, Any] = {spec.name: spec.family() for spec in m.METRICS}

    def add(spec: MetricSpec, labels: list[str], value: float) -> None:
        fam[spec.name].add_metric(labels, value)

    # Per-feature series stop at the first `limit` features of each reference: the rest are
    # not built at all, so a 10,000-feature reference costs a scrape what a narrow one does
    # (the max-series cap would only trim them after the fact). Decisions, explanations and
    # the test itself cover every feature.
    limit = monitor.settings.max_exported_features
    for (model, version), t in sorted(monitor.tracked().items()):
        mv = [model, version]
        add(m.WINDOW_SAMPLES, mv, float(len(t.window)))
        add(m.SAMPLES, mv, float(t.samples_total))
        schema = t.ref.schema
        add(m.FEATURES_NOT_EXPORTED, mv, float(not_exported(len(schema.names), limit)))
        features = zip(schema.names, schema.kinds, schema.roles, strict=True)
        for f, kind, role in islice(features, limit):
            add(m.FEATURE_INFO, [*mv, f, kind, role], 1.0)
        _confidence(fam[m.PREDICTION_CONFIDENCE.name], mv, t, limit)
        out = t.last
        if out is None:
            continue
        add(m.CHECK_DURATION, mv, out.duration_s)
        add(m.LAST_CHECK, mv, out.at)
        r = out.result
        if r is None or r.drifted is None:
            continue
        add(m.DETECTED, mv, 1.0 if r.detected else 0.0)
        if any(schema.is_output(i) for i in range(len(schema.names))):
            add(m.OUTPUT_DETECTED, mv, 1.0 if r.output_detected else 0.0)
        for i, feature in enumerate(r.feature_names[:limit]):
            mvf = [*mv, feature]
            stat = m.CHI2_STATISTIC if r.tests[i] == CHI2 else m.KS_STATISTIC
            add(stat, mvf, float(r.statistic[i]))
            add(m.P_VALUE, mvf, float(r.pvalue[i]))
            add(m.FEATURE_DRIFTED, mvf, 1.0 if r.drifted[i] else 0.0)
            add(m.EFFECT_SIZE, mvf, float(r.effect[i]))
            _shift(add, mvf, r.tests[i], r.shifts[i])
        for i in r.top():
            summary = f"{r.feature_names[i]}: {explain(r, i)}"
            why = [*mv, r.feature_names[i], schema.kinds[i], schema.roles[i], summary]
            add(m.EXPLANATION, why, float(r.effect[i]))
    for (model, reason), count in sorted(monitor.rejected.copy().items()):
        add(m.REJECTED_SAMPLES, [model, reason], float(count))
    for labels, count in load_error_series(
        sorted(monitor.refused), monitor.settings.max_references
    ):
        add(m.REFERENCE_LOAD_ERRORS, list(labels), float(count))
    return list(fam.values())


def _shift(add: Any, mvf: list[str], test: str, shift: Shift) -> None:
    if test == CHI2:
        add(m.UNSEEN, mvf, float(shift.unseen))
        for category, ref_share, win_share in shift.categories:
            add(m.CATEGORY_SHARE, [*mvf, category, "reference"], ref_share)
            add(m.CATEGORY_SHARE, [*mvf, category, "window"], win_share)
        return
    if shift.reference_quartiles is None or shift.window_quartiles is None:
        return
    for q, ref_q, win_q in zip(
        QUANTILES, shift.reference_quartiles, shift.window_quartiles, strict=True
    ):
        add(m.QUANTILE, [*mvf, "reference", str(q)], ref_q)
        add(m.QUANTILE, [*mvf, "window", str(q)], win_q)


def not_exported(features: int, limit: int) -> int:
    """Features of a reference whose per-feature series are not rendered."""
    return max(0, features - limit)


def _confidence(fam: HistogramMetricFamily, mv: list[str], t: Tracked, limit: int) -> None:
    if t.confidence is None or t.confidence_sum is None:
        return
    schema = t.ref.schema
    names = [f for f, r in zip(schema.names, schema.roles, strict=True) if r == CONFIDENCE]
    exported = set(schema.names[:limit])
    for j, feature in enumerate(names):
        if feature not in exported:
            continue
        buckets = [
            (str(le), float(c)) for le, c in zip(CONFIDENCE_BUCKETS, t.confidence[j], strict=False)
        ]
        buckets.append(("+Inf", float(t.confidence[j, -1])))
        fam.add_metric([*mv, feature], buckets, float(t.confidence_sum[j]))


def explain(r: DriftResult, i: int) -> str:
    """One feature's shift with its effect size, as alert descriptions and the CLI say it."""
    what = "JS distance" if r.tests[i] == CHI2 else "W/IQR"
    return f"{what} {float(r.effect[i]):.2g}, {r.shifts[i].describe()}"


def load_error_series(keys: list[tuple[str, str]], limit: int) -> list[tuple[tuple[str, str], int]]:
    """One series per refused (model, version), at most ``limit`` of them; the rest are
    summed under (unknown, unknown), so that a directory of junk files cannot grow
    /metrics without bound."""
    out = [(key, 1) for key in keys[:limit]]
    if len(keys) > limit:
        out.append(((UNKNOWN_MODEL_LABEL, UNKNOWN_MODEL_LABEL), len(keys) - limit))
    return out


def factory(ctx: Context, settings: DriftSettings) -> DriftCollector:
    monitor = DriftMonitor(ctx.paths.state_dir, settings)
    # The routes need the API token whatever the listen address (agent/app.py sets it up).
    ctx.routes.extend(DriftApi(monitor, MAX_BODY_BYTES).routes())
    return DriftCollector(monitor, settings.check_interval, settings.tail_file)
