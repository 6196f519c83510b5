"""`vigil doctor`: can each collector run here, and if not, exactly why and what fixes it.

System checks are shared facts (privilege, bcc, tracefs; agent/checks.py); each collector
adds its own through ``CollectorSpec.doctor(settings, paths)``. Then the Python processes
on this host: which ones the agent would watch, and for the others why not and the
``--watch`` that would match them.

Exit status (:data:`EXIT_OK`, :data:`EXIT_FAILED`; 2 is a usage error, from the CLI): 1
whenever a line says FAIL, so a script can trust a 0. Disabled collectors are not checked.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from agent import __version__
from agent.checks import system_checks
from agent.config import Config
from agent.discovery import Discovery, Seen, suggest_watch
from agent.registry import Check, CollectorSpec

EXIT_OK = 0  # every check passed
EXIT_FAILED = 1  # at least one FAIL line
# At most this many Python processes are listed; a host with more says how many it left out.
MAX_LISTED = 100


def run_doctor(config: Config, specs: Sequence[CollectorSpec], out: TextIO) -> int:
    """Prints the report; returns the exit status."""
    w = out.write
    w(f"vigil {__version__} doctor — Python {platform.python_version()} ({sys.executable})\n\n")
    w("system\n")
    status = EXIT_OK
    for c in system_checks():
        _print_check(w, c)
        if not c.ok:
            status = EXIT_FAILED
    w("\ncollectors\n")
    for spec in specs:
        enabled = config.enabled(spec.name)
        explicit = config.explicitly_enabled(spec.name)
        if not enabled:
            w(f"  {spec.name:<8} disabled   (enable with --collector.{spec.name})\n")
            continue
        checks = _call_doctor(spec, config)
        failed = [c for c in checks if not c.ok]
        if not failed:
            w(f"  {spec.name:<8} ready\n")
        else:
            w(f"  {spec.name:<8} not ready\n")
            status = EXIT_FAILED
        for c in checks:
            _print_check(w, c, indent=4)
        if failed and not explicit:
            w(
                f"    (on by default: `vigil run` goes on without it; --no-collector.{spec.name} "
                "switches it off)\n"
            )
        elif failed:
            w("    (explicitly enabled collector cannot run)\n")
    w("\n")
    _print_processes(w, config)
    if status:
        w("\nsomething above says FAIL (exit status 1)\n")
    return status


def _print_processes(write: Callable[[str], object], config: Config) -> None:
    """The Python processes discovery sees, as one `vigil run` refresh would judge them
    (GPU holders are added by the running agent's gpu collector, not shown here)."""
    d = Discovery(
        procfs=config.procfs,
        patterns=config.watch,
        runtimes=config.watch_is_default,
        self_pid=os.getpid(),
    )
    d.refresh()
    # Watched first, then the newest: the server just started is the one being asked about.
    seen = sorted(d.python_seen, key=lambda s: (not s.sources, -s.pid))
    write(f"python processes ({len(seen)} seen under {config.procfs})\n")
    for s in seen[:MAX_LISTED]:
        write(_describe_seen(s, d.runtimes))
    if len(seen) > MAX_LISTED:
        write(f"  … and {len(seen) - MAX_LISTED} more\n")


def _describe_seen(s: Seen, runtimes_on: bool) -> str:
    # A `python -c` program's newlines would break the report's one-line-per-process shape.
    flat = " ".join(s.cmdline.split())
    cmd = flat if len(flat) <= 100 else flat[:99] + "…"
    if s.sources:
        reasons = []
        if "watch" in s.sources:
            reasons.append("command line matches --watch")
        if "runtime" in s.sources:
            reasons.append("ML runtime mapped: " + ", ".join(s.runtimes))
        return f"  ok   pid {s.pid} watched ({'; '.join(reasons)}): {cmd}\n"
    regex = suggest_watch(s.cmdline)
    why = "command line matches no --watch pattern"
    if runtimes_on:  # with a --watch given, a runtime does not count (and is not looked for)
        why += ", no ML runtime mapped"
    return (
        f"  --   pid {s.pid} not watched ({why}): {cmd}\n"
        f"       to watch it: --watch {shlex.quote(regex)}\n"
    )


def _call_doctor(spec: CollectorSpec, config: Config) -> list[Check]:
    try:
        return spec.doctor(config.settings[spec.name], config.paths)
    except Exception as exc:  # a doctor's own bug must not hide the other collectors
        return [Check("doctor", False, f"the check itself failed: {type(exc).__name__}: {exc}")]


def _print_check(write: Callable[[str], object], c: Check, indent: int = 2) -> None:
    pad = " " * indent
    mark = "ok  " if c.ok else "FAIL"
    write(f"{pad}{mark} {c.what}: {c.detail}\n")
    if not c.ok and c.fix:
        write(f"{pad}     fix: {c.fix}\n")
