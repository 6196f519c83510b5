"""`vigil doctor` checks for the profile collector: py-spy, its version, the privilege."""

from __future__ import annotations

import os
from pathlib import Path

from agent.collectors.profile.pyspy import find_pyspy, pyspy_version
from agent.collectors.profile.settings import ProfileSettings
from agent.registry import Check, Paths

CAP_SYS_PTRACE = 19  # bit number in /proc/<pid>/status CapEff (linux/capability.h)

PYSPY_FIX = (
    "pip install 'py-spy>=0.4' into Vigil's virtualenv, or pass --collector.profile.pyspy-path"
)


def has_cap_sys_ptrace(status_text: str) -> bool:
    """``/proc/self/status`` contents → whether CAP_SYS_PTRACE is effective."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    return False


def privilege_check(procfs: str = "/proc", euid: int | None = None) -> Check:
    uid = os.geteuid() if euid is None else euid
    try:
        cap = has_cap_sys_ptrace(Path(procfs, "self", "status").read_text())
    except OSError:
        cap = False
    if uid == 0 and cap:
        return Check("ptrace privilege", True, "root with CAP_SYS_PTRACE")
    if cap:
        return Check("ptrace privilege", True, "CAP_SYS_PTRACE effective")
    why = (
        "root without CAP_SYS_PTRACE (a container without SYS_PTRACE?)"
        if uid == 0
        else ("not root and no CAP_SYS_PTRACE: only processes of the same user can be read")
    )
    return Check(
        "ptrace privilege",
        False,
        why,
        "run as root with CAP_SYS_PTRACE (Kubernetes: securityContext.capabilities.add: "
        "[SYS_PTRACE]), or setcap cap_sys_ptrace+ep on the py-spy binary",
    )


def ptrace_scope_check(procfs: str = "/proc") -> Check:
    path = Path(procfs, "sys", "kernel", "yama", "ptrace_scope")
    try:
        scope = int(path.read_text().strip())
    except FileNotFoundError:
        return Check("yama ptrace_scope", True, "Yama LSM not enabled: no extra restriction")
    except (OSError, ValueError) as exc:
        return Check("yama ptrace_scope", False, f"cannot read {path}: {exc}")
    if scope <= 2:
        meaning = {
            0: "classic",
            1: "restricted to descendants unless CAP_SYS_PTRACE",
            2: "admin only (CAP_SYS_PTRACE)",
        }[max(scope, 0)]
        return Check("yama ptrace_scope", True, f"{scope} ({meaning})")
    return Check(
        "yama ptrace_scope",
        False,
        f"{scope}: no process may attach to another, not even root",
        "the setting is locked until reboot: boot with kernel.yama.ptrace_scope=2 or lower",
    )


def doctor(settings: ProfileSettings, paths: Paths) -> list[Check]:
    procfs = paths.procfs
    path = find_pyspy(settings.pyspy_path)
    if path is None:
        wanted = settings.pyspy_path or "py-spy next to the Python running vigil, or on PATH"
        return [
            Check("py-spy", False, f"not found ({wanted})", PYSPY_FIX),
            privilege_check(procfs),
            ptrace_scope_check(procfs),
        ]
    try:
        version = pyspy_version(path)
        found = Check("py-spy", True, f"{path} version {version}")
    except (OSError, ValueError) as exc:
        found = Check("py-spy", False, f"{path} does not run: {exc}", PYSPY_FIX)
    return [found, privilege_check(procfs), ptrace_scope_check(procfs)]
