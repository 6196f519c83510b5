"""Snapshot → metric families, from the declarations in metrics.py (pure)."""

from __future__ import annotations

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from agent.collectors.inference import metrics as m
from agent.collectors.inference.kinds import Histogram
from agent.collectors.inference.state import PROBE_BUCKETS, Snapshot, TargetView


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    if not h.buckets:
        # Sum and count only (Triton by default, TorchServe): the +Inf bucket alone is a
        # valid histogram that rate(_sum)/rate(_count) works on and quantiles refuse.
        return [("+Inf", h.count)]
    return [(floatToGoString(le), v) for le, v in h.buckets]


def target_labels(v: TargetView) -> list[str]:
    return [*v.target.labels, str(v.target.port), v.kind]


def render(snap: Snapshot) -> list[Metric]:
    """Every family is always present, possibly empty."""
    up = m.UP.gauge()
    duration = m.PROBE_DURATION.histogram()
    failures = m.PROBE_FAILURES.counter()
    consecutive = m.CONSECUTIVE_FAILURES.gauge()
    timeouts = m.CONSECUTIVE_TIMEOUTS.gauge()
    deep = m.DEEP_UP.gauge()
    scrape_ok = m.SCRAPE_SUCCESS.gauge()
    scrape_errors = m.SCRAPE_ERRORS.counter()
    requests = m.REQUESTS.counter()
    latency = m.REQUEST_DURATION.histogram()
    ttft = m.TTFT.histogram()
    queue = m.QUEUE.gauge()
    running = m.RUNNING.gauge()
    kv = m.KV_CACHE.gauge()
    tokens = m.GENERATED_TOKENS.counter()
    stalled = m.STALLED.gauge()
    models_dropped = m.MODELS_DROPPED.gauge()
    bounds = [floatToGoString(b) for b in PROBE_BUCKETS] + ["+Inf"]
    for v in snap.targets:
        lab = target_labels(v)
        if v.up is not None:
            up.add_metric(lab, 1.0 if v.up else 0.0)
            consecutive.add_metric(lab, float(v.consecutive_failures))
            timeouts.add_metric(lab, float(v.consecutive_timeouts))
            duration.add_metric(
                lab,
                [(b, float(c)) for b, c in zip(bounds, v.probe_buckets, strict=True)],
                v.probe_sum,
            )
            for reason, n in v.failures:
                failures.add_metric([*lab, reason], float(n))
        if v.deep_up is not None:
            deep.add_metric([*lab, ""], 1.0 if v.deep_up else 0.0)
        if v.scrape_ok is not None:
            scrape_ok.add_metric(lab, 1.0 if v.scrape_ok else 0.0)
        for reason, n in v.scrape_errors:
            scrape_errors.add_metric([*lab, reason], float(n))
        if v.models is None:
            continue
        models_dropped.add_metric(lab, float(v.models_dropped))
        for mv in v.models:
            ml = [*lab, mv.model]
            if mv.success_total is not None:
                requests.add_metric([*ml, "success"], mv.success_total)
            if mv.error_total is not None:
                requests.add_metric([*ml, "error"], mv.error_total)
            if mv.duration is not None:
                latency.add_metric(ml, _buckets(mv.duration), mv.duration.sum_seconds)
            if mv.ttft is not None:
                ttft.add_metric(ml, _buckets(mv.ttft), mv.ttft.sum_seconds)
            for fam, value in (
                (queue, mv.queue_requests),
                (running, mv.running_requests),
                (kv, mv.kv_cache_usage_ratio),
            ):
                if value is not None:
                    fam.add_metric(ml, value)
            if mv.generated_tokens_total is not None:
                tokens.add_metric(ml, mv.generated_tokens_total)
            if mv.stalled is not None:
                stalled.add_metric(ml, 1.0 if mv.stalled else 0.0)
            if mv.deep_up is not None:
                deep.add_metric(ml, 1.0 if mv.deep_up else 0.0)
    targets = m.TARGETS.gauge()
    for source, n in snap.by_source:
        targets.add_metric([source], float(n))
    dropped = m.TARGETS_DROPPED.gauge()
    for reason, n in snap.dropped:
        dropped.add_metric([reason], float(n))
    return [
        up,
        duration,
        failures,
        consecutive,
        timeouts,
        deep,
        scrape_ok,
        scrape_errors,
        requests,
        latency,
        ttft,
        queue,
        running,
        kv,
        tokens,
        stalled,
        targets,
        dropped,
        models_dropped,
    ]
