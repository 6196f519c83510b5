"""GPU-side causes in a real `vigil run` on the fake libnvidia-ml.so.1: five real processes,
each on its own fake GPU — memory full, thermal throttling, an idle GPU whose host
process is CPU-starved, a busy GPU whose server's queue grows, and a healthy control.
Each must be named with its own causes and nothing else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from agentproc import AgentProcess, free_port
from fakenvml import Gpu, Scenario, build
from scenario import FAST, READY_S, causes, marker, settle, time_limit, workloads

pytestmark = [
    pytest.mark.nvml,
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.timeout(time_limit(settles=1)),
]

TOTAL = 85_899_345_920
RESERVED = 537_919_488


def gpu(i: int, util: int, used: int = 21_474_836_480, reasons: int = 0) -> Gpu:
    return Gpu(
        f"GPU-{i:08d}-2222-3333-4444-555555555555",
        bus=f"00000000:{0x17 + i:02X}:00.0",
        util=util,
        total=TOTAL,
        used=used,
        free=TOTAL - used - RESERVED,
        reasons=reasons,
    )


def test_gpu_causes_each_named_alone(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: the starved workload and its hog share one")
    lib = build(tmp_path / "nvml")
    mark = marker()
    port = free_port()
    s = Scenario(tmp_path / "scenario.txt")
    s.gpus = [
        gpu(0, util=50, used=int(TOTAL * 0.97)),
        gpu(1, util=50, reasons=0x40),  # hw_thermal_slowdown
        gpu(2, util=3),
        gpu(3, util=99),
        gpu(4, util=60),
    ]
    s.write()  # no process yet: the fake re-reads the file when the workloads are up
    env = {
        "LD_LIBRARY_PATH": str(lib.parent),
        "FAKE_NVML_SCENARIO": str(s.path),
        "FAKE_NVML_CALLS": str(tmp_path / "calls"),
    }
    args = [
        "--watch",
        mark,
        "--state-dir",
        str(tmp_path / "state"),
        "--collector.gpu.interval",
        "1s",
        *FAST,
    ]
    control: list[Any] = []
    with AgentProcess(args, env=env, ready_timeout=READY_S) as agent, workloads() as w:
        memory_full = w.start("light", mark)
        thermal = w.start("light", mark)
        starved = w.start("busy", mark, cpu=0)
        w.hog(cpu=0)
        saturated = w.start("queue", mark, port=port)
        healthy = w.start("light", mark)
        pids = (memory_full, thermal, starved, saturated, healthy)
        s.procs = [
            {"gpu": i, "pid": pid, "mem": 8_589_934_592, "sm": 40} for i, pid in enumerate(pids)
        ]
        s.write()
        expected: dict[int, set[str]] = {
            memory_full: {"gpu_memory_pressure"},
            thermal: {"gpu_throttled"},
            starved: {"cpu_starved", "gpu_starved"},
            saturated: {"gpu_saturated"},
            healthy: set(),
        }

        def watch_control(pid: int, target: dict[str, Any]) -> None:
            if pid == healthy and target["causes"]:
                control.append(target["causes"])

        final = settle(agent, expected, seen=watch_control)
    assert control == [], f"the healthy control showed causes: {control}"
    summary = {c["cause"]: c["summary"] for c in final[starved]["causes"]}
    assert "the host side is the bottleneck (cpu_starved)" in summary["gpu_starved"]
    assert final[memory_full]["signals"]["gpu_memory_used_ratio"] >= 0.95
    assert causes(final[healthy]) == set()
