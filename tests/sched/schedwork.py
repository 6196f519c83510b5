"""Real workloads (real interpreters) for the sched tests, and the kernel's ground truth."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

WORKLOAD = Path(__file__).resolve().parent / "workload.py"
# Discovery in these tests watches command lines carrying this marker, and nothing else.
WATCH_MARK = "vigil-sched-watched"


class Workloads:
    """Starts workload.py processes and kills them all at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, mode: str, watched: bool = True, cpus: set[int] | None = None, *extra: str
    ) -> subprocess.Popen[bytes]:
        marker = f"{WATCH_MARK if watched else 'vigil-sched-unwatched'}-{uuid.uuid4().hex[:8]}"
        cpus_arg = cpus

        def pin() -> None:
            if cpus_arg is not None:
                os.sched_setaffinity(0, cpus_arg)

        p = subprocess.Popen(
            [sys.executable, str(WORKLOAD), mode, marker, *extra],
            preexec_fn=pin,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        self.procs.clear()


def proc_counts(pid: int) -> dict[str, int]:
    """The kernel's own accounting of one task: the ground truth the probe is compared with."""
    status = Path(f"/proc/{pid}/status").read_text()
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            out[key] = int(value)
    out["run_delay_ns"] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    for line in Path(f"/proc/{pid}/sched").read_text().splitlines():
        if line.startswith("se.nr_migrations"):
            out["nr_migrations"] = int(line.split(":")[1])
    return out
