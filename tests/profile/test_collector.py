"""The collector's own rules: label collisions, the child limit, the CPU budget."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import WATCH, Workloads

from agent.collectors.profile.collector import ProfileCollector
from agent.collectors.profile.pyspy import find_pyspy
from agent.collectors.profile.settings import ProfileSettings
from agent.collectors.profile.targets import Target, unique_labels
from agent.discovery import Discovery, ProcessInfo


def info(pid: int, pod: str = "", comm: str = "python") -> ProcessInfo:
    return ProcessInfo(
        pid=pid,
        comm=comm,
        cmdline="python x.py",
        start_time=pid,
        pod_uid=pod,
        namespace="ns" if pod else "",
        container_id="c" * 64 if pod else "",
    )


def test_processes_sharing_pod_container_and_comm_get_their_pid() -> None:
    targets = [
        Target(info(1, pod="u1")),
        Target(info(2, pod="u1")),
        Target(info(3, pod="u2")),
        Target(info(4)),
    ]
    rows = unique_labels(targets)
    pid_at = 4
    assert [r[pid_at] for r in rows] == ["1", "2", "", "4"]
    assert len({tuple(r) for r in rows}) == 4


def options(**over: Any) -> ProfileSettings:
    return ProfileSettings(**over)


def watched(n: int, workloads: Workloads) -> Discovery:
    pids = {workloads.start("sleep").pid for _ in range(n)}
    d = Discovery(patterns=[WATCH], interval=60)
    d.refresh()
    assert pids <= set(d.snapshot())
    return d


def test_at_most_max_concurrent_children(workloads: Workloads, tmp_path: Path) -> None:
    hung = tmp_path / "py-spy"  # children that stay: the limit, not their speed, must bind
    hung.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    hung.chmod(0o755)
    c = ProfileCollector(
        watched(3, workloads),
        str(hung),
        options(window=1, max_concurrent=5, cpu_budget=1.0),
    )
    c.start()
    try:
        seen = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            assert c._runner is not None
            seen = max(seen, len(c._runner.live_pids()))
            time.sleep(0.02)
        assert seen == 3  # one window (3 recordings) fits in 5; two would need 6
    finally:
        c.close()
    assert c._runner is not None and c._runner.live_pids() == []


@pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")
def test_spent_cpu_budget_holds_back_the_next_window(workloads: Workloads) -> None:
    pyspy = find_pyspy()
    assert pyspy is not None
    c = ProfileCollector(
        watched(1, workloads), pyspy, options(window=1, rate=100, cpu_budget=0.001)
    )
    c.start()
    try:
        time.sleep(3.5)  # room for three windows, money for one: its CPU takes ~10 s to repay
        assert c.windows["ok"] == 1
        assert c.cpu_seconds > 0.001
        assert c.budget.wait() > 1.0
    finally:
        c.close()
