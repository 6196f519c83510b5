"""Python stack sampling of watched processes with py-spy.

Measures, per watched Python process: samples active / idle, the share of sampling ticks
in which a thread held the GIL, and the top-K functions by self and total share of the
active samples. Source: repeating windows of ``py-spy record --nonblocking`` (py-spy
writes only when it exits), one recording per process and window, the three modes a
profile needs (:func:`agent.collectors.profile.stacks.summarize_window`) taking turns, so
every output is up to three windows old. The last cpu window's stacks are served as
collapsed stacks, speedscope JSON and SVG under ``/v1/profiles`` and can be pushed to
Pyroscope. Cost: py-spy reads the target's memory without pausing it, one py-spy per
process at a time; a node CPU budget (1 % of a core per watched process, at most 5 % per
node by default) caps all children together (docs/profile.md, "Cost model").
Privilege: CAP_SYS_PTRACE (root in practice) to read other processes' memory; Yama
ptrace_scope 3 forbids it entirely.

The pure parts and the thin shells around them: ``stacks`` parses py-spy's collapsed
output and summarises a window; ``render`` turns stacks into speedscope JSON and SVG
flamegraphs; ``pyspy`` finds, runs and reaps py-spy; ``schedule`` holds the CPU budget and
the backoff; ``pyroscope`` pushes windows to a Pyroscope server; ``api`` serves
``/v1/profiles``; ``targets`` holds the per-process state and its metric families. The
collector that ties them together is ``collector``.
"""

from __future__ import annotations

from agent.collectors.profile.collector import factory
from agent.collectors.profile.doctor import doctor
from agent.collectors.profile.metrics import METRICS
from agent.collectors.profile.settings import ProfileSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="profile",
    help="Python stack sampling of watched processes with py-spy",
    settings=ProfileSettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
