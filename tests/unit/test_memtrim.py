"""Handing memory back after the probe compile: which mappings may be dropped, and a real drop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.memtrim import Mapping, droppable, parse_smaps

ROOT = Path(__file__).resolve().parents[2]

SMAPS = """\
7f0000000000-7f0000100000 r-xp 00000000 fe:00 1 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               1024 kB
Rss:                 900 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r--p 06162000 fe:00 1 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                 300 kB
Anonymous:           300 kB
7f0000200000-7f0000210000 rw-p 06262000 fe:00 1 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Anonymous:            32 kB
7f0000300000-7f0000400000 r-xp 00000000 fe:00 2 /usr/lib/llvm-14/lib/libclang-cpp.so.14
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00000000 fe:00 3 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000500000-7f0000600000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
7f0000600000-7f0000700000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
nonsense line
zz-7f0000800000 r-xp 00000000 fe:00 4 /usr/lib/libLLVM-bad.so
Anonymous:             0 kB
7f0000900000-7f0000a00000 r-xp 00000000 fe:00 5 /opt/x/libLLVM-15.so.1 (deleted)
Anonymous:          oops
"""


def test_parse_smaps_reads_ranges_perms_paths_and_copied_pages() -> None:
    maps = parse_smaps(SMAPS)
    assert [(m.start, m.perms, m.path.rsplit("/", 1)[-1], m.anonymous_kib) for m in maps] == [
        (0x7F0000000000, "r-xp", "libLLVM-14.so.1", 0),
        (0x7F0000100000, "r--p", "libLLVM-14.so.1", 300),
        (0x7F0000200000, "rw-p", "libLLVM-14.so.1", 32),
        (0x7F0000300000, "r-xp", "libclang-cpp.so.14", 0),
        (0x7F0000400000, "r-xp", "libc.so.6", 0),
        (0x7F0000500000, "rw-p", "", 1024),
        (0x7F0000600000, "r-xp", "[vdso]", 0),
        (0x7F0000900000, "r-xp", "libLLVM-15.so.1 (deleted)", -1),
    ]
    assert parse_smaps("") == []


def test_only_clean_read_only_mappings_of_the_named_libraries_are_droppable() -> None:
    names = [m.path for m in droppable(parse_smaps(SMAPS), ("libLLVM", "libclang-cpp"))]
    # Not the relocated (copied) read-only part, not the writable data, not libc, not
    # anonymous memory or [vdso], and not a mapping whose copied pages are unknown.
    assert names == [
        "/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1",
        "/usr/lib/llvm-14/lib/libclang-cpp.so.14",
    ]
    assert droppable([Mapping(0, 4096, "r-xp", "/lib/libLLVM.so", 4)], ("libLLVM",)) == []


def test_dropping_a_librarys_code_pages_lowers_rss_and_the_library_still_works() -> None:
    """A real drop in a fresh interpreter: numpy's core extension, then numpy used again."""
    code = """
import numpy as np
from agent import memtrim
def rss(name):
    return sum(m_rss for path, m_rss in maps() if name in path)
def maps():
    path, out = "", []
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
        elif head and head[0] == "Rss:":
            out.append((path, int(head[1])))
    return out
np.sort(np.random.default_rng(0).normal(size=100_000))
before = rss("_multiarray_umath")
dropped = memtrim.drop_file_pages(("_multiarray_umath",))
after = rss("_multiarray_umath")
total = float(np.sort(np.arange(10.0))[::-1].sum())
print(before, after, dropped, total)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    before, after, dropped, total = out.stdout.split()
    assert int(dropped) > 0
    assert int(after) < int(before) / 2, out.stdout
    assert float(total) == 45.0


def test_trim_heap_returns_free_heap_held_below_a_live_block() -> None:
    """What the compile leaves: freed chunks below a block still in use, which glibc keeps."""
    code = """
import ctypes
from agent import memtrim
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
blocks = [libc.malloc(4000) for _ in range(20_000)]  # 80 MB of small chunks on the heap
for b in blocks:
    ctypes.memset(b, 1, 4000)
pin = libc.malloc(4000)  # keeps the top of the heap in use: free() alone returns nothing
for b in blocks:
    libc.free(b)
before = rss()
trimmed = memtrim.trim_heap()
print(before, rss(), trimmed)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    before, after, trimmed = out.stdout.split()
    assert trimmed == "True"
    assert int(before) - int(after) > 50_000, out.stdout  # KiB: most of the 80 MB
