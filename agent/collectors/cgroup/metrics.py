"""The cgroup collector's metrics, declared once (agent/metrics.py): rendered by
collector.py, listed in docs/metrics.md, checked against dashboards and rules."""

from __future__ import annotations

from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

OWNER = "cgroup"

PERIODS = MetricSpec(
    "vigil_cgroup_cpu_periods_total",
    "counter",
    "CFS bandwidth periods in which the process's cgroup had runnable tasks (cpu.stat "
    "nr_periods; 0 while the cgroup has no CPU limit). The cgroup's counter: processes "
    "sharing a cgroup show the same numbers.",
    OWNER,
    LABEL_NAMES,
)
THROTTLED_PERIODS = MetricSpec(
    "vigil_cgroup_cpu_throttled_periods_total",
    "counter",
    "Of those periods, the ones in which the cgroup used up its CPU quota and was held "
    "back until the next period (cpu.stat nr_throttled).",
    OWNER,
    LABEL_NAMES,
)
THROTTLED = MetricSpec(
    "vigil_cgroup_cpu_throttled_seconds_total",
    "counter",
    "Time the cgroup's tasks were runnable but held back by its CPU quota (cpu.stat "
    "throttled_usec, or throttled_time on cgroup v1).",
    OWNER,
    LABEL_NAMES,
    unit="seconds",
)
READ_ERRORS = MetricSpec(
    "vigil_cgroup_read_errors_total",
    "counter",
    "cpu.stat reads that failed, by reason (no_cgroup: the process's cgroup file names no "
    "cpu hierarchy; unreadable: the file could not be read; malformed: it lacks the "
    "throttling counters).",
    OWNER,
    ("reason",),
)
READ_ERROR_REASONS = ("no_cgroup", "unreadable", "malformed")

METRICS = (PERIODS, THROTTLED_PERIODS, THROTTLED, READ_ERRORS)
