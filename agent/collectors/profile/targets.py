"""What the profile collector knows per process, and how it is shown: metrics and API views.

Pure: a list of :class:`Target` snapshots in, metric families or JSON-ready dicts out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from agent.collectors.profile import metrics as m
from agent.collectors.profile.api import Profile
from agent.collectors.profile.pyspy import WindowRun
from agent.collectors.profile.stacks import WindowSummary
from agent.discovery import LABEL_NAMES, ProcessInfo, series_labels

MAX_FUNCTION_LABEL = 200  # characters; deep module paths stay readable, series stay small
# States in which py-spy has had its say about the process (vigil_profile_up exists).
DECIDED = ("ok", "unsupported", "denied", "failed", "timeout")


@dataclass
class Target:
    """What the collector knows about one watched process."""

    info: ProcessInfo
    state: str = "pending"  # pending | sampling | ok | exited | unsupported | denied | ...
    reason: str = ""
    failures: int = 0
    retry_at: float = 0.0
    running: bool = False
    gone: bool = False
    active_total: int = 0
    idle_total: int = 0
    last: WindowSummary | None = None
    last_run: WindowRun | None = None
    last_end: float = 0.0
    # The latest recording of each mode (the modes rotate, one per window) and the run
    # that made it; a profile is summarized once all three are in.
    texts: dict[str, str] = field(default_factory=dict)
    runs: dict[str, WindowRun] = field(default_factory=dict)
    next_mode: int = 0
    last_active: int = 0  # active samples of the latest cpu window
    held_back: bool = False  # due, but the CPU budget was spent (counted once)
    reserved: float = 0.0  # CPU seconds the running window holds in the budget


def unique_labels(targets: list[Target]) -> list[list[str]]:
    """Label values per target; processes that would share a series get their pid added.

    Inside a pod the pid is left out (it changes on restart), but two workers of one
    container with the same comm would then collide into one series.
    """
    rows = [list(series_labels(t.info, t.info.pid)) for t in targets]
    seen: dict[tuple[str, ...], int] = {}
    for row in rows:
        seen[tuple(row)] = seen.get(tuple(row), 0) + 1
    pid_at = LABEL_NAMES.index("pid")
    for row, t in zip(rows, targets, strict=True):
        if seen[tuple(row)] > 1:
            row[pid_at] = str(t.info.pid)
    return rows


def process_families(targets: list[Target]) -> list[Metric]:
    """The per-process series: samples, GIL ratio, top functions, up."""
    samples = m.SAMPLES.counter()
    gil = m.GIL_RATIO.gauge()
    func = m.FUNCTION_RATIO.gauge()
    up = m.UP.gauge()
    for t, lab in zip(targets, unique_labels(targets), strict=True):
        if t.state in DECIDED:
            up.add_metric(lab, 1.0 if t.state == "ok" else 0.0)
        if t.active_total or t.idle_total or t.last is not None:
            samples.add_metric([*lab, "active"], float(t.active_total))
            samples.add_metric([*lab, "idle"], float(t.idle_total))
        if t.last is not None:
            gil.add_metric(lab, t.last.gil_ratio)
            for f in t.last.functions:
                func.add_metric([*lab, f.function[:MAX_FUNCTION_LABEL], f.kind], f.ratio)
    return [samples, gil, func, up]


def listing_entry(t: Target, rate: int, now: float) -> dict[str, Any]:
    """One process in ``GET /v1/profiles``."""
    entry: dict[str, Any] = {
        "pid": t.info.pid,
        "labels": t.info.labels(),
        "state": t.state,
        "reason": t.reason,
    }
    if t.retry_at > now:
        entry["retry_in_seconds"] = round(t.retry_at - now, 1)
    if t.last is not None and t.last_run is not None:
        entry["last_window"] = {
            "start": t.last_run.started,
            "end": t.last_run.ended,
            "rate_hz": rate,
            "samples": {"active": t.last.active, "idle": t.last.idle},
            "gil_ratio": round(t.last.gil_ratio, 4),
            "top": [
                {"function": f.function, "kind": f.kind, "ratio": round(f.ratio, 4)}
                for f in t.last.functions
            ],
        }
    return entry


def profile_view(t: Target, rate: int, window: int) -> Profile:
    """What ``GET /v1/profiles/{pid}`` renders."""
    title = " ".join(f"{k}={v}" for k, v in t.info.labels().items() if v)
    last = t.last
    sub = ""
    if last is not None and t.last_run is not None:
        ended = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t.last_run.ended))
        sub = (
            f"{last.active} active / {last.idle} idle samples at {rate} Hz over {window} s; "
            f"GIL held {100 * last.gil_ratio:.0f}% of ticks; {ended}"
        )
    return Profile(
        pid=t.info.pid,
        title=title,
        state=t.state,
        reason=t.reason,
        cpu=dict(last.cpu) if last else None,
        wall=dict(last.wall) if last else None,
        subtitle=sub,
    )
