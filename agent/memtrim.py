"""Handing memory back to the host after one-off work (compiling the BPF probe).

Compiling probes/sched.bpf.c with bcc runs clang and LLVM inside the agent's process, once,
at start. Measured on `vigil run` with every collector and one watched workload
(bench/footprint): it leaves ~30 MiB of freed-but-kept glibc heap and ~70 MiB of
libLLVM-14/libclang-cpp code pages resident, none of which the agent touches again. This
module gives both back: ``malloc_trim(0)`` returns the free heap, and
``madvise(MADV_DONTNEED)`` over the clean mappings of those libraries (code, never written)
unmaps their pages from the process; the kernel reads a page back from the file if it is
ever touched again, so nothing is lost, and the page cache it stays in is the first thing
the kernel reclaims. Where the C library is not glibc, both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("vigil.memtrim")

MADV_DONTNEED = 4  # linux/mman.h
# bcc's compiler: code pages of these stay resident after the one compile at start.
COMPILER_LIBRARIES = ("libLLVM", "libclang-cpp")


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    # KiB of this mapping's pages that differ from the file (copied on write); -1: unknown
    anonymous_kib: int = -1


def parse_smaps(text: str) -> list[Mapping]:
    """The mappings in a /proc/<pid>/smaps text with their ``Anonymous:`` size (a header
    line that does not parse is skipped, with the fields under it)."""
    out: list[Mapping] = []
    current: Mapping | None = None
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if not parts:
            continue
        if parts[0].endswith(":"):
            if current is not None and parts[0] == "Anonymous:" and len(parts) > 1:
                try:
                    kib = int(parts[1])
                except ValueError:
                    continue
                current = Mapping(current.start, current.end, current.perms, current.path, kib)
                out[-1] = current
            continue
        current = None
        lo, sep, hi = parts[0].partition("-")
        try:
            start, end = int(lo, 16), int(hi, 16)
        except ValueError:
            continue
        if not sep or end <= start or len(parts) < 5:
            continue
        current = Mapping(start, end, parts[1], parts[5].strip() if len(parts) == 6 else "")
        out.append(current)
    return out


def droppable(maps: Iterable[Mapping], names: Iterable[str]) -> list[Mapping]:
    """Mappings of files whose base name starts with one of ``names`` that hold nothing but
    clean copies of the file: not writable, and no page copied on write (the dynamic
    linker's relocations live in such copies; dropping them would lose them). Dropping a
    clean page is safe: the next touch reads it back from the file."""
    wanted = tuple(names)
    return [
        m
        for m in maps
        if m.path.startswith("/")
        and m.path.rsplit("/", 1)[-1].startswith(wanted)
        and "w" not in m.perms
        and m.anonymous_kib == 0
    ]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def trim_heap() -> bool:
    """glibc's malloc_trim(0): free heap back to the kernel; False where there is none."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


def drop_file_pages(
    names: Iterable[str] = COMPILER_LIBRARIES, smaps_path: str = "/proc/self/smaps"
) -> int:
    """Unmaps this process's resident pages of the named libraries' clean mappings
    (madvise MADV_DONTNEED); returns the bytes advised (0 when nothing matched)."""
    libc = _libc()
    madvise = getattr(libc, "madvise", None)
    if madvise is None:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    try:
        with open(smaps_path) as f:
            maps = parse_smaps(f.read())
    except OSError:
        return 0
    advised = 0
    for m in droppable(maps, names):
        if madvise(m.start, m.end - m.start, MADV_DONTNEED) == 0:
            advised += m.end - m.start
    return advised


def release_after_compile() -> None:
    """Both of the above, once the probe is loaded; logs what was advised."""
    trimmed = trim_heap()
    advised = drop_file_pages()
    log.debug(
        "memory released after the probe compile",
        extra={"heap_trimmed": trimmed, "dropped_bytes": advised},
    )
