"""One pure rule per cause: a target's signals and the thresholds in, the cause or None out.

A rule claims its cause only when every input it needs is known ("not enough evidence" is
never a guess). Some causes are defined against others (a throttled or GIL-bound process
also waits in the run queue; an idle GPU is starved when a host cause holds it back), so a
rule also sees the causes already ``found`` this round, and ``RULES`` lists the rules in an
order where every cause a rule looks at is decided before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent.collectors.diagnosis.causes import HOST_CAUSES, Cause, Evidence
from agent.collectors.diagnosis.signals import Signals
from agent.collectors.diagnosis.thresholds import Thresholds

Rule = Callable[[Signals, Thresholds, Mapping[str, Cause]], "Cause | None"]


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def ms(x: float) -> str:
    return f"{1000 * x:.0f} ms" if x >= 0.001 else f"{1e6 * x:.0f} us"


def _ev(s: Signals, signal: str, value: float, unit: str, threshold: float) -> Evidence:
    return Evidence(signal, round(value, 6), unit, threshold, round(s.window_seconds, 3))


def cpu_throttled(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    thr = s.get("cpu_throttled_ratio")
    if thr is None or not thr >= t.cpu_throttled_ratio_min:
        return None
    secs = s.extra.get("throttled_seconds_per_second", 0.0)
    return Cause(
        "cpu_throttled",
        f"its cgroup was throttled in {pct(thr)} of CFS periods "
        f"({secs:.2f} s held back per second)",
        (_ev(s, "cpu_throttled_ratio", thr, "ratio", t.cpu_throttled_ratio_min),),
    )


def gil_bound(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    gil, idle = s.get("gil_ratio"), s.get("idle_ratio")
    vol = s.extra.get("voluntary_switches_per_second")
    if not (
        gil is not None
        and idle is not None
        and vol is not None
        and gil >= t.gil_ratio_min
        and idle >= t.gil_idle_ratio_min
        and vol >= t.gil_voluntary_switches_min_per_second
    ):
        return None
    return Cause(
        "gil_bound",
        f"the GIL was held {pct(gil)} of the time while {pct(idle)} of Python thread "
        f"samples waited ({vol:.0f} hand-offs/s)",
        (
            _ev(s, "gil_ratio", gil, "ratio", t.gil_ratio_min),
            _ev(s, "idle_ratio", idle, "ratio", t.gil_idle_ratio_min),
            _ev(
                s,
                "voluntary_switches_per_second",
                vol,
                "per_second",
                t.gil_voluntary_switches_min_per_second,
            ),
        ),
    )


def cpu_starved(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    wait, p99 = s.get("runqueue_wait_ratio"), s.get("runqueue_p99_seconds")
    # A thread held back by its cgroup's quota stays runnable, so the probe counts
    # throttled time as run-queue wait; the cgroup's throttled time is per CPU and read at
    # another moment, so it cannot be subtracted reliably. Threads waiting for the GIL wake
    # every switch interval (5 ms) and queue for a CPU each time. While either holds, the
    # wait is its doing and that cause is named; starvation is claimed only without them.
    if "cpu_throttled" in found or "gil_bound" in found:
        return None
    if not (
        wait is not None
        and p99 is not None
        and wait >= t.runqueue_wait_ratio_min
        and p99 >= t.runqueue_p99_min_seconds
    ):
        return None
    return Cause(
        "cpu_starved",
        f"waited {pct(wait)} of its time for a CPU (p99 run-queue wait {ms(p99)})",
        (
            _ev(s, "runqueue_wait_ratio", wait, "ratio", t.runqueue_wait_ratio_min),
            _ev(s, "runqueue_p99_seconds", p99, "seconds", t.runqueue_p99_min_seconds),
        ),
    )


def blocked(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    off, idle, gpu_util = s.get("offcpu_ratio"), s.get("idle_ratio"), s.get("gpu_utilization_ratio")
    waiting = max(s.get("queue_requests") or 0.0, s.extra.get("running_requests", 0.0))
    has_requests = s.get("queue_requests") is not None or "running_requests" in s.extra
    active = None if idle is None else 1.0 - idle
    if not (
        off is not None
        and has_requests
        and off >= t.offcpu_ratio_min
        and waiting >= t.blocked_requests_min
        and (active is None or active <= t.blocked_active_ratio_max)
        # Waiting for a CPU is starvation, whatever else the process also waits on.
        and "cpu_starved" not in found
        # A process sleeping while its GPU works waits on the GPU, not on I/O.
        and (gpu_util is None or gpu_util <= t.gpu_starved_utilization_max)
    ):
        return None
    return Cause(
        "blocked",
        f"off-CPU {off:.2f} s per second while {waiting:.1f} requests waited",
        (
            _ev(s, "offcpu_ratio", off, "ratio", t.offcpu_ratio_min),
            _ev(s, "requests_waiting", waiting, "requests", t.blocked_requests_min),
        ),
    )


def gpu_saturated(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    util, queue = s.get("gpu_utilization_ratio"), s.get("queue_requests")
    growth = s.extra.get("queue_growth", 0.0)
    if not (
        util is not None
        and queue is not None
        and util >= t.gpu_saturated_utilization_min
        and queue >= t.gpu_saturated_queue_min
        # A queue that drains is the GPU catching up, not falling behind.
        and growth >= 0
    ):
        return None
    return Cause(
        "gpu_saturated",
        f"GPU busy {pct(util)} of the time while {queue:.1f} requests queued "
        f"(queue {growth:+.0f} over the window)",
        (
            _ev(s, "gpu_utilization_ratio", util, "ratio", t.gpu_saturated_utilization_min),
            _ev(s, "queue_requests", queue, "requests", t.gpu_saturated_queue_min),
        ),
    )


def gpu_memory_pressure(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    # Either the device's memory or the server's own KV cache may be the one that is full;
    # the summary names whichever are.
    mem, kv = s.get("gpu_memory_used_ratio"), s.extra.get("kv_cache_usage_ratio")
    parts: list[tuple[str, Evidence]] = []
    if mem is not None and mem >= t.gpu_memory_used_ratio_min:
        e = _ev(s, "gpu_memory_used_ratio", mem, "ratio", t.gpu_memory_used_ratio_min)
        parts.append(("GPU memory", e))
    if kv is not None and kv >= t.kv_cache_usage_ratio_min:
        parts.append(
            ("KV cache", _ev(s, "kv_cache_usage_ratio", kv, "ratio", t.kv_cache_usage_ratio_min))
        )
    if not parts:
        return None
    summary = " and ".join(f"{what} {pct(e.value)} full" for what, e in parts)
    return Cause("gpu_memory_pressure", summary, tuple(e for _, e in parts))


def gpu_starved(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    util, queue = s.get("gpu_utilization_ratio"), s.get("queue_requests")
    if util is None or not util <= t.gpu_starved_utilization_max:
        return None
    # An idle GPU is only starved when there was work for it: requests queued, or a host
    # cause that kept the work from reaching it.
    host = [c for c in HOST_CAUSES if c in found]
    queued = queue is not None and queue >= t.gpu_starved_queue_min
    if not queued and not host:
        return None
    summary = f"GPU busy only {pct(util)} of the time"
    evidence = [_ev(s, "gpu_utilization_ratio", util, "ratio", t.gpu_starved_utilization_max)]
    if queued and queue is not None:
        summary += f" while {queue:.1f} requests queued"
        evidence.append(_ev(s, "queue_requests", queue, "requests", t.gpu_starved_queue_min))
    if host:
        summary += f"; the host side is the bottleneck ({', '.join(host)})"
    return Cause("gpu_starved", summary, tuple(evidence))


def gpu_throttled(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    held = s.get("gpu_throttled_ratio")
    if held is None or not held >= t.gpu_throttled_ratio_min:
        return None
    return Cause(
        "gpu_throttled",
        f"GPU clocks held down by a thermal or power protection {pct(held)} of the time",
        (_ev(s, "gpu_throttled_ratio", held, "ratio", t.gpu_throttled_ratio_min),),
    )


def input_drift(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    # The drift collector already ran its own test with its own threshold: this is a
    # yes/no signal, not a number compared here.
    if s.values.get("drift_detected") is not True:
        return None
    models = ", ".join(s.drifted_models) or ", ".join(s.models)
    return Cause(
        "input_drift",
        f"input drift detected for model {models}",
        (_ev(s, "drift_detected", 1.0, "boolean", 1.0),),
    )


def service_errors(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    rps, err = s.get("requests_per_second"), s.get("error_ratio")
    if not (
        rps is not None
        and err is not None
        and rps >= t.error_min_requests_per_second
        and err > t.error_ratio_min
    ):
        return None
    # Two decimals below 1 %, so that a small but real error ratio does not read "0 %".
    share = pct(err) if err >= 0.01 else f"{100 * err:.2f} %"
    return Cause(
        "service_errors",
        f"{share} of {rps:.0f} requests/s failed",
        (
            _ev(s, "error_ratio", err, "ratio", t.error_ratio_min),
            _ev(s, "requests_per_second", rps, "per_second", t.error_min_requests_per_second),
        ),
    )


def service_stalled(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    stalled = s.extra.get("stalled_ratio")
    if stalled is None or not stalled >= t.stalled_ratio_min:
        return None
    return Cause(
        "service_stalled",
        f"stalled (requests running, none finished) {pct(stalled)} of the window",
        (_ev(s, "stalled_ratio", stalled, "ratio", t.stalled_ratio_min),),
    )


def service_unreachable(s: Signals, t: Thresholds, found: Mapping[str, Cause]) -> Cause | None:
    down = s.extra.get("unreachable_ratio")
    if down is None or not down >= t.unreachable_ratio_min:
        return None
    return Cause(
        "service_unreachable",
        f"health endpoint unreachable {pct(down)} of the window",
        (_ev(s, "unreachable_ratio", down, "ratio", t.unreachable_ratio_min),),
    )


# Evaluation order, not report order (that is CAUSES'): cpu_starved looks at cpu_throttled
# and gil_bound, blocked at cpu_starved, gpu_starved at every host cause, so each comes
# after what it looks at. A test checks that every cause has exactly one rule.
RULES: tuple[tuple[str, Rule], ...] = (
    ("cpu_throttled", cpu_throttled),
    ("gil_bound", gil_bound),
    ("cpu_starved", cpu_starved),
    ("blocked", blocked),
    ("gpu_saturated", gpu_saturated),
    ("gpu_memory_pressure", gpu_memory_pressure),
    ("gpu_starved", gpu_starved),
    ("gpu_throttled", gpu_throttled),
    ("input_drift", input_drift),
    ("service_errors", service_errors),
    ("service_stalled", service_stalled),
    ("service_unreachable", service_unreachable),
)
