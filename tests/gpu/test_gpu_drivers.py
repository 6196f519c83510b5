"""The GPU collector against a fake NVML as awkward as the drivers people run.

Each test sets up one way real drivers differ from a plain reading of nvml.h and pynvml
(see fake_nvml/scenario.md) and asserts what a user of the metrics would see.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakenvml import Scenario, read_calls, two_gpus

from agent.collectors.gpu import collector as gpu
from agent.collectors.gpu.events import XidWatcher
from agent.collectors.gpu.poll import Poller

pytestmark = pytest.mark.nvml

ROOT = Path(__file__).resolve().parents[2]
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CHILD = Path(__file__).resolve().parent / "nvml_child.py"


def scenario(tmp_path: Path) -> Scenario:
    return two_gpus(tmp_path / "scenario.txt")


def poll_once(nvml: Any, s: Scenario, polls: int = 1) -> Any:
    s.write()
    poller = Poller(nvml)
    poller.open()
    try:
        for _ in range(polls):
            snap = poller.poll()
    finally:
        poller.close()
    return snap


def wait_for(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


# -- row 1: process entries of 24 or 32 bytes, whatever pynvml believes ------------------


@pytest.mark.parametrize(
    "driver",
    ["535.43.02", "535.86.10", "535.98", "535.104.05", "535.183.01", "550.54.15", "570.86.15"],
)
def test_every_process_is_listed_whatever_entry_size_the_driver_writes(
    nvml: Any, tmp_path: Path, driver: str
) -> None:
    s = scenario(tmp_path)
    s.driver = driver
    s.procs = [
        {"gpu": 0, "pid": 1000 + i, "mem": (i + 1) * 1_073_741_824, "sm": 10} for i in range(5)
    ]
    g0 = poll_once(nvml, s).gpus[0]
    assert {p: u.memory_bytes for p, u in g0.processes.items()} == {
        1000 + i: (i + 1) * 1_073_741_824 for i in range(5)
    }


# -- row 2: process-utilization samples as drivers hand them back -----------------------


def test_padding_garbage_and_future_samples_are_dropped(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus[0].util_buffer = 32  # fixed-size answer, padded with pid-0 entries
    s.procs = [
        {"gpu": 0, "pid": 4242, "mem": 8_589_934_592, "sm": 30},
        {"gpu": 0, "pid": 4343, "mem": 2_147_483_648, "sm": 250},  # > 100: garbage
        {"gpu": 0, "pid": 4444, "mem": 1_073_741_824, "sm": 40, "future": 1},
    ]
    s.write()
    poller = Poller(nvml)
    poller.open()
    try:
        snaps = [poller.poll() for _ in range(3)]
    finally:
        poller.close()
    for snap in snaps:
        procs = snap.gpus[0].processes
        assert 0 not in procs  # no pid="0" series, nothing fed to discovery
        assert set(procs) == {4242, 4343, 4444}
        assert procs[4343].sm_ratio == 0.0  # not a garbage 250 % clamped to 1.0
        assert procs[4444].sm_ratio == 0.0  # a sample from the future is not believed
        # ... and it does not freeze the cursor: the next polls still see fresh samples.
        assert procs[4242].sm_ratio == pytest.approx(0.30)


def test_samples_of_pids_not_in_the_process_list_are_ignored(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus[0].util_buffer = 8
    s.gpus[0].unknown = []
    s.procs = [
        {"gpu": 0, "pid": 4242, "mem": 8_589_934_592, "sm": 30},
        {"gpu": 1, "pid": 4444, "mem": 1_048_576, "sm": 50},
    ]
    g0, g1 = poll_once(nvml, s).gpus
    assert set(g0.processes) == {4242} and set(g1.processes) == {4444}


# -- row 5: MPS clients ------------------------------------------------------------------


def test_mps_clients_are_listed_with_their_memory(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.procs = [
        {"gpu": 0, "pid": 900, "mem": 12_884_901_888},  # nvidia-cuda-mps-server
        {"gpu": 0, "pid": 5001, "mem": 4_294_967_296, "mps": 1, "sm": 20},
        {"gpu": 0, "pid": 5002, "mem": 6_442_450_944, "mps": 1, "sm": 35},
    ]
    g0 = poll_once(nvml, s).gpus[0]
    assert {p: u.memory_bytes for p, u in g0.processes.items()} == {
        900: 12_884_901_888,
        5001: 4_294_967_296,
        5002: 6_442_450_944,
    }
    assert g0.processes[5002].sm_ratio == pytest.approx(0.35)


def test_mps_clients_on_a_535_driver_with_32_byte_entries(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.driver = "535.104.05"
    s.procs = [
        {"gpu": 1, "pid": 900, "mem": 1_000},
        *({"gpu": 1, "pid": 6000 + i, "mem": 2_000 + i, "mps": 1} for i in range(3)),
    ]
    g1 = poll_once(nvml, s).gpus[1]
    assert {p: u.memory_bytes for p, u in g1.processes.items()} == {
        900: 1_000,
        6000: 2_000,
        6001: 2_001,
        6002: 2_002,
    }


def test_two_processes_on_a_7g_mig_instance_with_32_byte_entries(nvml: Any, tmp_path: Path) -> None:
    # GPU instance 0 / compute instance 0 (the whole-GPU profile) and no protected memory:
    # the bytes past two 24-byte entries are all zero here, as a 24-byte driver that
    # zeroes the buffer would leave them; only reading the entries tells the sizes apart.
    s = scenario(tmp_path)
    s.driver = "535.104.05"
    s.gpus[0].mig = 1
    s.migs = [
        {
            "gpu": 0,
            "gi": 0,
            "ci": 0,
            "uuid": "MIG-7g",
            "total": 80_000_000_000,
            "used": 3_000_000_000,
            "free": 77_000_000_000,
        }
    ]
    s.procs = [
        {"gpu": 0, "pid": 7000, "mem": 1_000_000_000, "mig": 0},
        {"gpu": 0, "pid": 7001, "mem": 2_000_000_000, "mig": 0},
    ]
    g0 = poll_once(nvml, s).gpus[0]
    assert [(m.gpu_instance, m.compute_instance) for m in g0.mig] == [(0, 0)]
    assert {p: u.memory_bytes for p, u in g0.processes.items()} == {
        7000: 1_000_000_000,
        7001: 2_000_000_000,
    }


# -- row 6: v1 memory fallback -----------------------------------------------------------


def test_used_memory_does_not_jump_when_v2_memory_fails_for_a_poll(
    nvml: Any, tmp_path: Path
) -> None:
    s = scenario(tmp_path)
    s.write()
    poller = Poller(nvml)
    poller.open()
    try:
        before = poller.poll().gpus[0].values
        s.gpus[0].unknown = ["memory_v2"]
        s.write()
        during = poller.poll().gpus[0].values
    finally:
        poller.close()
    assert before["memory_used_bytes"] == 21_474_836_480
    assert during["memory_used_bytes"] == 21_474_836_480  # v1 counts reserved: taken off
    assert during["memory_free_bytes"] == before["memory_free_bytes"]
    assert during["memory_reserved_bytes"] == before["memory_reserved_bytes"]


def test_drivers_without_v2_memory_report_v1_as_it_is(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus[0].unsupported = ["memory_v2"]
    values = poll_once(nvml, s).gpus[0].values
    # Nothing to take the reserved memory off with: v1's own figure, and no reserved series.
    assert values["memory_used_bytes"] == 21_474_836_480 + 537_919_488
    assert "memory_reserved_bytes" not in values


# -- row 7: event wait errors and the event's device -------------------------------------


def test_xid_is_filed_under_the_gpu_whose_uuid_the_event_names(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.write()
    nvml.nvmlInit()
    watcher = XidWatcher(nvml, wait_ms=50)
    try:
        assert watcher.start()
        for i, uuid in enumerate((UUID0, UUID1)):
            watcher.register(i, nvml.nvmlDeviceGetHandleByIndex(i), uuid)
        s.xids = [(1, 79), (0, 48)]
        s.write()
        assert wait_for(lambda: sum(watcher.counts().values()) >= 2)
        assert watcher.counts() == {(1, UUID1, 79): 1, (0, UUID0, 48): 1}
    finally:
        watcher.close()
        nvml.nvmlShutdown()


def test_event_set_broken_by_a_lost_gpu_is_rebuilt_and_counts_again(
    nvml: Any, tmp_path: Path
) -> None:
    s = scenario(tmp_path)
    s.write()
    nvml.nvmlInit()
    watcher = XidWatcher(nvml, wait_ms=50)
    try:
        assert watcher.start()

        def register_all() -> None:  # what the poller does on every poll
            for i, uuid in enumerate((UUID0, UUID1)):
                try:
                    h = nvml.nvmlDeviceGetHandleByIndex(i)
                except nvml.NVMLError:
                    continue
                watcher.register(i, h, uuid)

        register_all()
        s.gpus[1].lost = 1  # XID 79: fallen off the bus; the wait answers GPU_IS_LOST
        s.write()
        assert wait_for(lambda: watcher.wait_errors().get("NVMLError_GpuIsLost", 0) >= 1)
        waits = read_calls(tmp_path / "calls")["nvmlEventSetWait_v2"]
        time.sleep(1.0)
        # Backs off instead of spinning on a broken set.
        assert read_calls(tmp_path / "calls")["nvmlEventSetWait_v2"] - waits < 20
        s.gpus[1].lost = 0  # reset: back
        s.write()
        register_all()
        s.xids = [(0, 48)]
        s.write()

        def counted() -> bool:
            register_all()
            return watcher.counts().get((0, UUID0, 48), 0) == 1

        assert wait_for(counted, timeout=15.0)
    finally:
        watcher.close()
        nvml.nvmlShutdown()


# -- row 8: what "down" means ------------------------------------------------------------


def test_gpu_answering_unknown_to_everything_is_down(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.write()
    poller = Poller(nvml)
    poller.open()
    try:
        assert [g.up for g in poller.poll().gpus] == [True, True]
        s.gpus[1].unknown = ["all"]
        s.write()
        snap = poller.poll()
    finally:
        poller.close()
    assert [g.up for g in snap.gpus] == [True, False]
    assert snap.gpus[1].uuid == UUID1


def test_gpu_the_agent_may_not_open_is_not_reported_lost(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus[1].no_permission = 1
    snap = poll_once(nvml, s, polls=2)
    assert [(g.index, g.up) for g in snap.gpus] == [(0, True)]
    assert snap.inaccessible == (1,)
    fams = {f.name: f for f in gpu.render(snap, {}, lambda pid: None)}
    assert [s.value for s in fams["vigil_gpu_up"].samples] == [1.0]
    assert [s.value for s in fams["vigil_gpu_inaccessible"].samples] == [1.0]


def test_one_field_failing_does_not_make_a_gpu_down(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus[1].unknown = ["temperature", "power"]
    snap = poll_once(nvml, s)
    assert [g.up for g in snap.gpus] == [True, True]
    assert "temperature_celsius" not in snap.gpus[1].values
    assert snap.errors == {"NVMLError_Unknown": 2}


# -- row 9 and the pin: both ends of the nvidia-ml-py range ------------------------------


def pin_range() -> tuple[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'"nvidia-ml-py>=([0-9.]+),<([0-9.]+)"', text)
    assert m, "pyproject.toml pins nvidia-ml-py as a range >=low,<high"
    return m.group(1), m.group(2)


def floor_dir() -> Path:
    low, _ = pin_range()
    return ROOT / "tests" / ".build" / f"nvml-{low}"


def run_child(fake_lib: Path, tmp_path: Path, pythonpath: Path | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LD_LIBRARY_PATH"] = str(fake_lib.parent)
    env["FAKE_NVML_SCENARIO"] = str(tmp_path / "scenario.txt")
    env["FAKE_NVML_CALLS"] = str(tmp_path / "calls")
    paths = [str(ROOT)] + ([str(pythonpath)] if pythonpath else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    r = subprocess.run(
        [sys.executable, str(CHILD), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_both_ends_of_the_pinned_nvidia_ml_py_range(
    fake_lib: Path, tmp_path: Path, end: str
) -> None:
    low, high = pin_range()
    pythonpath = None
    if end == "lowest":
        pythonpath = floor_dir()
        assert (pythonpath / "pynvml.py").exists(), (
            f"nvidia-ml-py {low} is not in {pythonpath}: run scripts/setup.sh (make setup)"
        )
    out = run_child(fake_lib, tmp_path, pythonpath)
    if end == "lowest":
        assert out["version"] == low
    else:
        assert int(out["version"].split(".")[0]) < int(high.split(".")[0])
    # Every layout the drivers write is read right with this pynvml's structs around.
    for driver, procs in out["processes"].items():
        assert procs == {str(1000 + i): (i + 1) * 1_048_576 for i in range(4)}, driver
    assert out["mps"] == {"900": 1000, "5001": 2000}
    # A failure that is not an NVMLError reaches the caller as itself.
    assert out["foreign_error"] == "RuntimeError: the real cause"


def test_the_fix_for_a_missing_package_asks_for_the_pinned_range() -> None:
    low, high = pin_range()
    assert f"nvidia-ml-py>={low},<{high}" == gpu.NVML_REQUIREMENT
