"""The gpu collector: the poller's snapshot and the XID counts as metric families, built
once per poll and served to every scrape until the next."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.collectors.gpu import metrics as m
from agent.collectors.gpu.events import XidWatcher
from agent.collectors.gpu.poll import Poller, Snapshot
from agent.collectors.gpu.settings import GpuSettings
from agent.discovery import ProcessInfo, series_labels
from agent.registry import CollectorUnavailable, Context, SnapshotCollector

# What pyproject.toml asks for; the fix a missing package's message gives.
NVML_REQUIREMENT = "nvidia-ml-py>=12.535.77,<14"


def render(
    snap: Snapshot,
    xids: dict[tuple[int, str, int], int],
    lookup: Callable[[int], ProcessInfo | None],
    wait_errors: Mapping[str, int] | None = None,
) -> list[Metric]:
    """Snapshot → metric families; every family is always present, possibly empty."""
    info = m.INFO.gauge()
    up = m.UP.gauge()
    values: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        k: spec.counter() if spec.type == "counter" else spec.gauge()
        for k, spec in m.VALUES.items()
    }
    clocks = m.CLOCK.gauge()
    events = m.CLOCK_EVENT.gauge()
    ecc = m.ECC_ERRORS.counter()
    pcie = m.PCIE_THROUGHPUT.gauge()
    xid = m.XID_ERRORS.counter()
    proc_mem = m.PROCESS_MEMORY.gauge()
    proc_util = m.PROCESS_UTILIZATION.gauge()
    mig_info = m.MIG_INFO.gauge()
    mig_mem = {k: spec.gauge() for k, spec in m.MIG_MEMORY.items()}
    for g in snap.gpus:
        ids = [str(g.index), g.uuid]
        info.add_metric([*ids, g.name, g.pci_bus_id, snap.driver_version], 1.0)
        up.add_metric(ids, 1.0 if g.up else 0.0)
        if not g.up:
            continue
        for field, value in g.values.items():
            fam = values.get(field)
            if fam is not None:
                fam.add_metric(ids, value)
        for clock, hz in g.clocks.items():
            clocks.add_metric([*ids, clock], hz)
        for reason, active in g.clock_events.items():
            events.add_metric([*ids, reason], float(active))
        for kind, count in g.ecc.items():
            ecc.add_metric([*ids, kind], count)
        for direction, rate in g.pcie.items():
            pcie.add_metric([*ids, direction], rate)
        for mig in g.mig:
            gi, ci = str(mig.gpu_instance), str(mig.compute_instance)
            mig_info.add_metric([*ids, gi, ci, mig.uuid], 1.0)
            for k, v in mig.memory.items():
                mig_mem[k].add_metric([*ids, gi, ci], v)
        # Processes of one pod/container/comm share a label set: their use adds up.
        memory: dict[tuple[str, ...], float] = {}
        share: dict[tuple[str, ...], float] = {}
        for p in g.processes.values():
            key = (*ids, *series_labels(lookup(p.pid), p.pid))
            if p.memory_bytes is not None:
                memory[key] = memory.get(key, 0.0) + p.memory_bytes
            if p.sm_ratio is not None:
                share[key] = min(1.0, share.get(key, 0.0) + p.sm_ratio)
        for key, value in memory.items():
            proc_mem.add_metric(list(key), value)
        for key, value in share.items():
            proc_util.add_metric(list(key), value)
    for (index, uuid, code), count in sorted(xids.items()):
        xid.add_metric([str(index), uuid, str(code)], float(count))
    xid_wait = m.XID_WAIT_ERRORS.counter()
    for kind, count in sorted((wait_errors or {}).items()):
        xid_wait.add_metric([kind], float(count))
    inaccessible = m.INACCESSIBLE.gauge()
    inaccessible.add_metric([], float(len(snap.inaccessible)))
    duration = m.POLL_DURATION.gauge()
    duration.add_metric([], snap.duration_s)
    errors = m.NVML_ERRORS.counter()
    for kind, count in sorted(snap.errors.items()):
        errors.add_metric([kind], float(count))
    return [
        info,
        up,
        *values.values(),
        clocks,
        events,
        ecc,
        pcie,
        xid,
        xid_wait,
        inaccessible,
        proc_mem,
        proc_util,
        mig_info,
        *mig_mem.values(),
        duration,
        errors,
    ]


class GpuCollector(SnapshotCollector):
    name = "gpu"

    def __init__(
        self,
        ctx: Context,
        nvml: Any,
        interval: float = GpuSettings.interval,
        pcie_throughput: bool = GpuSettings.pcie_throughput,
        xid_events: bool = GpuSettings.xid_events,
    ) -> None:
        super().__init__(interval)
        self.discovery = ctx.discovery
        self.nvml = nvml
        self.xid = XidWatcher(nvml) if xid_events else None
        self.poller = Poller(nvml, pcie_throughput=pcie_throughput, on_device=self._on_device)
        self._rendered: (
            tuple[Snapshot, Any, dict[Any, int], dict[str, int], list[Metric]] | None
        ) = None

    def _on_device(self, index: int, handle: Any, uuid: str) -> None:
        if self.xid is not None:
            self.xid.register(index, handle, uuid)

    def open(self) -> None:
        self.poller.open()
        if self.xid is not None and not self.xid.start():
            self.xid = None

    def refresh(self) -> Snapshot:
        snap = self.poller.poll()
        self.discovery.set_extra("gpu", {pid for g in snap.gpus for pid in g.processes})
        return snap

    def render(self, snapshot: Snapshot) -> Iterable[Metric]:
        xids = self.xid.counts() if self.xid is not None else {}
        wait_errors = self.xid.wait_errors() if self.xid is not None else {}
        # Scrapes between two polls see the same families: built once, rendered many times.
        # Discovery replaces its watched map on each refresh, so its identity says whether
        # a process's labels may have changed.
        # The cache holds the objects themselves, so their identities cannot be reused.
        watched = self.discovery.snapshot()
        cached = self._rendered
        if (
            cached is not None
            and cached[0] is snapshot
            and cached[1] is watched
            and cached[2] == xids
            and cached[3] == wait_errors
        ):
            return cached[4]
        families = render(snapshot, xids, self.discovery.get, wait_errors)
        self._rendered = (snapshot, watched, xids, wait_errors, families)
        return families

    def shutdown(self) -> None:
        if self.xid is not None:
            self.xid.close()
        self.poller.close()


def load_nvml() -> Any:
    """Imports pynvml; a missing package is a clear CollectorUnavailable, not a traceback."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise CollectorUnavailable(
            f"the nvidia-ml-py package is not installed: {exc}",
            f"pip install '{NVML_REQUIREMENT}'",
        ) from None


def factory(ctx: Context, settings: GpuSettings) -> GpuCollector:
    return GpuCollector(
        ctx,
        load_nvml(),
        interval=settings.interval,
        pcie_throughput=settings.pcie_throughput,
        xid_events=settings.xid_events,
    )
