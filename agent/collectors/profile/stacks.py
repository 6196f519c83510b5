"""Collapsed stacks (the format of flamegraph.pl, py-spy ``--format raw``) and their summary.

A collapsed line is ``frame;frame;...;leaf COUNT``, root first. py-spy writes frames as
``name (file:line)`` and, with ``--threads``, puts ``thread (TID): NAME`` at the root.
Everything here is pure: text in, numbers out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

Stack = tuple[str, ...]

# "name (file:line)"; the line is absent with --nolineno and in hand-written input.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[0-9a-fA-Fx]+)\)")


@dataclass(frozen=True)
class Parsed:
    stacks: Counter[Stack]
    bad_lines: int = 0

    @property
    def total(self) -> int:
        return sum(self.stacks.values())


def parse_collapsed(text: str) -> Parsed:
    """``"a;b 3\\na;c 2"`` → {("a","b"): 3, ("a","c"): 2}; malformed lines are counted."""
    stacks: Counter[Stack] = Counter()
    bad = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        stack, sep, count = line.rpartition(" ")
        if not sep or not stack or not count.isdigit():
            bad += 1
            continue
        frames = tuple(f for f in stack.split(";") if f)
        if not frames:
            bad += 1
            continue
        stacks[frames] += int(count)
    return Parsed(stacks, bad)


def format_collapsed(stacks: Mapping[Stack, int]) -> str:
    """The inverse of :func:`parse_collapsed`, heaviest stacks first (stable for tests)."""
    rows = sorted(stacks.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(f"{';'.join(s)} {n}\n" for s, n in rows if n > 0)


def split_frame(frame: str) -> tuple[str, str, int | None]:
    """``"hot (w.py:3)"`` → ("hot", "w.py", 3); anything else → (frame, "", None)."""
    m = _FRAME.match(frame)
    if not m:
        return frame, "", None
    line = m.group("line")
    return m.group("name"), m.group("file"), int(line) if line else None


def function_key(frame: str) -> str:
    """A frame without its line number: stable across deploys that move code around."""
    name, file, _ = split_frame(frame)
    return f"{name} ({file})" if file else name


def per_thread_totals(stacks: Mapping[Stack, int]) -> dict[str, int]:
    """Samples per thread root frame (input recorded with ``--threads``)."""
    out: dict[str, int] = {}
    for stack, n in stacks.items():
        m = _THREAD.match(stack[0])
        key = m.group("tid") if m else ""
        out[key] = out.get(key, 0) + n
    return out


def merge_threads(stacks: Mapping[Stack, int]) -> Counter[Stack]:
    """Stacks recorded with ``--threads`` without their thread root frame: threads that run
    the same code (a thread-per-request server's 32 idle workers) become one tower."""
    out: Counter[Stack] = Counter()
    for stack, n in stacks.items():
        rest = stack[1:] if _THREAD.match(stack[0]) else stack
        out[rest or stack] += n
    return out


# A frame on this share of a thread root's samples, below the trunk found so far and not
# as their leaf, is trunk too: "nearly every" so that the odd sample taken between two
# calls (``<module>`` as the leaf) does not end the trunk.
TRUNK_SHARE = 0.95


def trunk(stacks: Mapping[Stack, int], share: float = TRUNK_SHARE) -> Stack:
    """The root frames (nearly) every stack starts with, as callers, not as leaves.

    ``{("main", "loop", "a"): 5, ("main", "loop", "b"): 5}`` → ``("main", "loop")``: both
    are on every stack, so their total share (100 %) says nothing about where time goes.
    """
    total = sum(stacks.values())
    prefix: Stack = ()
    while total > 0:
        d = len(prefix)
        below: Counter[str] = Counter()
        for s, n in stacks.items():
            if len(s) > d + 1 and s[:d] == prefix:
                below[s[d]] += n
        if not below:
            break
        frame, n = below.most_common(1)[0]
        if n < share * total:
            break
        prefix = (*prefix, frame)
    return prefix


@dataclass(frozen=True)
class FunctionShare:
    function: str
    kind: str  # "self" | "total"
    ratio: float


def top_functions(stacks: Mapping[Stack, int], k: int) -> list[FunctionShare]:
    """The ``k`` functions with the largest self share and the ``k`` with the largest total.

    Self: samples whose leaf is the function. Total: samples with the function anywhere
    on the stack, counted once per sample (recursion does not inflate it), leaving out the
    trunk: the frames that every stack with the same root frame starts with (the threading
    bootstrap, ``<module>`` and ``main``, an event loop's ``run_forever`` and
    ``_run_once``, a server's ``serve_forever``), which would take the top of the ranking
    at ~100 % and push the user's functions out of the top K.
    """
    total = sum(stacks.values())
    if total <= 0 or k <= 0:
        return []
    by_root: dict[str, dict[Stack, int]] = {}
    for stack, n in stacks.items():
        by_root.setdefault(stack[0], {})[stack] = n
    trunks = {root: trunk(group) for root, group in by_root.items()}
    self_n: Counter[str] = Counter()
    total_n: Counter[str] = Counter()
    for stack, n in stacks.items():
        keys = [function_key(f) for f in stack]
        self_n[keys[-1]] += n
        t = trunks[stack[0]]
        skip = len(t) if stack[: len(t)] == t else 0
        for key in set(keys[skip:]):
            total_n[key] += n
    out: list[FunctionShare] = []
    for kind, counts in (("self", self_n), ("total", total_n)):
        # Ties broken by name so that the exported set does not flap between scrapes.
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out.extend(FunctionShare(name, kind, n / total) for name, n in ranked)
    return out


@dataclass(frozen=True)
class WindowSummary:
    """One profile of one process, from the latest recording of each of the three modes."""

    cpu: Counter[Stack]  # active samples (default py-spy mode)
    wall: Counter[Stack]  # every thread, active or idle (--idle --threads)
    active: int
    idle: int
    ticks: int
    gil_samples: int
    functions: list[FunctionShare] = field(default_factory=list)
    bad_lines: int = 0

    @property
    def gil_ratio(self) -> float:
        return min(1.0, self.gil_samples / self.ticks) if self.ticks > 0 else 0.0


def summarize_window(
    cpu_text: str, wall_text: str, gil_text: str, nominal_ticks: int, top_k: int
) -> WindowSummary:
    """Three raw recordings of equal length → counts, GIL share and top functions.

    py-spy marks neither idleness nor the GIL in its output, so the process is recorded
    three ways (the collector rotates them, one per window): active stacks only (the
    default), every thread (``--idle``) and the GIL holder only (``--idle --gil``).
    Idle = all - active; the two recordings sample the same threads at the same rate for
    the same time (consecutive windows, not the same one), so the difference is right up
    to sampling noise and the change in load between windows, and is clamped at zero.
    Ticks are counted from the busiest thread of the ``--threads`` recording (it is
    sampled every tick), which also covers ticks lost to read errors; ``nominal_ticks``
    (rate x duration) is the fallback when no thread was seen.
    """
    cpu = parse_collapsed(cpu_text)
    wall = parse_collapsed(wall_text)
    gil = parse_collapsed(gil_text)
    threads = per_thread_totals(wall.stacks)
    ticks = max(threads.values()) if threads else nominal_ticks
    return WindowSummary(
        cpu=cpu.stacks,
        wall=wall.stacks,
        active=cpu.total,
        idle=max(0, wall.total - cpu.total),
        ticks=ticks,
        gil_samples=gil.total,
        functions=top_functions(cpu.stacks, top_k),
        bad_lines=cpu.bad_lines + wall.bad_lines + gil.bad_lines,
    )
