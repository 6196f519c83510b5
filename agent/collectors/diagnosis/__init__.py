"""The diagnosis: one verdict per watched pod or process, from all the other signals.

Measures nothing itself. Every ``interval`` it reads the latest metric families of the
other collectors (scheduler, GPU, profile, cgroup, inference, drift: the contract of
docs/metrics.md), keeps them over ``window`` to turn counters into rates, and decides
causes (cpu_starved, cpu_throttled, gil_bound, blocked, gpu_saturated,
gpu_memory_pressure, gpu_starved, gpu_throttled, input_drift, service_errors,
service_stalled, service_unreachable) with the thresholds of ``thresholds.py``; "not
enough evidence" is a verdict of its own. Served as ``vigil_diagnosis_*`` series and as
JSON on ``GET /v1/diagnosis`` (token required). docs/diagnosis.md has every cause, its
evidence and its known limits.

``signals`` (families → signals) and ``diagnose`` (signals → verdicts, one rule per
cause in ``rules``, their meaning in ``causes``) are pure; the collector is the shell
around them. Cost: one pass over the other collectors' latest families per interval (as
a scrape renders them) and a ring of ``window / interval`` filtered frames; about 0.1 s
of one core per round for 200 pods with every signal on a busy 2-core test machine.
Privilege: none.
"""

from __future__ import annotations

from agent.collectors.diagnosis.collector import factory
from agent.collectors.diagnosis.doctor import doctor
from agent.collectors.diagnosis.metrics import METRICS
from agent.collectors.diagnosis.settings import DiagnosisSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="diagnosis",
    help="one verdict per watched pod or process from all the other signals",
    settings=DiagnosisSettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
