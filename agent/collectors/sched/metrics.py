"""The sched collector's metrics, declared once (agent/metrics.py): rendered by
collector.py, listed in docs/metrics.md, checked against dashboards and rules."""

from __future__ import annotations

from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

OWNER = "sched"
# Per watched process (mode=watched) or per cgroup (mode=cgroup, no pid): the union.
SERIES = (*LABEL_NAMES, "cgroup")

RUNQUEUE_LATENCY = MetricSpec(
    "vigil_sched_runqueue_latency_seconds",
    "histogram",
    "Time runnable threads waited for a CPU (from wakeup or preemption to running).",
    OWNER,
    SERIES,
    unit="seconds",
)
OFFCPU = MetricSpec(
    "vigil_sched_offcpu_seconds",
    "histogram",
    "Time threads spent off-CPU after blocking (from switching out to running again).",
    OWNER,
    SERIES,
    unit="seconds",
)
CONTEXT_SWITCHES = MetricSpec(
    "vigil_sched_context_switches_total",
    "counter",
    "Context switches away from the threads: voluntary (blocked) or involuntary (preempted).",
    OWNER,
    (*SERIES, "kind"),
)
MIGRATIONS = MetricSpec(
    "vigil_sched_migrations_total",
    "counter",
    "Moves of the threads from one CPU to another.",
    OWNER,
    SERIES,
)
WATCHED_THREADS = MetricSpec(
    "vigil_sched_watched_threads",
    "gauge",
    "Thread ids in the kernel's filter (threads of watched processes).",
    OWNER,
)
DROPPED_EVENTS = MetricSpec(
    "vigil_sched_dropped_events_total",
    "counter",
    "Scheduler events the probe could not account because a map was full.",
    OWNER,
    ("reason",),
)

METRICS = (RUNQUEUE_LATENCY, OFFCPU, CONTEXT_SWITCHES, MIGRATIONS, WATCHED_THREADS, DROPPED_EVENTS)
