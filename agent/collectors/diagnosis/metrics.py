"""The diagnosis collector's metrics, declared once (agent/metrics.py): rendered by
collector.py, listed in docs/metrics.md, checked against dashboards and rules.

Per-target series carry the per-process labels (agent.discovery.LABEL_NAMES), so a verdict
joins every other per-process series of the same pod or process."""

from __future__ import annotations

from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

OWNER = "diagnosis"

CAUSE = MetricSpec(
    "vigil_diagnosis_cause",
    "gauge",
    "1 while the diagnosis holds this cause for the pod or process (the series is absent "
    "otherwise); severity is the cause's (warning: act on it, info: context). "
    "docs/diagnosis.md says what each cause means.",
    OWNER,
    (*LABEL_NAMES, "cause", "severity"),
)
CAUSE_INFO = MetricSpec(
    "vigil_diagnosis_cause_info",
    "gauge",
    "1 for every cause the diagnosis knows, whether it holds or not (a fixed set, one series "
    "per cause): its family (the alert that names it), severity and one-line explanation, "
    "for alert annotations and dashboards to join on cause.",
    OWNER,
    ("cause", "family", "severity", "explanation"),
)
EVIDENCE = MetricSpec(
    "vigil_diagnosis_evidence",
    "gauge",
    "A number behind a cause that holds: the signal's value over the diagnosis window "
    "(ratios 0..1, seconds, requests, per second, as the signal's name says).",
    OWNER,
    (*LABEL_NAMES, "cause", "signal"),
)
EVIDENCE_THRESHOLD = MetricSpec(
    "vigil_diagnosis_evidence_threshold",
    "gauge",
    "The threshold the evidence of a holding cause was compared with "
    "(agent/collectors/diagnosis/thresholds.py).",
    OWNER,
    (*LABEL_NAMES, "cause", "signal"),
)
STATUS = MetricSpec(
    "vigil_diagnosis_status",
    "gauge",
    "The verdict's status for the pod or process (1 for the current one): ok, causes, or "
    "insufficient_evidence (too short a window or no signal yet).",
    OWNER,
    (*LABEL_NAMES, "status"),
)
WINDOW = MetricSpec(
    "vigil_diagnosis_window_seconds",
    "gauge",
    "Time span of the snapshots the current verdicts were computed over.",
    OWNER,
    unit="seconds",
)
TARGETS = MetricSpec(
    "vigil_diagnosis_targets",
    "gauge",
    "Pods or processes diagnosed in the last round.",
    OWNER,
)
TARGETS_REFUSED = MetricSpec(
    "vigil_diagnosis_targets_refused_total",
    "counter",
    "Pods or processes left out of a diagnosis round because --collector.diagnosis."
    "max-targets were already diagnosed (counted once per round and target).",
    OWNER,
)
STATUSES = ("ok", "causes", "insufficient_evidence")

METRICS = (
    CAUSE,
    CAUSE_INFO,
    EVIDENCE,
    EVIDENCE_THRESHOLD,
    STATUS,
    WINDOW,
    TARGETS,
    TARGETS_REFUSED,
)
