"""The diagnosis collector: every ``interval``, the other collectors' latest families are
read (through the callable the agent injects: the metric contract, never a collector's
internals), kept in a ring that spans ``window``, turned into per-target signals and
diagnosed. Scrapes and the API read the last round's result."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from agent.collectors.diagnosis import metrics as m
from agent.collectors.diagnosis.api import routes
from agent.collectors.diagnosis.causes import CAUSES, FAMILY_OF
from agent.collectors.diagnosis.diagnose import Verdict, diagnose, runbook
from agent.collectors.diagnosis.settings import DiagnosisSettings
from agent.collectors.diagnosis.signals import SIGNALS, Frame, Key, Signals, compute, frame_of
from agent.collectors.diagnosis.thresholds import DEFAULT, GPU_THROTTLE_REASONS, Thresholds
from agent.discovery import LABEL_NAMES
from agent.registry import CollectorUnavailable, Context, SnapshotCollector

log = logging.getLogger("vigil.diagnosis")

Families = Callable[[], Iterable[Metric]]


@dataclass
class Round:
    """One diagnosis round: what the scrape renders and the API serves."""

    generated_at: float
    window_seconds: float
    signals: dict[Key, Signals]
    verdicts: dict[Key, Verdict]
    refused: int = 0
    targets: list[Key] = field(default_factory=list)


class DiagnosisCollector(SnapshotCollector):
    name = "diagnosis"

    def __init__(
        self,
        families: Families,
        settings: DiagnosisSettings | None = None,
        thresholds: Thresholds = DEFAULT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        settings = settings or DiagnosisSettings()
        super().__init__(settings.interval, clock)
        self._families = families
        self.settings = settings
        self.thresholds = thresholds
        self._wall = wall
        self._owners = settings.owners()
        # One frame per interval over the window, plus slack for a late round; the cap
        # holds whatever the clock does.
        self._ring: deque[tuple[float, Frame]] = deque(
            maxlen=math.ceil(settings.window / settings.interval) + 2
        )
        self._refused_total = 0

    def refresh(self) -> Round:
        now = self._clock()
        self._ring.append((now, frame_of(self._families())))
        # Frames older than the window go, but a frame just past its edge stays while
        # it is the only start the window has.
        while len(self._ring) > 1 and now - self._ring[1][0] >= self.settings.window:
            self._ring.popleft()
        ring = list(self._ring)
        signals = compute(ring, self._owners, GPU_THROTTLE_REASONS)
        keys = sorted(signals)
        cap = self.settings.max_targets
        refused = max(0, len(keys) - cap)
        if refused:
            self._refused_total += refused
            for k in keys[cap:]:
                del signals[k]
            keys = keys[:cap]
        verdicts = diagnose(signals, self.thresholds)
        return Round(
            self._wall(), ring[-1][0] - ring[0][0], signals, verdicts, self._refused_total, keys
        )

    def render(self, snapshot: Round) -> Iterable[Metric]:
        cause = m.CAUSE.gauge()
        evidence = m.EVIDENCE.gauge()
        threshold = m.EVIDENCE_THRESHOLD.gauge()
        status = m.STATUS.gauge()
        for key in snapshot.targets:
            verdict = snapshot.verdicts[key]
            labels = list(key)
            for s in m.STATUSES:
                status.add_metric([*labels, s], 1.0 if verdict.status == s else 0.0)
            for c in verdict.causes:
                cause.add_metric([*labels, c.cause, c.info.severity], 1.0)
                for e in c.evidence:
                    evidence.add_metric([*labels, c.cause, e.signal], e.value)
                    threshold.add_metric([*labels, c.cause, e.signal], e.threshold)
        info = m.CAUSE_INFO.gauge()
        for name, about in CAUSES.items():
            info.add_metric([name, FAMILY_OF[name], about.severity, about.why], 1.0)
        window = m.WINDOW.gauge()
        window.add_metric([], snapshot.window_seconds)
        targets = m.TARGETS.gauge()
        targets.add_metric([], float(len(snapshot.targets)))
        refused = m.TARGETS_REFUSED.counter()
        refused.add_metric([], float(snapshot.refused))
        return [cause, info, evidence, threshold, status, window, targets, refused]

    # -- the API's view ----------------------------------------------------------------
    def report(self, pod: str | None = None, pid: int | None = None) -> dict[str, Any] | None:
        """The JSON document of GET /v1/diagnosis; None before the first round."""
        snapshot = self._snapshot
        if not isinstance(snapshot, Round):
            return None
        out = []
        for key in snapshot.targets:
            sig = snapshot.signals[key]
            labels = dict(zip(LABEL_NAMES, key, strict=True))
            if pod is not None and labels["pod"] != pod:
                continue
            if pid is not None and pid not in sig.pids and labels["pid"] != str(pid):
                continue
            out.append(target_json(labels, sig, snapshot.verdicts[key]))
        return {
            "generated_at": round(snapshot.generated_at, 3),
            "window_seconds": round(snapshot.window_seconds, 3),
            "targets": out,
        }


def _round(v: float | bool | None) -> float | bool | None:
    return round(v, 6) if isinstance(v, float) else v


def target_json(labels: dict[str, str], sig: Signals, verdict: Verdict) -> dict[str, Any]:
    return {
        "namespace": labels["namespace"],
        "pod": labels["pod"],
        "container": labels["container"],
        "pid": int(labels["pid"]) if labels["pid"].isdigit() else None,
        "pids": sig.pids,
        "comm": labels["comm"],
        "status": verdict.status,
        "causes": [
            {
                "cause": c.cause,
                "severity": c.info.severity,
                "summary": c.summary,
                "why": c.info.why,
                "advice": c.info.advice,
                "runbook": runbook(c.cause),
                "evidence": [
                    {
                        "signal": e.signal,
                        "value": e.value,
                        "unit": e.unit,
                        "threshold": e.threshold,
                        "window_seconds": e.window_seconds,
                    }
                    for e in c.evidence
                ],
            }
            for c in verdict.causes
        ],
        "signals": {name: _round(sig.values.get(name)) for name in SIGNALS},
        "missing": [*verdict.notes, *(f"{k}: {why}" for k, why in sorted(sig.missing.items()))],
        "hot_functions": sig.hot_functions,
        "models": sig.models,
    }


def factory(ctx: Context, settings: DiagnosisSettings) -> DiagnosisCollector:
    families = ctx.families
    if families is None:
        raise CollectorUnavailable("no access to the other collectors' metrics in this process")
    collector = DiagnosisCollector(families, settings)
    ctx.routes.extend(routes(collector))
    return collector
