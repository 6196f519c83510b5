"""Settings of the sched collector (``--collector.sched.<option>``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.options import option


@dataclass(frozen=True)
class SchedSettings:
    interval: float = option(
        1.0,
        "how often the kernel maps are read (a few syscalls per watched process).",
        type="duration",
        minimum=0.1,
    )
    mode: str = option(
        "watched",
        "watched: per watched process (unwatched tasks cost one map lookup); cgroup: "
        "every task on the host, aggregated per cgroup.",
        choices=("watched", "cgroup"),
    )
    max_threads: int = option(
        32768,
        "size of the kernel's thread map (the default pid_max); raise it on hosts with "
        "more threads in cgroup mode.",
        minimum=1024,
    )
    host_root: str = option(
        "/",
        "where the node's root filesystem is mounted (read-only): its kernel headers "
        "are found there and handed to bcc (the DaemonSet mounts it at /host).",
    )
