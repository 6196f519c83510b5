"""The gpu collector's metrics, declared once (agent/metrics.py): rendered by
collector.py, listed in docs/metrics.md, checked against dashboards and rules."""

from __future__ import annotations

from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

OWNER = "gpu"
GPU = ("gpu", "uuid")
PROCESS = (*GPU, *LABEL_NAMES)
MIG = (*GPU, "gpu_instance", "compute_instance")


def _gpu(name: str, type_: str, help_: str, unit: str = "") -> MetricSpec:
    """A per-GPU family: labelled ``gpu,uuid`` and nothing else."""
    return MetricSpec(name, type_, help_, OWNER, GPU, unit)


INFO = MetricSpec(
    "vigil_gpu_info",
    "gauge",
    "A GPU NVML sees, with its identity (value is always 1).",
    OWNER,
    (*GPU, "name", "pci_bus_id", "driver_version"),
)
UP = _gpu("vigil_gpu_up", "gauge", "Whether the GPU answers NVML (1) or not (0).")

# Per-GPU values of the poller's snapshot, keyed as in ``GpuSample.values``.
VALUES: dict[str, MetricSpec] = {
    "utilization_ratio": _gpu(
        "vigil_gpu_utilization_ratio", "gauge", "Share of time a kernel ran (0..1).", "ratio"
    ),
    "memory_utilization_ratio": _gpu(
        "vigil_gpu_memory_utilization_ratio",
        "gauge",
        "Share of time device memory was read or written (0..1).",
        "ratio",
    ),
    "memory_used_bytes": _gpu(
        "vigil_gpu_memory_used_bytes", "gauge", "Device memory in use.", "bytes"
    ),
    "memory_free_bytes": _gpu(
        "vigil_gpu_memory_free_bytes", "gauge", "Device memory free.", "bytes"
    ),
    "memory_total_bytes": _gpu(
        "vigil_gpu_memory_total_bytes", "gauge", "Device memory installed.", "bytes"
    ),
    "memory_reserved_bytes": _gpu(
        "vigil_gpu_memory_reserved_bytes",
        "gauge",
        "Device memory reserved by the driver and firmware.",
        "bytes",
    ),
    "temperature_celsius": _gpu(
        "vigil_gpu_temperature_celsius", "gauge", "GPU die temperature.", "celsius"
    ),
    "power_watts": _gpu("vigil_gpu_power_watts", "gauge", "Power draw of the board.", "watts"),
    "performance_state": _gpu(
        "vigil_gpu_performance_state",
        "gauge",
        "Performance state, 0 (P0, fastest) to 15 (P15, slowest).",
    ),
    "energy_joules": _gpu(
        "vigil_gpu_energy_joules_total",
        "counter",
        "Energy used since the driver loaded.",
        "joules",
    ),
    "pcie_replays": _gpu(
        "vigil_gpu_pcie_replay_errors_total",
        "counter",
        "PCIe link-level replays (retransmissions after errors).",
    ),
}
CLOCK = MetricSpec(
    "vigil_gpu_clock_hertz",
    "gauge",
    "Current clock frequency by domain.",
    OWNER,
    (*GPU, "clock"),
    unit="hertz",
)
CLOCK_EVENT = MetricSpec(
    "vigil_gpu_clock_event_active",
    "gauge",
    "Whether a clock-event (throttle) reason holds the clocks down now (1) or not (0).",
    OWNER,
    (*GPU, "reason"),
)
ECC_ERRORS = MetricSpec(
    "vigil_gpu_ecc_errors_total",
    "counter",
    "ECC memory errors since the driver loaded, by type.",
    OWNER,
    (*GPU, "type"),
)
PCIE_THROUGHPUT = MetricSpec(
    "vigil_gpu_pcie_throughput_bytes_per_second",
    "gauge",
    "PCIe throughput by direction (only with --collector.gpu.pcie-throughput).",
    OWNER,
    (*GPU, "direction"),
    unit="bytes_per_second",
)
XID_ERRORS = MetricSpec(
    "vigil_gpu_xid_errors_total",
    "counter",
    "XID errors reported by the driver, by XID code.",
    OWNER,
    (*GPU, "xid"),
)
XID_WAIT_ERRORS = MetricSpec(
    "vigil_gpu_xid_wait_errors_total",
    "counter",
    "Failed waits for NVML events (each rebuilds the event set), by error.",
    OWNER,
    ("error",),
)
INACCESSIBLE = MetricSpec(
    "vigil_gpu_inaccessible",
    "gauge",
    "GPUs NVML counts that this agent may not open (NO_PERMISSION); not reported.",
    OWNER,
)
PROCESS_MEMORY = MetricSpec(
    "vigil_gpu_process_memory_used_bytes",
    "gauge",
    "GPU memory used by a process.",
    OWNER,
    PROCESS,
    unit="bytes",
)
PROCESS_UTILIZATION = MetricSpec(
    "vigil_gpu_process_utilization_ratio",
    "gauge",
    "Share of the GPU's SMs a process used since the previous poll (0..1).",
    OWNER,
    PROCESS,
    unit="ratio",
)
MIG_INFO = MetricSpec(
    "vigil_gpu_mig_info",
    "gauge",
    "A MIG instance of a GPU in MIG mode (value is always 1).",
    OWNER,
    (*MIG, "mig_uuid"),
)
# A MIG instance's memory, keyed as in ``MigSample.memory``.
MIG_MEMORY: dict[str, MetricSpec] = {
    k: MetricSpec(
        f"vigil_gpu_mig_memory_{k}_bytes",
        "gauge",
        f"Memory {k} of a MIG instance.",
        OWNER,
        MIG,
        unit="bytes",
    )
    for k in ("used", "free", "total")
}
POLL_DURATION = MetricSpec(
    "vigil_gpu_poll_duration_seconds",
    "gauge",
    "Wall time of the last NVML poll of all GPUs.",
    OWNER,
    unit="seconds",
)
NVML_ERRORS = MetricSpec(
    "vigil_gpu_nvml_errors_total",
    "counter",
    "NVML calls that failed unexpectedly (not NotSupported, not a lost GPU), by error.",
    OWNER,
    ("error",),
)

METRICS = (
    INFO,
    UP,
    *VALUES.values(),
    CLOCK,
    CLOCK_EVENT,
    ECC_ERRORS,
    PCIE_THROUGHPUT,
    XID_ERRORS,
    XID_WAIT_ERRORS,
    INACCESSIBLE,
    PROCESS_MEMORY,
    PROCESS_UTILIZATION,
    MIG_INFO,
    *MIG_MEMORY.values(),
    POLL_DURATION,
    NVML_ERRORS,
)
