"""GPU health and per-process GPU use from NVML.

Measures, per GPU: utilization, memory (used / free / total / reserved), temperature,
power, energy, SM and memory clocks, clock-event (throttle) reasons, ECC and PCIe replay
counters, performance state, MIG instances, XID errors, and ``vigil_gpu_up``; per process
(labelled by pod/container from discovery): GPU memory and SM share since the last poll.
Source: NVML through ``nvidia-ml-py`` (``import pynvml``), which loads
``libnvidia-ml.so.1``. Cost: one poll every ``interval`` (default 5 s) of about 18 NVML
calls per GPU in one background thread (see gpu_poll.py), plus an XID thread asleep in
``nvmlEventSetWait`` (gpu_events.py); a scrape makes no NVML call. Privilege: read access
to /dev/nvidia* (no SYS_ADMIN); root to list other users' GPU processes.

Every GPU process joins the discovery watched set (source "gpu").
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.collectors.gpu_events import XidWatcher
from agent.collectors.gpu_poll import LIBRARY_MISSING, Poller, Snapshot, explain_init_error
from agent.discovery import LABEL_NAMES, ProcessInfo, series_labels
from agent.registry import (
    Check,
    CollectorSpec,
    CollectorUnavailable,
    Context,
    Option,
    SnapshotCollector,
)

GPU = ["gpu", "uuid"]
PROCESS = [*GPU, *LABEL_NAMES]
LIBRARY = "libnvidia-ml.so.1"
# What pyproject.toml asks for; the fix a missing package's message gives.
NVML_REQUIREMENT = (
    "nvidia-ml-py>=12.535.77,<14"  # the one name pynvml loads, through CDLL's search path
)

# Per-GPU gauges: snapshot key → (metric name, help).
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("utilization_ratio", "vigil_gpu_utilization_ratio", "Share of time a kernel ran (0..1)."),
    (
        "memory_utilization_ratio",
        "vigil_gpu_memory_utilization_ratio",
        "Share of time device memory was read or written (0..1).",
    ),
    ("memory_used_bytes", "vigil_gpu_memory_used_bytes", "Device memory in use."),
    ("memory_free_bytes", "vigil_gpu_memory_free_bytes", "Device memory free."),
    ("memory_total_bytes", "vigil_gpu_memory_total_bytes", "Device memory installed."),
    (
        "memory_reserved_bytes",
        "vigil_gpu_memory_reserved_bytes",
        "Device memory reserved by the driver and firmware.",
    ),
    ("temperature_celsius", "vigil_gpu_temperature_celsius", "GPU die temperature."),
    ("power_watts", "vigil_gpu_power_watts", "Power draw of the board."),
    (
        "performance_state",
        "vigil_gpu_performance_state",
        "Performance state, 0 (P0, fastest) to 15 (P15, slowest).",
    ),
)
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("energy_joules", "vigil_gpu_energy_joules", "Energy used since the driver loaded."),
    (
        "pcie_replays",
        "vigil_gpu_pcie_replay_errors",
        "PCIe link-level replays (retransmissions after errors).",
    ),
)


def render(
    snap: Snapshot,
    xids: dict[tuple[int, str, int], int],
    lookup: Callable[[int], ProcessInfo | None],
    wait_errors: Mapping[str, int] | None = None,
) -> list[Metric]:
    """Snapshot → metric families; every family is always present, possibly empty."""
    info = GaugeMetricFamily(
        "vigil_gpu_info",
        "A GPU NVML sees, with its identity (value is always 1).",
        labels=[*GPU, "name", "pci_bus_id", "driver_version"],
    )
    up = GaugeMetricFamily(
        "vigil_gpu_up", "Whether the GPU answers NVML (1) or not (0).", labels=GPU
    )
    gauges = {k: GaugeMetricFamily(name, h, labels=GPU) for k, name, h in GAUGES}
    counters = {k: CounterMetricFamily(name, h, labels=GPU) for k, name, h in COUNTERS}
    clocks = GaugeMetricFamily(
        "vigil_gpu_clock_hertz", "Current clock frequency by domain.", labels=[*GPU, "clock"]
    )
    events = GaugeMetricFamily(
        "vigil_gpu_clock_event_active",
        "Whether a clock-event (throttle) reason holds the clocks down now (1) or not (0).",
        labels=[*GPU, "reason"],
    )
    ecc = CounterMetricFamily(
        "vigil_gpu_ecc_errors",
        "ECC memory errors since the driver loaded, by type.",
        labels=[*GPU, "type"],
    )
    pcie = GaugeMetricFamily(
        "vigil_gpu_pcie_throughput_bytes_per_second",
        "PCIe throughput by direction (only with --collector.gpu.pcie-throughput).",
        labels=[*GPU, "direction"],
    )
    xid = CounterMetricFamily(
        "vigil_gpu_xid_errors",
        "XID errors reported by the driver, by XID code.",
        labels=[*GPU, "xid"],
    )
    proc_mem = GaugeMetricFamily(
        "vigil_gpu_process_memory_used_bytes", "GPU memory used by a process.", labels=PROCESS
    )
    proc_util = GaugeMetricFamily(
        "vigil_gpu_process_utilization_ratio",
        "Share of the GPU's SMs a process used since the previous poll (0..1).",
        labels=PROCESS,
    )
    mig_info = GaugeMetricFamily(
        "vigil_gpu_mig_info",
        "A MIG instance of a GPU in MIG mode (value is always 1).",
        labels=[*GPU, "gpu_instance", "compute_instance", "mig_uuid"],
    )
    mig_labels = [*GPU, "gpu_instance", "compute_instance"]
    mig_mem = {
        k: GaugeMetricFamily(
            f"vigil_gpu_mig_memory_{k}_bytes", f"Memory {k} of a MIG instance.", labels=mig_labels
        )
        for k in ("used", "free", "total")
    }
    for g in snap.gpus:
        ids = [str(g.index), g.uuid]
        info.add_metric([*ids, g.name, g.pci_bus_id, snap.driver_version], 1.0)
        up.add_metric(ids, 1.0 if g.up else 0.0)
        if not g.up:
            continue
        for field, value in g.values.items():
            fam = gauges.get(field) or counters.get(field)
            if fam is not None:
                fam.add_metric(ids, value)
        for clock, hz in g.clocks.items():
            clocks.add_metric([*ids, clock], hz)
        for reason, active in g.clock_events.items():
            events.add_metric([*ids, reason], float(active))
        for kind, count in g.ecc.items():
            ecc.add_metric([*ids, kind], count)
        for direction, rate in g.pcie.items():
            pcie.add_metric([*ids, direction], rate)
        for m in g.mig:
            gi, ci = str(m.gpu_instance), str(m.compute_instance)
            mig_info.add_metric([*ids, gi, ci, m.uuid], 1.0)
            for k, v in m.memory.items():
                mig_mem[k].add_metric([*ids, gi, ci], v)
        # Processes of one pod/container/comm share a label set: their use adds up.
        memory: dict[tuple[str, ...], float] = {}
        share: dict[tuple[str, ...], float] = {}
        for p in g.processes.values():
            key = (*ids, *series_labels(lookup(p.pid), p.pid))
            if p.memory_bytes is not None:
                memory[key] = memory.get(key, 0.0) + p.memory_bytes
            if p.sm_ratio is not None:
                share[key] = min(1.0, share.get(key, 0.0) + p.sm_ratio)
        for key, value in memory.items():
            proc_mem.add_metric(list(key), value)
        for key, value in share.items():
            proc_util.add_metric(list(key), value)
    for (index, uuid, code), count in sorted(xids.items()):
        xid.add_metric([str(index), uuid, str(code)], float(count))
    xid_wait = CounterMetricFamily(
        "vigil_gpu_xid_wait_errors",
        "Failed waits for NVML events (each rebuilds the event set), by error.",
        labels=["error"],
    )
    for kind, count in sorted((wait_errors or {}).items()):
        xid_wait.add_metric([kind], float(count))
    inaccessible = GaugeMetricFamily(
        "vigil_gpu_inaccessible",
        "GPUs NVML counts that this agent may not open (NO_PERMISSION); not reported.",
    )
    inaccessible.add_metric([], float(len(snap.inaccessible)))
    duration = GaugeMetricFamily(
        "vigil_gpu_poll_duration_seconds", "Wall time of the last NVML poll of all GPUs."
    )
    duration.add_metric([], snap.duration_s)
    errors = CounterMetricFamily(
        "vigil_gpu_nvml_errors",
        "NVML calls that failed unexpectedly (not NotSupported, not a lost GPU), by error.",
        labels=["error"],
    )
    for kind, count in sorted(snap.errors.items()):
        errors.add_metric([kind], float(count))
    return [
        info,
        up,
        *gauges.values(),
        *counters.values(),
        clocks,
        events,
        ecc,
        pcie,
        xid,
        xid_wait,
        inaccessible,
        proc_mem,
        proc_util,
        mig_info,
        *mig_mem.values(),
        duration,
        errors,
    ]


class GpuCollector(SnapshotCollector):
    name = "gpu"

    def __init__(
        self,
        ctx: Context,
        nvml: Any,
        interval: float = 5.0,
        pcie_throughput: bool = False,
        xid_events: bool = True,
    ) -> None:
        super().__init__(interval)
        self.discovery = ctx.discovery
        self.nvml = nvml
        self.xid = XidWatcher(nvml) if xid_events else None
        self.poller = Poller(nvml, pcie_throughput=pcie_throughput, on_device=self._on_device)
        self._rendered: (
            tuple[Snapshot, Any, dict[Any, int], dict[str, int], list[Metric]] | None
        ) = None

    def _on_device(self, index: int, handle: Any, uuid: str) -> None:
        if self.xid is not None:
            self.xid.register(index, handle, uuid)

    def open(self) -> None:
        self.poller.open()
        if self.xid is not None and not self.xid.start():
            self.xid = None

    def refresh(self) -> Snapshot:
        snap = self.poller.poll()
        self.discovery.set_extra("gpu", {pid for g in snap.gpus for pid in g.processes})
        return snap

    def render(self, snapshot: Snapshot) -> Iterable[Metric]:
        xids = self.xid.counts() if self.xid is not None else {}
        wait_errors = self.xid.wait_errors() if self.xid is not None else {}
        # Scrapes between two polls see the same families: built once, rendered many times.
        # Discovery replaces its watched map on each refresh, so its identity says whether
        # a process's labels may have changed.
        # The cache holds the objects themselves, so their identities cannot be reused.
        watched = self.discovery.snapshot()
        cached = self._rendered
        if (
            cached is not None
            and cached[0] is snapshot
            and cached[1] is watched
            and cached[2] == xids
            and cached[3] == wait_errors
        ):
            return cached[4]
        families = render(snapshot, xids, self.discovery.get, wait_errors)
        self._rendered = (snapshot, watched, xids, wait_errors, families)
        return families

    def shutdown(self) -> None:
        if self.xid is not None:
            self.xid.close()
        self.poller.close()


def load_nvml() -> Any:
    """Imports pynvml; a missing package is a clear CollectorUnavailable, not a traceback."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise CollectorUnavailable(
            f"the nvidia-ml-py package is not installed: {exc}",
            f"pip install '{NVML_REQUIREMENT}'",
        ) from None


def factory(ctx: Context, options: dict[str, Any]) -> GpuCollector:
    return GpuCollector(
        ctx,
        load_nvml(),
        interval=float(options.get("interval", 5.0)),
        pcie_throughput=bool(options.get("pcie-throughput", False)),
        xid_events=bool(options.get("xid-events", True)),
    )


def doctor(options: dict[str, Any], nvml: Any = None) -> list[Check]:
    """Library loadable? nvmlInit works? How many GPUs? Each with the reason and the fix."""
    checks: list[Check] = []
    try:
        ctypes.CDLL(LIBRARY)
        checks.append(Check("NVML library", True, f"{LIBRARY} loads"))
    except OSError as exc:
        found = ctypes.util.find_library("nvidia-ml")
        reason, fix = LIBRARY_MISSING
        detail = f"{reason} ({exc})" + (f"; ld.so.cache lists {found}" if found else "")
        return [Check("NVML library", False, detail, fix)]
    try:
        n = nvml if nvml is not None else load_nvml()
    except CollectorUnavailable as exc:
        return [*checks, Check("nvidia-ml-py", False, exc.reason, exc.fix)]
    try:
        n.nvmlInit()
    except n.NVMLError as exc:
        reason, fix = explain_init_error(n, exc)
        return [*checks, Check("nvmlInit", False, reason, fix)]
    try:
        version = n.nvmlSystemGetDriverVersion()
        count = n.nvmlDeviceGetCount()
        checks.append(Check("nvmlInit", True, f"driver {_text(version)}"))
        if count:
            checks.append(Check("GPUs", True, f"{count} visible"))
        else:
            checks.append(
                Check(
                    "GPUs",
                    False,
                    "NVML works but sees no GPU",
                    "in a container, request GPUs (nvidia.com/gpu) or set "
                    "NVIDIA_VISIBLE_DEVICES=all",
                )
            )
    except n.NVMLError as exc:
        checks.append(Check("nvmlInit", False, f"NVML answers with an error: {exc}", ""))
    finally:
        with contextlib.suppress(n.NVMLError):
            n.nvmlShutdown()
    return checks


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


SPEC = CollectorSpec(
    name="gpu",
    help="GPU health and per-process GPU use from NVML",
    options=(
        Option("interval", "duration", 5.0, "how often NVML is polled.", minimum=0.1),
        Option(
            "pcie-throughput",
            "bool",
            False,
            "also read PCIe throughput (nvmlDeviceGetPcieThroughput blocks ~20 ms per "
            "direction and GPU).",
        ),
        Option("xid-events", "bool", True, "count XID errors from an NVML event set."),
    ),
    factory=factory,
    doctor=doctor,
)
