"""Pure parsers: ``cpu.stat`` (cgroup v1 and v2), ``/proc/<pid>/cgroup`` and the mount table.

The kernel writes ``cpu.stat`` as ``key value`` lines. Version 2 (every controller in one
tree) counts in microseconds::

    usage_usec 1234
    nr_periods 120
    nr_throttled 80
    throttled_usec 950000

Version 1 (the ``cpu`` controller's own tree) counts ``throttled_time`` in nanoseconds
and has no ``usage_usec`` (that lives in cpuacct). Both become :class:`CpuStat` in base
units; a file without the CFS bandwidth keys (no ``cpu.max`` / ``cpu.cfs_quota_us`` support
in the kernel) is not a cpu.stat this collector can use, except a v2 group that shows
usage only: the cpu controller is not enabled for it, so it has no quota and is never
throttled (all zero).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


class CpuStatError(ValueError):
    """A ``cpu.stat`` text that lacks the throttling counters or has unreadable numbers."""


@dataclass(frozen=True)
class CpuStat:
    periods: int  # CFS enforcement periods in which the group had runnable tasks
    throttled_periods: int  # of those, periods in which it ran out of quota
    throttled_seconds: float  # time its tasks were held back by the quota
    # False: the group's cpu.stat has no bandwidth keys because the cpu controller is not
    # enabled for it (cgroup v2 shows usage only then): no quota, so never throttled.
    bandwidth: bool = True


def parse_cpu_stat(text: str, version: int) -> CpuStat:
    """``cpu.stat`` text of cgroup ``version`` (1 or 2) → :class:`CpuStat`.

    Unknown keys are ignored (kernels add some: ``nr_bursts``, ``burst_usec``); a line
    that is not ``key integer`` is an error, as is a missing throttling key, since a
    series built from a half-read file would be wrong in a way no one sees.
    """
    if version not in (1, 2):
        raise CpuStatError(f"cgroup version {version} is not 1 or 2")
    values: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CpuStatError(f"line {n}: {line[:80]!r} is not 'key value'")
        key, raw = parts
        try:
            value = int(raw)
        except ValueError:
            raise CpuStatError(f"line {n}: {key} value {raw[:40]!r} is not an integer") from None
        if value < 0:
            raise CpuStatError(f"line {n}: {key} is negative ({value})")
        values[key] = value
    time_key, scale = ("throttled_usec", 1e-6) if version == 2 else ("throttled_time", 1e-9)
    keys = ("nr_periods", "nr_throttled", time_key)
    missing = [k for k in keys if k not in values]
    if version == 2 and len(missing) == len(keys) and "usage_usec" in values:
        return CpuStat(0, 0, 0.0, bandwidth=False)
    if missing:
        raise CpuStatError(
            f"no {', '.join(missing)} in cpu.stat (the kernel has no CFS bandwidth control)"
        )
    return CpuStat(values["nr_periods"], values["nr_throttled"], values[time_key] * scale)


@dataclass(frozen=True)
class CgroupPath:
    """Where a process's cpu accounting lives: the hierarchy version and the path in it."""

    version: int
    path: str


def cpu_cgroup(text: str) -> CgroupPath | None:
    """``/proc/<pid>/cgroup`` → the cgroup that holds its CPU bandwidth control.

    A v1 line whose controllers include ``cpu`` wins (on a hybrid host the cpu controller
    is still in v1 and the v2 tree has no ``cpu.stat`` throttling); else the unified
    ``0::/path`` line. None when neither is there.
    """
    unified: CgroupPath | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        _hid, controllers, path = parts
        if controllers == "" and parts[0] == "0":
            unified = CgroupPath(2, path)
        elif "cpu" in controllers.split(","):
            return CgroupPath(1, path)
    return unified


def cgroup_mounts(mounts_text: str) -> dict[int, str]:
    """Mount table (``/proc/self/mounts``) → {1: the v1 cpu controller's mount, 2: the
    cgroup2 mount}, each only when present."""
    out: dict[int, str] = {}
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point = parts[1].replace("\\040", " ")
        if parts[2] == "cgroup2" and 2 not in out:
            out[2] = point
        elif parts[2] == "cgroup" and "cpu" in parts[3].split(",") and 1 not in out:
            out[1] = point
    return out


def in_namespace(path: str) -> bool:
    """Whether a ``/proc/<pid>/cgroup`` path is below the reader's cgroup namespace root.

    A process outside the reader's cgroup namespace (the agent in a container with a
    private cgroup namespace, reading host processes) shows as ``/../../kubepods/...``.
    """
    return not path.startswith("/..")


def host_path(namespace_root: str, path: str) -> str:
    """A path seen from inside a cgroup namespace (``/../x``) as a path of the whole
    hierarchy, given where that namespace's root sits in it. ``..`` cannot climb above
    the hierarchy's root, as in the kernel."""
    joined = "/".join(p for p in (namespace_root.strip("/"), path.strip("/")) if p)
    # normpath keeps a leading "//" (POSIX allows it a meaning); one slash is the root here.
    return "/" + posixpath.normpath("/" + joined).lstrip("/")


def stat_file(mount: str, path: str) -> str:
    """The ``cpu.stat`` file of ``path`` under ``mount``; ``..`` in a path is refused (resolve
    it with :func:`host_path` first): it would read outside the hierarchy."""
    if any(part == ".." for part in path.split("/")):
        raise CpuStatError(f"cgroup path {path[:120]!r} contains '..'")
    return mount.rstrip("/") + "/" + path.strip("/") + ("/" if path.strip("/") else "") + "cpu.stat"
