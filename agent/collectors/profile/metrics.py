"""The profile collector's metrics, declared once (agent/metrics.py): rendered by
targets.py and collector.py, listed in docs/metrics.md, checked against dashboards and
rules."""

from __future__ import annotations

from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

OWNER = "profile"

SAMPLES = MetricSpec(
    "vigil_profile_samples_total",
    "counter",
    "Stack samples of the process's Python threads, by thread state (active, idle).",
    OWNER,
    (*LABEL_NAMES, "state"),
)
GIL_RATIO = MetricSpec(
    "vigil_profile_gil_ratio",
    "gauge",
    "Share of the sampling ticks in which a thread held the GIL, from the last GIL "
    "recording (modes rotate per window: up to three windows old).",
    OWNER,
    LABEL_NAMES,
    unit="ratio",
)
FUNCTION_RATIO = MetricSpec(
    "vigil_profile_function_ratio",
    "gauge",
    "Share of the last cpu recording's active samples in a function (modes rotate per "
    "window: up to three windows old): as the leaf (self) or anywhere on the stack (total; "
    "the frames every stack of a thread starts with are left out); top K per kind.",
    OWNER,
    (*LABEL_NAMES, "function", "kind"),
    unit="ratio",
)
UP = MetricSpec(
    "vigil_profile_up",
    "gauge",
    "Whether py-spy read the process in its last window (1) or it is marked and backed off (0).",
    OWNER,
    LABEL_NAMES,
)
WINDOWS = MetricSpec(
    "vigil_profile_windows_total", "counter", "Profiling windows by result.", OWNER, ("result",)
)
PYROSCOPE_PUSHES = MetricSpec(
    "vigil_profile_pyroscope_pushes_total",
    "counter",
    "Windows pushed to Pyroscope, by result.",
    OWNER,
    ("result",),
)
PYSPY_CPU = MetricSpec(
    "vigil_profile_pyspy_cpu_seconds_total",
    "counter",
    "CPU time used by py-spy children (user + system).",
    OWNER,
    unit="seconds",
)

BUDGET_SKIPS = MetricSpec(
    "vigil_profile_budget_skips_total",
    "counter",
    "Windows that were due but held back because the node's py-spy CPU budget was spent "
    "(counted once per held-back window); the process's profile ages meanwhile.",
    OWNER,
)
BUDGET_CORES = MetricSpec(
    "vigil_profile_budget_cores",
    "gauge",
    "CPU the py-spy children may use on average, in cores: the per-process budget times "
    "the watched processes, capped at the node's budget.",
    OWNER,
)

METRICS = (
    SAMPLES,
    GIL_RATIO,
    FUNCTION_RATIO,
    UP,
    WINDOWS,
    PYROSCOPE_PUSHES,
    PYSPY_CPU,
    BUDGET_SKIPS,
    BUDGET_CORES,
)
