"""The NVML poller behind the GPU collector: one session, cached handles, one snapshot a poll.

Measures, per GPU, what NVML answers without profiling privileges (utilization, memory,
temperature, power, energy, clocks, clock-event reasons, ECC and PCIe replay counters,
performance state, MIG instances) and, per process, GPU memory
(``nvmlDeviceGetComputeRunningProcesses_v3`` and, for MPS clients,
``nvmlDeviceGetMPSComputeRunningProcesses_v3``, both read by :func:`process_list` whatever
entry size the driver writes) and SM share since the previous poll
(``nvmlDeviceGetProcessUtilization``, filtered as nvtop filters it). Cost: about 18 NVML
calls per GPU per poll, each a driver ioctl of tens of microseconds;
``nvmlDeviceGetPcieThroughput`` samples the link for ~20 ms per direction and is therefore
opt-in. Privilege: read access to /dev/nvidia*
(no SYS_ADMIN); process lists of other users' processes need root or the same user.

Everything here runs in the poller's thread; a scrape only reads the :class:`Snapshot`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agent.log import log_limited
from agent.registry import CollectorNotApplicable, CollectorUnavailable

log = logging.getLogger("vigil.gpu")

# Clock-event (throttle) reasons, bit → label; from nvml.h's nvmlClocksEventReason*.
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
PSTATE_UNKNOWN = 32  # NVML_PSTATE_UNKNOWN
# A process list can grow between pynvml's size query and its fill call; past three
# tries in one poll something is starting processes faster than we can list them.
PROCESS_LIST_TRIES = 3
# A process-utilization sample stamped further ahead of the host's clock than this is
# garbage (seen on real drivers); believing it would freeze the cursor there. The slack
# covers a clock stepped back by NTP.
FUTURE_SLACK_US = 10_000_000

# nvmlProcessInfo_v3_t as the driver writes it: pid, 4 bytes padding, usedGpuMemory,
# gpuInstanceId, computeInstanceId (24 bytes), plus usedGpuCcProtectedMemory (32 bytes) on
# the R535 drivers that carried it (535.43-535.86 and 535.104.05+ on that branch). pynvml
# bakes one of the two into its struct per release (12.535.77: 32; 13.x: 24), so the list is
# read here instead, into a buffer laid out for 32-byte entries.
PROCESS_ENTRY = struct.Struct("<I4xQII")
PROCESS_ENTRY_CC = 32
# The buffer is filled with this byte first: the bytes past ``count`` 24-byte entries are
# still this after a 24-byte driver, and hold the last entries after a 32-byte one.
UNWRITTEN = 0xA5
NVML_VALUE_NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF
# What a real entry can hold, to tell a right reading from a shifted one. Pids: the
# kernel's PID_MAX_LIMIT on 64-bit (no host's pid_max is higher; NVML names host pids).
# Instance ids: 0xFFFFFFFF outside MIG, else small (a GPU splits into at most 7 GPU
# instances, ids seen up to 14; the bound leaves room). Memory: the GPU's total when known,
# else 1 PiB, beyond any GPU.
PID_LIMIT = 4_194_304
NO_INSTANCE = 0xFFFFFFFF
MAX_INSTANCE_ID = 64
MEMORY_LIMIT = 1 << 50


# --- pure conversions -----------------------------------------------------------------


def clock_event_flags(bits: int) -> dict[str, int]:
    """``nvmlDeviceGetCurrentClocksEventReasons`` bitmask → one 0/1 value per reason."""
    return {name: 1 if bits & bit else 0 for bit, name in CLOCK_EVENT_REASONS}


def percent_to_ratio(value: float) -> float:
    """NVML's 0..100 percentages → 0..1; clamped, since sampled values overshoot slightly."""
    return min(max(value / 100.0, 0.0), 1.0)


def sm_ratios(
    samples: Iterable[Any],
    since_us: int = 0,
    now_us: int | None = None,
    pids: Iterable[int] | None = None,
) -> tuple[dict[int, float], int]:
    """Process utilization samples → (pid → mean SM share, newest usable timestamp in µs).

    The driver keeps a ring of samples (one per process per sample period); those newer
    than the previous poll's newest are averaged per pid: the process's share of the SMs
    since that poll. As nvtop does (its issue #110), a sample counts only when its pid is a
    listed process (``pids``; the buffer comes back padded with pid-0 entries), its values
    are percentages (≤ 100) and it is newer than ``since_us``; and, beyond nvtop, not stamped
    further than FUTURE_SLACK_US ahead of ``now_us``. Only counted samples move the cursor,
    so one bogus timestamp cannot hide every later sample.
    """
    allowed = None if pids is None else set(pids)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    newest = since_us
    for s in samples:
        pid, stamp, sm = int(s.pid), int(s.timeStamp), int(s.smUtil)
        if pid == 0 or (allowed is not None and pid not in allowed):
            continue
        if sm > 100 or int(getattr(s, "memUtil", 0)) > 100:
            continue
        if stamp <= since_us or (now_us is not None and stamp > now_us + FUTURE_SLACK_US):
            continue
        sums[pid] = sums.get(pid, 0.0) + float(sm)
        counts[pid] = counts.get(pid, 0) + 1
        newest = max(newest, stamp)
    return {pid: percent_to_ratio(sums[pid] / counts[pid]) for pid in sums}, newest


def writes_cc_entries(driver: str) -> bool | None:
    """Whether a driver of this version writes 32-byte process entries; None: unparseable.

    The R535 drivers 535.43-535.86 and 535.104.05+ on that branch carried
    ``usedGpuCcProtectedMemory`` (nvml.h of those releases); every other driver writes 24.
    """
    try:
        parts = [int(x) for x in driver.strip().split(".")]
    except ValueError:
        return None
    if len(parts) < 2:
        return None
    major, minor, patch = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    if major != 535:
        return False
    return 43 <= minor <= 86 or minor > 104 or (minor == 104 and patch >= 5)


def entries_plausible(raw: bytes, count: int, size: int, memory_total: float | None) -> bool:
    """Whether ``count`` entries read at ``size`` bytes each all look like processes: a pid
    in 1..PID_LIMIT, instance ids 0xFFFFFFFF or ≤ MAX_INSTANCE_ID, memory (and, at 32 bytes,
    protected memory) not available or ≤ the GPU's total."""
    if size * count > len(raw):
        return False
    limit = MEMORY_LIMIT if memory_total is None else memory_total
    for i in range(count):
        pid, used, gi, ci = PROCESS_ENTRY.unpack_from(raw, i * size)
        memories = [used]
        if size == PROCESS_ENTRY_CC:
            memories += struct.unpack_from("<Q", raw, i * size + PROCESS_ENTRY.size)
        if not 0 < pid <= PID_LIMIT:
            return False
        if any(v != NO_INSTANCE and v > MAX_INSTANCE_ID for v in (gi, ci)):
            return False
        if any(m != NVML_VALUE_NOT_AVAILABLE and m > limit for m in memories):
            return False
    return True


def process_entry_size(
    raw: bytes, count: int, *, memory_total: float | None = None, driver: str = ""
) -> int:
    """Bytes per entry the driver wrote into ``raw`` (pre-filled with UNWRITTEN): 24 or 32.

    The buffer is read at both sizes and the one at which every entry is plausible
    (:func:`entries_plausible`) wins: a shifted reading puts a padding or protected-memory
    word where a pid belongs (pid 0) and a pid or memory half where an instance id does.
    What the driver wrote settles it too: after ``count`` 24-byte entries the next
    ``8 * count`` bytes are untouched (still UNWRITTEN) by a 24-byte driver, while a 32-byte
    driver wrote its last entries there. When both readings pass (or neither does), the
    driver version decides (:func:`writes_cc_entries`, the rule nvitop's ``libnvml.py``
    derives from exported symbols), and with no usable version the tail: all UNWRITTEN or
    all zero, 24. One entry reads the same either way.
    """
    if count < 2:
        return PROCESS_ENTRY.size
    tail = raw[PROCESS_ENTRY.size * count : PROCESS_ENTRY_CC * count]
    if all(b == UNWRITTEN for b in tail):
        return PROCESS_ENTRY.size
    fits = [
        size
        for size in (PROCESS_ENTRY.size, PROCESS_ENTRY_CC)
        if entries_plausible(raw, count, size, memory_total)
    ]
    if len(fits) == 1:
        return fits[0]
    cc = writes_cc_entries(driver)
    if cc is not None:
        return PROCESS_ENTRY_CC if cc else PROCESS_ENTRY.size
    return PROCESS_ENTRY.size if not any(tail) else PROCESS_ENTRY_CC


@dataclass(frozen=True)
class ProcessEntry:
    pid: int
    usedGpuMemory: int | None  # pynvml's name, so both read alike


def parse_process_entries(
    raw: bytes, count: int, *, memory_total: float | None = None, driver: str = ""
) -> list[ProcessEntry]:
    """A filled process-info buffer → its entries, at the entry size the driver used."""
    size = process_entry_size(raw, count, memory_total=memory_total, driver=driver)
    out = []
    for i in range(count):
        pid, used, _gi, _ci = PROCESS_ENTRY.unpack_from(raw, i * size)
        out.append(ProcessEntry(pid, None if used == NVML_VALUE_NOT_AVAILABLE else used))
    return out


def process_list(
    nvml: Any,
    symbol: str,
    handle: Any,
    *,
    memory_total: float | None = None,
    driver: str = "",
) -> list[ProcessEntry]:
    """``nvmlDevice...RunningProcesses_v3`` as pynvml calls it (size query, then a buffer of
    2n+5), read by :func:`parse_process_entries` (``memory_total``: the GPU's, bytes;
    ``driver``: its version); NVML errors raise pynvml's NVMLError."""
    fn = nvml._nvmlGetFunctionPointer(symbol)  # FunctionNotFound: this driver lacks it
    count = ctypes.c_uint(0)
    ret = fn(handle, ctypes.byref(count), None)
    if ret == nvml.NVML_SUCCESS:
        return []
    if ret != nvml.NVML_ERROR_INSUFFICIENT_SIZE:
        raise nvml.NVMLError(ret)
    capacity = count.value * 2 + 5  # room for processes that start between the two calls
    size = capacity * PROCESS_ENTRY_CC
    buf = ctypes.create_string_buffer(bytes([UNWRITTEN]) * size, size)
    count.value = capacity
    ret = fn(handle, ctypes.byref(count), buf)
    if ret != nvml.NVML_SUCCESS:
        raise nvml.NVMLError(ret)
    return parse_process_entries(
        buf.raw, min(count.value, capacity), memory_total=memory_total, driver=driver
    )


def decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def handle_address(handle: Any) -> int:
    """The address an NVML device handle points at; events name devices by it."""
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


# --- the snapshot ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessUse:
    pid: int
    memory_bytes: float | None  # None: NVML does not say (WDDM, or no compute context)
    sm_ratio: float | None  # None: per-process utilization unsupported on this GPU


@dataclass(frozen=True)
class MigInstance:
    gpu_instance: int
    compute_instance: int
    uuid: str
    memory: Mapping[str, float]  # used / free / total, bytes


@dataclass
class GpuSample:
    index: int
    uuid: str  # "" when the GPU was lost before it could be identified
    name: str = ""
    pci_bus_id: str = ""
    up: bool = False
    values: dict[str, float] = field(default_factory=dict)  # metric suffix → value
    clocks: dict[str, float] = field(default_factory=dict)  # sm / memory → Hz
    clock_events: dict[str, int] = field(default_factory=dict)
    ecc: dict[str, float] = field(default_factory=dict)  # corrected / uncorrected
    pcie: dict[str, float] = field(default_factory=dict)  # tx / rx → bytes/s
    processes: dict[int, ProcessUse] = field(default_factory=dict)
    mig: list[MigInstance] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    driver_version: str
    gpus: tuple[GpuSample, ...]
    duration_s: float
    errors: Mapping[str, int]  # NVML error class → count since start
    # GPUs NVML counts but this agent may not open (handle call: NO_PERMISSION), by index.
    inaccessible: tuple[int, ...] = ()


class GpuDown(Exception):
    """The GPU stopped answering (lost, needs reset, timed out): report it down."""


class GpuInaccessible(Exception):
    """NVML counts the GPU but refuses this process a handle: not ours to watch."""


@dataclass
class _Device:
    index: int
    handle: Any = None
    uuid: str = ""
    name: str = ""
    pci_bus_id: str = ""
    last_sample_us: int = 0  # newest process-utilization sample already counted
    reserved: float | None = None  # last reserved memory v2 reported: v1 counts it as used
    memory_total: float | None = None  # bytes, last reported: bounds a process's memory


class Poller:
    """Holds the NVML session; :meth:`poll` returns a fresh :class:`Snapshot`."""

    def __init__(
        self,
        nvml: Any,
        *,
        pcie_throughput: bool = False,
        on_device: Callable[[int, Any, str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.nvml = nvml
        self.pcie_throughput = pcie_throughput
        self._on_device = on_device
        self._clock = clock
        self._wall = wall
        self.driver_version = ""
        self._devices: dict[int, _Device] = {}
        self._unsupported: set[tuple[str, str]] = set()
        self._errors: dict[str, int] = {}
        self._answered = 0  # NVML calls answered / failed while sampling one GPU
        self._failed = 0
        self._inaccessible_logged: set[int] = set()
        # Absent from older nvidia-ml-py releases (12.535.77 lacks it).
        self._mismatch: type[BaseException] | None = getattr(nvml, "NVMLLibraryMismatchError", None)
        n = nvml
        self._down_codes = {
            getattr(n, name)
            for name in (
                "NVML_ERROR_GPU_IS_LOST",
                "NVML_ERROR_RESET_REQUIRED",
                "NVML_ERROR_TIMEOUT",
                "NVML_ERROR_GPU_NOT_FOUND",
            )
            if hasattr(n, name)
        }

    # -- session -----------------------------------------------------------------------
    def open(self) -> None:
        """``nvmlInit``; failures become :class:`CollectorUnavailable` with the fix."""
        try:
            self.nvml.nvmlInit()
            self.driver_version = decode(self.nvml.nvmlSystemGetDriverVersion())
            count = self.nvml.nvmlDeviceGetCount()
        except self.nvml.NVMLError as exc:
            reason, fix = explain_init_error(self.nvml, exc)
            if no_driver(self.nvml, exc):
                raise CollectorNotApplicable(reason, fix) from None
            raise CollectorUnavailable(reason, fix) from None
        if count == 0:
            # Checked once, here: a GPU that disappears later is lost, which is a failure.
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()
            raise CollectorNotApplicable(*NO_GPU)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError as exc:
            log.info("nvmlShutdown failed", extra={"collector": "gpu", "error": str(exc)})

    def handles(self) -> dict[int, tuple[Any, str]]:
        return {d.index: (d.handle, d.uuid) for d in self._devices.values() if d.handle}

    # -- one poll ------------------------------------------------------------------------
    def poll(self) -> Snapshot:
        started = self._clock()
        count = self.nvml.nvmlDeviceGetCount()  # a failure here fails the whole poll
        for gone in [i for i in self._devices if i >= count]:
            del self._devices[gone]
        samples = []
        inaccessible = []
        for index in range(count):
            dev = self._devices.setdefault(index, _Device(index))
            sample = GpuSample(index, dev.uuid, dev.name, dev.pci_bus_id)
            try:
                if dev.handle is None or not dev.uuid:
                    self._identify(dev)
                    sample = GpuSample(index, dev.uuid, dev.name, dev.pci_bus_id)
                self._answered = self._failed = 0
                self._sample(dev, sample)
                if self._answered == 0 and self._failed > 0:
                    # A broken GPU often answers NVML_ERROR_UNKNOWN to everything rather
                    # than GPU_IS_LOST: a GPU that answers nothing is down, not up and empty.
                    raise GpuDown(f"no NVML call answered ({self._failed} failed)")
                sample.up = True
                if self._on_device is not None and dev.uuid:
                    self._on_device(dev.index, dev.handle, dev.uuid)
            except GpuDown as exc:
                sample.up = False
                log_limited(
                    log,
                    logging.WARNING,
                    f"down:{index}",
                    "GPU not answering; reported down, retried every poll",
                    every=300.0,
                    collector="gpu",
                    gpu=index,
                    uuid=dev.uuid,
                    error=str(exc),
                )
            except GpuInaccessible as exc:
                # NVML's count includes GPUs this process may not open (device cgroup,
                # permissions on /dev/nvidiaN): another tenant's, not lost. Not reported.
                inaccessible.append(index)
                dev.handle = None
                if index not in self._inaccessible_logged:
                    self._inaccessible_logged.add(index)
                    log.info(
                        "GPU not accessible to this process; not reported",
                        extra={"collector": "gpu", "gpu": index, "error": str(exc)},
                    )
                continue
            samples.append(sample)
        return Snapshot(
            self.driver_version,
            tuple(samples),
            self._clock() - started,
            dict(self._errors),
            tuple(inaccessible),
        )

    def _identify(self, dev: _Device) -> None:
        n = self.nvml
        try:
            dev.handle = self._call(
                "handle",
                lambda: n.nvmlDeviceGetHandleByIndex(dev.index),
                expect=(n.NVMLError_NoPermission,),
            )
        except n.NVMLError_NoPermission as exc:
            raise GpuInaccessible(str(exc)) from None
        if dev.handle is None:
            raise GpuDown("no handle")
        dev.uuid = decode(self._call("uuid", lambda: n.nvmlDeviceGetUUID(dev.handle)) or "")
        dev.name = decode(self._call("name", lambda: n.nvmlDeviceGetName(dev.handle)) or "")
        pci = self._call("pci", lambda: n.nvmlDeviceGetPciInfo(dev.handle))
        dev.pci_bus_id = decode(pci.busId) if pci is not None else ""

    def _call(
        self,
        what: str,
        fn: Callable[[], Any],
        uuid: str = "",
        expect: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """One NVML call: GpuDown when the GPU stopped answering, None when it cannot say.

        ``expect``: error classes that are answers, not failures; they reach the caller.
        """
        n = self.nvml
        try:
            value = fn()
        except expect:
            self._answered += 1  # an answer, if not the usual one
            raise
        except n.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in self._down_codes:
                raise GpuDown(f"{what}: {exc}") from None
            if isinstance(exc, n.NVMLError_NotSupported | n.NVMLError_FunctionNotFound):
                self._mark_unsupported(uuid, what, str(exc))
                return None
            self._failed += 1
            self._count_error(what, type(exc).__name__, str(exc))
            return None
        except Exception as exc:
            if self._mismatch is not None and isinstance(exc, self._mismatch):
                # A versioned symbol this driver lacks: as good as unsupported.
                self._mark_unsupported(uuid, what, str(exc))
                return None
            raise
        self._answered += 1
        return value

    def _mark_unsupported(self, uuid: str, what: str, why: str) -> None:
        if (uuid, what) in self._unsupported:
            return
        self._unsupported.add((uuid, what))
        log.info(
            "GPU field not supported; omitted for this GPU",
            extra={"collector": "gpu", "uuid": uuid, "field": what, "error": why},
        )

    def _count_error(self, what: str, kind: str, message: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        log_limited(
            log,
            logging.WARNING,
            f"error:{what}:{kind}",
            "NVML call failed; field skipped this poll",
            every=300.0,
            collector="gpu",
            field=what,
            error=f"{kind}: {message}",
        )

    def _field(
        self,
        dev: _Device,
        what: str,
        fn: Callable[[], Any],
        expect: tuple[type[BaseException], ...] = (),
    ) -> Any:
        if (dev.uuid, what) in self._unsupported:
            return None
        return self._call(what, fn, dev.uuid, expect)

    def _sample(self, dev: _Device, out: GpuSample) -> None:
        n, h = self.nvml, dev.handle
        util = self._field(dev, "utilization", lambda: n.nvmlDeviceGetUtilizationRates(h))
        if util is not None:
            out.values["utilization_ratio"] = percent_to_ratio(util.gpu)
            out.values["memory_utilization_ratio"] = percent_to_ratio(util.memory)
        memory = self._memory(dev, h)
        if memory:
            out.values.update({f"memory_{k}_bytes": v for k, v in memory.items()})
            dev.memory_total = memory.get("total", dev.memory_total)
        scalar = (
            ("temperature", "temperature_celsius", 1.0, lambda: n.nvmlDeviceGetTemperature(h, 0)),
            ("power", "power_watts", 1e-3, lambda: n.nvmlDeviceGetPowerUsage(h)),
            ("energy", "energy_joules", 1e-3, lambda: n.nvmlDeviceGetTotalEnergyConsumption(h)),
            ("pcie_replay", "pcie_replays", 1.0, lambda: n.nvmlDeviceGetPcieReplayCounter(h)),
        )
        for what, key, scale, fn in scalar:
            value = self._field(dev, what, fn)
            if value is not None:
                out.values[key] = float(value) * scale
        pstate = self._field(dev, "pstate", lambda: n.nvmlDeviceGetPerformanceState(h))
        if pstate is not None and int(pstate) != PSTATE_UNKNOWN:
            out.values["performance_state"] = float(pstate)
        for clock, kind in (("sm", n.NVML_CLOCK_SM), ("memory", n.NVML_CLOCK_MEM)):
            mhz = self._field(dev, f"clock_{clock}", partial(n.nvmlDeviceGetClockInfo, h, kind))
            if mhz is not None:
                out.clocks[clock] = float(mhz) * 1e6
        bits = self._clock_events(dev, h)
        if bits is not None:
            out.clock_events = clock_event_flags(int(bits))
        for kind, code in (("corrected", 0), ("uncorrected", 1)):
            # Volatile counts (since the driver loaded): the aggregate ones are flushed to
            # the infoROM only now and then, so they lag; a reload reads as a counter reset.
            count = self._field(
                dev, "ecc", partial(n.nvmlDeviceGetTotalEccErrors, h, code, n.NVML_VOLATILE_ECC)
            )
            if count is not None:
                out.ecc[kind] = float(count)
        if self.pcie_throughput:
            for direction, counter in (("tx", 0), ("rx", 1)):
                kbs = self._field(
                    dev, "pcie_throughput", partial(n.nvmlDeviceGetPcieThroughput, h, counter)
                )
                if kbs is not None:
                    out.pcie[direction] = float(kbs) * 1024.0  # NVML reports KiB/s
        mig_mode = self._field(dev, "mig", lambda: n.nvmlDeviceGetMigMode(h))
        if mig_mode is not None and int(mig_mode[0]) == n.NVML_DEVICE_MIG_ENABLE:
            self._sample_mig(dev, out)
        else:
            self._sample_processes(dev, h, out)

    def _memory(self, dev: _Device, h: Any) -> dict[str, float]:
        n = self.nvml
        # v2 adds the memory the driver reserves; older drivers lack it, so fall back.
        mem = self._field(dev, "memory_v2", lambda: n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2))
        if mem is not None:
            dev.reserved = float(mem.reserved)
            return {
                "used": float(mem.used),
                "free": float(mem.free),
                "total": float(mem.total),
                "reserved": dev.reserved,
            }
        mem = self._field(dev, "memory", lambda: n.nvmlDeviceGetMemoryInfo(h))
        if mem is None:
            return {}
        return v1_memory(float(mem.used), float(mem.free), float(mem.total), dev.reserved)

    def _clock_events(self, dev: _Device, h: Any) -> int | None:
        n = self.nvml
        bits = self._field(dev, "clock_events", lambda: n.nvmlDeviceGetCurrentClocksEventReasons(h))
        if bits is None and (dev.uuid, "clock_events") in self._unsupported:
            # Drivers before 535 know the same bits as "throttle reasons".
            bits = self._field(
                dev, "throttle_reasons", lambda: n.nvmlDeviceGetCurrentClocksThrottleReasons(h)
            )
        return None if bits is None else int(bits)

    def _one_list(self, dev: _Device, h: Any, what: str, symbol: str) -> list[Any] | None:
        n = self.nvml
        read = partial(
            process_list,
            n,
            symbol,
            h,
            memory_total=dev.memory_total,  # the parent GPU's: bounds a MIG instance's too
            driver=self.driver_version,
        )
        for _ in range(PROCESS_LIST_TRIES):
            try:
                return self._field(
                    dev,
                    what,
                    read,
                    expect=(n.NVMLError_InsufficientSize,),
                )
            except n.NVMLError_InsufficientSize:
                continue  # grew past the doubled buffer between the two calls: retry
        self._count_error(what, "NVMLError_InsufficientSize", "list keeps growing")
        return None

    def _process_list(self, dev: _Device, h: Any) -> list[Any] | None:
        """Compute processes, then MPS clients: with MPS the compute list holds only
        ``nvidia-cuda-mps-server`` and the clients (the pods) are in the MPS list."""
        compute = self._one_list(dev, h, "processes", "nvmlDeviceGetComputeRunningProcesses_v3")
        mps = self._one_list(dev, h, "mps_processes", "nvmlDeviceGetMPSComputeRunningProcesses_v3")
        if compute is None and mps is None:
            return None
        seen = {int(p.pid) for p in compute or ()}
        return [*(compute or ()), *(p for p in mps or () if int(p.pid) not in seen)]

    def _sample_processes(self, dev: _Device, h: Any, out: GpuSample) -> None:
        n = self.nvml
        procs = self._process_list(dev, h)
        memory = {int(p.pid): _bytes_or_none(p.usedGpuMemory) for p in procs or ()}
        ratios: dict[int, float] | None = None  # None: no SM shares this poll
        try:
            samples = self._field(
                dev,
                "process_utilization",
                lambda: n.nvmlDeviceGetProcessUtilization(h, dev.last_sample_us),
                expect=(n.NVMLError_NotFound,),
            )
        except n.NVMLError_NotFound:
            samples = []  # no sample since the last poll: nothing ran on the SMs
        if samples is not None:
            now_us = int(self._wall() * 1e6)
            ratios, newest = sm_ratios(
                samples, dev.last_sample_us, now_us, None if procs is None else memory
            )
            dev.last_sample_us = max(dev.last_sample_us, newest)
        for pid in set(memory) | set(ratios or ()):
            sm = None if ratios is None else ratios.get(pid, 0.0)
            out.processes[pid] = ProcessUse(pid, memory.get(pid), sm)

    def _sample_mig(self, dev: _Device, out: GpuSample) -> None:
        n, h = self.nvml, dev.handle
        slots = self._field(dev, "mig", lambda: n.nvmlDeviceGetMaxMigDeviceCount(h)) or 0
        for i in range(int(slots)):
            try:
                mh = self._field(
                    dev,
                    "mig",
                    partial(n.nvmlDeviceGetMigDeviceHandleByIndex, h, i),
                    expect=(n.NVMLError_NotFound,),
                )
            except n.NVMLError_NotFound:
                continue  # an empty slot: instances need not be contiguous
            if mh is None:
                continue
            gi = self._field(dev, "mig", partial(n.nvmlDeviceGetGpuInstanceId, mh))
            ci = self._field(dev, "mig", partial(n.nvmlDeviceGetComputeInstanceId, mh))
            uuid = decode(self._field(dev, "mig", partial(n.nvmlDeviceGetUUID, mh)) or "")
            mem = self._field(dev, "memory", partial(n.nvmlDeviceGetMemoryInfo, mh))
            memory = {}
            if mem is not None:
                memory = {"used": float(mem.used), "free": float(mem.free)}
                memory["total"] = float(mem.total)
            out.mig.append(MigInstance(int(gi or 0), int(ci or 0), uuid, memory))
            for p in self._process_list(dev, mh) or ():
                pid = int(p.pid)
                prev = out.processes.get(pid)
                used = _bytes_or_none(p.usedGpuMemory)
                if prev is not None and prev.memory_bytes is not None and used is not None:
                    used += prev.memory_bytes
                # NVML has no per-process SM share inside a MIG instance.
                out.processes[pid] = ProcessUse(pid, used, None)


def _bytes_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def v1_memory(used: float, free: float, total: float, reserved: float | None) -> dict[str, float]:
    """``nvmlDeviceGetMemoryInfo`` (v1) → the v2 meaning where it can be had.

    v1 ``used`` is allocated + reserved; v2 ``used`` is allocated alone (nvml.h). With the
    reserved memory v2 last reported for this GPU, v1 is converted, so used memory does not
    jump by the reserved amount when v2 fails for a poll; on a driver where v2 never
    answered, v1 is reported as it is (and no reserved series).
    """
    if reserved is None:
        return {"used": used, "free": free, "total": total}
    return {"used": max(used - reserved, 0.0), "free": free, "total": total, "reserved": reserved}


LIBRARY_MISSING = (
    "libnvidia-ml.so.1 not found: no NVIDIA driver on this host, or the library is not "
    "mounted into this container",
    "install the NVIDIA driver; in a container, mount libnvidia-ml.so.1 (the NVIDIA "
    "container toolkit does: runtimeClassName: nvidia) or set LD_LIBRARY_PATH to the "
    "directory holding it",
)


NO_GPU = (
    "NVML works but sees no GPU",
    "in a container, request GPUs (nvidia.com/gpu) or set NVIDIA_VISIBLE_DEVICES=all",
)


def no_driver(nvml: Any, exc: Exception) -> bool:
    """Whether a failed ``nvmlInit`` means "no NVIDIA driver on this host" — a CPU-only
    node, where the gpu collector is not applicable — rather than a driver that is there
    and broken (permissions, version mismatch), which is a failure to fix."""
    code = getattr(exc, "value", None)
    return code in (nvml.NVML_ERROR_LIBRARY_NOT_FOUND, nvml.NVML_ERROR_DRIVER_NOT_LOADED)


def explain_init_error(nvml: Any, exc: Exception) -> tuple[str, str]:
    """A failed ``nvmlInit`` → (precise reason, the fix)."""
    code = getattr(exc, "value", None)
    if code == nvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return LIBRARY_MISSING
    if code == nvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return (
            "NVIDIA kernel driver not loaded (libnvidia-ml.so.1 found, /dev/nvidia* missing)",
            "modprobe nvidia, or check `dmesg | grep -i nvrm`; in a container, expose "
            "/dev/nvidiactl and /dev/nvidia*",
        )
    if code == nvml.NVML_ERROR_NO_PERMISSION:
        return (
            "no permission to open /dev/nvidiactl",
            "run as root or a user in the group owning /dev/nvidia*",
        )
    if code == nvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return (
            "libnvidia-ml.so.1 and the loaded kernel driver have different versions",
            "reboot after a driver upgrade, or mount the library matching the driver",
        )
    return f"nvmlInit failed: {exc}", "check `nvidia-smi` on this host"
