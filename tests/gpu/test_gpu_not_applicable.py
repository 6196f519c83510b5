"""A node without an NVIDIA GPU is not a failing node; a GPU that was there and broke is.

Real `vigil run` children: on this machine's own (absent) driver, and on the fake
libnvidia-ml.so.1 for "driver loaded but no GPU", "kernel driver not loaded", "no
permission" and "GPU lost after a good start".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agentproc import AgentProcess, run_vigil
from fakenvml import Scenario, two_gpus
from test_gpu_agent import FAST, UUID0, UUID1, value, wait_for

NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9


def fake_env(tmp_path: Path, fake_lib: Path, s: Scenario) -> dict[str, str]:
    s.write()
    return {
        "LD_LIBRARY_PATH": str(fake_lib.parent),
        "FAKE_NVML_SCENARIO": str(s.path),
        "FAKE_NVML_CALLS": str(tmp_path / "calls"),
    }


def assert_not_applicable(env: dict[str, str], why: str) -> None:
    with AgentProcess([*FAST, "--collector.gpu"], env=env) as agent:
        text = agent.metrics()
        logs = agent.logs()
    assert value(text, "vigil_scrape_collector_success", collector="gpu") == 1.0, text
    assert value(text, "vigil_collector_state", collector="gpu", state="not_applicable") == 1.0
    assert value(text, "vigil_collector_state", collector="gpu", state="unavailable") == 0.0
    assert "vigil_gpu_up" not in text
    assert "collector not applicable" in logs and why in logs
    assert "Traceback" not in logs
    r = run_vigil(["doctor", "--collector.gpu"], env=env)
    gpu_lines = [line for line in r.stdout.splitlines() if why in line]
    assert gpu_lines and all("not applicable" in line for line in gpu_lines), r.stdout
    assert not [line for line in gpu_lines if "FAIL" in line]
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_library_on_this_host_is_not_applicable(tmp_path: Path) -> None:
    # An empty directory first on the search path: the machine's own answer (no driver).
    assert_not_applicable({"LD_LIBRARY_PATH": str(tmp_path)}, "libnvidia-ml.so.1 not found")


@pytest.mark.nvml
def test_kernel_driver_not_loaded_is_not_applicable(tmp_path: Path, fake_lib: Path) -> None:
    s = two_gpus(tmp_path / "scenario.txt")
    s.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    assert_not_applicable(fake_env(tmp_path, fake_lib, s), "kernel driver not loaded")


@pytest.mark.nvml
def test_no_gpu_visible_is_not_applicable(tmp_path: Path, fake_lib: Path) -> None:
    s = Scenario(tmp_path / "scenario.txt")  # NVML works, zero GPUs
    assert_not_applicable(fake_env(tmp_path, fake_lib, s), "sees no GPU")


@pytest.mark.nvml
def test_a_driver_without_permission_is_still_a_failure(tmp_path: Path, fake_lib: Path) -> None:
    s = two_gpus(tmp_path / "scenario.txt")
    s.init_error = NVML_ERROR_NO_PERMISSION
    env = fake_env(tmp_path, fake_lib, s)
    with AgentProcess([*FAST, "--collector.gpu"], env=env) as agent:
        text = agent.metrics()
    assert value(text, "vigil_scrape_collector_success", collector="gpu") == 0.0
    assert value(text, "vigil_collector_state", collector="gpu", state="unavailable") == 1.0
    assert value(text, "vigil_collector_state", collector="gpu", state="not_applicable") == 0.0
    r = run_vigil(["doctor", "--collector.gpu"], env=env)
    assert "FAIL nvmlInit: no permission" in r.stdout, r.stdout
    assert r.returncode == 1


@pytest.mark.nvml
def test_gpus_lost_after_a_good_start_stay_a_failure(tmp_path: Path, fake_lib: Path) -> None:
    s = two_gpus(tmp_path / "scenario.txt")
    env = fake_env(tmp_path, fake_lib, s)
    with AgentProcess([*FAST, "--collector.gpu"], env=env) as agent:
        wait_for(agent, lambda t: value(t, "vigil_gpu_up", gpu="0", uuid=UUID0) == 1)
        for g in s.gpus:
            g.lost = 1
        s.write()
        text = wait_for(
            agent,
            lambda t: (
                value(t, "vigil_gpu_up", gpu="0", uuid=UUID0) == 0
                and value(t, "vigil_gpu_up", gpu="1", uuid=UUID1) == 0
            ),
        )
    # Not "not applicable": the GPUs are still listed, down, for dashboards and alerts.
    assert value(text, "vigil_collector_state", collector="gpu", state="running") == 1.0
    assert value(text, "vigil_collector_state", collector="gpu", state="not_applicable") == 0.0
