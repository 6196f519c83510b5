"""`vigil doctor` checks for the gpu collector: the NVML library, nvmlInit, the GPUs.

No NVIDIA driver (library absent, kernel driver not loaded, no GPU) is "not applicable",
an ok line: a CPU-only node is not broken. A driver that is there and fails is a FAIL."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Any

from agent.collectors.gpu.collector import load_nvml
from agent.collectors.gpu.poll import LIBRARY_MISSING, NO_GPU, explain_init_error, no_driver
from agent.collectors.gpu.settings import GpuSettings
from agent.registry import Check, CollectorUnavailable, Paths

# How a check says "nothing to observe on this host"; the agent's
# vigil_collector_state{state="not_applicable"} is the same fact on /metrics.
NOT_APPLICABLE = "not applicable (no NVIDIA GPU on this host)"
LIBRARY = "libnvidia-ml.so.1"  # the one name pynvml loads, through CDLL's search path


def doctor(settings: GpuSettings, paths: Paths) -> list[Check]:
    """Library loadable? nvmlInit works? How many GPUs? Each with the reason and the fix."""
    checks: list[Check] = []
    try:
        ctypes.CDLL(LIBRARY)
        checks.append(Check("NVML library", True, f"{LIBRARY} loads"))
    except OSError as exc:
        found = ctypes.util.find_library("nvidia-ml")
        reason, fix = LIBRARY_MISSING
        detail = f"{reason} ({exc})" + (f"; ld.so.cache lists {found}" if found else "")
        return [Check("NVML library", True, f"{NOT_APPLICABLE}: {detail}", fix)]
    try:
        n = load_nvml()
    except CollectorUnavailable as exc:
        return [*checks, Check("nvidia-ml-py", False, exc.reason, exc.fix)]
    try:
        n.nvmlInit()
    except n.NVMLError as exc:
        reason, fix = explain_init_error(n, exc)
        if no_driver(n, exc):
            return [*checks, Check("nvmlInit", True, f"{NOT_APPLICABLE}: {reason}", fix)]
        return [*checks, Check("nvmlInit", False, reason, fix)]
    try:
        version = n.nvmlSystemGetDriverVersion()
        count = n.nvmlDeviceGetCount()
        checks.append(Check("nvmlInit", True, f"driver {_text(version)}"))
        if count:
            checks.append(Check("GPUs", True, f"{count} visible"))
        else:
            checks.append(Check("GPUs", True, f"{NOT_APPLICABLE}: {NO_GPU[0]}", NO_GPU[1]))
    except n.NVMLError as exc:
        checks.append(Check("nvmlInit", False, f"NVML answers with an error: {exc}", ""))
    finally:
        with contextlib.suppress(n.NVMLError):
            n.nvmlShutdown()
    return checks


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
