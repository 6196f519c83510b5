"""The rollback controller's metrics, declared once (agent/metrics.py): rendered by
controller.py, served on the controller's /metrics (:9476), listed in docs/metrics.md."""

from __future__ import annotations

from agent.metrics import MetricSpec

OWNER = "rollback-controller"

ROLLBACKS = MetricSpec(
    "vigil_rollbacks_total",
    "counter",
    "Rollbacks executed, by target, action and result (succeeded, skipped, failed, dry_run, "
    "refused), counted when the action is done.",
    OWNER,
    ("target", "action", "result"),
)
ALERTS = MetricSpec(
    "vigil_rollback_alerts_total",
    "counter",
    "Alerts received on the webhook, by what the controller made of them (accepted, "
    "duplicate, resolved, ignored, no_target, refused, cooldown, rate_limited, invalid).",
    OWNER,
    ("result",),
)
OUTCOMES_UNRECORDED = MetricSpec(
    "vigil_rollback_outcomes_unrecorded",
    "gauge",
    "Rollbacks done whose outcome the journal has not taken yet (retried until it does).",
    OWNER,
)

HISTORY_REFUSED = MetricSpec(
    "vigil_rollback_history_refused_total",
    "counter",
    "InferenceService specs not recorded in the rollback history because the journal "
    "already holds the most objects it keeps (a rollback of such an object cannot restore "
    "an earlier spec).",
    OWNER,
)

METRICS = (ROLLBACKS, ALERTS, OUTCOMES_UNRECORDED, HISTORY_REFUSED)
