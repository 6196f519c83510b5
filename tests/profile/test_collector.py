"""The collector's own rules: label collisions, the child limit, the CPU budget."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Workloads

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
    # This test's own script path: workloads of tests running alongside stay out.
    d = Discovery(patterns=[re.escape(str(workloads.script))], interval=60)
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
        options(window=1, max_concurrent=2, cpu_budget=1.0, cpu_budget_per_process=1.0),
    )
    c.start()
    try:
        seen = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            assert c._runner is not None
            seen = max(seen, len(c._runner.live_pids()))
            time.sleep(0.02)
        assert seen == 2  # one py-spy per process: two of the three processes at once
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
        # The next window is due and held back: counted once, however long it waits.
        metrics = {f.name: f for f in c.collect()}
        assert metrics["vigil_profile_budget_skips"].samples[0].value == 1.0
    finally:
        c.close()


def test_node_budget_is_per_process_up_to_the_node_cap(workloads: Workloads) -> None:
    d = watched(3, workloads)
    c = ProfileCollector(d, "/bin/false", options(cpu_budget=0.05, cpu_budget_per_process=0.01))
    c._loop.stop(timeout=0.0)  # schedule() syncs targets; no window may start
    c.schedule()
    assert c.budget.cores == pytest.approx(0.03)  # three processes x 1 % of a core
    c.process_budget = 0.02
    c.schedule()
    assert c.budget.cores == pytest.approx(0.05)  # 6 % asked, the node's 5 % granted
    gauge = {f.name: f for f in c.collect()}["vigil_profile_budget_cores"]
    assert gauge.samples[0].value == pytest.approx(0.05)


def mode_of(child: int) -> str | None:
    """Which recording a live py-spy child makes, from its command line."""
    try:
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"record" not in argv:
        # Between fork and exec the child still carries this test's own command line;
        # under load a poll can land there and would read as a cpu recording.
        return None
    if b"--gil" in argv:
        return "gil"
    return "wall" if b"--threads" in argv else "cpu"


@pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")
def test_one_py_spy_per_process_with_the_modes_taking_turns(workloads: Workloads) -> None:
    pyspy = find_pyspy()
    assert pyspy is not None
    d = watched(1, workloads)
    c = ProfileCollector(
        d, pyspy, options(window=1, rate=20, cpu_budget=1.0, cpu_budget_per_process=1.0)
    )
    c.start()
    seen: list[str] = []
    most = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(seen) < 4:
            assert c._runner is not None
            live = c._runner.live_pids()
            most = max(most, len(live))
            for child in live:
                mode = mode_of(child)
                if mode and (not seen or seen[-1] != mode):
                    seen.append(mode)
            time.sleep(0.02)
        listing = c.listing()
    finally:
        c.close()
    assert most == 1  # never the three recordings side by side
    assert seen[:4] == ["cpu", "wall", "gil", "cpu"]
    # After one turn of all three, the process has a complete profile: a sleeper is idle.
    (entry,) = listing
    assert entry["state"] == "ok", entry
    samples = entry["last_window"]["samples"]
    assert samples["idle"] > 0 and samples["active"] <= samples["idle"] * 0.05 + 2
