"""The sched collector: the probe's maps, read every ``interval``, as per-series
histograms and counters (log2 slots → buckets, series merged per label set)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from agent.collectors.sched import metrics as m
from agent.collectors.sched.cgroup import CgroupNames, cgroup_labels
from agent.collectors.sched.doctor import Setup
from agent.collectors.sched.probe import DROP_REASONS, GroupStats, Probe
from agent.collectors.sched.settings import SchedSettings
from agent.discovery import LABEL_NAMES, Discovery, ProcessInfo, series_labels
from agent.registry import Check, CollectorUnavailable, Context, SnapshotCollector

log = logging.getLogger("vigil.sched")

UNIT_S = 1e-6  # the probe's log2 slots count microseconds
# Slots 1..26 become buckets: le = 2 us .. 2^26 us = 67.1 s, enough for a thread blocked
# on a one-minute timeout; longer waits still count in +Inf and in _sum.
FIRST_SLOT = 1  # bpf_log2l() never yields slot 0
TOP_SLOT = 26

CGROUP_LABEL_NAMES = ("pod", "namespace", "container", "cgroup")
# Exited threads leave their filter flag set (a stale flag costs an unwatched thread that
# shares it a hash lookup); rewriting the 64 Ki flags costs a few ms, so twice a minute.
COMPACT_EVERY_S = 30.0


# --- pure parts -------------------------------------------------------------------------


def log2_buckets(
    slots: Sequence[int], unit: float = UNIT_S, first: int = FIRST_SLOT, top: int = TOP_SLOT
) -> list[tuple[str, float]]:
    """Log2 slot counts → cumulative Prometheus buckets.

    Slot ``k`` holds values below ``2^k`` units, so its upper bound is ``le = 2^k * unit``.
    Every bound from ``first`` to ``top`` is present (empty slots repeat the running total,
    so all series share one bucket layout and can be summed); slots below ``first`` fold
    into the first bucket, slots above ``top`` only into ``+Inf``.
    """
    if first > top:
        raise ValueError(f"first slot {first} is above top slot {top}")
    out: list[tuple[str, float]] = []
    running = sum(slots[:first])
    for k in range(first, top + 1):
        running += slots[k] if k < len(slots) else 0
        out.append((floatToGoString(2.0**k * unit), float(running)))
    out.append(("+Inf", float(sum(slots))))
    return out


def merge_series(
    groups: Mapping[int, GroupStats],
    labels_of: Mapping[int, tuple[str, ...]],
    retired: Mapping[tuple[str, ...], GroupStats],
) -> dict[tuple[str, ...], GroupStats]:
    """Sums groups that share a label set, plus what exited members of that set left behind.

    Groups without labels are not exported. Retired totals are added only to label sets that
    still have a live member, so a series never drops while it exists.
    """
    out: dict[tuple[str, ...], GroupStats] = {}
    for group, stats in groups.items():
        labels = labels_of.get(group)
        if labels is None:
            continue
        out.setdefault(labels, GroupStats()).add(stats)
    for labels, stats in retired.items():
        if labels in out:
            out[labels].add(stats)
    return out


@dataclass
class Snapshot:
    label_names: tuple[str, ...]
    series: dict[tuple[str, ...], GroupStats]
    threads: int | None
    dropped: dict[str, int] = field(default_factory=dict)


# --- the collector ------------------------------------------------------------------------


class SchedCollector(SnapshotCollector):
    name = "sched"

    def __init__(
        self,
        discovery: Discovery,
        loader: Callable[[str, int], Probe],
        procfs: str = "/proc",
        mode: str = SchedSettings.mode,
        interval: float = SchedSettings.interval,
        max_threads: int = SchedSettings.max_threads,
        cgroups: CgroupNames | None = None,
        preflight: Callable[[], list[Check]] = lambda: [],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval, clock)
        self.discovery = discovery
        self.procfs = procfs
        self.mode = mode
        self._loader = loader
        self._max_threads = max_threads
        self._preflight = preflight
        self._cgroups = cgroups if cgroups is not None else CgroupNames(procfs)
        self._probe: Probe | None = None
        self._compacted = self._clock()
        # watched mode: group (watched pid) -> (start time, labels); and the totals of
        # exited members per label set, kept while the set has a live member.
        self._live: dict[int, tuple[int, tuple[str, ...]]] = {}
        self._retired: dict[tuple[str, ...], GroupStats] = {}

    def open(self) -> None:
        for check in self._preflight():
            if not check.ok:
                raise CollectorUnavailable(f"{check.what}: {check.detail}", check.fix)
        self._probe = self._loader(self.mode, self._max_threads)
        log.info("sched probe attached", extra={"mode": self.mode, "tracepoints": 6})

    def shutdown(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def refresh(self) -> Snapshot:
        probe = self._probe
        if probe is None:
            raise RuntimeError("probe not loaded")
        if self.mode == "cgroup":
            return self._refresh_cgroups(probe)
        watched = self.discovery.snapshot()
        raw = probe.read()
        for pid, (start, labels) in list(self._live.items()):
            info = watched.get(pid)
            if info is None or info.start_time != start:
                self._retire(probe, pid, labels, raw.pop(pid, None))
        for pid, info in watched.items():
            if pid not in self._live:
                self._seed(probe, info)
        if self._clock() - self._compacted >= COMPACT_EVERY_S:
            probe.compact()
            self._compacted = self._clock()
        for group in [g for g in raw if g not in self._live]:
            probe.forget(group)  # left over from an exited group; never exported
            del raw[group]
        live_labels = {labels for _, labels in self._live.values()}
        self._retired = {k: v for k, v in self._retired.items() if k in live_labels}
        labels_of = {pid: labels for pid, (_, labels) in self._live.items()}
        for pid in self._live:
            raw.setdefault(pid, GroupStats())  # a series from the start, at zero
        return Snapshot(
            LABEL_NAMES,
            merge_series(raw, labels_of, self._retired),
            probe.thread_count(),
            probe.dropped(),
        )

    def _seed(self, probe: Probe, info: ProcessInfo) -> None:
        try:
            tids = [int(t) for t in os.listdir(f"{self.procfs}/{info.pid}/task") if t.isdigit()]
        except OSError:
            return  # exited since discovery saw it
        for tid in tids:
            probe.watch(tid, info.pid)
        self._live[info.pid] = (info.start_time, series_labels(info, info.pid))

    def _retire(
        self, probe: Probe, pid: int, labels: tuple[str, ...], last: GroupStats | None
    ) -> None:
        if last is not None:
            self._retired.setdefault(labels, GroupStats()).add(last)
        probe.forget(pid)
        del self._live[pid]

    def _refresh_cgroups(self, probe: Probe) -> Snapshot:
        raw = probe.read()
        names = self._cgroups.resolve(raw.keys())
        for group in [g for g in raw if g not in names]:
            probe.forget(group)  # the cgroup is gone
            del raw[group]
        labels_of = {g: cgroup_labels(path, self.discovery.resolver) for g, path in names.items()}
        return Snapshot(CGROUP_LABEL_NAMES, merge_series(raw, labels_of, {}), None, probe.dropped())

    def render(self, snapshot: Snapshot) -> Iterable[Metric]:
        names = list(snapshot.label_names)
        runq = m.RUNQUEUE_LATENCY.histogram(names)
        offcpu = m.OFFCPU.histogram(names)
        switches = m.CONTEXT_SWITCHES.counter([*names, "kind"])
        migrations = m.MIGRATIONS.counter(names)
        for labels, s in sorted(snapshot.series.items()):
            values = list(labels)
            runq.add_metric(values, log2_buckets(s.runq_slots), s.runq_ns / 1e9)
            offcpu.add_metric(values, log2_buckets(s.offcpu_slots), s.offcpu_ns / 1e9)
            switches.add_metric([*values, "voluntary"], float(s.voluntary))
            switches.add_metric([*values, "involuntary"], float(s.involuntary))
            migrations.add_metric(values, float(s.migrations))
        out: list[Metric] = [runq, offcpu, switches, migrations]
        if snapshot.threads is not None:
            threads = m.WATCHED_THREADS.gauge()
            threads.add_metric([], float(snapshot.threads))
            out.append(threads)
        dropped = m.DROPPED_EVENTS.counter()
        for reason in DROP_REASONS:
            dropped.add_metric([reason], float(snapshot.dropped.get(reason, 0)))
        out.append(dropped)
        return out


def factory(ctx: Context, settings: SchedSettings) -> SchedCollector:
    setup = Setup(settings.mode, settings.host_root, settings.max_threads)
    return SchedCollector(
        discovery=ctx.discovery,
        loader=setup.load,
        procfs=ctx.paths.procfs,
        mode=settings.mode,
        interval=settings.interval,
        max_threads=settings.max_threads,
        preflight=setup.checks,
    )
