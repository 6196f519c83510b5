"""The drift collector's metrics, declared once (agent/metrics.py): rendered by
collector.py, listed in docs/metrics.md, checked against dashboards and rules."""

from __future__ import annotations

from agent.metrics import MetricSpec

OWNER = "drift"
MV = ("model", "version")
MVF = (*MV, "feature")

KS_STATISTIC = MetricSpec(
    "vigil_drift_ks_statistic",
    "gauge",
    "Two-sample KS statistic D of the live window against the reference, per feature.",
    OWNER,
    MVF,
)
P_VALUE = MetricSpec(
    "vigil_drift_p_value",
    "gauge",
    "p-value of the KS test per feature (uncorrected).",
    OWNER,
    MVF,
)
FEATURE_DRIFTED = MetricSpec(
    "vigil_drift_feature_drifted",
    "gauge",
    "Whether the feature counts as drifted after the multiple-testing correction.",
    OWNER,
    MVF,
)
DETECTED = MetricSpec(
    "vigil_drift_detected",
    "gauge",
    "Whether any feature of the model version drifted at the configured alpha (1) or not.",
    OWNER,
    MV,
)
WINDOW_SAMPLES = MetricSpec(
    "vigil_drift_window_samples", "gauge", "Samples in the live window.", OWNER, MV
)
CHECK_DURATION = MetricSpec(
    "vigil_drift_check_duration_seconds",
    "gauge",
    "Time the latest check took.",
    OWNER,
    MV,
    unit="seconds",
)
LAST_CHECK = MetricSpec(
    "vigil_drift_last_check_timestamp_seconds",
    "gauge",
    "When the latest check ran, seconds since the Unix epoch.",
    OWNER,
    MV,
    unit="seconds",
)
SAMPLES = MetricSpec(
    "vigil_drift_samples_total", "counter", "Samples accepted into the window.", OWNER, MV
)
REJECTED_SAMPLES = MetricSpec(
    "vigil_drift_rejected_samples_total",
    "counter",
    "Samples refused, by reason (unknown_model, unknown_feature, missing_feature, "
    "non_numeric, non_finite, malformed, too_large, unauthorized, client_dropped, "
    "feature_mismatch, too_many_rows, too_many_features, bootstrap_limit, store_failed); "
    "model is (unknown) for models with no loaded reference.",
    OWNER,
    ("model", "reason"),
)
REFERENCE_LOAD_ERRORS = MetricSpec(
    "vigil_drift_reference_load_errors",
    "gauge",
    "Reference files on disk that are not loaded (corrupt, unreadable or over "
    "max-references): that model version's drift cannot be detected. 1 per file; past "
    'max-references files, the rest are summed under model="(unknown)",version="(unknown)".',
    OWNER,
    MV,
)

METRICS = (
    KS_STATISTIC,
    P_VALUE,
    FEATURE_DRIFTED,
    DETECTED,
    WINDOW_SAMPLES,
    CHECK_DURATION,
    LAST_CHECK,
    SAMPLES,
    REJECTED_SAMPLES,
    REFERENCE_LOAD_ERRORS,
)
