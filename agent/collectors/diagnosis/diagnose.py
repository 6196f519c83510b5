"""Signals → causes. A pure function: what is decided here depends only on its arguments.

Each cause is a rule over a target's signals with the numbers of
:class:`~agent.collectors.diagnosis.thresholds.Thresholds`, and comes with the evidence
behind it (signal, value, threshold, window), a one-line summary with the numbers, why
that evidence means that cause, and what to do. A cause whose inputs are unknown is not
claimed ("not enough evidence" is a result of its own, never a guess).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.collectors.diagnosis.signals import Key, Signals
from agent.collectors.diagnosis.thresholds import Thresholds


@dataclass(frozen=True)
class CauseInfo:
    severity: str  # "warning": act on it; "info": context for a person looking
    why: str
    advice: str


CAUSES: dict[str, CauseInfo] = {
    "cpu_starved": CauseInfo(
        "warning",
        "a thread that waits in the run queue is ready to work and has no CPU to do it on: "
        "the host sets the pace, not the code or the GPU",
        "give the pod a CPU request that covers its busy threads (or pin it with the static "
        "CPU manager) and move CPU hogs off its cores",
    ),
    "cpu_throttled": CauseInfo(
        "warning",
        "the cgroup used its whole CPU quota (cpu.max, the Kubernetes CPU limit) before the "
        "period ended, so its runnable threads were held back until the next one",
        "raise or remove the pod's CPU limit, or reduce its thread count (each thread spends "
        "the same quota)",
    ),
    "gil_bound": CauseInfo(
        "info",
        "one thread held the interpreter lock nearly all the time while others waited for "
        "it: Python threads take turns, so more threads add waiting, not throughput",
        "move CPU-bound Python work to processes (or native code that releases the GIL); "
        "the hot functions below are where the lock is held",
    ),
    "blocked": CauseInfo(
        "info",
        "requests were waiting while the process slept off-CPU (I/O, a lock, a pipe) and "
        "hardly ran: it waits on something else, not on a CPU or a GPU",
        "look at the wall-clock profile (/v1/profiles/<pid>?view=wall) for where threads "
        "wait: a downstream call, a lock, disk or network I/O",
    ),
    "gpu_saturated": CauseInfo(
        "info",
        "the GPU was busy nearly all the time and requests queued up: the GPU is the "
        "bottleneck and more load only lengthens the queue",
        "add replicas or GPUs, lower batch size or max concurrency, or use a smaller or "
        "quantised model",
    ),
    "gpu_memory_pressure": CauseInfo(
        "warning",
        "GPU memory (or the server's KV cache) was nearly full: the next allocation fails "
        "or sequences wait and are preempted",
        "lower max batch size / max sequence length or the memory fraction, or move other "
        "processes off the GPU",
    ),
    "gpu_starved": CauseInfo(
        "warning",
        "the GPU sat mostly idle while there was work for it: whatever feeds it on the "
        "host side cannot keep up",
        "fix the host-side cause named in the summary first, then look at the hot functions",
    ),
    "gpu_throttled": CauseInfo(
        "warning",
        "a thermal or power protection held the GPU's clocks down: the same kernels run slower",
        "check cooling and power limits (nvidia-smi -q -d PERFORMANCE); see the GPU alerts",
    ),
    "input_drift": CauseInfo(
        "info",
        "the model's live inputs no longer look like its reference data: answers may be "
        "wrong even when they are fast",
        "look at the drifted features on the drift dashboard; retrain or roll back",
    ),
    "service_errors": CauseInfo(
        "warning",
        "the server answered a share of its requests with errors, at a volume where the "
        "ratio is not noise",
        "read the server's logs for the failing requests; roll back a recent change",
    ),
    "service_stalled": CauseInfo(
        "warning",
        "the server had requests running and finished none: its engine is wedged even if "
        "its health endpoint answers",
        "restart the pod; see the server's logs around the stall",
    ),
    "service_unreachable": CauseInfo(
        "warning",
        "the server's health endpoint did not answer: requests cannot reach it",
        "check the process and its port; see the inference alerts",
    ),
}
# Host-side causes that explain an idle GPU with work for it.
HOST_CAUSES = ("cpu_starved", "cpu_throttled", "gil_bound", "blocked")


def runbook(cause: str) -> str:
    return f"docs/diagnosis.md#{cause}"


@dataclass(frozen=True)
class Evidence:
    signal: str
    value: float
    unit: str
    threshold: float
    window_seconds: float


@dataclass(frozen=True)
class Cause:
    cause: str
    summary: str
    evidence: tuple[Evidence, ...]

    @property
    def info(self) -> CauseInfo:
        return CAUSES[self.cause]


@dataclass(frozen=True)
class Verdict:
    status: str  # "ok" | "causes" | "insufficient_evidence"
    causes: tuple[Cause, ...] = ()
    notes: tuple[str, ...] = field(default=())  # why the evidence is insufficient


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def ms(x: float) -> str:
    return f"{1000 * x:.0f} ms" if x >= 0.001 else f"{1e6 * x:.0f} us"


# Signals without which a target has no evidence at all: one per source collector.
CORE = (
    "runqueue_wait_ratio",
    "gil_ratio",
    "gpu_utilization_ratio",
    "cpu_throttled_ratio",
    "requests_per_second",
    "drift_detected",
)


def diagnose(signals: Mapping[Key, Signals], t: Thresholds) -> dict[Key, Verdict]:
    """A verdict for every target."""
    return {key: diagnose_one(sig, t) for key, sig in signals.items()}


def diagnose_one(s: Signals, t: Thresholds) -> Verdict:
    w = s.window_seconds
    if s.frames < t.min_samples or w < t.min_window_seconds:
        return Verdict(
            "insufficient_evidence",
            notes=(
                f"window: {s.frames} snapshots over {w:.0f} s so far; a verdict needs "
                f"{t.min_samples} over {t.min_window_seconds:.0f} s",
            ),
        )
    if all(s.get(n) is None for n in CORE):
        return Verdict(
            "insufficient_evidence",
            notes=("no scheduler, profile, GPU, cgroup, service or drift signal yet",),
        )

    def ev(signal: str, value: float, unit: str, threshold: float) -> Evidence:
        return Evidence(signal, round(value, 6), unit, threshold, round(w, 3))

    found: dict[str, Cause] = {}

    def claim(cause: str, summary: str, *evidence: Evidence) -> None:
        found[cause] = Cause(cause, summary, evidence)

    v = s.get
    x = s.extra

    thr = v("cpu_throttled_ratio")
    if thr is not None and thr >= t.cpu_throttled_ratio_min:
        secs = x.get("throttled_seconds_per_second", 0.0)
        claim(
            "cpu_throttled",
            f"its cgroup was throttled in {pct(thr)} of CFS periods "
            f"({secs:.2f} s held back per second)",
            ev("cpu_throttled_ratio", thr, "ratio", t.cpu_throttled_ratio_min),
        )

    gil, idle = v("gil_ratio"), v("idle_ratio")
    vol = x.get("voluntary_switches_per_second")
    if (
        gil is not None
        and idle is not None
        and vol is not None
        and gil >= t.gil_ratio_min
        and idle >= t.gil_idle_ratio_min
        and vol >= t.gil_voluntary_switches_min_per_second
    ):
        claim(
            "gil_bound",
            f"the GIL was held {pct(gil)} of the time while {pct(idle)} of Python thread "
            f"samples waited ({vol:.0f} hand-offs/s)",
            ev("gil_ratio", gil, "ratio", t.gil_ratio_min),
            ev("idle_ratio", idle, "ratio", t.gil_idle_ratio_min),
            ev(
                "voluntary_switches_per_second",
                vol,
                "per_second",
                t.gil_voluntary_switches_min_per_second,
            ),
        )

    wait, p99 = v("runqueue_wait_ratio"), v("runqueue_p99_seconds")
    # A thread held back by its cgroup's quota stays runnable, so the probe counts
    # throttled time as run-queue wait; the cgroup's throttled time is per CPU and read at
    # another moment, so it cannot be subtracted reliably. Threads waiting for the GIL wake
    # every switch interval (5 ms) and queue for a CPU each time. While either holds, the
    # wait is its doing and that cause is named; starvation is claimed only without them.
    if (
        wait is not None
        and p99 is not None
        and "cpu_throttled" not in found
        and "gil_bound" not in found
        and wait >= t.runqueue_wait_ratio_min
        and p99 >= t.runqueue_p99_min_seconds
    ):
        claim(
            "cpu_starved",
            f"waited {pct(wait)} of its time for a CPU (p99 run-queue wait {ms(p99)})",
            ev("runqueue_wait_ratio", wait, "ratio", t.runqueue_wait_ratio_min),
            ev("runqueue_p99_seconds", p99, "seconds", t.runqueue_p99_min_seconds),
        )

    off = v("offcpu_ratio")
    gpu_util = v("gpu_utilization_ratio")
    waiting = max(v("queue_requests") or 0.0, x.get("running_requests", 0.0))
    has_requests = v("queue_requests") is not None or "running_requests" in x
    active = None if idle is None else 1.0 - idle
    if (
        off is not None
        and has_requests
        and off >= t.offcpu_ratio_min
        and waiting >= t.blocked_requests_min
        and (active is None or active <= t.blocked_active_ratio_max)
        and "cpu_starved" not in found
        # A process sleeping while its GPU works waits on the GPU, not on I/O.
        and (gpu_util is None or gpu_util <= t.gpu_starved_utilization_max)
    ):
        claim(
            "blocked",
            f"off-CPU {off:.2f} s per second while {waiting:.1f} requests waited",
            ev("offcpu_ratio", off, "ratio", t.offcpu_ratio_min),
            ev("requests_waiting", waiting, "requests", t.blocked_requests_min),
        )

    util = v("gpu_utilization_ratio")
    queue = v("queue_requests")
    growth = x.get("queue_growth", 0.0)
    if (
        util is not None
        and queue is not None
        and util >= t.gpu_saturated_utilization_min
        and queue >= t.gpu_saturated_queue_min
        and growth >= 0
    ):
        claim(
            "gpu_saturated",
            f"GPU busy {pct(util)} of the time while {queue:.1f} requests queued "
            f"(queue {growth:+.0f} over the window)",
            ev("gpu_utilization_ratio", util, "ratio", t.gpu_saturated_utilization_min),
            ev("queue_requests", queue, "requests", t.gpu_saturated_queue_min),
        )

    mem, kv = v("gpu_memory_used_ratio"), x.get("kv_cache_usage_ratio")
    mem_ev = []
    if mem is not None and mem >= t.gpu_memory_used_ratio_min:
        mem_ev.append(ev("gpu_memory_used_ratio", mem, "ratio", t.gpu_memory_used_ratio_min))
    if kv is not None and kv >= t.kv_cache_usage_ratio_min:
        mem_ev.append(ev("kv_cache_usage_ratio", kv, "ratio", t.kv_cache_usage_ratio_min))
    if mem_ev:
        what = " and ".join(
            f"{'GPU memory' if e.signal == 'gpu_memory_used_ratio' else 'KV cache'} "
            f"{pct(e.value)} full"
            for e in mem_ev
        )
        claim("gpu_memory_pressure", what, *mem_ev)

    host = [c for c in HOST_CAUSES if c in found]
    if util is not None and util <= t.gpu_starved_utilization_max:
        queued = queue is not None and queue >= t.gpu_starved_queue_min
        if queued or host:
            because = f"the host side is the bottleneck ({', '.join(host)})" if host else ""
            work = f"{queue:.1f} requests queued" if queued and queue is not None else ""
            summary = f"GPU busy only {pct(util)} of the time"
            summary += f" while {work}" if work else ""
            summary += f"; {because}" if because else ""
            evidence = [ev("gpu_utilization_ratio", util, "ratio", t.gpu_starved_utilization_max)]
            if queued and queue is not None:
                evidence.append(ev("queue_requests", queue, "requests", t.gpu_starved_queue_min))
            claim("gpu_starved", summary, *evidence)

    held = v("gpu_throttled_ratio")
    if held is not None and held >= t.gpu_throttled_ratio_min:
        claim(
            "gpu_throttled",
            f"GPU clocks held down by a thermal or power protection {pct(held)} of the time",
            ev("gpu_throttled_ratio", held, "ratio", t.gpu_throttled_ratio_min),
        )

    if s.values.get("drift_detected") is True:
        models = ", ".join(s.drifted_models) or ", ".join(s.models)
        claim(
            "input_drift",
            f"input drift detected for model {models}",
            ev("drift_detected", 1.0, "boolean", 1.0),
        )

    rps, err = v("requests_per_second"), v("error_ratio")
    if (
        rps is not None
        and err is not None
        and rps >= t.error_min_requests_per_second
        and err > t.error_ratio_min
    ):
        claim(
            "service_errors",
            f"{pct(err) if err >= 0.01 else f'{100 * err:.2f} %'} of {rps:.0f} requests/s failed",
            ev("error_ratio", err, "ratio", t.error_ratio_min),
            ev("requests_per_second", rps, "per_second", t.error_min_requests_per_second),
        )
    stalled = x.get("stalled_ratio")
    if stalled is not None and stalled >= t.stalled_ratio_min:
        claim(
            "service_stalled",
            f"stalled (requests running, none finished) {pct(stalled)} of the window",
            ev("stalled_ratio", stalled, "ratio", t.stalled_ratio_min),
        )
    down = x.get("unreachable_ratio")
    if down is not None and down >= t.unreachable_ratio_min:
        claim(
            "service_unreachable",
            f"health endpoint unreachable {pct(down)} of the window",
            ev("unreachable_ratio", down, "ratio", t.unreachable_ratio_min),
        )

    ordered = tuple(found[c] for c in CAUSES if c in found)
    return Verdict("causes" if ordered else "ok", ordered)
