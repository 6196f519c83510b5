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
    "Two-sample KS statistic D of the live window against the reference, per numeric feature.",
    OWNER,
    MVF,
)
P_VALUE = MetricSpec(
    "vigil_drift_p_value",
    "gauge",
    "p-value per feature (uncorrected): the KS test for numeric features, chi-squared "
    "homogeneity for categorical ones.",
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
    "Whether any input feature of the model version drifted at the configured alpha (1) or not.",
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
    "feature_mismatch, too_many_rows, too_many_features, bootstrap_limit, store_failed, "
    "wrong_kind, category_too_long, too_many_categories, confidence_out_of_range, "
    "reference_changed); "
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

CHI2_STATISTIC = MetricSpec(
    "vigil_drift_chi2_statistic",
    "gauge",
    "Pearson chi-squared statistic of the window's category counts against the "
    "reference's, per categorical feature.",
    OWNER,
    MVF,
)
EFFECT_SIZE = MetricSpec(
    "vigil_drift_effect_size",
    "gauge",
    "How far the feature moved, whatever the sample sizes: numeric, the Wasserstein "
    "distance divided by the reference's interquartile range; categorical, the "
    "Jensen-Shannon distance (base 2, 0 same to 1 disjoint).",
    OWNER,
    MVF,
)
FEATURE_INFO = MetricSpec(
    "vigil_drift_feature_info",
    "gauge",
    "Always 1: each feature of a loaded reference, its kind (numeric, categorical) and "
    "role (input, output, confidence).",
    OWNER,
    (*MVF, "kind", "role"),
)
OUTPUT_DETECTED = MetricSpec(
    "vigil_drift_output_detected",
    "gauge",
    "Whether any output feature (predictions, confidence scores) of the model version "
    "drifted at the configured alpha (1) or not.",
    OWNER,
    MV,
)
UNSEEN = MetricSpec(
    "vigil_drift_unseen_category_samples",
    "gauge",
    "Samples in the window whose category the reference never had (the __unseen__ "
    "bucket), per categorical feature.",
    OWNER,
    MVF,
)
QUANTILE = MetricSpec(
    "vigil_drift_feature_quantile",
    "gauge",
    "Quartiles (quartile=0.25, 0.5, 0.75) of a numeric feature in the reference and in the "
    "window (sample=reference|window), at the latest check.",
    OWNER,
    (*MVF, "sample", "quartile"),
)
CATEGORY_SHARE = MetricSpec(
    "vigil_drift_category_share_ratio",
    "gauge",
    "Share of a category in the reference and in the window (sample=reference|window), "
    "for the categories of each categorical feature whose share moved most.",
    OWNER,
    (*MVF, "category", "sample"),
    unit="ratio",
)
EXPLANATION = MetricSpec(
    "vigil_drift_explanation",
    "gauge",
    "Effect size of each drifted feature among the three largest of its role and kind "
    "(numeric: IQRs moved, categorical: Jensen-Shannon distance), with a summary of its "
    "shift (which way, how far) for alert descriptions; the rules rank across kinds by "
    "effect over each kind's large-drift threshold.",
    OWNER,
    (*MVF, "kind", "role", "summary"),
)
FEATURES_NOT_EXPORTED = MetricSpec(
    "vigil_drift_features_not_exported",
    "gauge",
    "Features of the model version whose per-feature series are not exported (past "
    "max-exported-features, in the reference's order); the drift decision still covers them.",
    OWNER,
    MV,
)
PREDICTION_CONFIDENCE = MetricSpec(
    "vigil_prediction_confidence",
    "histogram",
    "Confidence scores the model reported with its predictions (features declared "
    "--confidence), as accepted by drift ingest.",
    OWNER,
    MVF,
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
    CHI2_STATISTIC,
    EFFECT_SIZE,
    FEATURE_INFO,
    OUTPUT_DETECTED,
    UNSEEN,
    QUANTILE,
    CATEGORY_SHARE,
    EXPLANATION,
    FEATURES_NOT_EXPORTED,
    PREDICTION_CONFIDENCE,
)
