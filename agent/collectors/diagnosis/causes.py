"""The diagnosis' vocabulary: every cause with its severity, meaning and advice, and the
shapes a verdict is made of (evidence, cause, verdict). Data only; the rules that decide
causes are in ``rules.py``, the driver that applies them in ``diagnose.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
# The families the alert rules group causes by (one alert per family, alerts/rules.tmpl.yml):
# what part of the node a cause points at, and so who looks at it.
FAMILIES: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu_starved", "cpu_throttled", "gil_bound", "blocked"),
    "gpu": ("gpu_saturated", "gpu_memory_pressure", "gpu_starved", "gpu_throttled"),
    "drift": ("input_drift",),
    "service": ("service_errors", "service_stalled", "service_unreachable"),
}
FAMILY_OF: dict[str, str] = {c: f for f, causes in FAMILIES.items() for c in causes}
# Host-side causes that explain an idle GPU with work for it.
HOST_CAUSES = FAMILIES["cpu"]


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
