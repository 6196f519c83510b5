"""diagnose(): every cause, just above and just below each of its thresholds, and the
results that are not causes (ok, insufficient evidence). Pure: signals in, verdicts out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agent.collectors.diagnosis.diagnose import CAUSES, HOST_CAUSES, diagnose, diagnose_one
from agent.collectors.diagnosis.signals import SIGNALS, Signals
from agent.collectors.diagnosis.thresholds import DEFAULT, Thresholds

T = DEFAULT
KEY = ("", "", "", "python3", "4242")

# A process that is fine on every signal: each test moves one signal across a line.
HEALTHY: dict[str, Any] = {
    "runqueue_wait_ratio": 0.01,
    "runqueue_p99_seconds": 0.0005,
    "offcpu_ratio": 0.3,
    "gil_ratio": 0.4,
    "idle_ratio": 0.1,
    "cpu_throttled_ratio": 0.0,
    "gpu_utilization_ratio": 0.6,
    "gpu_memory_used_ratio": 0.5,
    "gpu_throttled_ratio": 0.0,
    "drift_detected": False,
    "requests_per_second": 50.0,
    "error_ratio": 0.0,
    "latency_p95_seconds": 0.2,
    "queue_requests": 0.0,
}
HEALTHY_EXTRA = {
    "voluntary_switches_per_second": 5.0,
    "unreachable_ratio": 0.0,
    "stalled_ratio": 0.0,
    "running_requests": 0.0,
    "queue_growth": 0.0,
}


def sig(
    window: float = 60.0, frames: int = 13, extra: dict[str, float] | None = None, **values: Any
) -> Signals:
    v = {**HEALTHY, **values}
    x = {**HEALTHY_EXTRA, **(extra or {})}
    s = Signals(KEY, [4242], window, frames, values=v, extra=x)
    s.models = ["fraud"]
    return s


def causes(s: Signals, t: Thresholds = T) -> list[str]:
    verdict = diagnose_one(s, t)
    return [c.cause for c in verdict.causes]


def test_healthy_is_ok_with_no_cause() -> None:
    v = diagnose_one(sig(), T)
    assert v.status == "ok"
    assert v.causes == ()


@pytest.mark.parametrize(
    ("frames", "window"),
    [(T.min_samples - 1, 60.0), (13, T.min_window_seconds - 0.1), (1, 0.0)],
)
def test_too_little_data_is_insufficient_evidence(frames: int, window: float) -> None:
    # Even with a starved-looking process: a short window claims nothing.
    v = diagnose_one(sig(window, frames, runqueue_wait_ratio=0.9, runqueue_p99_seconds=0.1), T)
    assert v.status == "insufficient_evidence"
    assert v.causes == ()
    assert "a verdict needs" in v.notes[0]


def test_enough_data_exactly_at_the_minimum() -> None:
    assert diagnose_one(sig(T.min_window_seconds, T.min_samples), T).status == "ok"


def test_no_signal_at_all_is_insufficient_evidence() -> None:
    s = Signals(KEY, [1], 60.0, 13, values=dict.fromkeys(SIGNALS))
    v = diagnose_one(s, T)
    assert v.status == "insufficient_evidence"
    assert "no scheduler" in v.notes[0]
    # a server's own signals are evidence enough for the service causes
    only_service = dict.fromkeys(SIGNALS) | {"requests_per_second": 30.0, "error_ratio": 0.0}
    s = Signals(KEY, [1], 60.0, 13, values=only_service, extra={"unreachable_ratio": 1.0})
    assert [c.cause for c in diagnose_one(s, T).causes] == ["service_unreachable"]


def test_cpu_starved_needs_both_share_and_p99() -> None:
    w, p = T.runqueue_wait_ratio_min, T.runqueue_p99_min_seconds
    assert causes(sig(runqueue_wait_ratio=w, runqueue_p99_seconds=p)) == ["cpu_starved"]
    assert causes(sig(runqueue_wait_ratio=w - 0.01, runqueue_p99_seconds=p)) == []
    assert causes(sig(runqueue_wait_ratio=w, runqueue_p99_seconds=p * 0.9)) == []
    assert causes(sig(runqueue_wait_ratio=None, runqueue_p99_seconds=None)) == []


def test_cpu_starved_summary_quotes_the_numbers() -> None:
    v = diagnose_one(sig(runqueue_wait_ratio=0.38, runqueue_p99_seconds=0.041), T)
    c = v.causes[0]
    assert c.summary == "waited 38 % of its time for a CPU (p99 run-queue wait 41 ms)"
    assert [(e.signal, e.value, e.threshold, e.window_seconds) for e in c.evidence] == [
        ("runqueue_wait_ratio", 0.38, T.runqueue_wait_ratio_min, 60.0),
        ("runqueue_p99_seconds", 0.041, T.runqueue_p99_min_seconds, 60.0),
    ]


def test_cpu_throttled() -> None:
    r = T.cpu_throttled_ratio_min
    got = diagnose_one(
        sig(cpu_throttled_ratio=0.8, extra={"throttled_seconds_per_second": 0.9}), T
    )
    assert [c.cause for c in got.causes] == ["cpu_throttled"]
    assert got.causes[0].summary == (
        "its cgroup was throttled in 80 % of CFS periods (0.90 s held back per second)"
    )
    assert causes(sig(cpu_throttled_ratio=r)) == ["cpu_throttled"]
    assert causes(sig(cpu_throttled_ratio=r - 0.01)) == []
    assert causes(sig(cpu_throttled_ratio=None)) == []


GIL_BOUND = {"gil_ratio": 0.97, "idle_ratio": 0.6}
HANDOFFS = {"voluntary_switches_per_second": 300.0}


def test_gil_bound() -> None:
    assert causes(sig(extra=HANDOFFS, **GIL_BOUND)) == ["gil_bound"]


@pytest.mark.parametrize(
    ("values", "extra"),
    [
        ({"gil_ratio": T.gil_ratio_min - 0.01, "idle_ratio": 0.6}, HANDOFFS),
        # one busy thread and nobody waiting: CPU-bound, not GIL-bound
        ({"gil_ratio": 0.99, "idle_ratio": T.gil_idle_ratio_min - 0.01}, HANDOFFS),
        # idle threads that never ask for the lock (a pool blocked on a socket)
        (GIL_BOUND, {"voluntary_switches_per_second": T.gil_voluntary_switches_min_per_second - 1}),
        ({"gil_ratio": None, "idle_ratio": 0.6}, HANDOFFS),
        (GIL_BOUND, {"voluntary_switches_per_second": None}),
    ],
)
def test_not_gil_bound(values: dict[str, Any], extra: dict[str, Any]) -> None:
    x = {k: v for k, v in extra.items() if v is not None}
    s = sig(extra=x, **values)
    if extra.get("voluntary_switches_per_second", 0) is None:
        del s.extra["voluntary_switches_per_second"]
    assert causes(s) == []


BLOCKED = {
    "offcpu_ratio": 0.95,
    "idle_ratio": 0.95,
    "queue_requests": 3.0,
    "gpu_utilization_ratio": None,
}


def test_blocked_needs_waiting_requests() -> None:
    assert causes(sig(**BLOCKED)) == ["blocked"]
    # an idle server sleeps too: without requests waiting, it is not blocked
    assert causes(sig(**{**BLOCKED, "queue_requests": 0.0})) == []
    assert causes(sig(**{**BLOCKED, "queue_requests": None}, extra={})) == []
    # running requests count as waiting (the server has work in hand)
    s = sig(**{**BLOCKED, "queue_requests": None}, extra={"running_requests": 2.0})
    assert causes(s) == ["blocked"]
    assert causes(sig(**{**BLOCKED, "offcpu_ratio": T.offcpu_ratio_min - 0.01})) == []
    busy = 1 - T.blocked_active_ratio_max - 0.01
    assert causes(sig(**{**BLOCKED, "idle_ratio": busy})) == []
    # asleep while the GPU works: waiting on the GPU, not blocked
    assert causes(sig(**{**BLOCKED, "gpu_utilization_ratio": 0.9})) == []


def test_gpu_saturated_needs_a_queue_that_does_not_shrink() -> None:
    busy = {"gpu_utilization_ratio": 0.99, "queue_requests": 8.0}
    assert causes(sig(**busy, extra={"queue_growth": 4.0})) == ["gpu_saturated"]
    assert causes(sig(**busy, extra={"queue_growth": -3.0})) == []
    assert causes(sig(**{**busy, "queue_requests": 0.5})) == []
    under = T.gpu_saturated_utilization_min - 0.01
    assert causes(sig(**{**busy, "gpu_utilization_ratio": under})) == []
    # a busy GPU with nothing waiting is a well-used GPU, not a cause
    assert causes(sig(gpu_utilization_ratio=1.0, queue_requests=None)) == []


def test_gpu_memory_pressure_from_memory_or_kv_cache() -> None:
    m = T.gpu_memory_used_ratio_min
    got = diagnose_one(sig(gpu_memory_used_ratio=0.97), T)
    assert got.causes[0].summary == "GPU memory 97 % full"
    assert causes(sig(gpu_memory_used_ratio=m - 0.01)) == []
    s = sig(extra={"kv_cache_usage_ratio": 0.99})
    assert diagnose_one(s, T).causes[0].summary == "KV cache 99 % full"


def test_gpu_starved_by_queue_or_by_a_host_cause() -> None:
    idle_gpu = {"gpu_utilization_ratio": 0.05}
    assert causes(sig(**idle_gpu)) == []  # idle and nothing to do: fine
    assert causes(sig(**idle_gpu, queue_requests=4.0)) == ["gpu_starved"]
    got = diagnose_one(sig(**idle_gpu, runqueue_wait_ratio=0.5, runqueue_p99_seconds=0.02), T)
    assert [c.cause for c in got.causes] == ["cpu_starved", "gpu_starved"]
    assert got.causes[1].summary == (
        "GPU busy only 5 % of the time; the host side is the bottleneck (cpu_starved)"
    )
    over = T.gpu_starved_utilization_max + 0.01
    assert causes(sig(gpu_utilization_ratio=over, queue_requests=4.0)) == []


@pytest.mark.parametrize("host", HOST_CAUSES)
def test_every_host_cause_explains_an_idle_gpu(host: str) -> None:
    trigger: dict[str, tuple[dict[str, Any], dict[str, float]]] = {  # one cause each
        "cpu_starved": ({"runqueue_wait_ratio": 0.5, "runqueue_p99_seconds": 0.02}, {}),
        "cpu_throttled": ({"cpu_throttled_ratio": 0.9}, {}),
        "gil_bound": (GIL_BOUND, HANDOFFS),
        "blocked": ({"offcpu_ratio": 0.95, "idle_ratio": 0.95}, {"running_requests": 2.0}),
    }
    values, extra = trigger[host]
    got = causes(sig(gpu_utilization_ratio=0.1, extra=extra, **values))
    assert got == [host, "gpu_starved"]


def test_gpu_throttled() -> None:
    r = T.gpu_throttled_ratio_min
    assert causes(sig(gpu_throttled_ratio=1.0)) == ["gpu_throttled"]
    assert causes(sig(gpu_throttled_ratio=r)) == ["gpu_throttled"]
    assert causes(sig(gpu_throttled_ratio=r - 0.01)) == []


def test_input_drift_names_the_model() -> None:
    s = sig(drift_detected=True)
    s.drifted_models = ["fraud"]
    got = diagnose_one(s, T)
    assert [c.cause for c in got.causes] == ["input_drift"]
    assert got.causes[0].summary == "input drift detected for model fraud"
    assert causes(sig(drift_detected=None)) == []


def test_service_errors_need_volume() -> None:
    vol = T.error_min_requests_per_second
    assert causes(sig(error_ratio=0.02, requests_per_second=vol)) == ["service_errors"]
    assert causes(sig(error_ratio=0.02, requests_per_second=vol - 1)) == []
    assert causes(sig(error_ratio=T.error_ratio_min, requests_per_second=100.0)) == []
    got = diagnose_one(sig(error_ratio=0.0025, requests_per_second=200.0), T)
    assert got.causes[0].summary == "0.25 % of 200 requests/s failed"


def test_service_stalled_and_unreachable() -> None:
    assert causes(sig(extra={"stalled_ratio": 0.6})) == ["service_stalled"]
    assert causes(sig(extra={"stalled_ratio": 0.4})) == []
    assert causes(sig(extra={"unreachable_ratio": 1.0})) == ["service_unreachable"]
    assert causes(sig(extra={"unreachable_ratio": 0.4})) == []


def test_causes_come_in_a_stable_order_and_every_one_is_described() -> None:
    s = sig(
        runqueue_wait_ratio=0.5,
        runqueue_p99_seconds=0.02,
        cpu_throttled_ratio=0.9,
        gpu_memory_used_ratio=0.99,
        gpu_throttled_ratio=1.0,
        drift_detected=True,
        extra={"unreachable_ratio": 1.0},
    )
    got = causes(s)
    assert got == [c for c in CAUSES if c in got]
    for info in CAUSES.values():
        assert info.severity in ("info", "warning")
        assert info.why and info.advice


def test_thresholds_are_the_ones_passed_in() -> None:
    strict = replace(T, cpu_throttled_ratio_min=0.9)
    assert causes(sig(cpu_throttled_ratio=0.8), strict) == []
    assert causes(sig(cpu_throttled_ratio=0.8), T) == ["cpu_throttled"]


def test_diagnose_maps_every_target() -> None:
    a, b = sig(), sig(cpu_throttled_ratio=1.0)
    b.key = ("p", "ns", "c", "python3", "")
    got = diagnose({a.key: a, b.key: b}, T)
    assert got[a.key].status == "ok"
    assert got[b.key].status == "causes"


def test_run_queue_wait_while_the_quota_binds_is_throttling_not_starvation() -> None:
    # A throttled thread stays runnable: its hold-back shows as run-queue wait.
    s = sig(cpu_throttled_ratio=0.9, runqueue_wait_ratio=0.8, runqueue_p99_seconds=0.05)
    assert causes(s) == ["cpu_throttled"]
    s = sig(cpu_throttled_ratio=0.2, runqueue_wait_ratio=0.8, runqueue_p99_seconds=0.05)
    assert causes(s) == ["cpu_starved"]


def test_run_queue_wait_of_a_gil_bound_process_is_the_gil_not_starvation() -> None:
    # GIL waiters wake every 5 ms and queue for a CPU each time.
    starved = {"runqueue_wait_ratio": 0.5, "runqueue_p99_seconds": 0.008}
    assert causes(sig(extra=HANDOFFS, **GIL_BOUND, **starved)) == ["gil_bound"]
    assert causes(sig(**starved)) == ["cpu_starved"]
