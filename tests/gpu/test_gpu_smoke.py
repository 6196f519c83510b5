"""scripts/gpu-smoke where there is no GPU: it says so (exit 2), and judges right.

The real-hardware run itself needs an NVIDIA GPU; here: the paths that end before the load
(no driver, a driver but no PyTorch, the wheels-only import path) through the real script,
and its plausibility checks as a function fed with observations.
"""

from __future__ import annotations

import ctypes.util
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakenvml import two_gpus

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scripts" / "gpu-smoke"
GIB = 1 << 30


def smoke(env: dict[str, str], python: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(python or [sys.executable]), str(SMOKE), "--seconds", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}


def torch_installed(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="this host has an NVIDIA driver"
)
def test_without_a_driver_it_says_so_and_exits_2() -> None:
    r = smoke(clean_env())
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("gpu-smoke: cannot run here: no NVIDIA driver on this machine")
    assert "libnvidia-ml.so.1" in r.stderr
    assert r.stdout == ""


@pytest.fixture
def fake_driver(fake_lib: Path, tmp_path: Path) -> dict[str, str]:
    two_gpus(tmp_path / "scenario.txt").write()
    env = clean_env()
    env["LD_LIBRARY_PATH"] = str(fake_lib.parent)
    env["FAKE_NVML_SCENARIO"] = str(tmp_path / "scenario.txt")
    return env


def test_with_a_driver_but_no_pytorch_it_names_what_is_missing(
    fake_driver: dict[str, str],
) -> None:
    if torch_installed(sys.executable):
        pytest.skip("PyTorch is installed here")
    r = smoke(fake_driver)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "PyTorch with CUDA is needed" in r.stderr


def test_without_vigils_dependencies_it_runs_from_the_wheels(fake_driver: dict[str, str]) -> None:
    """`python -S`: no site-packages at all, as on a GPU machine without Vigil installed."""
    python = [sys.executable, "-S"]
    wheels = ROOT / "scripts" / "gpu-smoke.wheels"
    r = smoke(fake_driver, python)
    assert r.returncode == 2, r.stdout + r.stderr
    if list(wheels.glob("*.whl")):
        # Past the imports (pynvml, prometheus_client, the collector) and nvmlInit.
        assert "PyTorch with CUDA is needed" in r.stderr, r.stderr
    else:
        assert "run scripts/gpu-smoke-wheels" in r.stderr, r.stderr


# -- the plausibility checks ---------------------------------------------------------------


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gpu_smoke", str(SMOKE))
    spec = importlib.util.spec_from_loader("gpu_smoke", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_smoke"] = mod  # dataclasses look their module up there
    loader.exec_module(mod)
    return mod


def healthy(m: Any) -> tuple[Any, list[Any], list[int], dict[int, float]]:
    obs = m.Observed()
    obs.gpus = {
        0: {
            "up": True,
            "name": "NVIDIA H200",
            "memory_total_bytes": 143_771 * (1 << 20),
            "memory_used_bytes": 12.0 * GIB,
            "power_watts": 420.0,
            "clock_sm_hz": 1.98e9,
        }
    }
    loads = [m.Load(101, 0, int(2.5 * GIB)), m.Load(102, 0, int(6.5 * GIB))]
    obs.memory = {101: 3.0 * GIB, 102: 7.0 * GIB}
    obs.memory_sum = {0: 10.0 * GIB}
    obs.shares = {101: [0.5, 0.45, 0.55], 102: [0.5, 0.48, 0.52]}
    return obs, loads, [143_771 * (1 << 20)], {0: 700.0}


def failing(
    m: Any, obs: Any, loads: list[Any], cuda: list[int], limits: dict[int, float]
) -> set[str]:
    return {name for name, ok, _ in m.judge(obs, loads, cuda, limits) if not ok}


def test_judge_passes_a_plausible_h200_run() -> None:
    m = load_script()
    assert failing(m, *healthy(m)) == set()


@pytest.mark.parametrize(
    ("change", "fails"),
    [
        (
            lambda o, ld: o.gpus[0].update(memory_total_bytes=80 * GIB),
            {"gpu 0 total memory", "gpu 0 total memory = CUDA's"},
        ),
        (lambda o, ld: o.gpus[0].update(name="NVIDIA X9000"), "gpu 0 total memory"),
        (lambda o, ld: o.gpus[0].update(power_watts=30.0), "gpu 0 power"),
        (lambda o, ld: o.gpus[0].update(power_watts=900.0), "gpu 0 power"),
        (lambda o, ld: o.gpus[0].update(clock_sm_hz=0.0), "gpu 0 SM clock"),
        (lambda o, ld: o.gpus[0].update(up=False), "gpu 0 up"),
        (lambda o, ld: o.memory.update({101: 1.0 * GIB}), "process 101 memory"),
        (lambda o, ld: o.memory.pop(102), "process 102 memory"),
        (lambda o, ld: o.memory_sum.update({0: 13.0 * GIB}), "gpu 0 process memory <= used"),
        (lambda o, ld: o.shares.update({101: [0.0, 0.1, 0.9]}), "process 101 SM share"),
        (lambda o, ld: o.shares.pop(102), "process 102 SM share"),
        (lambda o, ld: o.xids.update({(0, "GPU-x", 79): 1}), "no XID"),
        (lambda o, ld: o.wait_errors.update({"NVMLError_GpuIsLost": 1}), "no failed event wait"),
        (lambda o, ld: o.nvml_errors.update({"NVMLError_Unknown": 3}), "no NVML error"),
    ],
)
def test_judge_fails_an_implausible_run(change: Any, fails: str | set[str]) -> None:
    m = load_script()
    obs, loads, cuda, limits = healthy(m)
    change(obs, loads)
    assert failing(m, obs, loads, cuda, limits) == ({fails} if isinstance(fails, str) else fails)


def test_judge_checks_total_memory_against_cuda_too() -> None:
    m = load_script()
    obs, loads, cuda, limits = healthy(m)
    assert failing(m, obs, loads, [int(cuda[0] * 0.9)], limits) == {"gpu 0 total memory = CUDA's"}


def test_judge_fails_when_nothing_was_reported() -> None:
    m = load_script()
    obs, loads, cuda, limits = healthy(m)
    obs.gpus = {}
    assert failing(m, obs, loads, cuda, limits) == {"gpus reported"}


OBSERVE = """
import importlib.machinery, importlib.util, json, sys, types
loader = importlib.machinery.SourceFileLoader("gpu_smoke", sys.argv[1])
spec = importlib.util.spec_from_loader("gpu_smoke", loader)
m = importlib.util.module_from_spec(spec)
sys.modules["gpu_smoke"] = m
loader.exec_module(m)
nvml, gpu, gpu_poll, gpu_events = m.load_collector()
loads = [m.Load(4242, 0, 1 << 30), m.Load(4444, 1, 39 << 30)]
obs = m.observe(gpu, gpu_events, gpu_poll, nvml, types.SimpleNamespace(seconds=5.0), loads)
checks = m.judge(obs, loads, [85_899_345_920] * 2, {0: 700.0, 1: 700.0})
print(json.dumps([name for name, ok, _ in checks if not ok]))
"""


def test_what_it_observes_through_the_collector_is_judged(fake_driver: dict[str, str]) -> None:
    """The collection half of the script (poller, XID watcher, rendering, parsing the
    exposition) against the fake driver: the checks see the scenario's values."""
    s = two_gpus(Path(fake_driver["FAKE_NVML_SCENARIO"]))
    s.procs[0]["sm"] = 60  # 4242 on GPU 0: busy enough; 4444 on GPU 1 at 88
    s.procs[2]["mem"] = 38 << 30  # 4444: less than the 39 GiB "allocated"
    s.write()
    r = subprocess.run(
        [sys.executable, "-c", OBSERVE, str(SMOKE)],
        env=fake_driver,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == '["process 4444 memory"]'
