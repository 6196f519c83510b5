"""OpenTelemetry: the same metrics as /metrics, pushed over OTLP/HTTP.

The agent's source of truth is its Prometheus registry. Rather than instrument twice,
:class:`OtlpMetricBridge` reads that registry on an interval, converts each family to the
OpenTelemetry SDK's data model (:func:`families_to_metrics_data`, pure) and hands it to
the SDK's ``OTLPMetricExporter``. Names are those a Prometheus user sees (counters keep
``_total``), so a dashboard works on either path.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric as PromMetric

from agent import __version__
from agent.loop import Loop

log = logging.getLogger("vigil.telemetry")


def _number(
    name: str, desc: str, unit: str, points: list[NumberDataPoint], *, counter: bool
) -> Metric:
    data: Sum | Gauge
    if counter:
        data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
    else:
        data = Gauge(points)
    return Metric(name=name, description=desc, unit=unit, data=data)


def families_to_metrics_data(
    families: Iterable[PromMetric], resource: Resource, start_ns: int, now_ns: int
) -> MetricsData:
    """Prometheus families → one OTLP ``MetricsData`` (cumulative, as Prometheus is)."""
    metrics: list[Metric] = []
    for fam in families:
        unit = fam.unit or ""
        if fam.type in ("gauge", "info", "stateset", "unknown", "counter"):
            counter = fam.type == "counter"
            points = [
                NumberDataPoint(
                    attributes=dict(s.labels),
                    start_time_unix_nano=start_ns,
                    time_unix_nano=now_ns,
                    value=s.value,
                )
                for s in fam.samples
                if not s.name.endswith("_created") and math.isfinite(s.value)
            ]
            name = fam.name + ("_total" if counter else "")
            if fam.type == "info":
                name = fam.name + "_info"
            if points:
                metrics.append(_number(name, fam.documentation, unit, points, counter=counter))
        elif fam.type == "histogram" and fam.samples:
            metrics.append(
                Metric(
                    name=fam.name,
                    description=fam.documentation,
                    unit=unit,
                    data=Histogram(
                        _histogram_points(fam, start_ns, now_ns),
                        AggregationTemporality.CUMULATIVE,
                    ),
                )
            )
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=resource,
                scope_metrics=[
                    ScopeMetrics(
                        scope=InstrumentationScope("vigil", __version__),
                        metrics=metrics,
                        schema_url="",
                    )
                ],
                schema_url="",
            )
        ]
    )


def _histogram_points(fam: PromMetric, start_ns: int, now_ns: int) -> list[HistogramDataPoint]:
    """Cumulative ``le`` buckets → OTLP's per-bucket counts, grouped by label set."""
    series: dict[tuple[tuple[str, str], ...], dict[str, object]] = {}
    for s in fam.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        entry = series.setdefault(key, {"buckets": [], "sum": 0.0, "count": 0.0})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value))  # type: ignore[attr-defined]
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
        elif s.name.endswith("_count"):
            entry["count"] = s.value
    points = []
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])  # type: ignore[call-overload]
        bounds = [le for le, _ in buckets if math.isfinite(le)]
        counts: list[int] = []
        previous = 0.0
        for _, cumulative in buckets:
            counts.append(int(cumulative - previous))
            previous = cumulative
        points.append(
            HistogramDataPoint(
                attributes=dict(key),
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=int(entry["count"]),  # type: ignore[call-overload]
                sum=float(entry["sum"]),  # type: ignore[arg-type]
                bucket_counts=counts,
                explicit_bounds=bounds,
                # Prometheus histograms keep no min/max; OTLP marks both optional.
                min=None,  # type: ignore[arg-type]
                max=None,  # type: ignore[arg-type]
            )
        )
    return points


class OtlpMetricBridge:
    """Pushes the registry over OTLP/HTTP every ``interval`` seconds, in its own thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        endpoint: str,
        interval: float,
        exporter: MetricExporter | None = None,
        attributes: dict[str, str] | None = None,
    ) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(endpoint=endpoint, timeout=5)
        self.exporter = exporter
        self.registry = registry
        self.interval = interval
        self.endpoint = endpoint
        self.resource = Resource.create(
            {"service.name": "vigil-agent", "service.version": __version__, **(attributes or {})}
        )
        self._start_ns = time.time_ns()
        # The first export comes one interval after start (close() sends the last one).
        self._loop = Loop(
            "otlp",
            self._export_step,
            interval,
            logger=log,
            message="OTLP export failed",
            fields={"endpoint": endpoint},
            level=logging.WARNING,
            traceback=False,
            wait_first=True,
        )
        self.exports = 0
        self.failures = 0

    def start(self) -> None:
        self._loop.start()
        log.info("exporting metrics over OTLP", extra={"endpoint": self.endpoint})

    def export_once(self) -> bool:
        data = families_to_metrics_data(
            self.registry.collect(), self.resource, self._start_ns, time.time_ns()
        )
        result = self.exporter.export(data)
        ok = getattr(result, "name", "") == "SUCCESS"
        if ok:
            self.exports += 1
        else:
            self.failures += 1
            log.warning("OTLP export failed", extra={"endpoint": self.endpoint})
        return ok

    def _export_step(self) -> None:
        try:
            self.export_once()
        except Exception:
            self.failures += 1
            raise  # logged by the loop

    def close(self) -> None:
        self._loop.stop(timeout=2.0)
        try:
            self.export_once()  # the last values, so a short run is not lost
        except Exception as exc:
            log.warning(
                "final OTLP export failed", extra={"endpoint": self.endpoint, "error": str(exc)}
            )
        self.exporter.shutdown()
