"""A real `vigil run` child on the fake libnvidia-ml.so.1: /metrics, lost GPU, doctor."""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agentproc import AgentProcess, run_vigil
from fakenvml import read_calls, two_gpus
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.nvml

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
POD_UID = "6f1c2b8e-4a3d-4c55-9e1f-0a1b2c3d4e5f"
CONTAINER = "ab" * 32
FAST = [
    "--collector.gpu.interval",
    "0.2s",
    "--discovery.interval",
    "0.2s",
    "--kubernetes.mode",
    "off",
    "--no-collector.sched",
    "--no-collector.profile",
    "--no-collector.drift",
]


def fake_proc(root: Path, pid: int, comm: str, cgroup: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(f"/usr/bin/{comm}\0serve.py\0".encode())
    (d / "comm").write_text(comm + "\n")
    # Field 22 (start time) is the 20th after the state; everything else is unused.
    (d / "stat").write_text(f"{pid} ({comm}) S " + "0 " * 18 + "777 0 0\n")
    (d / "cgroup").write_text(cgroup + "\n")


@pytest.fixture
def node(tmp_path: Path, fake_lib: Path) -> tuple[dict[str, str], list[str], object]:
    """Env pointing `vigil run` at the fake, a procfs with a pod process and a bare one."""
    procfs = tmp_path / "proc"
    pod_cgroup = (
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{POD_UID.replace('-', '_')}.slice/cri-containerd-{CONTAINER}.scope"
    )
    fake_proc(procfs, 4242, "python3", pod_cgroup)
    fake_proc(procfs, 4343, "python3", pod_cgroup)  # same pod and container: summed
    fake_proc(procfs, 4444, "tritonserver", "0::/system.slice/triton.service")
    s = two_gpus(tmp_path / "scenario.txt")
    s.write()
    env = {
        "LD_LIBRARY_PATH": str(fake_lib.parent),
        "FAKE_NVML_SCENARIO": str(s.path),
        "FAKE_NVML_CALLS": str(tmp_path / "calls"),
    }
    return env, ["--path.procfs", str(procfs), *FAST], s


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, metric: str, **labels: str) -> float | None:
    return samples(text).get((metric, frozenset(labels.items())))


def wait_for(agent: AgentProcess, check: Callable[[str], bool], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    text = agent.metrics()
    while not check(text) and time.monotonic() < deadline:
        time.sleep(0.1)
        text = agent.metrics()
    assert check(text), text
    return text


def test_metrics_equal_the_scenario_and_a_lost_gpu_flips_up(node) -> None:  # type: ignore[no-untyped-def]
    env, args, s = node
    g0 = {"gpu": "0", "uuid": UUID0}
    g1 = {"gpu": "1", "uuid": UUID1}
    pod = {
        "pod": POD_UID,
        "namespace": "",
        "container": CONTAINER[:12],
        "comm": "python3",
        "pid": "",
    }
    bare = {"pod": "", "namespace": "", "container": "", "comm": "tritonserver", "pid": "4444"}
    with AgentProcess(args, env=env) as agent:
        # Pod labels arrive once discovery has picked up the pids the poller handed it.
        text = wait_for(
            agent,
            lambda t: value(t, "vigil_gpu_process_memory_used_bytes", **g0, **pod) is not None,
        )
        assert value(text, "vigil_scrape_collector_success", collector="gpu") == 1.0
        assert (
            value(
                text,
                "vigil_gpu_info",
                **g0,
                name="NVIDIA H100 80GB HBM3",
                pci_bus_id="00000000:17:00.0",
                driver_version="550.54.15",
            )
            == 1.0
        )
        expected = {
            "vigil_gpu_up": (1, 1),
            "vigil_gpu_utilization_ratio": (0.37, 0.91),
            "vigil_gpu_memory_utilization_ratio": (0.12, 0.64),
            "vigil_gpu_memory_used_bytes": (21_474_836_480, 42_949_672_960),
            "vigil_gpu_memory_free_bytes": (63_887_065_088, 42_412_752_896),
            "vigil_gpu_memory_total_bytes": (85_899_345_920, 85_899_345_920),
            "vigil_gpu_memory_reserved_bytes": (537_919_488, 537_919_488),
            "vigil_gpu_temperature_celsius": (54, 71),
            "vigil_gpu_power_watts": (215.5, 650.25),
            "vigil_gpu_energy_joules_total": (123_456.789, 987_654.321),
            "vigil_gpu_pcie_replay_errors_total": (2, 0),
            "vigil_gpu_performance_state": (0, 2),
        }
        for name, (v0, v1) in expected.items():
            assert value(text, name, **g0) == pytest.approx(v0), name
            assert value(text, name, **g1) == pytest.approx(v1), name
        assert value(text, "vigil_gpu_clock_hertz", **g0, clock="sm") == 1.98e9
        assert value(text, "vigil_gpu_clock_hertz", **g1, clock="memory") == 2.619e9
        assert value(text, "vigil_gpu_clock_event_active", **g0, reason="sw_power_cap") == 1
        assert value(text, "vigil_gpu_clock_event_active", **g0, reason="hw_thermal_slowdown") == 1
        assert value(text, "vigil_gpu_clock_event_active", **g0, reason="hw_slowdown") == 0
        assert value(text, "vigil_gpu_clock_event_active", **g1, reason="sw_power_cap") == 0
        assert value(text, "vigil_gpu_ecc_errors_total", **g0, type="corrected") == 3
        assert value(text, "vigil_gpu_ecc_errors_total", **g0, type="uncorrected") == 1
        # pids 4242 and 4343 are one pod's container: one series, no pid label value.
        assert value(text, "vigil_gpu_process_memory_used_bytes", **g0, **pod) == 10_737_418_240
        assert value(text, "vigil_gpu_process_utilization_ratio", **g0, **pod) == pytest.approx(
            0.35
        )
        assert value(text, "vigil_gpu_process_memory_used_bytes", **g1, **bare) == 40_802_189_312
        assert value(text, "vigil_gpu_process_utilization_ratio", **g1, **bare) == 0.88
        watched = [k for k in samples(text) if k[0] == "vigil_watched_process_info"]
        assert {dict(k[1])["pid"] for k in watched} == {"4242", "4343", "4444"}
        assert all("gpu" in dict(k[1])["source"].split(",") for k in watched)

        # An XID happens: a counter per code, increasing with each event.
        s.xids = [(1, 79)]
        s.write()
        wait_for(agent, lambda t: value(t, "vigil_gpu_xid_errors_total", **g1, xid="79") == 1)
        s.xids += [(1, 79)]
        s.write()
        wait_for(agent, lambda t: value(t, "vigil_gpu_xid_errors_total", **g1, xid="79") == 2)

        # GPU 1 is lost between two polls: up goes 0, GPU 0 keeps being served.
        s.gpus[1].lost = 1
        s.write()
        text = wait_for(agent, lambda t: value(t, "vigil_gpu_up", **g1) == 0)
        assert value(text, "vigil_gpu_up", **g0) == 1
        assert value(text, "vigil_gpu_utilization_ratio", **g0) == 0.37
        assert value(text, "vigil_gpu_utilization_ratio", **g1) is None
        assert value(text, "vigil_scrape_collector_success", collector="gpu") == 1.0
        s.gpus[1].lost = 0
        s.write()
        wait_for(agent, lambda t: value(t, "vigil_gpu_up", **g1) == 1)
        assert agent.proc is not None and agent.proc.poll() is None  # never restarted
        assert "Traceback" not in agent.logs()

    if shutil.which("promtool"):
        r = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_a_scrape_makes_no_nvml_call(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, args, _ = node
    args = [*args, "--collector.gpu.interval", "1h"]  # one poll at start, then none
    with AgentProcess(args, env=env) as agent:
        agent.metrics()
        before = read_calls(tmp_path / "calls")
        for _ in range(20):
            agent.metrics()
        after = read_calls(tmp_path / "calls")
    assert before["nvmlDeviceGetCount_v2"] >= 1
    # The XID thread waits in the driver on its own; nothing else may move.
    moved = {
        k: after[k] - before.get(k, 0)
        for k in after
        if k not in ("total", "nvmlEventSetWait_v2") and after[k] != before.get(k, 0)
    }
    assert moved == {}


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None,
    reason="a real libnvidia-ml is installed; cannot simulate its absence",
)
def test_no_library_agent_runs_on_and_doctor_says_why(tmp_path: Path) -> None:
    # No driver is a CPU-only node, not a failure: see tests/gpu/test_gpu_not_applicable.py.
    env = {"LD_LIBRARY_PATH": str(tmp_path)}  # an empty directory: nothing to load
    with AgentProcess([*FAST, "--collector.gpu"], env=env) as agent:
        status, _ = agent.get("/readyz")
        assert status == 200
        text = agent.metrics()
        assert value(text, "vigil_scrape_collector_success", collector="gpu") == 1.0
        assert (
            value(text, "vigil_collector_state", collector="gpu", state="not_applicable") == 1.0
        )
        assert "vigil_gpu_up" not in text
        logs = agent.logs()
    assert "collector not applicable" in logs and "libnvidia-ml.so.1 not found" in logs
    assert "Traceback" not in logs
    # Inference off: servers other tests start on this host may not answer yet (a FAIL).
    r = run_vigil(["doctor", "--collector.gpu", "--no-collector.inference"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not applicable" in r.stdout and "libnvidia-ml.so.1 not found" in r.stdout
    assert not [line for line in r.stdout.splitlines() if "FAIL" in line and "NVML" in line]
    assert "Traceback" not in r.stdout + r.stderr


def test_doctor_counts_gpus_on_the_fake(node) -> None:  # type: ignore[no-untyped-def]
    env, _, _ = node
    r = run_vigil(["doctor"], env=env)
    assert "NVML library: libnvidia-ml.so.1 loads" in r.stdout, r.stdout + r.stderr
    assert "nvmlInit: driver 550.54.15" in r.stdout
    assert "GPUs: 2 visible" in r.stdout
