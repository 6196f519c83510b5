"""Signals → causes. A pure function: what is decided here depends only on its arguments.

Each cause is a rule over a target's signals with the numbers of
:class:`~agent.collectors.diagnosis.thresholds.Thresholds` (one function per cause in
``rules.py``), and comes with the evidence behind it (signal, value, threshold, window), a
one-line summary with the numbers, why that evidence means that cause, and what to do
(``causes.py``). A cause whose inputs are unknown is not claimed ("not enough evidence" is
a result of its own, never a guess).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.collectors.diagnosis.causes import (
    CAUSES,
    HOST_CAUSES,
    Cause,
    CauseInfo,
    Evidence,
    Verdict,
    runbook,
)
from agent.collectors.diagnosis.rules import RULES
from agent.collectors.diagnosis.signals import Key, Signals
from agent.collectors.diagnosis.thresholds import Thresholds

__all__ = [
    "CAUSES",
    "CORE",
    "HOST_CAUSES",
    "Cause",
    "CauseInfo",
    "Evidence",
    "Verdict",
    "diagnose",
    "diagnose_one",
    "runbook",
]

# Signals without which a target has no evidence at all: one per source collector.
CORE = (
    "runqueue_wait_ratio",
    "gil_ratio",
    "gpu_utilization_ratio",
    "cpu_throttled_ratio",
    "requests_per_second",
    "drift_detected",
)


def diagnose(signals: Mapping[Key, Signals], t: Thresholds) -> dict[Key, Verdict]:
    """A verdict for every target."""
    return {key: diagnose_one(sig, t) for key, sig in signals.items()}


def diagnose_one(s: Signals, t: Thresholds) -> Verdict:
    w = s.window_seconds
    if s.frames < t.min_samples or w < t.min_window_seconds:
        return Verdict(
            "insufficient_evidence",
            notes=(
                f"window: {s.frames} snapshots over {w:.0f} s so far; a verdict needs "
                f"{t.min_samples} over {t.min_window_seconds:.0f} s",
            ),
        )
    if all(s.get(n) is None for n in CORE):
        return Verdict(
            "insufficient_evidence",
            notes=("no scheduler, profile, GPU, cgroup, service or drift signal yet",),
        )
    found: dict[str, Cause] = {}
    for name, rule in RULES:
        cause = rule(s, t, found)
        if cause is not None:
            found[name] = cause
    ordered = tuple(found[c] for c in CAUSES if c in found)
    return Verdict("causes" if ordered else "ok", ordered)
