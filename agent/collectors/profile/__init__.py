"""Python stack sampling of watched processes with py-spy.

Measures, per watched Python process: samples active / idle, the share of sampling ticks
in which a thread held the GIL, and the top-K functions by self and total share of the
active samples. Source: repeating windows of ``py-spy record --nonblocking`` (py-spy
writes only when it exits), three recordings per window — see
:func:`agent.collectors.profile.stacks.summarize_window`. The last window's stacks are
served as collapsed stacks, speedscope JSON and SVG under ``/v1/profiles`` and can be
pushed to Pyroscope. Cost: py-spy reads the target's memory without pausing it; agent and
children used 1.7 % of one core per process at the default 9 Hz (2.4-3.5 % at 19 Hz; a
9-thread workload, bench/profile_overhead), and a CPU budget caps all children together.
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
