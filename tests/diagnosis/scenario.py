"""What the diagnosis scenarios share: starting workloads, reading /v1/diagnosis, waiting
for verdicts to settle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentproc import AgentProcess

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
# One read of /v1/diagnosis: the agent shares two busy cores with the workloads it
# watches (nice -10) and other tests, so an answer can take seconds. A slow answer is
# retried until the settle deadline; only that deadline fails the test.
READ_S = 20.0
# Workloads get this long to exit on SIGTERM before SIGKILL; the agent gets its own 10 s.
STOP_S = 5.0
# Stopping the workloads and the agent and removing a cgroup, with room to spare.
CLEANUP_S = 60.0


def time_limit(settles: int) -> float:
    """The most a scenario that waits for ``settles`` verdicts may take: the bounds it
    waits under, so that pytest's own timeout (pyproject.toml) never cuts one short and
    a slow machine fails with the settle message and the agent's log instead."""
    return READY_S + settles * SETTLE_S + CLEANUP_S


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
            # The workload dies with this process even when no cleanup code runs (the
            # test worker killed): no hog left spinning at nice -10 on a shared machine.
            "WORKLOAD_PARENT": str(os.getpid()),
        }
        p = subprocess.Popen(args, env=env)
        self.procs.append(p)
        return p.pid

    def stop(self, *pids: int) -> None:
        _stop([p for p in self.procs if p.pid in pids])

    def hog(self, cpu: int) -> int:
        """A CPU hog the agent does not watch (no marker in its command line)."""
        return self.start("hog", "", cpu=cpu)

    def stop_all(self) -> None:
        _stop(self.procs)


def _stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all at once, then SIGKILL to whichever is left after STOP_S: the wait
    is one STOP_S for all, and a process that will not stop never keeps the others."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def workloads() -> Iterator[Workloads]:
    w = Workloads()
    try:
        yield w
    finally:
        w.stop_all()


def diagnosis(agent: AgentProcess) -> dict[str, Any]:
    code, body = agent.get("/v1/diagnosis", auth=True, timeout=READ_S)
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
    failed_reads, last_error = 0, ""
    while time.monotonic() < deadline:
        try:
            doc = diagnosis(agent)
        except OSError as e:  # slow or refused: retried; a dead agent fails at once
            assert agent.proc is not None
            if agent.proc.poll() is not None:
                raise AssertionError(
                    f"the agent exited with {agent.proc.returncode}:\n{agent.logs()[-2000:]}"
                ) from e
            failed_reads, last_error = failed_reads + 1, repr(e)
            time.sleep(1.0)
            continue
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
        f"{failed_reads} reads of /v1/diagnosis failed (last: {last_error or 'none'})\n"
        f"agent log tail:\n{agent.logs()[-2000:]}"
    )
