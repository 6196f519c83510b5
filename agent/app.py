"""The node agent: discovery + collectors + HTTP server (+ OTLP), started and stopped as one.

`vigil run` builds an :class:`Agent` from the resolved config and runs it until SIGTERM or
SIGINT, then shuts down within a few seconds: HTTP first (no scrape sees half-closed
collectors), then every collector in parallel (BPF programs detached, py-spy children
reaped).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric

from agent import __version__, kube
from agent.auth import INGEST_TOKEN_NAME, BearerAuth, TokenFile, ensure_private_dir, ensure_token
from agent.collectors.drift.ingest import INGEST_CONCURRENCY, SAMPLES_ROUTE
from agent.config import Config
from agent.discovery import Discovery
from agent.metrics import MetricSpec
from agent.registry import CollectorSet, CollectorSpec, Context, Entry, start_collectors
from agent.server import Server
from agent.webconfig import WebConfig, load_web_config

if TYPE_CHECKING:
    from agent.telemetry import OtlpMetricBridge

log = logging.getLogger("vigil.agent")

SHUTDOWN_DEADLINE_S = 4.0  # of the 5 s promised for SIGTERM, leaving 1 s for HTTP and exit


BUILD_INFO = MetricSpec(
    "vigil_build_info",
    "gauge",
    "Vigil's version and the Python it runs on (value is always 1).",
    "agent",
    ("version", "python_version"),
)


def _process(name: str, type_: str, help_: str, unit: str = "") -> MetricSpec:
    return MetricSpec(name, type_, help_, "agent", unit=unit)


# The agent's own process, rendered by prometheus_client's ProcessCollector: declared with
# the help text it writes, so the catalogue says what /metrics says.
PROCESS_METRICS = (
    _process(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        "seconds",
    ),
    _process("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "bytes"),
    _process("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "bytes"),
    _process(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        "seconds",
    ),
    _process("process_open_fds", "gauge", "Number of open file descriptors."),
    _process("process_max_fds", "gauge", "Maximum number of open file descriptors."),
)
METRICS = (BUILD_INFO, *PROCESS_METRICS)


class BuildInfo:
    def collect(self) -> Iterable[Metric]:
        g = BUILD_INFO.gauge()
        g.add_metric([__version__, platform.python_version()], 1.0)
        return [g]

    def describe(self) -> list[Metric]:
        return []


class Agent:
    def __init__(self, config: Config, specs: Sequence[CollectorSpec]) -> None:
        self.config = config
        self.specs = specs
        # Pod names come from the Kubernetes API when in a cluster (ConfigError when
        # kubernetes.mode=on cannot work); otherwise series carry the pod UID.
        self.pods = kube.from_config(config)
        self.discovery = Discovery(
            procfs=config.procfs,
            patterns=config.watch,
            runtimes=config.watch_is_default,
            interval=float(config.get("discovery.interval")),
            resolver=self.pods,
        )
        self.ctx = Context(
            discovery=self.discovery, paths=config.paths, families=self._latest_families
        )
        # A bad --web.config.file is a usage error, found before anything starts.
        web_file = str(config.get("web.config.file") or "")
        self.web_config = load_web_config(web_file) if web_file else WebConfig()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collectors: CollectorSet | None = None
        self.server: Server | None = None
        self.otlp: OtlpMetricBridge | None = None

    async def start(self) -> None:
        if self.pods is not None:
            self.pods.start()
            # The first list, so processes seen at start get their pod names at once; an
            # API that does not answer in time is resolved later, never waited on forever.
            await asyncio.get_running_loop().run_in_executor(None, self.pods.wait_listed, 5.0)
        try:
            # Before anything writes there: what the agent keeps is nobody else's to read.
            ensure_private_dir(self.config.state_dir)
        except OSError as exc:
            log.warning(
                "cannot create the state directory",
                extra={"state_dir": str(self.config.state_dir), "error": exc.strerror},
            )
        self.discovery.start()
        enabled = {s.name: self.config.enabled(s.name) for s in self.specs}
        entries = start_collectors(self.specs, self.ctx, enabled, self.config.settings)
        # Discovery renders through the same isolating wrapper as the collectors.
        entries.insert(0, Entry("discovery", self.discovery, "running"))
        self.collectors = CollectorSet(entries, max_series=self.config.max_series())
        self.registry.register(BuildInfo())
        self.registry.register(self.collectors)
        # The agent's own CPU and memory (process_*), for the "Vigil itself" dashboard.
        ProcessCollector(registry=self.registry)
        self.server = Server(
            self.registry,
            self.collectors.ready,
            self.config.listen,
            routes=self.ctx.routes,
            bearer=self._api_auth() if self.ctx.routes else None,
            web_config=self.web_config,
            limits={SAMPLES_ROUTE: INGEST_CONCURRENCY},
        )
        try:
            await self.server.start()
        except Exception:
            self.collectors.close(SHUTDOWN_DEADLINE_S)
            self.discovery.close()
            if self.pods is not None:
                self.pods.close()
            raise
        endpoint = str(self.config.get("otlp-endpoint"))
        if endpoint:
            # Imported only here: the OpenTelemetry SDK costs ~2 MiB and 70 ms at start
            # (python -X importtime) that an agent without an OTLP endpoint never uses.
            from agent.telemetry import OtlpMetricBridge

            self.otlp = OtlpMetricBridge(
                self.registry, endpoint, float(self.config.get("otlp-interval"))
            )
            self.otlp.start()

    def _latest_families(self) -> list[Metric]:
        """Every running collector's latest families but the diagnosis's own, each taken
        whole or not at all as a scrape takes them: the diagnosis reads the metric
        contract, not the collectors' internals."""
        if self.collectors is None:
            return []
        out: list[Metric] = []
        for entry in self.collectors.entries:
            if entry.name == "diagnosis" or entry.collector is None or entry.state != "running":
                continue
            try:
                out.extend(entry.collector.collect())
            except Exception as exc:
                # The scrape counts and logs a failing collector; here its signals are
                # simply missing from this round.
                log.debug(
                    "collector skipped by the diagnosis",
                    extra={"collector": entry.name, "error": str(exc)},
                )
        return out

    def _api_auth(self) -> BearerAuth:
        """The token of the /v1 APIs: --ingest-token-file, else one generated on first start
        into the state directory, where the CLI and the client library find it."""
        given = str(self.config.get("ingest-token-file") or "")
        if given:
            log.info("API token", extra={"token_file": given})
            bearer = BearerAuth(token_file=TokenFile(given))
            bearer.check()  # an unusable file is logged now, not at the first request
            return bearer
        path = self.config.state_dir / INGEST_TOKEN_NAME
        try:
            if ensure_token(path):
                log.info("API token generated", extra={"token_file": str(path)})
        except OSError as exc:
            # The agent still serves /metrics; the APIs refuse everyone (503) and say why.
            log.warning(
                "cannot create the API token: /v1 APIs refuse every request",
                extra={
                    "token_file": str(path),
                    "error": exc.strerror or str(exc),
                    "fix": "--state-dir DIR (writable) or --ingest-token-file FILE",
                },
            )
        bearer = BearerAuth(token_file=TokenFile(path))
        bearer.check()
        return bearer

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        loop = asyncio.get_running_loop()
        if self.collectors is not None:
            await loop.run_in_executor(None, self.collectors.close, SHUTDOWN_DEADLINE_S)
        self.discovery.close()
        if self.pods is not None:
            self.pods.close()
        if self.otlp is not None:
            await loop.run_in_executor(None, self.otlp.close)
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        log.info("agent running", extra={"version": __version__})
        await stop.wait()
        log.info("shutting down")
        await self.stop()
