"""The collectors, one package each. Order here is the order on /metrics and in --help."""

from __future__ import annotations

from agent.collectors import drift, gpu, inference, profile, sched
from agent.registry import CollectorSpec

SPECS: tuple[CollectorSpec, ...] = (
    sched.SPEC,
    gpu.SPEC,
    profile.SPEC,
    inference.SPEC,
    drift.SPEC,
)


def spec(name: str) -> CollectorSpec:
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(name)
