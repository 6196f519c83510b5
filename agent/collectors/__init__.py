"""The collectors, one package each. Order here is the order on /metrics and in --help."""

from __future__ import annotations

from agent.collectors import cgroup, diagnosis, drift, gpu, inference, profile, sched
from agent.registry import CollectorSpec

SPECS: tuple[CollectorSpec, ...] = (
    sched.SPEC,
    gpu.SPEC,
    profile.SPEC,
    inference.SPEC,
    drift.SPEC,
    cgroup.SPEC,
    # Last: it reads what the others publish.
    diagnosis.SPEC,
)


def spec(name: str) -> CollectorSpec:
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(name)
