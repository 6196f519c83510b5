"""Host checks that more than one part of the agent needs (privilege, bcc, tracefs): the
system section of `vigil doctor`, and the sched collector's preflight. Below the CLI, so
that a collector can use them without depending on the command that prints them."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path

from agent.registry import Check

SETUP_FIX = "sudo scripts/setup.sh   (from the Vigil checkout)"


def _venv_sees_system_packages() -> bool | None:
    """None outside a venv; else whether it was made with --system-site-packages."""
    if sys.prefix == sys.base_prefix:
        return None
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    try:
        text = cfg.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


def bcc_check() -> Check:
    """Whether ``import bcc`` works, and if not, the precise reason."""
    try:
        importlib.import_module("bcc")
    except ImportError as exc:
        sees = _venv_sees_system_packages()
        system_bcc = Path("/usr/lib/python3/dist-packages/bcc/__init__.py").exists()
        if system_bcc and sees is False:
            return Check(
                "bcc Python module",
                False,
                f"python3-bpfcc is installed but this virtualenv ({sys.prefix}) was created "
                "without --system-site-packages, so it cannot see it",
                f"rm -rf {sys.prefix} && /usr/bin/python3 -m venv --system-site-packages "
                f"{sys.prefix}   (or: {SETUP_FIX})",
            )
        if system_bcc and not sys.executable.startswith("/usr/bin/") and sees is None:
            return Check(
                "bcc Python module",
                False,
                f"python3-bpfcc is built for /usr/bin/python3, but vigil runs on "
                f"{sys.executable} (Python {platform.python_version()})",
                f"run vigil from a venv made with /usr/bin/python3 -m venv "
                f"--system-site-packages   (or: {SETUP_FIX})",
            )
        return Check(
            "bcc Python module",
            False,
            f"import bcc failed: {exc}",
            f"apt-get install python3-bpfcc bpfcc-tools   (or: {SETUP_FIX})",
        )
    return Check("bcc Python module", True, "import bcc works")


def root_check() -> Check:
    if os.geteuid() == 0:
        return Check("privilege", True, "running as root")
    return Check(
        "privilege",
        False,
        "not root: loading BPF needs CAP_BPF + CAP_PERFMON, py-spy needs CAP_SYS_PTRACE",
        "run as root, or grant the capabilities: setcap cap_bpf,cap_perfmon,cap_sys_ptrace+ep",
    )


def _exists(path: str) -> bool | None:
    """None when the answer is hidden from this user (tracefs is root-only by default)."""
    try:
        return Path(path).exists()
    except PermissionError:
        return None


def tracefs_check() -> Check:
    found = _exists("/sys/kernel/tracing/events/sched/sched_switch")
    if found:
        return Check("tracefs", True, "mounted at /sys/kernel/tracing")
    if found is None:
        return Check(
            "tracefs",
            False,
            "/sys/kernel/tracing is not readable by this user",
            root_check().fix,
        )
    if _exists("/sys/kernel/debug/tracing/events/sched/sched_switch"):
        return Check("tracefs", True, "available under /sys/kernel/debug/tracing")
    return Check(
        "tracefs",
        False,
        "scheduler tracepoints not visible: tracefs is not mounted",
        "mount -t tracefs nodev /sys/kernel/tracing",
    )


def system_checks() -> list[Check]:
    # Kernel headers are the sched collector's check: it knows where the node's root is.
    return [root_check(), bcc_check(), tracefs_check()]
