"""The kernel side of the sched collector: loads probes/sched.bpf.c with bcc, reads its maps.

This is the thin shell around bcc; everything that can be computed without the kernel
lives in :mod:`agent.collectors.sched`. One :class:`SchedProbe` is loaded per agent and
used from one thread (the collector's refresh loop).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent import memtrim
from agent.collectors.sched.settings import SchedSettings
from agent.registry import CollectorUnavailable

PROBE_PATH = Path(__file__).resolve().parents[3] / "probes" / "sched.bpf.c"

# The probe's map sizes, passed to probes/sched.bpf.c as -D flags (the only definition).
# 32 log2 slots of microseconds: slot k holds [2^(k-1), 2^k) us; the collector renders
# slots 1..26 (2 us .. 67.1 s) as buckets and folds the rest into +Inf. A power of two:
# the probe masks the index.
SLOTS = 32
# The "maybe watched" flags: one per thread id modulo this power of two. 65536 covers the
# default pid_max without two ids sharing a flag; beyond it a shared flag only costs the
# unwatched sharer a hash lookup. 512 KiB (array elements take 8 bytes).
FILTER_SLOTS = 65536
# Watched processes, or cgroups in cgroup mode; the collector prunes the ones that are gone.
MAX_GROUPS = 4096
# Bytes per map element besides key and value: the kernel's htab_elem header (48 B on
# 64-bit) rounded up; only used to say what the maps lock where RLIMIT_MEMLOCK is charged.
HTAB_ELEM_OVERHEAD = 64
THREAD_BYTES = 4 + 24  # u32 key, struct thread_t
GROUP_BYTES = 8 + SLOTS * 8 * 2 + 5 * 8  # u64 key, struct group_t
DROP_REASONS = ("threads_full", "groups_full")  # index = enum drop_reason in the probe

# Tracepoint fields the probe reads; checked by `vigil doctor` against the running kernel.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "sched_switch": ("prev_pid", "prev_state", "next_pid"),
    "sched_wakeup": ("pid",),
    "sched_wakeup_new": ("pid",),
    "sched_migrate_task": ("pid", "orig_cpu", "dest_cpu"),
    "sched_process_fork": ("parent_pid", "child_pid"),
    "sched_process_exit": ("pid",),
}


@dataclass
class GroupStats:
    """One group's totals as the kernel keeps them (monotonic while the group lives)."""

    runq_slots: list[int] = field(default_factory=lambda: [0] * SLOTS)
    offcpu_slots: list[int] = field(default_factory=lambda: [0] * SLOTS)
    runq_ns: int = 0
    offcpu_ns: int = 0
    voluntary: int = 0
    involuntary: int = 0
    migrations: int = 0

    def add(self, other: GroupStats) -> None:
        self.runq_slots = [a + b for a, b in zip(self.runq_slots, other.runq_slots, strict=True)]
        self.offcpu_slots = [
            a + b for a, b in zip(self.offcpu_slots, other.offcpu_slots, strict=True)
        ]
        self.runq_ns += other.runq_ns
        self.offcpu_ns += other.offcpu_ns
        self.voluntary += other.voluntary
        self.involuntary += other.involuntary
        self.migrations += other.migrations


class Probe(Protocol):
    """What the collector needs from the kernel side (a fake one serves the unit tests)."""

    def watch(self, tid: int, group: int) -> None: ...

    def forget(self, group: int) -> None: ...

    def read(self) -> dict[int, GroupStats]: ...

    def compact(self) -> None: ...

    def thread_count(self) -> int: ...

    def dropped(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def probe_cflags(mode: str, max_threads: int) -> list[str]:
    """The -D flags that size the probe's maps and pick its mode."""
    flags = [
        f"-DMAX_THREADS={max_threads}",
        f"-DFILTER_SLOTS={FILTER_SLOTS}",
        f"-DMAX_GROUPS={MAX_GROUPS}",
        f"-DSLOTS={SLOTS}",
    ]
    if mode == "cgroup":
        flags.append("-DCGROUP_MODE=1")
    return flags


def map_bytes(max_threads: int) -> int:
    """About what the probe's maps take in the kernel (they are preallocated)."""
    return (
        max_threads * (THREAD_BYTES + HTAB_ELEM_OVERHEAD)
        + MAX_GROUPS * (GROUP_BYTES + HTAB_ELEM_OVERHEAD)
        + FILTER_SLOTS * 8
        + GROUP_BYTES
    )


class SchedProbe:
    """probes/sched.bpf.c, compiled and attached; maps read and written through bcc."""

    def __init__(
        self, mode: str = SchedSettings.mode, max_threads: int = SchedSettings.max_threads
    ) -> None:
        try:
            bcc = importlib.import_module("bcc")
        except ImportError as exc:
            raise CollectorUnavailable(
                f"import bcc failed: {exc}", "vigil doctor (says which fix applies)"
            ) from None
        if not PROBE_PATH.exists():
            raise CollectorUnavailable(f"probe source {PROBE_PATH} is missing")
        cflags = probe_cflags(mode, max_threads)
        self.mode = mode
        try:
            self._bpf: Any = bcc.BPF(src_file=str(PROBE_PATH).encode(), cflags=cflags)
        except Exception as exc:
            raise CollectorUnavailable(
                f"loading {PROBE_PATH.name} failed: {exc}",
                "vigil doctor (checks privilege, tracefs and kernel headers)",
            ) from None
        self._threads = self._bpf[b"threads"]
        self._groups = self._bpf[b"groups"]
        self._dropped = self._bpf[b"dropped"]
        self._maybe = self._bpf[b"maybe"]
        # The compile is done for the agent's lifetime: it left ~30 MiB of free heap and
        # ~70 MiB of LLVM/clang code resident (bench/footprint: 148 -> 78 MiB in-process).
        memtrim.release_after_compile()

    def watch(self, tid: int, group: int) -> None:
        """Puts one thread in the kernel filter, keeping any timestamps it already has."""
        key = self._threads.Key(tid)
        # The flag first: the probe looks at `threads` only where the flag is set.
        self._maybe[self._maybe.Key(tid % FILTER_SLOTS)] = self._maybe.Leaf(1)
        try:
            old = self._threads[key]
        except KeyError:
            self._threads[key] = self._threads.Leaf(group, 0, 0)
            return
        if old.group != group:
            old.group = group
            self._threads[key] = old

    def forget(self, group: int) -> None:
        """Removes a group: its threads from the filter (watched mode), then its totals."""
        if self.mode != "cgroup":
            stale = [k for k, v in self._threads.items() if v.group == group]
            for k in stale:
                # KeyError: exited meanwhile, and the exit tracepoint removed it.
                with contextlib.suppress(KeyError):
                    del self._threads[k]
        with contextlib.suppress(KeyError):
            del self._groups[self._groups.Key(group)]

    def read(self) -> dict[int, GroupStats]:
        out: dict[int, GroupStats] = {}
        for k, v in self._groups.items():
            out[int(k.value)] = GroupStats(
                runq_slots=list(v.runq_slots),
                offcpu_slots=list(v.offcpu_slots),
                runq_ns=int(v.runq_ns),
                offcpu_ns=int(v.offcpu_ns),
                voluntary=int(v.voluntary),
                involuntary=int(v.involuntary),
                migrations=int(v.migrations),
            )
        return out

    def compact(self) -> None:
        """Clears the filter flags of threads that have exited (the probe only sets them).

        Rewrites all flags from the thread map in one batch, then sets again the flags of
        threads forked meanwhile, so a watched thread loses its flag for a moment at most.
        """
        if self.mode == "cgroup":
            return
        before = {k.value for k in self._threads}
        keys = (self._maybe.Key * FILTER_SLOTS)(*range(FILTER_SLOTS))
        flags = (self._maybe.Leaf * FILTER_SLOTS)()
        for tid in before:
            flags[tid % FILTER_SLOTS] = 1
        self._maybe.items_update_batch(keys, flags)
        for tid in {k.value for k in self._threads} - before:
            self._maybe[self._maybe.Key(tid % FILTER_SLOTS)] = self._maybe.Leaf(1)

    def thread_count(self) -> int:
        return sum(1 for _ in self._threads)  # bcc iterates keys

    def dropped(self) -> dict[str, int]:
        return {
            reason: int(self._dropped.sum(ctypes.c_int(i)).value)
            for i, reason in enumerate(DROP_REASONS)
        }

    def close(self) -> None:
        self._bpf.cleanup()


# --- set-up checks (for `vigil doctor` and the collector's reason) ----------------------


def parse_format_fields(text: str) -> set[str]:
    """Field names of a tracefs ``format`` file (``field:<type> <name>[<n>];`` lines)."""
    names: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("field:"):
            continue
        decl = line[len("field:") :].split(";", 1)[0].strip()
        name = decl.split()[-1] if decl.split() else ""
        names.add(name.split("[", 1)[0])
    return names


def missing_fields(tracefs: Path) -> list[str]:
    """``event.field`` the probe needs but the running kernel's tracepoints lack."""
    missing: list[str] = []
    for event, fields in REQUIRED_FIELDS.items():
        try:
            text = (tracefs / "events" / "sched" / event / "format").read_text()
        except OSError:
            missing.append(f"{event} (no format file)")
            continue
        have = parse_format_fields(text)
        missing.extend(f"{event}.{f}" for f in fields if f not in have)
    return missing
