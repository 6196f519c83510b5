"""`vigil doctor` checks for the gpu collector: the NVML library, nvmlInit, the GPUs."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Any

from agent.collectors.gpu.collector import load_nvml
from agent.collectors.gpu.poll import LIBRARY_MISSING, explain_init_error
from agent.collectors.gpu.settings import GpuSettings
from agent.registry import Check, CollectorUnavailable, Paths

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
        return [Check("NVML library", False, detail, fix)]
    try:
        n = load_nvml()
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
