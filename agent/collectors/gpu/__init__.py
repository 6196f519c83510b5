"""GPU health and per-process GPU use from NVML.

Measures, per GPU: utilization, memory (used / free / total / reserved), temperature,
power, energy, SM and memory clocks, clock-event (throttle) reasons, ECC and PCIe replay
counters, performance state, MIG instances, XID errors, and ``vigil_gpu_up``; per process
(labelled by pod/container from discovery): GPU memory and SM share since the last poll.
Source: NVML through ``nvidia-ml-py`` (``import pynvml``), which loads
``libnvidia-ml.so.1``. Cost: one poll every ``interval`` (default 5 s) of about 18 NVML
calls per GPU in one background thread (see poll.py), plus an XID thread asleep in
``nvmlEventSetWait`` (events.py); a scrape makes no NVML call. Privilege: read access
to /dev/nvidia* (no SYS_ADMIN); root to list other users' GPU processes.

Every GPU process joins the discovery watched set (source "gpu").
"""

from __future__ import annotations

from agent.collectors.gpu.collector import factory
from agent.collectors.gpu.doctor import doctor
from agent.collectors.gpu.metrics import METRICS
from agent.collectors.gpu.settings import GpuSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="gpu",
    help="GPU health and per-process GPU use from NVML",
    settings=GpuSettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
