"""The GPU collector's pure parts: conversions, sample aggregation, rendering."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from agent.collectors.gpu.collector import render
from agent.collectors.gpu.poll import (
    CLOCK_EVENT_REASONS,
    FUTURE_SLACK_US,
    NVML_VALUE_NOT_AVAILABLE,
    PROCESS_ENTRY,
    UNWRITTEN,
    GpuSample,
    ProcessEntry,
    ProcessUse,
    Snapshot,
    clock_event_flags,
    entries_plausible,
    explain_init_error,
    parse_process_entries,
    percent_to_ratio,
    process_entry_size,
    sm_ratios,
    v1_memory,
    writes_cc_entries,
)
from agent.discovery import ProcessInfo


def test_clock_event_flags_one_series_per_reason() -> None:
    assert clock_event_flags(0) == {name: 0 for _, name in CLOCK_EVENT_REASONS}
    flags = clock_event_flags(0x1 | 0x40 | 0x8000)  # unknown high bit ignored
    assert {k for k, v in flags.items() if v} == {"gpu_idle", "hw_thermal_slowdown"}
    assert clock_event_flags(0x1FF) == {name: 1 for _, name in CLOCK_EVENT_REASONS}


@pytest.mark.parametrize(
    ("pct", "ratio"), [(0, 0.0), (37, 0.37), (100, 1.0), (103, 1.0), (-1, 0.0)]
)
def test_percent_to_ratio_is_clamped(pct: float, ratio: float) -> None:
    assert percent_to_ratio(pct) == pytest.approx(ratio)


def test_sm_ratios_average_per_pid_and_track_newest() -> None:
    s = [
        SimpleNamespace(pid=1, smUtil=20, timeStamp=100),
        SimpleNamespace(pid=1, smUtil=40, timeStamp=300),
        SimpleNamespace(pid=2, smUtil=100, timeStamp=200),
    ]
    ratios, newest = sm_ratios(s)
    assert ratios == {1: pytest.approx(0.30), 2: 1.0}
    assert newest == 300
    assert sm_ratios([]) == ({}, 0)


def _info(pid: int, pod_uid: str = "", comm: str = "python3") -> ProcessInfo:
    return ProcessInfo(
        pid=pid,
        comm=comm,
        cmdline="",
        start_time=1,
        pod_uid=pod_uid,
        container_id="c" * 64 if pod_uid else "",
    )


def _registry(
    snap: Snapshot, xids: dict[tuple[int, str, int], int], known: dict[int, ProcessInfo]
) -> CollectorRegistry:
    families = render(snap, xids, known.get)
    reg = CollectorRegistry()

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    reg.register(Fixed())  # type: ignore[arg-type]
    return reg


def test_render_joins_processes_of_one_pod_and_keeps_pid_only_without_pod() -> None:
    g = GpuSample(0, "GPU-x", "H100", "0:1:0", up=True)
    g.processes = {
        10: ProcessUse(10, 1000.0, 0.25),
        11: ProcessUse(11, 500.0, 0.5),  # same pod/container/comm as pid 10
        12: ProcessUse(12, None, 0.1),  # memory unknown: no memory series
        13: ProcessUse(13, 7.0, None),  # no utilization samples on this GPU
    }
    snap = Snapshot("550", (g,), 0.001, {})
    known = {10: _info(10, "pod-a"), 11: _info(11, "pod-a"), 12: _info(12)}
    reg = _registry(snap, {}, known)
    base = {"gpu": "0", "uuid": "GPU-x", "namespace": ""}
    pod = {**base, "pod": "pod-a", "container": "c" * 12, "comm": "python3", "pid": ""}
    assert reg.get_sample_value("vigil_gpu_process_memory_used_bytes", pod) == 1500.0
    assert reg.get_sample_value("vigil_gpu_process_utilization_ratio", pod) == 0.75
    bare = {**base, "pod": "", "container": "", "comm": "python3", "pid": "12"}
    assert reg.get_sample_value("vigil_gpu_process_memory_used_bytes", bare) is None
    assert reg.get_sample_value("vigil_gpu_process_utilization_ratio", bare) == 0.1
    unknown = {**base, "pod": "", "container": "", "comm": "", "pid": "13"}
    assert reg.get_sample_value("vigil_gpu_process_memory_used_bytes", unknown) == 7.0
    assert reg.get_sample_value("vigil_gpu_process_utilization_ratio", unknown) is None


def test_render_lost_gpu_keeps_identity_and_drops_values() -> None:
    up = GpuSample(0, "GPU-a", "H100", "bus0", up=True, values={"temperature_celsius": 50.0})
    down = GpuSample(1, "GPU-b", "H100", "bus1", up=False)
    reg = _registry(
        Snapshot("550", (up, down), 0.0, {"NVMLError_Unknown": 2}), {(1, "GPU-b", 79): 3}, {}
    )
    assert reg.get_sample_value("vigil_gpu_up", {"gpu": "1", "uuid": "GPU-b"}) == 0.0
    assert reg.get_sample_value("vigil_gpu_up", {"gpu": "0", "uuid": "GPU-a"}) == 1.0
    assert (
        reg.get_sample_value(
            "vigil_gpu_info",
            {
                "gpu": "1",
                "uuid": "GPU-b",
                "name": "H100",
                "pci_bus_id": "bus1",
                "driver_version": "550",
            },
        )
        == 1.0
    )
    assert (
        reg.get_sample_value("vigil_gpu_temperature_celsius", {"gpu": "0", "uuid": "GPU-a"}) == 50
    )
    assert (
        reg.get_sample_value("vigil_gpu_temperature_celsius", {"gpu": "1", "uuid": "GPU-b"}) is None
    )
    # XIDs of a GPU that is down now are still counted.
    assert (
        reg.get_sample_value(
            "vigil_gpu_xid_errors_total", {"gpu": "1", "uuid": "GPU-b", "xid": "79"}
        )
        == 3
    )
    assert reg.get_sample_value("vigil_gpu_nvml_errors_total", {"error": "NVMLError_Unknown"}) == 2


def test_explain_init_error_names_the_fix() -> None:
    import pynvml

    def err(code: int) -> Exception:
        return pynvml.NVMLError(code)

    reason, fix = explain_init_error(pynvml, err(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    assert "libnvidia-ml.so.1 not found" in reason and "LD_LIBRARY_PATH" in fix
    reason, fix = explain_init_error(pynvml, err(pynvml.NVML_ERROR_NO_PERMISSION))
    assert "permission" in reason and "/dev/nvidia" in fix
    reason, _ = explain_init_error(pynvml, err(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH))
    assert "different versions" in reason


# -- what real drivers hand back ---------------------------------------------------------


def _sample(pid: int, ts: int, sm: int, mem: int = 0) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, timeStamp=ts, smUtil=sm, memUtil=mem)


@pytest.mark.parametrize(
    ("sample", "kept"),
    [
        (_sample(7, 1_500, 40), True),
        (_sample(0, 1_500, 40), False),  # padding entry
        (_sample(0, 0, 0), False),  # padding entry, zeroed
        (_sample(7, 1_500, 101), False),  # not a percentage
        (_sample(7, 1_500, 40, mem=4_000), False),  # nor this
        (_sample(7, 1_000, 40), False),  # not newer than the cursor
        (_sample(7, 999, 40), False),
        (_sample(9, 1_500, 40), False),  # not a listed process
        (_sample(7, 2_000 + FUTURE_SLACK_US, 40), True),  # within the slack
        (_sample(7, 2_001 + FUTURE_SLACK_US, 40), False),  # from the future
    ],
)
def test_sm_ratios_keeps_only_believable_samples(sample: SimpleNamespace, kept: bool) -> None:
    ratios, newest = sm_ratios([sample], since_us=1_000, now_us=2_000, pids={7})
    assert ratios == ({7: 0.40} if kept else {})
    assert newest == (int(sample.timeStamp) if kept else 1_000)  # garbage never moves it


def test_sm_ratios_averages_a_pid_and_without_a_list_takes_any_nonzero_pid() -> None:
    samples = [_sample(7, 1_100, 20), _sample(7, 1_200, 40), _sample(8, 1_300, 100)]
    assert sm_ratios(samples, 1_000, 2_000) == ({7: pytest.approx(0.30), 8: 1.0}, 1_300)


def _entries(size: int, rows: list[tuple[int, int]], capacity: int) -> bytes:
    buf = bytearray([UNWRITTEN]) * (capacity * 32)
    for i, (pid, mem) in enumerate(rows):
        entry = PROCESS_ENTRY.pack(pid, mem, 0xFFFFFFFF, 0xFFFFFFFF)
        if size == 32:
            entry += (0).to_bytes(8, "little")  # usedGpuCcProtectedMemory
        buf[i * size : i * size + size] = entry
    return bytes(buf)


@pytest.mark.parametrize("size", [24, 32])
@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 9])
def test_process_entries_are_read_at_the_size_the_driver_wrote(size: int, count: int) -> None:
    rows = [(1000 + i, (i + 1) << 20) for i in range(count)]
    raw = _entries(size, rows, capacity=count * 2 + 5)
    got = parse_process_entries(raw, count)
    assert [(e.pid, e.usedGpuMemory) for e in got] == rows
    if count >= 2:
        assert process_entry_size(raw, count) == size


def test_process_entry_size_with_a_driver_that_zeroes_the_rest_of_the_buffer() -> None:
    rows = [(1000, 1 << 20), (1001, 2 << 20)]
    raw = bytearray(_entries(24, rows, capacity=9))
    raw[48:] = bytes(len(raw) - 48)
    assert process_entry_size(bytes(raw), 2) == 24


def _mig_entries(size: int, pids: list[int], capacity: int, fill: int = UNWRITTEN) -> bytes:
    """Entries on MIG GPU instance 0 / compute instance 0, no protected memory."""
    buf = bytearray([fill]) * (capacity * 32)
    for i, pid in enumerate(pids):
        entry = PROCESS_ENTRY.pack(pid, (i + 1) << 30, 0, 0) + bytes(size - 24)
        buf[i * size : i * size + size] = entry
    return bytes(buf)


@pytest.mark.parametrize("count", [2, 3, 4, 9])
@pytest.mark.parametrize("driver", ["", "535.104.05", "550.54.15"])
def test_entries_on_mig_instance_zero_are_read_at_the_size_written(count: int, driver: str) -> None:
    # 32 bytes, GI 0 / CI 0: the bytes past count 24-byte entries are all zero, as a
    # 24-byte driver that zeroes the buffer leaves them; the driver version (even a
    # wrong one) must not make the reading shift.
    pids = [7000 + i for i in range(count)]
    raw = _mig_entries(32, pids, capacity=count * 2 + 5)
    total = 80 << 30
    assert process_entry_size(raw, count, memory_total=total, driver=driver) == 32
    got = parse_process_entries(raw, count, memory_total=total, driver=driver)
    assert [(e.pid, e.usedGpuMemory) for e in got] == [
        (p, (i + 1) << 30) for i, p in enumerate(pids)
    ]
    zeroed = _mig_entries(24, pids, capacity=count * 2 + 5, fill=0)
    assert process_entry_size(zeroed, count, memory_total=total, driver=driver) == 24


@pytest.mark.parametrize(
    ("driver", "cc"),
    [
        ("535.43.02", True),
        ("535.86.10", True),
        ("535.98", False),
        ("535.104", False),
        ("535.104.05", True),
        ("535.183.01", True),
        ("530.30.02", False),
        ("550.54.15", False),
        ("", None),
        ("n/a", None),
    ],
)
def test_which_drivers_write_32_byte_entries(driver: str, cc: bool | None) -> None:
    assert writes_cc_entries(driver) is cc


def test_an_entry_that_cannot_be_a_process_makes_its_reading_implausible() -> None:
    ok = PROCESS_ENTRY.pack(4242, 1 << 20, 0xFFFFFFFF, 0xFFFFFFFF)
    assert entries_plausible(ok, 1, 24, 1 << 30)
    for bad in (
        PROCESS_ENTRY.pack(0, 1 << 20, 0xFFFFFFFF, 0xFFFFFFFF),  # pid 0
        PROCESS_ENTRY.pack(5_000_000, 1 << 20, 0xFFFFFFFF, 0xFFFFFFFF),  # past pid_max
        PROCESS_ENTRY.pack(4242, 2 << 30, 0xFFFFFFFF, 0xFFFFFFFF),  # more than the GPU
        PROCESS_ENTRY.pack(4242, 1 << 20, 0xA5A5A5A5, 0),  # no such instance id
    ):
        assert not entries_plausible(bad, 1, 24, 1 << 30)
    assert entries_plausible(PROCESS_ENTRY.pack(4242, NVML_VALUE_NOT_AVAILABLE, 3, 1), 1, 24, 1)


def test_process_memory_not_available_reads_as_none() -> None:
    raw = _entries(24, [(5, NVML_VALUE_NOT_AVAILABLE)], capacity=6)
    assert parse_process_entries(raw, 1) == [ProcessEntry(5, None)]


def test_v1_memory_takes_off_the_reserved_memory_v2_last_reported() -> None:
    assert v1_memory(1_500.0, 500.0, 2_000.0, None) == {
        "used": 1_500.0,
        "free": 500.0,
        "total": 2_000.0,
    }
    assert v1_memory(1_500.0, 500.0, 2_000.0, 300.0) == {
        "used": 1_200.0,
        "free": 500.0,
        "total": 2_000.0,
        "reserved": 300.0,
    }
    assert v1_memory(100.0, 1_900.0, 2_000.0, 300.0)["used"] == 0.0  # never negative
