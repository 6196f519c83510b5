"""`vigil doctor` checks for the diagnosis collector: its inputs are the other collectors."""

from __future__ import annotations

from agent.collectors.diagnosis.settings import DiagnosisSettings
from agent.collectors.diagnosis.thresholds import DEFAULT
from agent.registry import Check, Paths


def doctor(settings: DiagnosisSettings, paths: Paths) -> list[Check]:
    need = DEFAULT.min_window_seconds
    ok = settings.window >= need
    return [
        Check(
            "diagnosis window",
            ok,
            f"{settings.window:g} s ({'at least' if ok else 'below'} the {need:g} s a verdict "
            "needs); verdicts use whichever of sched, gpu, profile, cgroup, inference and "
            "drift run",
            "" if ok else f"--collector.diagnosis.window {need:g}s",
        )
    ]
