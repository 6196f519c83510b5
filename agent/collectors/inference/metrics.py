"""The inference collector's metrics, declared once (agent/metrics.py): rendered by
render.py, listed in docs/metrics.md, checked against dashboards and rules.

Per-target series carry the process labels (agent.discovery.LABEL_NAMES) plus ``port`` and
``kind``; per-model series add ``model``. Targets from configuration have empty process
labels but ``comm``, which holds the URL's host.
"""

from __future__ import annotations

from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

OWNER = "inference"
TARGET = (*LABEL_NAMES, "port", "kind")
MODEL = (*TARGET, "model")

UP = MetricSpec(
    "vigil_inference_up",
    "gauge",
    "Whether the server's health path answered 2xx within the probe timeout in the last "
    "probe (1) or not (0).",
    OWNER,
    TARGET,
)
PROBE_DURATION = MetricSpec(
    "vigil_inference_probe_duration_seconds",
    "histogram",
    "Time health probes took, failed ones included (a timeout counts as the timeout).",
    OWNER,
    TARGET,
    unit="seconds",
)
PROBE_FAILURES = MetricSpec(
    "vigil_inference_probe_failures_total",
    "counter",
    "Failed health probes by reason: timeout, refused, reset, http_status, protocol, "
    "unreachable, error.",
    OWNER,
    (*TARGET, "reason"),
)
CONSECUTIVE_FAILURES = MetricSpec(
    "vigil_inference_probe_consecutive_failures",
    "gauge",
    "Health probes failed in a row, any reason (0 after a good one); "
    "vigil_inference_probe_consecutive_timeouts counts only timeouts.",
    OWNER,
    TARGET,
)
CONSECUTIVE_TIMEOUTS = MetricSpec(
    "vigil_inference_probe_consecutive_timeouts",
    "gauge",
    "Health probes in a row that timed out (0 after any probe that did not): what "
    "PromQL cannot count across scrape and probe intervals.",
    OWNER,
    TARGET,
)
DEEP_UP = MetricSpec(
    "vigil_inference_deep_probe_up",
    "gauge",
    "Whether the kind's deep check passed (SGLang /health_generate, OIP v2 model ready); "
    "only with deep probes on.",
    OWNER,
    MODEL,
)
SCRAPE_SUCCESS = MetricSpec(
    "vigil_inference_scrape_success",
    "gauge",
    "Whether the server's /metrics was read and understood in the last interval (1) or "
    "not (0); per-model series are absent while it is 0.",
    OWNER,
    TARGET,
)
SCRAPE_ERRORS = MetricSpec(
    "vigil_inference_scrape_errors_total",
    "counter",
    "Failed reads of the server's /metrics by reason: timeout, refused, reset, http_status, "
    "too_large, protocol, parse, unknown_kind, unreachable, error.",
    OWNER,
    (*TARGET, "reason"),
)
REQUESTS = MetricSpec(
    "vigil_inference_requests_total",
    "counter",
    "Requests the server finished, by outcome (success, error). Vigil's own counter: "
    "the server's increases are added up, so a server restart does not make it go down.",
    OWNER,
    (*MODEL, "outcome"),
)
REQUEST_DURATION = MetricSpec(
    "vigil_inference_request_duration_seconds",
    "histogram",
    "End-to-end request latency. Servers that export only a sum and a count (Triton by "
    "default, TorchServe) get the +Inf bucket only: no quantile. Restart-safe like "
    "vigil_inference_requests_total.",
    OWNER,
    MODEL,
    unit="seconds",
)
TTFT = MetricSpec(
    "vigil_inference_time_to_first_token_seconds",
    "histogram",
    "Time to the first generated token (generative servers only). Restart-safe.",
    OWNER,
    MODEL,
    unit="seconds",
)
QUEUE = MetricSpec(
    "vigil_inference_queue_requests",
    "gauge",
    "Requests waiting in the server's queue.",
    OWNER,
    MODEL,
)
RUNNING = MetricSpec(
    "vigil_inference_running_requests",
    "gauge",
    "Requests the server is working on.",
    OWNER,
    MODEL,
)
KV_CACHE = MetricSpec(
    "vigil_inference_kv_cache_usage_ratio",
    "gauge",
    "Share of the KV cache in use (0..1).",
    OWNER,
    MODEL,
    unit="ratio",
)
GENERATED_TOKENS = MetricSpec(
    "vigil_inference_generated_tokens_total",
    "counter",
    "Tokens generated. Restart-safe like vigil_inference_requests_total.",
    OWNER,
    MODEL,
)
STALLED = MetricSpec(
    "vigil_inference_stalled",
    "gauge",
    "1 when requests are running and no request finished and no token was generated for "
    "the stall-after setting, whatever the health path says; else 0.",
    OWNER,
    MODEL,
)
TARGETS = MetricSpec(
    "vigil_inference_targets",
    "gauge",
    "Targets probed, by source (discovered, annotation, config).",
    OWNER,
    ("source",),
)
TARGETS_DROPPED = MetricSpec(
    "vigil_inference_targets_dropped",
    "gauge",
    "Targets found but not probed in the last round, by reason (max_targets: over the "
    "max-targets cap; no_address: listening ports in a network namespace the agent cannot "
    "reach, see the node-address setting).",
    OWNER,
    ("reason",),
)
MODELS_DROPPED = MetricSpec(
    "vigil_inference_models_dropped",
    "gauge",
    "Models of the target not exported in the last scrape: over the max-models cap.",
    OWNER,
    TARGET,
)

METRICS = (
    UP,
    PROBE_DURATION,
    PROBE_FAILURES,
    CONSECUTIVE_FAILURES,
    CONSECUTIVE_TIMEOUTS,
    DEEP_UP,
    SCRAPE_SUCCESS,
    SCRAPE_ERRORS,
    REQUESTS,
    REQUEST_DURATION,
    TTFT,
    QUEUE,
    RUNNING,
    KV_CACHE,
    GENERATED_TOKENS,
    STALLED,
    TARGETS,
    TARGETS_DROPPED,
    MODELS_DROPPED,
)
