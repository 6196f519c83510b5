"""SIGTERM detaches every BPF program the agent loaded and leaves no child behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from agentproc import AgentProcess

pytestmark = [
    pytest.mark.bpf,
    pytest.mark.skipif(
        shutil.which("bpftool") is None,
        reason="bpftool not installed (scripts/setup.sh installs it)",
    ),
]


def programs() -> list[dict]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return json.loads(out or "[]")


def held_program_ids(pid: int) -> set[int]:
    """BPF programs a process holds, from its fds' fdinfo (``prog_id:`` lines)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def test_sigterm_detaches_bpf_programs_and_reaps_children() -> None:
    marker = f"vigil_shutdown_marker_{os.getpid()}"
    workload = subprocess.Popen(
        [sys.executable, "-c", "while True:\n    sum(range(10000))", marker]
    )
    try:
        agent = AgentProcess(
            [
                "--watch",
                marker,
                "--discovery.interval",
                "200ms",
                "--no-collector.gpu",
                "--no-collector.drift",
            ]
        )
        with agent:
            assert agent.proc is not None
            pid = agent.proc.pid
            deadline = time.monotonic() + 30
            while 'vigil_scrape_collector_success{collector="sched"} 1.0' not in agent.metrics():
                assert time.monotonic() < deadline, agent.logs()
                time.sleep(0.2)
            ours = held_program_ids(pid)
            assert ours, "the sched collector holds no BPF program"
            children = subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True
            ).stdout.split()
            rc = agent.stop()
        assert rc == 0, agent.logs()
        left = {p["id"] for p in programs()} & ours
        assert not left, f"BPF programs still loaded after shutdown: {sorted(left)}"
        for child in children:  # py-spy children, if any were running
            end = time.monotonic() + 2
            while os.path.exists(f"/proc/{child}") and time.monotonic() < end:
                time.sleep(0.05)
            assert not os.path.exists(f"/proc/{child}"), f"child {child} outlived the agent"
    finally:
        workload.kill()
        workload.wait()
