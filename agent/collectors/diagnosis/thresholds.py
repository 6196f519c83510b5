"""Every number the diagnosis decides with, in one place, each with its reason.

docs/diagnosis.md quotes these (a test checks that it quotes these values). For each cause
that holds, the agent exports the value each piece of evidence was compared with as
``vigil_diagnosis_evidence_threshold`` (per-process labels, ``cause``, ``signal``) next to
the value itself, ``vigil_diagnosis_evidence``. The alert rules restate none of these
numbers: they fire on ``vigil_diagnosis_cause`` and quote ``vigil_diagnosis_evidence``.
Ratios are 0..1; times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# The clock-event reasons that count as throttling. The same reasons as the alert rules'
# gpu_thermal_reasons / gpu_power_reasons (alerts/thresholds.yml; a test checks that
# every name here matches one of them): a hardware or power protection, never
# "gpu_idle" or an application clock setting.
GPU_THROTTLE_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


@dataclass(frozen=True)
class Thresholds:
    # -- how much evidence a verdict needs --------------------------------------------
    # Three snapshots give two rates to compare; fewer is one reading, which a single
    # scheduler hiccup can fill.
    min_samples: int = 3
    # The window a verdict needs at least: rates over less than 20 s swing with a
    # single GC pause or batch boundary.
    min_window_seconds: float = 20.0

    # -- cpu_starved --------------------------------------------------------------------
    # Run-queue wait per second of wall time, summed over the process's threads. 0.2: a
    # single busy thread waited a fifth of its time for a CPU, which stretches every
    # request by a quarter (1 / 0.8) — a slowdown a user sees, well above the few percent
    # a shared node shows in steady state.
    runqueue_wait_ratio_min: float = 0.2
    # ...and the 99th percentile of one wait above 5 ms: longer than one CFS/EEVDF slice
    # (0.75-3 ms), i.e. the thread waited behind other runnable work, not just for a
    # wake-up to complete.
    runqueue_p99_min_seconds: float = 0.005

    # -- cpu_throttled ------------------------------------------------------------------
    # Share of the CFS periods in which the cgroup ran out of quota. 0.25 is where
    # Kubernetes operators commonly start caring (the limit shapes latency); below it
    # throttling is occasional bursts.
    cpu_throttled_ratio_min: float = 0.25

    # -- gil_bound ----------------------------------------------------------------------
    # Share of sampling ticks in which some thread held the GIL: 0.8 means the
    # interpreter lock was almost never free...
    gil_ratio_min: float = 0.8
    # ...while most sampled Python threads waited (idle share of the samples): 0.4 means
    # at least two threads, one running and others queued behind it...
    gil_idle_ratio_min: float = 0.4
    # ...and the waiting shows as hand-offs: CPython forces a switch every 5 ms
    # (sys.getswitchinterval) when another thread asks for the GIL, ~200 voluntary
    # switches a second per contended pair; 50 leaves room for noise and a busy
    # interpreter that releases the lock less often. A pool of threads idle on a socket
    # makes almost none.
    gil_voluntary_switches_min_per_second: float = 50.0

    # -- blocked ------------------------------------------------------------------------
    # Off-CPU time (voluntary sleep: I/O, locks, pipes) per second of wall time, summed
    # over threads: 0.8 means the process slept most of the time...
    offcpu_ratio_min: float = 0.8
    # ...while requests were waiting: the server's queue (or running requests) averaged
    # at least one over the window. Without a request signal the cause is not claimed:
    # an idle server sleeps too.
    blocked_requests_min: float = 1.0
    # ...and the process was hardly on a CPU: profile active share at most 0.2.
    blocked_active_ratio_max: float = 0.2

    # -- GPU ------------------------------------------------------------------------------
    # SM busy share of the process's GPUs (mean over the window); 0.95 is "near 100 %":
    # NVML's utilisation is the share of time any kernel ran, so a busy GPU reads 95-100.
    gpu_saturated_utilization_min: float = 0.95
    # ...with work waiting: the queue averaged at least one request and did not shrink.
    gpu_saturated_queue_min: float = 1.0
    # Used/total memory of the process's GPUs: the same 0.95 as the alert rule
    # gpu_memory_used_ratio_max (next batch or KV block allocation fails above it).
    gpu_memory_used_ratio_min: float = 0.95
    # ...or the server's KV cache above 0.95: new sequences wait or are preempted.
    kv_cache_usage_ratio_min: float = 0.95
    # GPU mostly idle (mean SM busy below 0.3: at most 30 % of the time a kernel ran)...
    gpu_starved_utilization_max: float = 0.3
    # ...while work is queued (queue average at least one) or a host-side cause holds.
    gpu_starved_queue_min: float = 1.0
    # Share of the window's snapshots in which a throttle reason was active: 0.5 means
    # the clocks were held down half the time, not one transient event.
    gpu_throttled_ratio_min: float = 0.5

    # -- service --------------------------------------------------------------------------
    # The alert rule's inference_error_ratio_max and minimum volume, per second: below
    # ~16 requests/s (1,000 a minute) a 0.1 % error ratio is one request.
    error_ratio_min: float = 0.001
    error_min_requests_per_second: float = 1000.0 / 60.0
    # Share of the window's snapshots in which the server was down / stalled: 0.5 rides
    # out a single failed probe.
    unreachable_ratio_min: float = 0.5
    stalled_ratio_min: float = 0.5


DEFAULT = Thresholds()


def as_table(t: Thresholds = DEFAULT) -> list[tuple[str, float]]:
    """(name, value) of every threshold: the table docs/diagnosis.md quotes."""
    return [(f.name, float(getattr(t, f.name))) for f in fields(t)]
