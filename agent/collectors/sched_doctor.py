"""Set-up checks of the sched collector: what `vigil doctor` prints, and why it cannot start.

The fast checks (privilege, bcc, tracefs, headers, tracepoint fields) run before the probe
is loaded, so a missing piece is reported as itself rather than as a compiler error. The
doctor also compiles and attaches the probe once (about a second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent import doctor as sysdoctor
from agent.collectors.sched_probe import PROBE_PATH, REQUIRED_FIELDS, SchedProbe, missing_fields
from agent.registry import Check, CollectorUnavailable

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


def fields_check() -> Check:
    what = "scheduler tracepoint fields"
    root = next((p for p in TRACEFS if (p / "events" / "sched").is_dir()), None)
    if root is None:
        return Check(what, False, "no tracefs with sched events", sysdoctor.tracefs_check().fix)
    missing = missing_fields(root)
    if missing:
        return Check(
            what,
            False,
            f"this kernel's tracepoints lack {', '.join(missing)}",
            "a kernel with the standard sched tracepoints (CONFIG_FTRACE) is needed",
        )
    count = sum(len(f) for f in REQUIRED_FIELDS.values())
    return Check(what, True, f"{count} fields present in {root}/events/sched")


def cgroup2_check() -> Check:
    from agent.collectors.sched_cgroup import CgroupNames

    root = CgroupNames().root()
    if root is None:
        return Check(
            "cgroup2 mount",
            False,
            "cgroup mode names cgroups through the cgroup2 hierarchy, which is not mounted",
            "mount -t cgroup2 none /sys/fs/cgroup/unified (or use --collector.sched.mode=watched)",
        )
    return Check("cgroup2 mount", True, root)


def preflight(mode: str = "watched") -> list[Check]:
    """The fast checks, first failure first."""
    root = sysdoctor.root_check()
    checks = [root, sysdoctor.bcc_check(), sysdoctor.headers_check()]
    if root.ok:
        tracefs = sysdoctor.tracefs_check()
        checks.append(tracefs)
        if tracefs.ok:
            checks.append(fields_check())
    else:
        # tracefs is mode 0700 on most hosts: without privilege it cannot even be looked at.
        checks.append(Check("tracefs", False, "not readable without privilege", root.fix))
    if mode == "cgroup":
        checks.append(cgroup2_check())
    return checks


def compile_check(mode: str) -> Check:
    what = f"probe {PROBE_PATH.name} compiles and attaches"
    try:
        probe = SchedProbe(mode, 1024)
    except CollectorUnavailable as exc:
        return Check(what, False, exc.reason, exc.fix)
    probe.close()
    return Check(what, True, f"6 tracepoints attached and detached ({mode} mode)")


def doctor(options: dict[str, Any]) -> list[Check]:
    mode = str(options.get("mode", "watched"))
    checks = preflight(mode)
    if all(c.ok for c in checks):
        checks.append(compile_check(mode))
    return checks
