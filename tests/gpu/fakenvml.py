"""Build and drive the fake libnvidia-ml.so.1 (fake_nvml/fake_nvml.c) from tests and bench.

The fake is a real shared library that pynvml loads through ctypes exactly as it loads
NVIDIA's. A :class:`Scenario` is the file it serves (format: fake_nvml/scenario.md);
:func:`read_calls` reads the call counters it keeps in a shared file.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent / "fake_nvml" / "fake_nvml.c"
SONAME = "libnvidia-ml.so.1"
RECORD = struct.Struct("56sQ")  # struct counter { char name[56]; uint64_t count; }


def build(out_dir: Path) -> Path:
    """Compiles the fake into ``out_dir/libnvidia-ml.so.1``; returns its path."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("gcc is needed to build the fake NVML library (apt-get install gcc)")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / SONAME
    r = subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            f"-Wl,-soname,{SONAME}",
            "-o",
            str(lib),
            str(SOURCE),
            "-lpthread",
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"building the fake NVML library failed:\n{r.stderr}")
    return lib


def read_calls(path: Path) -> dict[str, int]:
    """Call counters: function name → calls so far ("total" is all of them)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    out: dict[str, int] = {}
    for off in range(0, len(data) - RECORD.size + 1, RECORD.size):
        raw, count = RECORD.unpack_from(data, off)
        name = raw.split(b"\0", 1)[0].decode()
        if name:
            out[name] = count
    return out


@dataclass
class Gpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    bus: str = "00000000:17:00.0"
    util: int = 37
    memutil: int = 12
    total: int = 85_899_345_920
    used: int = 21_474_836_480
    free: int = 63_887_065_088
    reserved: int = 537_919_488
    temp: int = 54
    power_mw: int = 215_500
    energy_mj: int = 123_456_789
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    reasons: int = 0x44  # sw_power_cap + hw_thermal_slowdown
    ecc_corrected: int = 3
    ecc_uncorrected: int = 1
    replay: int = 2
    pstate: int = 0
    lost: int = 0
    mig: int = 0
    pcie_tx_kbs: int = 0
    pcie_rx_kbs: int = 0
    unsupported: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # fields answering UNKNOWN; ["all"]
    no_permission: int = 0  # nvmlDeviceGetHandleByIndex answers NO_PERMISSION
    util_buffer: int = 0  # fixed size of the process-utilization buffer, zero-padded

    def line(self) -> str:
        parts = []
        for k, v in vars(self).items():
            if isinstance(v, list):
                if v:
                    parts.append(f"{k}={','.join(v)}")
            elif isinstance(v, str):
                parts.append(f'{k}="{v}"')
            else:
                parts.append(f"{k}={v}")
        return "gpu " + " ".join(parts)


@dataclass
class Scenario:
    """What the fake serves. :meth:`write` replaces the file atomically."""

    path: Path
    gpus: list[Gpu] = field(default_factory=list)
    procs: list[dict[str, Any]] = field(default_factory=list)
    migs: list[dict[str, Any]] = field(default_factory=list)
    xids: list[tuple[int, int]] = field(default_factory=list)  # (gpu, code), seq = position
    driver: str = "550.54.15"
    init_error: int = 0

    def text(self) -> str:
        lines = [f"driver version={self.driver}"]
        if self.init_error:
            lines.append(f"init error={self.init_error}")
        lines += [g.line() for g in self.gpus]
        for m in self.migs:
            lines.append("mig " + " ".join(f"{k}={v}" for k, v in m.items()))
        for p in self.procs:
            lines.append("proc " + " ".join(f"{k}={v}" for k, v in p.items()))
        for seq, (gpu, code) in enumerate(self.xids, start=1):
            lines.append(f"xid gpu={gpu} code={code} seq={seq}")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.text())
        os.replace(tmp, self.path)


def two_gpus(path: Path, pids: tuple[int, ...] = (4242, 4343, 4444)) -> Scenario:
    """Two healthy GPUs; processes: pids[0] and pids[1] on GPU 0, pids[2] on GPU 1."""
    s = Scenario(path)
    s.gpus = [
        Gpu("GPU-11111111-2222-3333-4444-555555555555"),
        Gpu(
            "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            bus="00000000:2A:00.0",
            util=91,
            memutil=64,
            used=42_949_672_960,
            free=42_412_752_896,
            temp=71,
            power_mw=650_250,
            energy_mj=987_654_321,
            sm_mhz=1755,
            reasons=0x0,
            ecc_corrected=0,
            ecc_uncorrected=0,
            replay=0,
            pstate=2,
        ),
    ]
    s.procs = [
        {"gpu": 0, "pid": pids[0], "mem": 8_589_934_592, "sm": 30},
        {"gpu": 0, "pid": pids[1], "mem": 2_147_483_648, "sm": 5},
        {"gpu": 1, "pid": pids[2], "mem": 40_802_189_312, "sm": 88},
    ]
    return s
