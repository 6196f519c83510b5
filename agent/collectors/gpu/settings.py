"""Settings of the gpu collector (``--collector.gpu.<option>``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.options import option


@dataclass(frozen=True)
class GpuSettings:
    interval: float = option(5.0, "how often NVML is polled.", type="duration", minimum=0.1)
    pcie_throughput: bool = option(
        False,
        "also read PCIe throughput (nvmlDeviceGetPcieThroughput blocks ~20 ms per "
        "direction and GPU).",
    )
    xid_events: bool = option(True, "count XID errors from an NVML event set.")
