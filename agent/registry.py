"""The collector protocol, and the wrapper that isolates and times collectors.

A collector turns one raw source (BPF maps, NVML, py-spy, drift windows) into metric
families. Slow sources refresh a snapshot in a background thread; ``collect()`` only reads
the latest snapshot, so a scrape never waits on the kernel, the driver or a child process.

Every scrape goes through :class:`CollectorSet`: each collector's families are taken whole
or not at all, and ``vigil_scrape_collector_success{collector}`` /
``vigil_scrape_collector_duration_seconds{collector}`` say which ones worked. A collector
that raises loses only its own metrics; one that cannot start (no root, no bcc) reports
success 0 and is logged once. One whose hardware is simply absent (no NVIDIA driver on a
CPU-only node) is *not applicable*: it renders nothing, keeps success 1 and says why with
``vigil_collector_state{collector,state="not_applicable"}`` — a CPU-only node is not a
failing one.

The same wrapper enforces each collector's series budget (docs/scale.md): past
``--collector.<name>.max-series`` it drops whole series — a histogram's buckets, sum and
count together — in a deterministic order, and says how many with
``vigil_scrape_collector_series_dropped{collector}``. The collectors' own caps (profile
top-K, drift features, inference targets and models) keep a node far below it; the cap is
the backstop that keeps one runaway label from costing the fleet's Prometheus a million
series.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from agent.log import log_limited
from agent.loop import Loop
from agent.metrics import MetricSpec
from agent.options import declared

if TYPE_CHECKING:
    from aiohttp import web

    from agent.discovery import Discovery

log = logging.getLogger("vigil.registry")


class CollectorUnavailable(Exception):
    """A collector cannot run here. ``reason`` says why; ``fix`` is the command that helps."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


class CollectorNotApplicable(CollectorUnavailable):
    """What the collector observes is absent on this host (no GPU driver): not a failure.

    Raised from ``start()``; the entry becomes "not_applicable" and its success stays 1.
    A source that was there and broke later is still a failure (a refresh error)."""


@runtime_checkable
class Collector(Protocol):
    """What every collector implements. See agent/collectors/ for examples."""

    name: str

    def start(self) -> None:
        """Opens the source and starts background work. Raises CollectorUnavailable."""

    def collect(self) -> Iterable[Metric]:
        """Metric families from the latest snapshot. Must not block on the source."""
        ...

    def ready(self) -> bool:
        """True once the first snapshot exists (or the first refresh failed)."""
        ...

    def close(self) -> None:
        """Stops background work, child processes and kernel attachments."""


@dataclass(frozen=True)
class Check:
    """One line of `vigil doctor`: ok, the precise reason, and the command that fixes it."""

    what: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Paths:
    """Where the agent reads and writes on this host, resolved from the configuration;
    what a doctor gets, since it runs without discovery or a server."""

    procfs: str
    state_dir: Path
    # The bearer token of the /v1 APIs: --ingest-token-file, else <state_dir>/ingest-token,
    # generated on first start (token_given False).
    token_file: Path
    token_given: bool = False


@dataclass
class Context:
    """The outside world a collector may use, injected so tests can replace it. Not the
    whole configuration: a collector's own settings come as its settings dataclass."""

    discovery: Discovery
    paths: Paths
    # Components mount HTTP routes here (drift ingest, profiles); the server adds them,
    # behind the API bearer token, whatever the listen address.
    routes: list[web.RouteDef] = field(default_factory=list)
    # Every other collector's latest families (the metric contract), for the diagnosis;
    # set by the agent, None where no agent runs them (a doctor).
    families: Callable[[], Iterable[Metric]] | None = None


# factory(ctx, settings) -> collector; doctor(settings, paths) -> checks. ``settings`` is
# an instance of the spec's settings dataclass (agent/options.py).
Factory = Callable[[Context, Any], Collector]
Doctor = Callable[[Any, Paths], list[Check]]


@dataclass(frozen=True)
class CollectorSpec:
    """How a collector package registers itself (see agent/collectors/__init__.py)."""

    name: str
    help: str
    # A frozen dataclass whose fields are declared with agent.options.option().
    settings: type
    factory: Factory
    doctor: Doctor
    default_enabled: bool = True
    # Every family the collector renders (its package's metrics.py): docs/metrics.md and
    # the dashboard and rule checks are derived from these.
    metrics: tuple[MetricSpec, ...] = ()

    def __post_init__(self) -> None:
        # A field without option() has no type, help or flag: refused at import.
        declared(self.settings)


class SnapshotCollector:
    """Base for collectors whose source is slow: a thread refreshes, scrapes read.

    Subclasses implement :meth:`refresh` (talks to the source, returns a snapshot) and
    :meth:`render` (snapshot → families, pure and cheap). A failed refresh drops the
    collector's metrics until the next good one: stale numbers are worse than none.
    """

    name = "snapshot"

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._snapshot: Any = None
        self._error: BaseException | None = None
        self._first = threading.Event()
        self._loop: Loop | None = None

    # -- to implement -------------------------------------------------------
    def open(self) -> None:
        """Acquires the source; raise CollectorUnavailable when it cannot be had."""

    def refresh(self) -> Any:
        raise NotImplementedError

    def render(self, snapshot: Any) -> Iterable[Metric]:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Releases the source; called once, after the thread has stopped."""

    # -- the protocol -------------------------------------------------------
    def start(self) -> None:
        self.open()
        # The interval counts from the start of a refresh: a slow source still refreshes
        # once per interval, not once per interval plus its own latency.
        self._loop = Loop(
            self.name,
            self.refresh_now,
            self.interval,
            logger=log,
            fixed_rate=True,
            clock=self._clock,
        )
        self._loop.start()

    def collect(self) -> Iterable[Metric]:
        if self._error is not None:
            raise RuntimeError(f"last refresh failed: {self._error}")
        snapshot = self._snapshot
        if snapshot is None:
            return []
        return self.render(snapshot)

    def ready(self) -> bool:
        return self._first.is_set()

    def close(self) -> None:
        if self._loop is not None and not self._loop.stop(timeout=3.0):
            # Releasing the source under a refresh still in flight (NVML, BPF maps)
            # could crash the process; the daemon thread ends with it instead.
            log.warning(
                "collector refresh still running at close; not releasing its source",
                extra={"collector": self.name},
            )
            return
        self.shutdown()

    def refresh_now(self) -> None:
        """One refresh in the caller's thread; used by the loop and by tests."""
        try:
            self._snapshot = self.refresh()
            self._error = None
        except Exception as exc:
            self._error = exc
            log_limited(
                log,
                logging.ERROR,
                f"refresh:{self.name}:{type(exc).__name__}",
                "collector refresh failed",
                collector=self.name,
                error=str(exc),
                every=60.0,
            )
        finally:
            self._first.set()


@dataclass
class Entry:
    """One collector slot of the agent, started or not."""

    name: str
    collector: Collector | None
    state: str  # one of STATES
    reason: str = ""
    fix: str = ""


# An entry's state: started, could not start (a failure), or nothing to observe here.
STATES = ("running", "unavailable", "not_applicable")


# What every scrape says about each collector (owner "agent": the framework renders them).
SCRAPE_SUCCESS = MetricSpec(
    "vigil_scrape_collector_success",
    "gauge",
    "Whether the collector produced its metrics in this scrape (1) or not (0).",
    "agent",
    ("collector",),
)
SCRAPE_DURATION = MetricSpec(
    "vigil_scrape_collector_duration_seconds",
    "gauge",
    "Time the collector took to render its metrics in this scrape.",
    "agent",
    ("collector",),
    unit="seconds",
)
COLLECTOR_ERRORS = MetricSpec(
    "vigil_collector_errors_total",
    "counter",
    "Unexpected errors raised by a collector while rendering a scrape.",
    "agent",
    ("collector",),
)
COLLECTOR_STATE = MetricSpec(
    "vigil_collector_state",
    "gauge",
    "The collector's state (1 for the current one): running, unavailable (could not start; "
    "`vigil doctor` says why) or not_applicable (nothing to observe here, e.g. no NVIDIA "
    "driver on a CPU-only node; success stays 1).",
    "agent",
    ("collector", "state"),
)
SCRAPE_SERIES = MetricSpec(
    "vigil_scrape_collector_series",
    "gauge",
    "Series the collector exported in this scrape, after its max-series cap "
    "(a histogram's every bucket, sum and count count; docs/scale.md has the budget).",
    "agent",
    ("collector",),
)
SCRAPE_MAX_SERIES = MetricSpec(
    "vigil_scrape_collector_max_series",
    "gauge",
    "The collector's series cap (--collector.<name>.max-series).",
    "agent",
    ("collector",),
)
SCRAPE_SERIES_DROPPED = MetricSpec(
    "vigil_scrape_collector_series_dropped",
    "gauge",
    "Series the collector rendered in this scrape but the agent dropped because they were "
    "over its max-series cap; above 0, some pods, GPUs or models are missing from /metrics.",
    "agent",
    ("collector",),
)
METRICS = (
    SCRAPE_SUCCESS,
    SCRAPE_DURATION,
    COLLECTOR_ERRORS,
    COLLECTOR_STATE,
    SCRAPE_SERIES,
    SCRAPE_MAX_SERIES,
    SCRAPE_SERIES_DROPPED,
)

# Series cap per collector above the documented maximum node (docs/scale.md: 8 GPUs, 64
# watched processes, 8 models x 32 drift features, profile top-K 10: 13,631 series) with
# room to spare: the cap is there to stop a runaway label, not to trim a node that runs
# as documented. A collector not listed (one added later) gets DEFAULT_MAX_SERIES.
MAX_SERIES: dict[str, int] = {
    "discovery": 2_000,
    "sched": 10_000,
    "gpu": 5_000,
    "profile": 5_000,
    "inference": 10_000,
    "drift": 5_000,
}
DEFAULT_MAX_SERIES = 5_000


def max_series_default(collector: str) -> int:
    """The cap a collector gets unless --collector.<name>.max-series says otherwise."""
    return MAX_SERIES.get(collector, DEFAULT_MAX_SERIES)


def _series_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    # A histogram's buckets (le) and a summary's quantiles belong to one series for the cap:
    # dropping only some of them would leave a histogram Prometheus cannot use.
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("le", "quantile")))


def cap_series(families: Sequence[Metric], limit: int) -> tuple[list[Metric], int, int]:
    """At most ``limit`` samples of ``families``: (the families kept, samples kept, dropped).

    Whole label sets are kept or dropped (a histogram's buckets, sum and count, a counter's
    _total and _created), families in their rendered order, the label sets of a family in
    sorted order, so the same input drops the same series on every scrape and every node.
    A label set too large for what is left is skipped for smaller ones after it. Pure.
    """
    total = sum(len(f.samples) for f in families)
    if total <= limit:  # every scrape of a node within its budget: nothing to copy
        return list(families), total, 0
    out: list[Metric] = []
    left = limit
    for fam in families:
        groups: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
        for sample in fam.samples:
            groups.setdefault(_series_key(sample.labels), []).append(sample)
        kept: list[Sample] = []
        for key in sorted(groups):
            group = groups[key]
            if len(group) <= left:
                kept.extend(group)
                left -= len(group)
        if kept:
            trimmed = copy.copy(fam)
            trimmed.samples = kept
            out.append(trimmed)
    exported = limit - left
    return out, exported, total - exported


class CollectorSet:
    """A prometheus_client collector that runs every Vigil collector in isolation.

    Registered on a private ``CollectorRegistry``, so only Vigil's own series appear.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        clock: Callable[[], float] = time.perf_counter,
        max_series: Mapping[str, int] | None = None,
    ):
        self.entries = list(entries)
        self._clock = clock
        given = max_series or {}
        self.max_series = {
            e.name: given.get(e.name, max_series_default(e.name)) for e in self.entries
        }
        self._errors: dict[str, int] = {e.name: 0 for e in self.entries}
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        # Describing would call every collector at registration; an empty description
        # tells prometheus_client not to check for duplicate names here.
        return []

    def collect(self) -> Iterator[Metric]:
        success = SCRAPE_SUCCESS.gauge()
        duration = SCRAPE_DURATION.gauge()
        state = COLLECTOR_STATE.gauge()
        series = SCRAPE_SERIES.gauge()
        limits = SCRAPE_MAX_SERIES.gauge()
        dropped = SCRAPE_SERIES_DROPPED.gauge()
        for entry in self.entries:
            ok, families, elapsed = self._run(entry)
            limit = self.max_series[entry.name]
            kept, exported, over = cap_series(families, limit)
            if over:
                log_limited(
                    log,
                    logging.WARNING,
                    f"max-series:{entry.name}",
                    "collector over its series cap; series dropped",
                    collector=entry.name,
                    max_series=limit,
                    dropped=over,
                    every=300.0,
                )
            yield from kept
            success.add_metric([entry.name], 1.0 if ok else 0.0)
            duration.add_metric([entry.name], elapsed)
            series.add_metric([entry.name], float(exported))
            limits.add_metric([entry.name], float(limit))
            dropped.add_metric([entry.name], float(over))
            for s in STATES:
                state.add_metric([entry.name, s], 1.0 if entry.state == s else 0.0)
        errors = COLLECTOR_ERRORS.counter()
        with self._lock:
            for name, count in self._errors.items():
                errors.add_metric([name], float(count))
        yield success
        yield duration
        yield state
        yield errors
        yield series
        yield limits
        yield dropped

    def _run(self, entry: Entry) -> tuple[bool, list[Metric], float]:
        if entry.state == "not_applicable":
            # Nothing to observe is the right answer, not a missing one.
            return True, [], 0.0
        if entry.collector is None or entry.state != "running":
            return False, [], 0.0
        started = self._clock()
        try:
            # Materialised here so that a generator failing halfway loses all its families.
            families = list(entry.collector.collect())
        except Exception as exc:
            with self._lock:
                self._errors[entry.name] = self._errors.get(entry.name, 0) + 1
            log_limited(
                log,
                logging.ERROR,
                f"collect:{entry.name}:{type(exc).__name__}",
                "collector failed during scrape",
                collector=entry.name,
                error=f"{type(exc).__name__}: {exc}",
                every=60.0,
            )
            return False, [], self._clock() - started
        return True, families, self._clock() - started

    def ready(self) -> tuple[bool, list[str]]:
        """Ready when every running collector has its first snapshot; lists those pending."""
        pending = [
            e.name
            for e in self.entries
            if e.state == "running" and e.collector is not None and not e.collector.ready()
        ]
        return not pending, pending

    def close(self, deadline: float = 4.0) -> None:
        """Closes all collectors in parallel, giving up on stragglers after ``deadline``."""
        threads = []
        for entry in self.entries:
            if entry.collector is None or entry.state != "running":
                continue
            t = threading.Thread(target=_close_quietly, args=(entry,), daemon=True)
            t.start()
            threads.append(t)
        end = time.monotonic() + deadline
        for t in threads:
            t.join(timeout=max(0.0, end - time.monotonic()))


def _close_quietly(entry: Entry) -> None:
    assert entry.collector is not None
    try:
        entry.collector.close()
    except Exception as exc:
        log.error("collector close failed", extra={"collector": entry.name, "error": str(exc)})


def start_collectors(
    specs: Sequence[CollectorSpec],
    ctx: Context,
    enabled: Mapping[str, bool],
    settings: Mapping[str, Any],
) -> list[Entry]:
    """Builds and starts each enabled collector with its settings (name → instance of the
    spec's settings dataclass); failures become entries, not exceptions."""
    entries: list[Entry] = []
    for spec in specs:
        if not enabled.get(spec.name, spec.default_enabled):
            continue
        try:
            collector = spec.factory(ctx, settings[spec.name])
            collector.start()
        except CollectorNotApplicable as exc:
            entries.append(Entry(spec.name, None, "not_applicable", exc.reason, exc.fix))
            log.info(
                "collector not applicable on this host",
                extra={"collector": spec.name, "reason": exc.reason},
            )
            continue
        except CollectorUnavailable as exc:
            entries.append(Entry(spec.name, None, "unavailable", exc.reason, exc.fix))
            log.warning(
                "collector unavailable",
                extra={"collector": spec.name, "reason": exc.reason, "fix": exc.fix},
            )
            continue
        except Exception as exc:
            entries.append(Entry(spec.name, None, "unavailable", f"{type(exc).__name__}: {exc}"))
            log.error(
                "collector failed to start",
                exc_info=True,
                extra={"collector": spec.name, "error": str(exc)},
            )
            continue
        entries.append(Entry(spec.name, collector, "running"))
        log.info("collector started", extra={"collector": spec.name})
    return entries
