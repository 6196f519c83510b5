"""One OpenTelemetry span per rollback: ``rollback.execution``.

Attributes: ``rollback.reason``, ``rollback.target``, ``rollback.action``,
``rollback.result``, ``rollback.id``, ``rollback.dry_run`` and, when the alert names GPUs,
``rollback.gpu_ids``. With an OTLP endpoint the spans leave over OTLP/HTTP (protobuf);
without one, spans are still made (for the log's trace ids) and dropped.

The controller's own TracerProvider is used, never the process-global one, so nothing
else in the process can redirect or double-export these spans. Each span is flushed when
it ends: rollbacks are rare, and a span in a batch buffer is lost by a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from agent import __version__

log = logging.getLogger("vigil.rollback.tracing")
SPAN_NAME = "rollback.execution"
# A collector that does not answer must not hold a rollback's worker for long.
EXPORT_TIMEOUT_S = 5


def traces_url(endpoint: str) -> str:
    """``http://host:4318`` → ``http://host:4318/v1/traces``; a full path is kept as is."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"OTLP endpoint {endpoint!r} is not an http(s) URL")
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


class RollbackTracer:
    def __init__(self, endpoint: str | None = None, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create(
                {"service.name": "vigil-rollback-controller", "service.version": __version__}
            )
        )
        if exporter is None and endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=EXPORT_TIMEOUT_S)
        self.exporting = exporter is not None
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("vigil.rollback", __version__)

    @contextmanager
    def execution(
        self,
        *,
        rollback_id: int,
        reason: str,
        target: str,
        action: str,
        dry_run: bool,
        gpu_ids: list[str],
    ) -> Iterator[Span]:
        """The span of one rollback; the caller sets ``rollback.result`` before it ends."""
        attributes: dict[str, str | int | bool | list[str]] = {
            "rollback.id": rollback_id,
            "rollback.reason": reason,
            "rollback.target": target,
            "rollback.action": action,
            "rollback.dry_run": dry_run,
        }
        if gpu_ids:
            attributes["rollback.gpu_ids"] = gpu_ids
        with self.tracer.start_as_current_span(
            SPAN_NAME, attributes=attributes, record_exception=True
        ) as span:
            yield span
        if self.exporting and not self.provider.force_flush(EXPORT_TIMEOUT_S * 1000):
            log.warning("rollback span not exported in time", extra={"rollback_id": rollback_id})

    @staticmethod
    def set_result(span: Span, result: str, detail: str) -> None:
        span.set_attribute("rollback.result", result)
        if result == "failed":
            span.set_status(Status(StatusCode.ERROR, detail))

    def close(self) -> None:
        self.provider.shutdown()
