"""The other collectors' families → per-target signals over a window. Pure functions.

The diagnosis reads what every collector publishes (the metric contract of
docs/metrics.md), never a collector's internals: a :data:`Frame` is the samples of the
families it needs at one moment, a ring of frames is the window. Counters become rates
between the first and the last frame of the window (per series, so a series that reset
or appeared meanwhile is left out rather than read as a negative or huge rate); gauges
are averaged over the frames or taken from the last one, as each signal says.

A target is one label set of the per-process series (agent.discovery.LABEL_NAMES: pod,
namespace, container, comm, and pid where no pod is known), so its verdict joins every
other per-process series. Its processes are the pids of vigil_watched_process_info with
that label set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from agent.discovery import LABEL_NAMES

Labels = Mapping[str, str]
Key = tuple[str, ...]  # values of LABEL_NAMES
Sample = tuple[dict[str, str], float]
# sample name -> per-process label set -> [(labels, value)]: one moment of the families the
# diagnosis reads, indexed by target so that a round costs O(series), not O(targets x
# series). Series without process labels (per GPU, per model) sit under the empty key.
Frame = dict[str, dict[Key, list[Sample]]]

# What the diagnosis reads, by sample name (histograms by their _bucket/_sum series).
WATCHED = "vigil_watched_process_info"
RUNQ = "vigil_sched_runqueue_latency_seconds"
OFFCPU = "vigil_sched_offcpu_seconds"
SWITCHES = "vigil_sched_context_switches_total"
GIL = "vigil_profile_gil_ratio"
PROFILE_SAMPLES = "vigil_profile_samples_total"
FUNCTIONS = "vigil_profile_function_ratio"
PERIODS = "vigil_cgroup_cpu_periods_total"
THROTTLED_PERIODS = "vigil_cgroup_cpu_throttled_periods_total"
THROTTLED_SECONDS = "vigil_cgroup_cpu_throttled_seconds_total"
GPU_PROC_MEMORY = "vigil_gpu_process_memory_used_bytes"
GPU_PROC_UTIL = "vigil_gpu_process_utilization_ratio"
GPU_UTIL = "vigil_gpu_utilization_ratio"
GPU_MEM_USED = "vigil_gpu_memory_used_bytes"
GPU_MEM_TOTAL = "vigil_gpu_memory_total_bytes"
GPU_CLOCK_EVENT = "vigil_gpu_clock_event_active"
INF_UP = "vigil_inference_up"
INF_STALLED = "vigil_inference_stalled"
INF_QUEUE = "vigil_inference_queue_requests"
INF_RUNNING = "vigil_inference_running_requests"
INF_KV = "vigil_inference_kv_cache_usage_ratio"
INF_REQUESTS = "vigil_inference_requests_total"
INF_DURATION = "vigil_inference_request_duration_seconds"
DRIFT = "vigil_drift_detected"

NAMES = frozenset(
    {
        WATCHED,
        RUNQ + "_sum",
        RUNQ + "_bucket",
        OFFCPU + "_sum",
        SWITCHES,
        GIL,
        PROFILE_SAMPLES,
        FUNCTIONS,
        PERIODS,
        THROTTLED_PERIODS,
        THROTTLED_SECONDS,
        GPU_PROC_MEMORY,
        GPU_PROC_UTIL,
        GPU_UTIL,
        GPU_MEM_USED,
        GPU_MEM_TOTAL,
        GPU_CLOCK_EVENT,
        INF_UP,
        INF_STALLED,
        INF_QUEUE,
        INF_RUNNING,
        INF_KV,
        INF_REQUESTS,
        INF_DURATION + "_bucket",
        DRIFT,
    }
)

# The signals every target reports (null where unknown), in the order the API lists them.
SIGNALS = (
    "gpu_utilization_ratio",
    "gpu_memory_used_ratio",
    "runqueue_p99_seconds",
    "runqueue_wait_ratio",
    "offcpu_ratio",
    "gil_ratio",
    "idle_ratio",
    "cpu_throttled_ratio",
    "drift_detected",
    "requests_per_second",
    "error_ratio",
    "latency_p95_seconds",
    "queue_requests",
    "gpu_throttled_ratio",
)


def frame_of(families: Iterable[Metric]) -> Frame:
    """The samples the diagnosis reads, out of every family the collectors rendered."""
    out: Frame = {}
    for fam in families:
        for s in fam.samples:
            if s.name in NAMES and not math.isnan(s.value):
                labels = dict(s.labels)
                by_key = out.setdefault(s.name, {})
                by_key.setdefault(key_of(labels), []).append((labels, float(s.value)))
    return out


def key_of(labels: Labels) -> Key:
    return tuple(labels.get(n, "") for n in LABEL_NAMES)


def _all(frame: Frame, name: str) -> list[Sample]:
    return [sample for samples in frame.get(name, {}).values() for sample in samples]


def targets_of(frame: Frame) -> dict[Key, list[int]]:
    """Target label sets → their pids, from vigil_watched_process_info (pid only where no
    pod is known, as every per-process series)."""
    out: dict[Key, list[int]] = {}
    for labels, _ in _all(frame, WATCHED):
        pid = labels.get("pid", "")
        own = {n: labels.get(n, "") for n in LABEL_NAMES}
        if own["pod"]:
            own["pid"] = ""
        out.setdefault(key_of(own), [])
        if pid.isdigit():
            out[key_of(own)].append(int(pid))
    return {k: sorted(v) for k, v in out.items()}


def _mine(frame: Frame, name: str, key: Key, **match: str) -> list[Sample]:
    return [
        (labels, v)
        for labels, v in frame.get(name, {}).get(key, [])
        if all(labels.get(k) == want for k, want in match.items())
    ]


def _series_id(labels: Labels) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def counter_delta(first: Frame, last: Frame, name: str, key: Key, **match: str) -> float | None:
    """Increase of the target's series between two frames, summed over series present in
    both that did not go down (a reset). None when no series is in both."""
    before = {_series_id(lab): v for lab, v in _mine(first, name, key, **match)}
    total, seen = 0.0, False
    for labels, v in _mine(last, name, key, **match):
        old = before.get(_series_id(labels))
        if old is None or v < old:
            continue
        total += v - old
        seen = True
    return total if seen else None


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of cumulative ``(le, count)``
    buckets (as Prometheus, without the linear interpolation: the bound is what the
    histogram knows). None without observations; +Inf when it lies in the last bucket."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    for le, count in ordered:
        if count >= rank:
            return le
    return ordered[-1][0]


def histogram_delta_quantile(
    first: Frame, last: Frame, name: str, key: Key, q: float
) -> float | None:
    """Quantile ``q`` of what a histogram observed between two frames, summed over the
    target's series."""
    by_le: dict[float, float] = {}
    bucket = name + "_bucket"
    before = {_series_id(lab): v for lab, v in _mine(first, bucket, key)}
    for labels, v in _mine(last, bucket, key):
        old = before.get(_series_id(labels))
        if old is None or v < old:
            continue
        le = float(labels.get("le", "nan"))
        if not math.isnan(le):
            by_le[le] = by_le.get(le, 0.0) + v - old
    return histogram_quantile(list(by_le.items()), q)


@dataclass
class Signals:
    """One target's signals over the window; ``missing`` says why a signal is None."""

    key: Key
    pids: list[int]
    window_seconds: float
    frames: int
    values: dict[str, float | bool | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    # Not verdict inputs on their own, but what the causes quote and combine.
    extra: dict[str, float] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    drifted_models: list[str] = field(default_factory=list)
    hot_functions: list[dict[str, object]] = field(default_factory=list)

    def get(self, name: str) -> float | None:
        v = self.values.get(name)
        if v is None or isinstance(v, bool):
            return None if v is None else float(v)
        return float(v)


def _gpus(frame: Frame, key: Key) -> set[tuple[str, str]]:
    out = set()
    for name in (GPU_PROC_MEMORY, GPU_PROC_UTIL):
        for labels, _ in _mine(frame, name, key):
            out.add((labels.get("gpu", ""), labels.get("uuid", "")))
    return out


def _gpu_values(frame: Frame, name: str, gpus: set[tuple[str, str]], **match: str) -> list[float]:
    return [
        v
        for labels, v in _all(frame, name)
        if (labels.get("gpu", ""), labels.get("uuid", "")) in gpus
        and all(labels.get(k) == want for k, want in match.items())
    ]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def hot_functions(frame: Frame, key: Key, top: int = 5) -> list[dict[str, object]]:
    """The target's top functions by self share, with their total share (0 if unknown)."""
    self_: dict[str, float] = {}
    total: dict[str, float] = {}
    for labels, v in _mine(frame, FUNCTIONS, key):
        into = self_ if labels.get("kind") == "self" else total
        fn = labels.get("function", "")
        into[fn] = max(into.get(fn, 0.0), v)
    ranked = sorted(self_.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if not ranked:  # only total ratios: rank by those
        ranked = [(fn, 0.0) for fn, _ in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]
        ranked = ranked[:top]
    return [
        {"function": fn, "self_ratio": round(s, 4), "total_ratio": round(total.get(fn, s), 4)}
        for fn, s in ranked
    ]


def compute(
    ring: Sequence[tuple[float, Frame]],
    model_owners: Mapping[str, Sequence[str]] | None = None,
    throttle_reasons: Sequence[str] = (),
) -> dict[Key, Signals]:
    """Signals of every target in the last frame over the ring's span.

    ``ring`` is ``(time, frame)`` oldest first. ``model_owners`` maps a model to the
    values (pod, container, comm or pid) that name the targets serving it, for drift when
    no inference server reports the model itself.
    """
    if not ring:
        return {}
    t0, first = ring[0]
    t1, last = ring[-1]
    dt = t1 - t0
    owners = model_owners or {}
    out: dict[Key, Signals] = {}
    for key, pids in targets_of(last).items():
        sig = Signals(key, pids, dt, len(ring))
        _cpu(sig, first, last, dt)
        _profile(sig, first, last, dt)
        _gpu(sig, [f for _, f in ring], throttle_reasons)
        _service(sig, [f for _, f in ring], dt)
        _drift(sig, last, owners)
        sig.hot_functions = hot_functions(last, key)
        out[key] = sig
    return out


def _put(sig: Signals, name: str, value: float | bool | None, why: str = "") -> None:
    sig.values[name] = value
    if value is None and why:
        sig.missing[name] = why


def _rate(delta: float | None, dt: float) -> float | None:
    return None if delta is None or dt <= 0 else delta / dt


def _cpu(sig: Signals, first: Frame, last: Frame, dt: float) -> None:
    k = sig.key
    no_sched = "no scheduler series for this process (sched collector off or not running)"
    runq = _rate(counter_delta(first, last, RUNQ + "_sum", k), dt)
    _put(sig, "runqueue_wait_ratio", runq, no_sched)
    p99 = histogram_delta_quantile(first, last, RUNQ, k, 0.99)
    _put(sig, "runqueue_p99_seconds", p99, no_sched if runq is None else "no run-queue waits")
    _put(sig, "offcpu_ratio", _rate(counter_delta(first, last, OFFCPU + "_sum", k), dt), no_sched)
    vol = _rate(counter_delta(first, last, SWITCHES, k, kind="voluntary"), dt)
    if vol is not None:
        sig.extra["voluntary_switches_per_second"] = vol
    periods = counter_delta(first, last, PERIODS, k)
    throttled = counter_delta(first, last, THROTTLED_PERIODS, k)
    if periods is None or throttled is None:
        _put(sig, "cpu_throttled_ratio", None, "no cpu.stat for this process's cgroup")
    else:
        # No period in the window: no quota, or nothing ran; either way nothing throttled.
        _put(sig, "cpu_throttled_ratio", throttled / periods if periods > 0 else 0.0)
        secs = _rate(counter_delta(first, last, THROTTLED_SECONDS, k), dt)
        if secs is not None:
            sig.extra["throttled_seconds_per_second"] = secs


def _profile(sig: Signals, first: Frame, last: Frame, dt: float) -> None:
    k = sig.key
    gil = _mine(last, GIL, k)
    _put(sig, "gil_ratio", max(v for _, v in gil) if gil else None, "no profile of this process")
    idle = counter_delta(first, last, PROFILE_SAMPLES, k, state="idle")
    active = counter_delta(first, last, PROFILE_SAMPLES, k, state="active")
    if idle is None or active is None or idle + active <= 0:
        _put(sig, "idle_ratio", None, "no profile samples in the window")
    else:
        _put(sig, "idle_ratio", idle / (idle + active))


def _gpu(sig: Signals, frames: Sequence[Frame], reasons: Sequence[str]) -> None:
    last = frames[-1]
    gpus = _gpus(last, sig.key)
    if not gpus:
        why = "the process holds no GPU (or the gpu collector is off)"
        for name in ("gpu_utilization_ratio", "gpu_memory_used_ratio", "gpu_throttled_ratio"):
            _put(sig, name, None, why)
        return
    utils = [max(v) for f in frames if (v := _gpu_values(f, GPU_UTIL, gpus))]
    _put(sig, "gpu_utilization_ratio", _mean(utils), "NVML reports no utilisation")
    ratios = []
    for g in gpus:
        used = _gpu_values(last, GPU_MEM_USED, {g})
        total = _gpu_values(last, GPU_MEM_TOTAL, {g})
        if used and total and total[0] > 0:
            ratios.append(used[0] / total[0])
    _put(sig, "gpu_memory_used_ratio", max(ratios) if ratios else None, "no memory figures")
    held = []
    for f in frames:
        active = [v for r in reasons for v in _gpu_values(f, GPU_CLOCK_EVENT, gpus, reason=r)]
        if active:
            held.append(1.0 if max(active) > 0 else 0.0)
    _put(sig, "gpu_throttled_ratio", _mean(held), "NVML reports no clock events")


def _service(sig: Signals, frames: Sequence[Frame], dt: float) -> None:
    k = sig.key
    first, last = frames[0], frames[-1]
    why = "the inference collector sees no server in this process"
    ups = [[v for _, v in _mine(f, INF_UP, k)] for f in frames]
    ups = [u for u in ups if u]
    if not ups:
        for name in ("requests_per_second", "error_ratio", "latency_p95_seconds", "queue_requests"):
            _put(sig, name, None, why)
        return
    sig.extra["unreachable_ratio"] = sum(1.0 for u in ups if min(u) < 1) / len(ups)
    stalled = [max(v for _, v in s) for f in frames if (s := _mine(f, INF_STALLED, k))]
    if stalled:
        sig.extra["stalled_ratio"] = sum(1.0 for s in stalled if s > 0) / len(stalled)
    total = counter_delta(first, last, INF_REQUESTS, k)
    errors = counter_delta(first, last, INF_REQUESTS, k, outcome="error")
    _put(sig, "requests_per_second", _rate(total, dt), "the server exports no request count")
    if total is not None and total > 0:
        _put(sig, "error_ratio", (errors or 0.0) / total)
    else:
        _put(sig, "error_ratio", None, "no finished requests in the window")
    p95 = histogram_delta_quantile(first, last, INF_DURATION, k, 0.95)
    _put(sig, "latency_p95_seconds", p95, "the server exports no latency histogram")
    queues = [sum(v for _, v in q) for f in frames if (q := _mine(f, INF_QUEUE, k))]
    _put(sig, "queue_requests", _mean(queues), "the server exports no queue length")
    if queues:
        sig.extra["queue_growth"] = queues[-1] - queues[0]
    running = [sum(v for _, v in r) for f in frames if (r := _mine(f, INF_RUNNING, k))]
    if running:
        sig.extra["running_requests"] = sum(running) / len(running)
    kv = _mine(last, INF_KV, k)
    if kv:
        sig.extra["kv_cache_usage_ratio"] = max(v for _, v in kv)
    sig.models = sorted({lab["model"] for lab, _ in _mine(last, INF_REQUESTS, k) if "model" in lab})


def _drift(sig: Signals, last: Frame, owners: Mapping[str, Sequence[str]]) -> None:
    pod, _ns, container, comm, pid = sig.key
    names = {v for v in (pod, container, comm, pid) if v} | {str(p) for p in sig.pids}
    models = set(sig.models) | {m for m, who in owners.items() if names & set(who)}
    sig.models = sorted(models)
    if not models:
        _put(sig, "drift_detected", None, "no drift model is attributed to this process")
        return
    flags = [v for labels, v in _all(last, DRIFT) if labels.get("model") in models]
    if not flags:
        _put(sig, "drift_detected", None, "no drift check has run for its models yet")
        return
    sig.drifted_models = sorted(
        {labels.get("model", "") for labels, v in _all(last, DRIFT) if v > 0} & models
    )
    _put(sig, "drift_detected", max(flags) > 0)
