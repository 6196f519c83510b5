"""The cgroup collector: each watched process's cgroup ``cpu.stat``, read every ``interval``.

A process's cgroup is read from ``<procfs>/<pid>/cgroup`` on every refresh: a process can
be moved (systemd, a runtime placing a process after it started), and the read is one
small file per watched process. Each cgroup's ``cpu.stat`` is read once per refresh,
whatever the number of watched processes in it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from agent.collectors.cgroup import metrics as m
from agent.collectors.cgroup.cpustat import (
    CgroupPath,
    CpuStat,
    CpuStatError,
    cgroup_mounts,
    cpu_cgroup,
    host_path,
    in_namespace,
    parse_cpu_stat,
    stat_file,
)
from agent.collectors.cgroup.settings import CgroupSettings
from agent.discovery import Discovery, series_labels
from agent.registry import CollectorNotApplicable, Context, SnapshotCollector

log = logging.getLogger("vigil.cgroup")


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


@dataclass
class Snapshot:
    series: dict[tuple[str, ...], CpuStat]
    errors: dict[str, int] = field(default_factory=dict)


def namespace_root(own_mount: str, hierarchy: str) -> str | None:
    """Where the agent's own cgroup namespace root sits in ``hierarchy`` (the host's tree,
    e.g. the node's /sys/fs/cgroup mounted into the agent's pod): the directory with the
    inode of the agent's own cgroup mount, which shows only its namespace. None when not
    found (the host tree is not mounted)."""
    try:
        want = os.stat(own_mount)
    except OSError:
        return None
    for dirpath, _dirs, _files in os.walk(hierarchy):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue  # removed during the walk
        if st.st_ino == want.st_ino and st.st_dev == want.st_dev:
            rel = os.path.relpath(dirpath, hierarchy)
            return "/" if rel == "." else "/" + rel
    return None


def find_mounts(procfs: str, root: str, read: Callable[[str], str] = _read_text) -> dict[int, str]:
    """The hierarchies to read: ``root`` when given (its version from the mount table, else
    2), else what ``<procfs>/self/mounts`` lists. Raises CollectorNotApplicable when there
    is no cpu hierarchy at all."""
    try:
        mounts = cgroup_mounts(read(f"{procfs}/self/mounts"))
    except OSError as exc:
        mounts = {}
        log.warning("cannot read the mount table", extra={"error": exc.strerror})
    if root:
        version = next((v for v, p in mounts.items() if p == root.rstrip("/")), 2)
        return {version: root}
    if not mounts:
        raise CollectorNotApplicable(
            "no cgroup2 mount and no cgroup v1 cpu controller in the mount table",
            "mount cgroup2 at /sys/fs/cgroup, or give --collector.cgroup.root",
        )
    return mounts


class CgroupCollector(SnapshotCollector):
    name = "cgroup"

    def __init__(
        self,
        discovery: Discovery,
        procfs: str = "/proc",
        root: str = CgroupSettings.root,
        interval: float = CgroupSettings.interval,
        read: Callable[[str], str] = _read_text,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval, clock)
        self.discovery = discovery
        self.procfs = procfs
        self.root = root
        self._read = read
        self._mounts: dict[int, str] = {}
        self._errors = dict.fromkeys(m.READ_ERROR_REASONS, 0)
        # version -> (the whole hierarchy, the agent's namespace root in it): found once,
        # when a process outside the agent's cgroup namespace is first seen; None: not found.
        self._ns_roots: dict[int, tuple[str, str] | None] = {}
        self._own_mounts: dict[int, str] = {}

    def open(self) -> None:
        self._mounts = find_mounts(self.procfs, self.root, self._read)
        try:
            self._own_mounts = cgroup_mounts(self._read(f"{self.procfs}/self/mounts"))
        except OSError:
            self._own_mounts = {}
        log.info("cgroup hierarchies", extra={"mounts": self._mounts})

    def _outside_hierarchy(self, version: int) -> str | None:
        """The whole hierarchy, for processes outside the agent's cgroup namespace: the one
        given with --collector.cgroup.root, else the host's as PID 1 sees it
        (``<procfs>/1/root/<its cgroup mount>``: with the host's PID namespace and
        CAP_SYS_PTRACE, as the DaemonSet runs)."""
        if self.root:
            return self._mounts.get(version)
        try:
            host = cgroup_mounts(self._read(f"{self.procfs}/1/mounts"))
        except OSError:
            return None
        point = host.get(version)
        return f"{self.procfs}/1/root{point}" if point else None

    def _resolve(self, where: CgroupPath) -> tuple[str, str] | None:
        """(hierarchy mount, path in it) of the process's cgroup, or None."""
        mount = self._mounts.get(where.version)
        if in_namespace(where.path):
            return (mount, where.path) if mount else None
        if where.version not in self._ns_roots:
            own = self._own_mounts.get(where.version)
            hierarchy = self._outside_hierarchy(where.version)
            found = namespace_root(own, hierarchy) if own and hierarchy else None
            self._ns_roots[where.version] = (hierarchy, found) if hierarchy and found else None
            if found is None:
                log.warning(
                    "cannot place the agent's cgroup namespace in the host's hierarchy: "
                    "throttling of processes outside it is not read",
                    extra={
                        "hierarchy": hierarchy,
                        "fix": "run with the host's PID namespace and CAP_SYS_PTRACE, or mount "
                        "the node's /sys/fs/cgroup and give --collector.cgroup.root",
                    },
                )
        placed = self._ns_roots[where.version]
        if placed is None:
            return None
        hierarchy, ns_root = placed
        return hierarchy, host_path(ns_root, where.path)

    def _cgroup_of(self, pid: int) -> CgroupPath | None:
        try:
            return cpu_cgroup(self._read(f"{self.procfs}/{pid}/cgroup"))
        except OSError:
            return None  # exited since discovery saw it

    def refresh(self) -> Snapshot:
        watched = self.discovery.snapshot()
        # cpu.stat file -> label sets of the processes in that cgroup (one read per file)
        files: dict[tuple[str, int], set[tuple[str, ...]]] = {}
        for pid, info in watched.items():
            where = self._cgroup_of(pid)
            resolved = self._resolve(where) if where is not None else None
            if where is None or resolved is None:
                self._errors["no_cgroup"] += 1
                continue
            try:
                path = stat_file(*resolved)
            except CpuStatError:
                self._errors["malformed"] += 1
                continue
            files.setdefault((path, where.version), set()).add(series_labels(info, pid))
        series: dict[tuple[str, ...], CpuStat] = {}
        for (path, version), label_sets in files.items():
            try:
                stat = parse_cpu_stat(self._read(path), version)
            except OSError:
                self._errors["unreadable"] += 1
                continue
            except CpuStatError as exc:
                self._errors["malformed"] += 1
                log.debug("unusable cpu.stat", extra={"file": path, "error": str(exc)})
                continue
            for labels in label_sets:
                series[labels] = stat
        return Snapshot(series, dict(self._errors))

    def render(self, snapshot: Snapshot) -> Iterable[Metric]:
        periods = m.PERIODS.counter()
        throttled_periods = m.THROTTLED_PERIODS.counter()
        throttled = m.THROTTLED.counter()
        for labels, s in sorted(snapshot.series.items()):
            values = list(labels)
            periods.add_metric(values, float(s.periods))
            throttled_periods.add_metric(values, float(s.throttled_periods))
            throttled.add_metric(values, s.throttled_seconds)
        errors = m.READ_ERRORS.counter()
        for reason in m.READ_ERROR_REASONS:
            errors.add_metric([reason], float(snapshot.errors.get(reason, 0)))
        return [periods, throttled_periods, throttled, errors]


def factory(ctx: Context, settings: CgroupSettings) -> CgroupCollector:
    return CgroupCollector(
        ctx.discovery, ctx.paths.procfs, root=settings.root, interval=settings.interval
    )
