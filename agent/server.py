"""HTTP: /metrics, /healthz, /readyz, plus the routes that components mount.

Served by aiohttp on the agent's event loop. The front shared with the rollback
controller lives here too: who may call which route (:func:`front_middleware`), how many
may at once, body and header deadlines, TLS from ``--web.config.file``, and the count of
what was refused (``vigil_http_requests_refused_total{route,reason}``).

/metrics is rendered on its own single thread, never on the default executor where
drift batches are parsed: however busy ingest is, a scrape waits for no batch.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from agent.auth import BearerAuth, Refusal
from agent.config import ConfigError
from agent.httpbody import BODY_TIMEOUT_S, MAX_BODY_BYTES, BodyTimeout
from agent.httpbody import read_body as read_body  # also the rollback server's
from agent.metrics import MetricSpec
from agent.webconfig import BasicAuth, WebConfig, ssl_context

log = logging.getLogger("vigil.server")

# A client has this long from connecting to finish its request headers (and, between
# requests, to start the next one). Real clients send headers in one packet; Prometheus
# and Alertmanager reconnect cheaply. aiohttp starts this timer at connection_made and
# does not reset it on partial data, so half a header then silence is dropped in time.
HEADER_TIMEOUT_S = 5.0
# asyncio's default TLS handshake deadline is 60 s; a silent TLS client waits no longer
# than a silent plain one.
TLS_HANDSHAKE_TIMEOUT_S = HEADER_TIMEOUT_S
# Routes anyone (who passes basic auth, when configured) may call, as Prometheus
# exporters do; every other route needs the bearer token (paths that match no route get
# their 404 without one: there is nothing behind them to protect).
OPEN_PATHS = frozenset({"/", "/metrics", "/healthz", "/readyz"})
REFUSAL_REASONS = ("unauthorized", "no_credential", "busy", "too_large", "timeout")
# Seconds a refused client is told to wait (Retry-After): about one batch's parse time.
RETRY_AFTER_S = 1


class ListenError(Exception):
    """The listen address cannot be bound; the message says why and what to do."""


def parse_listen(text: str) -> tuple[str, int]:
    """``":9475"`` → ``("", 9475)``; ``"[::1]:9475"`` → ``("::1", 9475)``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ConfigError(f"listen: {text!r} is not HOST:PORT (e.g. :9475 or 127.0.0.1:9475)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"listen: port {port!r} in {text!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"listen: port {number} in {text!r} is out of range 0-65535")
    return host, number


# Served by the agent and by `vigil rollback-controller` (agent/rollback/server.py).
REQUESTS_REFUSED = MetricSpec(
    "vigil_http_requests_refused_total",
    "counter",
    "HTTP requests refused before their handler ran or while reading their body, by "
    "route pattern and reason (unauthorized, no_credential, busy, too_large, timeout).",
    "agent",
    ("route", "reason"),
)
METRICS = (REQUESTS_REFUSED,)


class Refusals:
    """``vigil_http_requests_refused_total{route,reason}``: requests turned away at the door.

    ``route`` is the route's pattern (``/v1/drift/{model}/samples``), never the path a
    client chose, so the series stay bounded.
    """

    def __init__(self, routes: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        # Zero series for the protected routes, so rate() has a start and dashboards a line.
        self._counts: dict[tuple[str, str], int] = {(r, "unauthorized"): 0 for r in routes}

    def inc(self, route: str, reason: str) -> None:
        with self._lock:
            self._counts[(route, reason)] = self._counts.get((route, reason), 0) + 1

    def value(self, route: str, reason: str) -> int:
        with self._lock:
            return self._counts.get((route, reason), 0)

    def collect(self) -> list[Metric]:
        fam = REQUESTS_REFUSED.counter()
        with self._lock:
            for (route, reason), n in sorted(self._counts.items()):
                fam.add_metric([route, reason], float(n))
        return [fam]

    def describe(self) -> list[Metric]:
        return []


def route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


def _refuse(refusals: Refusals, route: str, r: Refusal, **headers: str) -> web.Response:
    refusals.inc(route, r.reason)
    return web.json_response({"error": r.message}, status=r.status, headers=headers or None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def front_middleware(
    bearer: BearerAuth | None,
    basic: BasicAuth | None,
    refusals: Refusals,
    limits: dict[str, int] | None = None,
) -> Any:
    """Authentication and concurrency limits, before any handler runs or any body is read.

    ``bearer`` None means the routes outside OPEN_PATHS are open (the controller's
    --insecure-no-auth). ``limits`` maps a route pattern to the number of its requests
    that may run at once; the one over is answered 429 with Retry-After, body unread.
    """
    limits = dict(limits or {})
    running = dict.fromkeys(limits, 0)

    @web.middleware
    async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_name(request)
        header = request.headers.get("Authorization")
        if request.path not in OPEN_PATHS and route != "other":
            denied = bearer.problem(header) if bearer is not None else None
            if denied is not None:
                return _refuse(refusals, route, denied, **{"WWW-Authenticate": "Bearer"})
        elif basic is not None:
            denied = await basic.problem(header, request.remote or "")
            if denied is not None:
                extra = {"WWW-Authenticate": 'Basic realm="vigil"'} if denied.status == 401 else {}
                return _refuse(refusals, route, denied, **extra)
        limit = limits.get(route)
        if limit is not None and running[route] >= limit:
            return _refuse(
                refusals,
                route,
                Refusal(429, "busy", f"{limit} requests of this kind are already running; retry"),
                **{"Retry-After": str(RETRY_AFTER_S)},
            )
        if limit is not None:
            running[route] += 1
        try:
            response = await handler(request)
        except BodyTimeout:
            return _refuse(
                refusals,
                route,
                Refusal(408, "timeout", f"body not received within {BODY_TIMEOUT_S:g} s"),
                Connection="close",
            )
        finally:
            if limit is not None:
                running[route] -= 1
        if response.status == 413:
            refusals.inc(route, "too_large")
        return response

    return front


class _Site(web.TCPSite):
    """TCPSite with a TLS handshake deadline (aiohttp passes none to create_server)."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if self._ssl_context else None,
        )


async def start_site(
    app: web.Application, host: str, port: int, tls: ssl.SSLContext | None
) -> tuple[web.AppRunner, list[tuple[str, int]]]:
    """Binds ``app`` with the header deadline; returns the runner and the bound addresses."""
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=HEADER_TIMEOUT_S
    )
    await runner.setup()
    site = _Site(runner, host=host or None, port=port, reuse_address=True, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{host or '*'}:{port}"
        if exc.errno in (98, 48):  # EADDRINUSE on Linux / macOS
            raise ListenError(
                f"cannot listen on {where}: address already in use (is another vigil "
                f"running? pick another with --listen HOST:PORT)"
            ) from None
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    bound = []
    server = site._server
    if isinstance(server, asyncio.base_events.Server):
        for sock in server.sockets:
            addr = sock.getsockname()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                bound.append((addr[0], addr[1]))
    return runner, bound


class Server:
    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, list[str]]],
        listen: str,
        routes: Sequence[web.RouteDef] = (),
        max_body: int = MAX_BODY_BYTES,
        bearer: BearerAuth | None = None,
        web_config: WebConfig | None = None,
        limits: dict[str, int] | None = None,
    ) -> None:
        self.registry = registry
        self._ready = ready
        self.host, self.port = parse_listen(listen)
        self.web_config = web_config or WebConfig()
        self.basic = BasicAuth(self.web_config.users) if self.web_config.users else None
        protected = [r.path for r in routes if isinstance(r, web.RouteDef)]
        self.refusals = Refusals(sorted(set(protected)))
        registry.register(self.refusals)
        if bearer is None and protected:
            raise ValueError("routes outside OPEN_PATHS need a bearer policy")
        self.app = web.Application(
            client_max_size=max_body,
            middlewares=[front_middleware(bearer, self.basic, self.refusals, limits)],
        )
        self.app.add_routes(
            [
                web.get("/", self._index),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
            ]
        )
        self.app.add_routes(list(routes))
        self._runner: web.AppRunner | None = None
        # One thread, for /metrics only: ingest parsing fills the default executor.
        self._scrape = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-metrics")
        self.bound: list[tuple[str, int]] = []

    async def start(self) -> None:
        tls = ssl_context(self.web_config.tls) if self.web_config.tls else None
        self._runner, self.bound = await start_site(self.app, self.host, self.port, tls)
        shown = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.bound]
        log.info(
            "listening",
            extra={
                "address": ",".join(shown),
                "tls": tls is not None,
                "basic_auth": self.basic is not None,
            },
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._scrape.shutdown(wait=False)
        if self.basic is not None:
            self.basic.close()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text="vigil agent\n\n/metrics   Prometheus metrics\n/healthz   liveness\n"
            "/readyz    readiness (every collector has its first snapshot)\n"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._scrape, encoder, self.registry)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, pending = self._ready()
        if ok:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"waiting for: {', '.join(pending)}\n")
