"""Settings of the cgroup collector (``--collector.cgroup.<option>``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.options import option


@dataclass(frozen=True)
class CgroupSettings:
    interval: float = option(
        5.0,
        "how often the watched processes' cpu.stat files are read.",
        type="duration",
        minimum=0.1,
    )
    root: str = option(
        "",
        "cgroup2 mount (or, on cgroup v1, the cpu controller's mount) to read cpu.stat "
        "under; empty: found in <procfs>/self/mounts.",
    )
