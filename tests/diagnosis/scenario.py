"""What the diagnosis scenarios share: starting workloads, reading /v1/diagnosis, waiting
for verdicts to settle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentproc import AgentProcess, stop_process

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads.py"

# The diagnosis as fast as it may go in a test: rounds every 2 s, a window a little over
# the minimum a verdict needs (thresholds.py: 20 s), py-spy windows of 2 s.
FAST = [
    "--discovery.interval",
    "0.5s",
    "--collector.sched.interval",
    "1s",
    "--collector.profile.window",
    "2s",
    "--collector.diagnosis.interval",
    "2s",
    "--collector.diagnosis.window",
    "24s",
    "--collector.cgroup.interval",
    "1s",
    "--collector.inference.interval",
    "1s",
]
# Workloads (and the hog) run at this nice value: above the neighbours on a shared machine,
# so that each scenario's condition is the one it sets up.
NICE = -10
# Generous: the agent compiles its BPF probe (seconds on a busy machine), then a verdict
# needs 20 s of evidence; this is the bound, not the expected time.
SETTLE_S = 150.0
# The agent starts before the workloads (it compiles its BPF probe meanwhile), on a
# machine that may be busy: a bound, not the expected time.
READY_S = 120.0


def marker() -> str:
    return f"vigil_diag_{uuid.uuid4().hex[:10]}"


class Workloads:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, mode: str, mark: str, cpu: int | None = None, port: int = 0, cgroup: str = ""
    ) -> int:
        args = [sys.executable, str(WORKLOADS), mode, mark]
        if cpu is not None:
            args.append(str(cpu))
        env = {
            **os.environ,
            "WORKLOAD_NICE": str(NICE),
            "WORKLOAD_PORT": str(port),
            "WORKLOAD_CGROUP": cgroup,
        }
        p = subprocess.Popen(args, env=env)
        self.procs.append(p)
        return p.pid

    def stop(self, *pids: int) -> None:
        for p in self.procs:
            if p.pid in pids:
                stop_process(p, timeout=5.0)

    def hog(self, cpu: int) -> int:
        """A CPU hog the agent does not watch (no marker in its command line)."""
        code = (
            f"import os; os.setpriority(os.PRIO_PROCESS, 0, {NICE}); "
            f"os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
        )
        p = subprocess.Popen([sys.executable, "-c", code])
        self.procs.append(p)
        return p.pid

    def stop_all(self) -> None:
        for p in self.procs:
            stop_process(p, timeout=5.0)


@contextmanager
def workloads() -> Iterator[Workloads]:
    w = Workloads()
    try:
        yield w
    finally:
        w.stop_all()


def diagnosis(agent: AgentProcess) -> dict[str, Any]:
    code, body = agent.get("/v1/diagnosis", auth=True)
    assert code in (200, 503), body
    return json.loads(body) if code == 200 else {"targets": []}


def by_pid(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {pid: t for t in doc["targets"] for pid in t["pids"]}


def causes(target: dict[str, Any]) -> set[str]:
    return {c["cause"] for c in target["causes"]}


def settle(
    agent: AgentProcess,
    expected: dict[int, set[str]],
    timeout: float = SETTLE_S,
    seen: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Polls until every pid's verdict has evidence and names exactly its expected causes in
    two rounds in a row; returns the last targets. ``seen`` gets every verdict with
    evidence (for a control that must never show a cause)."""
    deadline = time.monotonic() + timeout
    last: dict[int, dict[str, Any]] = {}
    agreed = 0
    last_round = None
    while time.monotonic() < deadline:
        doc = diagnosis(agent)
        targets = by_pid(doc)
        if doc.get("generated_at") != last_round:
            last_round = doc.get("generated_at")
            ready = {
                pid: t
                for pid, t in targets.items()
                if pid in expected and t["status"] != "insufficient_evidence"
            }
            if seen is not None:
                for pid, t in ready.items():
                    seen(pid, t)
            last = targets
            if len(ready) == len(expected) and all(
                causes(t) == expected[pid] for pid, t in ready.items()
            ):
                agreed += 1
                if agreed >= 2:
                    return targets
            else:
                agreed = 0
        time.sleep(1.0)
    got = {
        pid: (last[pid]["status"], sorted(causes(last[pid])), last[pid]["signals"])
        if pid in last
        else "not diagnosed"
        for pid in expected
    }
    raise AssertionError(
        f"verdicts did not settle within {timeout:.0f} s: expected "
        f"{ {p: sorted(c) for p, c in expected.items()} }, got {json.dumps(got, indent=1)}\n"
        f"agent log tail:\n{agent.logs()[-2000:]}"
    )
