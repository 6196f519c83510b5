"""The drift collector: a background check of every window against its reference, the
ingest routes and the tailer, and the monitor's results as metric families."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import Metric

from agent.collectors.drift import metrics as m
from agent.collectors.drift.ingest import DriftApi
from agent.collectors.drift.monitor import UNKNOWN_MODEL_LABEL, DriftMonitor
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.tail import Tailer
from agent.httpbody import MAX_BODY_BYTES
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
    stat = m.KS_STATISTIC.gauge()
    pval = m.P_VALUE.gauge()
    drifted = m.FEATURE_DRIFTED.gauge()
    detected = m.DETECTED.gauge()
    window = m.WINDOW_SAMPLES.gauge()
    duration = m.CHECK_DURATION.gauge()
    last = m.LAST_CHECK.gauge()
    samples = m.SAMPLES.counter()
    rejected = m.REJECTED_SAMPLES.counter()
    load_errors = m.REFERENCE_LOAD_ERRORS.gauge()
    for (model, version), t in sorted(monitor.tracked().items()):
        mv = [model, version]
        window.add_metric(mv, float(len(t.window)))
        samples.add_metric(mv, float(t.samples_total))
        out = t.last
        if out is None:
            continue
        duration.add_metric(mv, out.duration_s)
        last.add_metric(mv, out.at)
        r = out.result
        if r is None or r.drifted is None:
            continue
        detected.add_metric(mv, 1.0 if r.detected else 0.0)
        for i, feature in enumerate(r.feature_names):
            stat.add_metric([*mv, feature], float(r.statistic[i]))
            pval.add_metric([*mv, feature], float(r.pvalue[i]))
            drifted.add_metric([*mv, feature], 1.0 if r.drifted[i] else 0.0)
    for (model, reason), count in sorted(monitor.rejected.copy().items()):
        rejected.add_metric([model, reason], float(count))
    for labels, count in load_error_series(
        sorted(monitor.refused), monitor.settings.max_references
    ):
        load_errors.add_metric(list(labels), float(count))
    return [stat, pval, drifted, detected, window, duration, last, samples, rejected, load_errors]


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
