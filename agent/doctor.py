"""`vigil doctor`: can each collector run here, and if not, exactly why and what fixes it.

System checks are shared facts (privilege, bcc, tracefs; agent/checks.py); each collector
adds its own through ``CollectorSpec.doctor(settings, paths)``. Exit status is non-zero
when a collector that was explicitly enabled (flag, environment or config file) cannot
run.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from agent import __version__
from agent.checks import system_checks
from agent.config import Config
from agent.registry import Check, CollectorSpec


def run_doctor(config: Config, specs: Sequence[CollectorSpec], out: TextIO) -> int:
    """Prints the report; returns the exit status."""
    w = out.write
    w(f"vigil {__version__} doctor — Python {platform.python_version()} ({sys.executable})\n\n")
    w("system\n")
    for c in system_checks():
        _print_check(w, c)
    w("\ncollectors\n")
    status = 0
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
            if explicit:
                status = 1
        for c in checks:
            _print_check(w, c, indent=4)
    if status:
        w("\nan explicitly enabled collector cannot run (exit status 1)\n")
    return status


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
