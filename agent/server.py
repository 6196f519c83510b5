"""HTTP: /metrics, /healthz, /readyz, plus the routes that components mount.

Served by aiohttp on the agent's event loop: concurrent requests, request body limits and
streamed bodies come with it, which the drift ingest needs. Rendering /metrics happens in
a worker thread so that a large page never stalls ingest; collectors only read snapshots,
so rendering is cheap anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent.config import ConfigError

log = logging.getLogger("vigil.server")

# Drift batches are the largest bodies we accept; 8 MiB is ~500k numeric values as JSON,
# two orders of magnitude above a typical batch, and small enough to bound memory.
MAX_BODY_BYTES = 8 * 1024 * 1024


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


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, list[str]]],
        listen: str,
        routes: Sequence[web.RouteDef] = (),
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.registry = registry
        self._ready = ready
        self.host, self.port = parse_listen(listen)
        self.app = web.Application(client_max_size=max_body)
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
        self.bound: list[tuple[str, int]] = []

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host=self.host or None, port=self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            where = f"{self.host or '*'}:{self.port}"
            if exc.errno in (98, 48):  # EADDRINUSE on Linux / macOS
                raise ListenError(
                    f"cannot listen on {where}: address already in use (is another vigil "
                    f"running? pick another with --listen HOST:PORT)"
                ) from None
            raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        server = site._server  # aiohttp keeps the asyncio server here; ports when 0 was asked
        if isinstance(server, asyncio.base_events.Server):
            for sock in server.sockets:
                addr = sock.getsockname()
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    self.bound.append((addr[0], addr[1]))
        shown = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.bound]
        log.info("listening", extra={"address": ",".join(shown)})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text="vigil agent\n\n/metrics   Prometheus metrics\n/healthz   liveness\n"
            "/readyz    readiness (every collector has its first snapshot)\n"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, encoder, self.registry)
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
