"""The rule table behind diagnose(): one rule per cause, each claiming only its own cause,
in an order where the causes a rule looks at are decided first; and the branches of single
rules that the threshold tests of test_diagnosis_rules.py do not reach."""

from __future__ import annotations

import math
from typing import Any

import pytest
from test_diagnosis_rules import HEALTHY, HEALTHY_EXTRA, KEY

from agent.collectors.diagnosis.diagnose import CAUSES, HOST_CAUSES, diagnose_one
from agent.collectors.diagnosis.rules import RULES
from agent.collectors.diagnosis.signals import Signals
from agent.collectors.diagnosis.thresholds import DEFAULT as T

# cause -> (values, extra, the signal a broken reading of which must not claim it)
TRIGGERS: dict[str, tuple[dict[str, Any], dict[str, float], str]] = {
    "cpu_starved": (
        {"runqueue_wait_ratio": 0.5, "runqueue_p99_seconds": 0.02},
        {},
        "runqueue_wait_ratio",
    ),
    "cpu_throttled": ({"cpu_throttled_ratio": 0.9}, {}, "cpu_throttled_ratio"),
    "gil_bound": (
        {"gil_ratio": 0.97, "idle_ratio": 0.6},
        {"voluntary_switches_per_second": 300.0},
        "gil_ratio",
    ),
    "blocked": (
        # no GPU: a process asleep while its GPU works waits on the GPU, not blocked
        {
            "offcpu_ratio": 0.95,
            "idle_ratio": 0.95,
            "queue_requests": 3.0,
            "gpu_utilization_ratio": None,
        },
        {},
        "offcpu_ratio",
    ),
    "gpu_saturated": (
        {"gpu_utilization_ratio": 0.99, "queue_requests": 8.0},
        {"queue_growth": 2.0},
        "gpu_utilization_ratio",
    ),
    "gpu_memory_pressure": ({"gpu_memory_used_ratio": 0.97}, {}, "gpu_memory_used_ratio"),
    "gpu_starved": (
        {"gpu_utilization_ratio": 0.05, "queue_requests": 4.0},
        {},
        "gpu_utilization_ratio",
    ),
    "gpu_throttled": ({"gpu_throttled_ratio": 1.0}, {}, "gpu_throttled_ratio"),
    "input_drift": ({"drift_detected": True}, {}, "drift_detected"),
    "service_errors": (
        {"error_ratio": 0.05, "requests_per_second": 100.0},
        {},
        "error_ratio",
    ),
    "service_stalled": ({}, {"stalled_ratio": 0.9}, "stalled_ratio"),
    "service_unreachable": ({}, {"unreachable_ratio": 1.0}, "unreachable_ratio"),
}


def sig(extra: dict[str, float] | None = None, **values: Any) -> Signals:
    s = Signals(KEY, [4242], 60.0, 13, values={**HEALTHY, **values})
    s.extra = {**HEALTHY_EXTRA, **(extra or {})}
    s.models = ["fraud"]
    return s


def causes(s: Signals) -> list[str]:
    return [c.cause for c in diagnose_one(s, T).causes]


def test_every_cause_has_exactly_one_rule_and_a_trigger() -> None:
    names = [name for name, _ in RULES]
    assert sorted(names) == sorted(CAUSES)
    assert len(set(names)) == len(names)
    assert sorted(TRIGGERS) == sorted(CAUSES)


@pytest.mark.parametrize("cause", list(CAUSES))
def test_each_rule_claims_only_its_own_cause(cause: str) -> None:
    values, extra, _ = TRIGGERS[cause]
    s = sig(extra, **values)
    assert causes(s) == [cause]
    for name, rule in RULES:
        got = rule(s, T, {})
        assert (got is not None) == (name == cause), name
        assert got is None or got.cause == name


def test_a_rule_comes_after_the_causes_it_looks_at() -> None:
    order = [name for name, _ in RULES]
    looked_at = {
        "cpu_starved": ("cpu_throttled", "gil_bound"),
        "blocked": ("cpu_starved",),
        "gpu_starved": HOST_CAUSES,
    }
    for rule, before in looked_at.items():
        assert all(order.index(b) < order.index(rule) for b in before), rule


@pytest.mark.parametrize("cause", list(CAUSES))
def test_a_broken_reading_claims_nothing(cause: str) -> None:
    # A NaN (a rate over a reset counter, a 0/0) is no evidence: the cause it would
    # carry is not claimed, and neither is anything else.
    values, extra, signal = TRIGGERS[cause]
    if signal in extra:
        extra = {**extra, signal: math.nan}
    else:
        values = {**values, signal: math.nan}
    assert causes(sig(extra, **values)) == []


def test_waiting_for_a_cpu_is_starvation_not_blocked() -> None:
    blocked, _, _ = TRIGGERS["blocked"]
    starved, _, _ = TRIGGERS["cpu_starved"]
    # Asleep off-CPU with requests waiting, and waiting for a CPU when awake: the run
    # queue is what holds it back (the trigger has no GPU, so nothing else is claimed).
    s = sig(**{**blocked, **starved})
    assert causes(s) == ["cpu_starved"]


def test_gpu_starved_names_both_the_queue_and_the_host_cause() -> None:
    s = sig(
        gpu_utilization_ratio=0.05,
        queue_requests=4.0,
        cpu_throttled_ratio=0.9,
    )
    got = diagnose_one(s, T)
    assert [c.cause for c in got.causes] == ["cpu_throttled", "gpu_starved"]
    starved = got.causes[1]
    assert starved.summary == (
        "GPU busy only 5 % of the time while 4.0 requests queued; "
        "the host side is the bottleneck (cpu_throttled)"
    )
    assert [e.signal for e in starved.evidence] == ["gpu_utilization_ratio", "queue_requests"]


def test_gpu_memory_pressure_from_both_memory_and_kv_cache() -> None:
    got = diagnose_one(sig({"kv_cache_usage_ratio": 0.99}, gpu_memory_used_ratio=0.97), T)
    (c,) = got.causes
    assert c.summary == "GPU memory 97 % full and KV cache 99 % full"
    assert [(e.signal, e.value) for e in c.evidence] == [
        ("gpu_memory_used_ratio", 0.97),
        ("kv_cache_usage_ratio", 0.99),
    ]


def test_input_drift_without_per_model_results_names_the_targets_models() -> None:
    s = sig(drift_detected=True)
    s.models = ["fraud", "churn"]
    (c,) = diagnose_one(s, T).causes
    assert c.summary == "input drift detected for model fraud, churn"


def test_a_rule_does_not_change_what_it_is_given() -> None:
    values, extra, _ = TRIGGERS["gpu_starved"]
    s = sig(extra, **{**values, "cpu_throttled_ratio": 0.9})
    before = (dict(s.values), dict(s.extra))
    first = diagnose_one(s, T)
    assert diagnose_one(s, T) == first
    assert (s.values, s.extra) == before
