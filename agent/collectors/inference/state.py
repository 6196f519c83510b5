"""What the collector knows about one target between rounds, and the frozen views that a
scrape renders (the probe threads mutate :class:`TargetState`; scrapes only ever see
:class:`TargetView` tuples built at the end of a round)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.collectors.inference import stall, totals
from agent.collectors.inference.kinds import Histogram, ModelStats
from agent.collectors.inference.targets import Target

# Probe latency buckets in seconds: around the 0.5 s default timeout, which the rollback
# rule is written against, and up to 2.5 s for users who raise it.
NOT_FOUND = 404

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class ModelView:
    model: str
    success_total: float | None
    error_total: float | None
    duration: Histogram | None
    ttft: Histogram | None
    queue_requests: float | None
    running_requests: float | None
    kv_cache_usage_ratio: float | None
    generated_tokens_total: float | None
    stalled: bool | None
    deep_up: bool | None = None


@dataclass(frozen=True)
class TargetView:
    target: Target
    kind: str
    up: bool | None  # None: no health probe yet (kind unknown)
    consecutive_failures: int
    consecutive_timeouts: int
    failures: tuple[tuple[str, int], ...]
    probe_buckets: tuple[int, ...]  # cumulative, one per PROBE_BUCKETS then +Inf
    probe_sum: float
    probe_count: int
    scrape_ok: bool | None
    scrape_errors: tuple[tuple[str, int], ...]
    models: tuple[ModelView, ...] | None  # None while the last scrape failed
    models_dropped: int
    deep_up: bool | None  # the kind-wide deep check (SGLang), None when not run


@dataclass(frozen=True)
class Snapshot:
    targets: tuple[TargetView, ...]
    by_source: tuple[tuple[str, int], ...]
    dropped: tuple[tuple[str, int], ...]


@dataclass
class TargetState:
    target: Target
    kind: str
    # A discovered port is probed quietly until it proves to be an inference server
    # (health 2xx, or a /metrics of a known kind): a process also listens on ports that
    # are not HTTP (NCCL, ZMQ, gRPC), which must not show up as servers that are down.
    confirmed: bool
    kind_checked: bool = False  # the metric names have had their say on the kind
    misses: int = 0
    retry_at: float = 0.0
    last_seen: float = 0.0
    up: bool | None = None
    consecutive: int = 0
    consecutive_timeouts: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    probe_counts: list[int] = field(default_factory=lambda: [0] * (len(PROBE_BUCKETS) + 1))
    probe_sum: float = 0.0
    scrape_ok: bool | None = None
    scrape_errors: dict[str, int] = field(default_factory=dict)
    stats: dict[str, ModelStats] | None = None
    models_dropped: int = 0
    counts: dict[tuple[str, str], totals.Total] = field(default_factory=dict)
    histograms: dict[tuple[str, str], totals.HistogramTotal] = field(default_factory=dict)
    progress: dict[str, stall.Progress] = field(default_factory=dict)
    stalled: dict[str, bool | None] = field(default_factory=dict)
    deep_up: bool | None = None
    deep_models: dict[str, bool] = field(default_factory=dict)
    # Servers that split their ports (MLServer, Triton, TorchServe: /metrics on its own
    # port) answer 404 on the path the other port serves. Such a port shows only what it
    # serves: a metrics port no probe series, an API port no scrape series.
    health_ever_ok: bool = False
    health_missing: bool = False  # the last health probe got 404
    metrics_ever_ok: bool = False
    metrics_missing: bool = False  # the last scrape got 404

    @property
    def metrics_only(self) -> bool:
        return self.health_missing and not self.health_ever_ok and self.metrics_ever_ok

    @property
    def health_only(self) -> bool:
        return self.metrics_missing and not self.metrics_ever_ok and self.health_ever_ok

    def record_probe(self, ok: bool, seconds: float, reason: str = "", status: int = 0) -> None:
        self.health_ever_ok = self.health_ever_ok or ok
        self.health_missing = status == NOT_FOUND
        for i, bound in enumerate(PROBE_BUCKETS):
            if seconds <= bound:
                self.probe_counts[i] += 1
                break
        else:
            self.probe_counts[-1] += 1
        self.probe_sum += seconds
        self.up = ok
        if ok:
            self.consecutive = self.consecutive_timeouts = 0
            return
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.consecutive += 1
        self.consecutive_timeouts = self.consecutive_timeouts + 1 if reason == "timeout" else 0

    def record_stats(
        self, stats: dict[str, ModelStats], dropped: int, now: float, after: float
    ) -> None:
        """A good scrape: update Vigil's totals and the stall memory of each model."""
        counts: dict[tuple[str, str], totals.Total] = {}
        hists: dict[tuple[str, str], totals.HistogramTotal] = {}
        progress: dict[str, stall.Progress] = {}
        stalled: dict[str, bool | None] = {}
        for name, s in stats.items():
            for key in ("success_total", "error_total", "generated_tokens_total"):
                raw = getattr(s, key)
                if raw is not None:
                    counts[(name, key)] = totals.count(self.counts.get((name, key)), raw)
            for key in ("duration", "ttft"):
                h = getattr(s, key)
                if h is not None:
                    hists[(name, key)] = totals.histogram(self.histograms.get((name, key)), h)
            finished = s.finished_total
            if finished is None and s.success_total is not None:
                finished = s.success_total + (s.error_total or 0.0)
            progress[name], stalled[name] = stall.step(
                self.progress.get(name),
                now,
                s.running_requests,
                finished,
                s.generated_tokens_total,
                after,
            )
        # Models gone from the exposition are forgotten: their series end with them.
        self.counts, self.histograms, self.progress, self.stalled = counts, hists, progress, stalled
        self.stats, self.models_dropped, self.scrape_ok = stats, dropped, True
        self.metrics_ever_ok, self.metrics_missing = True, False

    def record_scrape_error(self, reason: str, status: int = 0) -> None:
        self.metrics_missing = status == NOT_FOUND
        # Stale numbers are worse than none: the per-model series go until a good scrape.
        self.stats = None
        self.scrape_ok = False
        self.scrape_errors[reason] = self.scrape_errors.get(reason, 0) + 1

    def view(self) -> TargetView:
        models: tuple[ModelView, ...] | None = None
        if self.stats is not None:
            models = tuple(self._model_view(name, s) for name, s in sorted(self.stats.items()))
        cumulative, running = [], 0
        for c in self.probe_counts:
            running += c
            cumulative.append(running)
        return TargetView(
            target=self.target,
            kind=self.kind,
            up=None if self.metrics_only else self.up,
            consecutive_failures=self.consecutive,
            consecutive_timeouts=self.consecutive_timeouts,
            failures=tuple(sorted(self.failures.items())),
            probe_buckets=tuple(cumulative),
            probe_sum=self.probe_sum,
            probe_count=running,
            scrape_ok=None if self.health_only else self.scrape_ok,
            scrape_errors=() if self.health_only else tuple(sorted(self.scrape_errors.items())),
            models=models,
            models_dropped=self.models_dropped,
            deep_up=self.deep_up,
        )

    def _model_view(self, name: str, s: ModelStats) -> ModelView:
        def total(key: str) -> float | None:
            t = self.counts.get((name, key))
            return t.value if t is not None else None

        def hist(key: str) -> Histogram | None:
            h = self.histograms.get((name, key))
            return h.value if h is not None else None

        return ModelView(
            model=name or self.target.model,
            success_total=total("success_total"),
            error_total=total("error_total"),
            duration=hist("duration"),
            ttft=hist("ttft"),
            queue_requests=s.queue_requests,
            running_requests=s.running_requests,
            kv_cache_usage_ratio=s.kv_cache_usage_ratio,
            generated_tokens_total=total("generated_tokens_total"),
            stalled=self.stalled.get(name),
            deep_up=self.deep_models.get(name),
        )
