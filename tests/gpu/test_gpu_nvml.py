"""The GPU collector through real pynvml against the fake libnvidia-ml.so.1, in process."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fakenvml import Gpu, read_calls, two_gpus
from prometheus_client import CollectorRegistry

from agent.collectors.gpu import collector as gpu
from agent.collectors.gpu.events import XidWatcher
from agent.collectors.gpu.poll import Poller
from agent.registry import CollectorUnavailable

pytestmark = pytest.mark.nvml

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def scenario(tmp_path: Path) -> Any:
    return two_gpus(tmp_path / "scenario.txt")


def open_poller(nvml: Any, **kw: Any) -> Poller:
    p = Poller(nvml, **kw)
    p.open()
    return p


def test_two_healthy_gpus_report_the_scenarios_values(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.write()
    poller = open_poller(nvml)
    try:
        snap = poller.poll()
    finally:
        poller.close()
    assert snap.driver_version == "550.54.15"
    g0, g1 = snap.gpus
    assert (g0.index, g0.uuid, g0.name, g0.pci_bus_id, g0.up) == (
        0,
        UUID0,
        "NVIDIA H100 80GB HBM3",
        "00000000:17:00.0",
        True,
    )
    assert g0.values == {
        "utilization_ratio": 0.37,
        "memory_utilization_ratio": 0.12,
        "memory_used_bytes": 21_474_836_480,
        "memory_free_bytes": 63_887_065_088,
        "memory_total_bytes": 85_899_345_920,
        "memory_reserved_bytes": 537_919_488,
        "temperature_celsius": 54,
        "power_watts": pytest.approx(215.5),
        "energy_joules": pytest.approx(123_456.789),
        "pcie_replays": 2,
        "performance_state": 0,
    }
    assert g0.clocks == {"sm": 1.98e9, "memory": 2.619e9}
    assert {r for r, on in g0.clock_events.items() if on} == {"sw_power_cap", "hw_thermal_slowdown"}
    assert len(g0.clock_events) == 9
    assert g0.ecc == {"corrected": 3, "uncorrected": 1}
    assert g1.values["utilization_ratio"] == 0.91 and g1.values["performance_state"] == 2
    assert not any(g1.clock_events.values())
    assert {p: (u.memory_bytes, u.sm_ratio) for p, u in g0.processes.items()} == {
        4242: (8_589_934_592, 0.30),
        4343: (2_147_483_648, 0.05),
    }
    assert {p: (u.memory_bytes, u.sm_ratio) for p, u in g1.processes.items()} == {
        4444: (40_802_189_312, 0.88)
    }


def test_lost_gpu_goes_down_between_polls_and_comes_back(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.write()
    poller = open_poller(nvml)
    try:
        assert [g.up for g in poller.poll().gpus] == [True, True]
        s.gpus[1].lost = 1
        s.write()
        snap = poller.poll()
        assert [g.up for g in snap.gpus] == [True, False]
        assert snap.gpus[1].uuid == UUID1  # identity kept from before the loss
        assert snap.gpus[1].values == {} and snap.gpus[1].processes == {}
        assert snap.gpus[0].values["utilization_ratio"] == 0.37  # the other one is served
        s.gpus[1].lost = 0
        s.write()
        assert [g.up for g in poller.poll().gpus] == [True, True]
    finally:
        poller.close()


def test_gpu_lost_before_first_poll_is_identified_once_it_answers(
    nvml: Any, tmp_path: Path
) -> None:
    s = scenario(tmp_path)
    s.gpus[0].lost = 1
    s.write()
    poller = open_poller(nvml)
    try:
        g0 = poller.poll().gpus[0]
        assert (g0.up, g0.uuid) == (False, "")
        s.gpus[0].lost = 0
        s.write()
        g0 = poller.poll().gpus[0]
        assert (g0.up, g0.uuid) == (True, UUID0)
    finally:
        poller.close()


def test_unsupported_fields_are_omitted_and_logged_once(
    nvml: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = scenario(tmp_path)
    s.gpus[1].unsupported = ["temperature", "power", "ecc", "memory_v2", "process_utilization"]
    s.write()
    poller = open_poller(nvml)
    caplog.set_level(logging.INFO, logger="vigil.gpu")
    try:
        for _ in range(3):
            snap = poller.poll()
        calls_before = read_calls(tmp_path / "calls")
        poller.poll()
        calls_after = read_calls(tmp_path / "calls")
    finally:
        poller.close()
    g0, g1 = snap.gpus
    assert "temperature_celsius" in g0.values and "memory_reserved_bytes" in g0.values
    for missing in ("temperature_celsius", "power_watts", "memory_reserved_bytes"):
        assert missing not in g1.values
    assert g1.ecc == {}
    # v1 memory answered where v2 did not (its `used` includes the reserved memory, which
    # no v2 answer ever told apart); the rest of the GPU is still there.
    assert g1.values["memory_used_bytes"] == 42_949_672_960 + 537_919_488
    assert g1.values["utilization_ratio"] == 0.91
    assert g1.processes[4444].memory_bytes == 40_802_189_312
    assert g1.processes[4444].sm_ratio is None
    logged = [r for r in caplog.records if "not supported" in r.getMessage()]
    assert sorted(r.field for r in logged) == sorted(  # type: ignore[attr-defined]
        ["temperature", "power", "ecc", "memory_v2", "process_utilization"]
    )
    # Not asked again once known unsupported.
    assert calls_after["nvmlDeviceGetTemperature"] - calls_before["nvmlDeviceGetTemperature"] == 1
    assert snap.errors == {}


def test_process_list_growing_past_the_first_buffer_is_listed_whole(
    nvml: Any, tmp_path: Path
) -> None:
    s = scenario(tmp_path)
    # pynvml sizes its buffer at 2n+5 from the size query; 20 processes that start
    # between its two calls overflow it and NVML answers INSUFFICIENT_SIZE.
    s.procs += [
        {"gpu": 1, "pid": 5000 + i, "mem": 1_048_576 * (i + 1), "late": 1} for i in range(20)
    ]
    s.write()
    poller = open_poller(nvml)
    try:
        snap = poller.poll()
    finally:
        poller.close()
    calls = read_calls(tmp_path / "calls")
    procs = snap.gpus[1].processes
    assert set(procs) == {4444, *range(5000, 5020)}
    assert procs[5019].memory_bytes == 20 * 1_048_576
    assert procs[5019].sm_ratio == 0.0  # listed, but no utilization sample: idle
    assert snap.errors == {}
    # Size query + fill that overflowed, then size query + fill again.
    assert calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 2 + 4


def test_xid_events_are_counted_not_held(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.xids = [(0, 13)]  # happened before registration: must not be counted
    s.write()
    nvml.nvmlInit()
    watcher = XidWatcher(nvml, wait_ms=50)
    try:
        assert watcher.start()
        for i in range(2):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            watcher.register(i, h, [UUID0, UUID1][i])
        s.xids += [(1, 79), (0, 48), (1, 79)]
        s.write()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(watcher.counts().values()) < 3:
            time.sleep(0.02)
        assert watcher.counts() == {(1, UUID1, 79): 2, (0, UUID0, 48): 1}
    finally:
        watcher.close()
        nvml.nvmlShutdown()


def test_driver_not_loaded_is_unavailable_with_reason(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.init_error = 9  # NVML_ERROR_DRIVER_NOT_LOADED
    s.write()
    with pytest.raises(CollectorUnavailable) as info:
        Poller(nvml).open()
    assert "driver not loaded" in info.value.reason
    assert "modprobe nvidia" in info.value.fix


def test_mig_instances_report_what_nvml_allows(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus[0].mig = 1
    s.migs = [
        {
            "gpu": 0,
            "gi": 1,
            "ci": 0,
            "uuid": "MIG-aaaa",
            "total": 10_000,
            "used": 4_000,
            "free": 6_000,
        },
        {
            "gpu": 0,
            "gi": 2,
            "ci": 0,
            "uuid": "MIG-bbbb",
            "total": 20_000,
            "used": 0,
            "free": 20_000,
        },
    ]
    s.procs = [{"gpu": 0, "pid": 7000, "mem": 4_000, "mig": 0, "sm": 50}]
    s.write()
    poller = open_poller(nvml)
    try:
        g0 = poller.poll().gpus[0]
    finally:
        poller.close()
    assert [(m.gpu_instance, m.uuid, dict(m.memory)) for m in g0.mig] == [
        (1, "MIG-aaaa", {"used": 4_000, "free": 6_000, "total": 10_000}),
        (2, "MIG-bbbb", {"used": 0, "free": 20_000, "total": 20_000}),
    ]
    assert "utilization_ratio" not in g0.values  # NVML has none in MIG mode
    assert g0.values["memory_total_bytes"] == 85_899_345_920
    assert (g0.processes[7000].memory_bytes, g0.processes[7000].sm_ratio) == (4_000, None)


def test_pcie_throughput_is_opt_in_and_costs_its_sampling_time(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.gpus = s.gpus[:1]
    s.gpus[0].pcie_tx_kbs, s.gpus[0].pcie_rx_kbs = 100, 2000
    s.write()
    off = open_poller(nvml)
    on = open_poller(nvml, pcie_throughput=True)
    try:
        assert off.poll().gpus[0].pcie == {}
        snap = on.poll()
    finally:
        off.close()
        on.close()
    assert snap.gpus[0].pcie == {"tx": 100 * 1024, "rx": 2000 * 1024}
    assert snap.duration_s >= 0.04  # two directions x ~20 ms: why it is off by default


def test_collector_feeds_discovery_and_renders_without_nvml_calls(
    nvml: Any, tmp_path: Path
) -> None:
    s = scenario(tmp_path)
    s.write()

    class Discovery:
        extra: dict[str, set[int]] = {}

        def set_extra(self, source: str, pids: Any) -> None:
            self.extra[source] = set(pids)

        def get(self, pid: int) -> None:
            return None

        def snapshot(self) -> dict[int, Any]:
            return {}

    ctx: Any = type("Ctx", (), {"discovery": Discovery()})()
    collector = gpu.GpuCollector(ctx, nvml, interval=3600, xid_events=False)
    collector.start()
    try:
        deadline = time.monotonic() + 5
        while not collector.ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ctx.discovery.extra["gpu"] == {4242, 4343, 4444}
        before = read_calls(tmp_path / "calls")["total"]
        registry = CollectorRegistry()
        registry.register(collector)  # type: ignore[arg-type]
        for _ in range(5):
            registry.get_sample_value("vigil_gpu_up", {"gpu": "0", "uuid": UUID0})
        assert read_calls(tmp_path / "calls")["total"] == before
        assert (
            registry.get_sample_value(
                "vigil_gpu_process_memory_used_bytes",
                {
                    "gpu": "0",
                    "uuid": UUID0,
                    "pod": "",
                    "namespace": "",
                    "container": "",
                    "comm": "",
                    "pid": "4242",
                },
            )
            == 8_589_934_592
        )
    finally:
        collector.close()


def test_gpu_set_change_is_followed(nvml: Any, tmp_path: Path) -> None:
    s = scenario(tmp_path)
    s.write()
    poller = open_poller(nvml)
    try:
        assert len(poller.poll().gpus) == 2
        s.gpus.append(Gpu("GPU-cccccccc-0000-0000-0000-000000000000", bus="00000000:3B:00.0"))
        s.write()
        assert [g.uuid for g in poller.poll().gpus][2] == "GPU-cccccccc-0000-0000-0000-000000000000"
        s.gpus = s.gpus[:1]
        s.write()
        assert [g.uuid for g in poller.poll().gpus] == [UUID0]
    finally:
        poller.close()
