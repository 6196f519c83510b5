"""The controller's HTTP side (aiohttp) and its process lifetime.

  POST /v1/alerts      Alertmanager webhook (version 4); bearer token
  GET  /v1/rollbacks   the journal's rollbacks, newest first (?limit=N); bearer token
  GET  /metrics        vigil_rollbacks_total, vigil_rollback_alerts_total
  GET  /healthz        the process is alive
  GET  /readyz         the journal is open and the worker runs

The webhook answers as soon as the decisions are journaled (a few milliseconds, one
fsync); rollbacks happen after, in the controller's worker. Bad input is a 4xx whose body
says what is wrong; a journal that cannot be written is a 503, which Alertmanager retries.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import sqlite3
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from agent.rollback.controller import Controller
from agent.rollback.journal import JournalError
from agent.rollback.payload import PayloadError, parse_notification
from agent.server import ListenError, parse_listen

log = logging.getLogger("vigil.rollback.server")

# A webhook carries one group of alerts, a few KiB each; 1 MiB bounds a hostile body.
MAX_BODY_BYTES = 1024 * 1024
MAX_LIST = 1000


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class ControllerServer:
    def __init__(self, controller: Controller, listen: str, token: str | None) -> None:
        self.controller = controller
        self.token = token
        self.host, self.port = parse_listen(listen)
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.add_routes(
            [
                web.post("/v1/alerts", self.post_alerts),
                web.get("/v1/rollbacks", self.get_rollbacks),
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
            ]
        )
        self._runner: web.AppRunner | None = None

    def _authorized(self, request: web.Request) -> web.Response | None:
        if self.token is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _error(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return _error(401, "wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        return None

    async def post_alerts(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied:
            return denied
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.controller.alerts_total.labels("invalid").inc()
            return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            notification = parse_notification(body)
        except PayloadError as exc:
            self.controller.alerts_total.labels("invalid").inc()
            log.warning("invalid webhook payload", extra={"error": str(exc)})
            return _error(400, str(exc))
        try:
            decisions = await asyncio.to_thread(self.controller.receive, notification)
        except (JournalError, sqlite3.Error) as exc:
            log.error("journal write failed", extra={"error": str(exc)})
            return _error(503, f"journal unavailable: {exc}")
        for _, decision in decisions:
            if decision.result == "accepted" and decision.rollback_id is not None:
                self.controller.enqueue(decision.rollback_id)
        return web.json_response(
            {
                "alerts": [
                    {
                        "alertname": alert.name,
                        "fingerprint": alert.fingerprint,
                        "startsAt": alert.starts_at,
                        "result": d.result,
                        "detail": d.detail,
                        "rollback_id": d.rollback_id,
                    }
                    for alert, d in decisions
                ]
            }
        )

    async def get_rollbacks(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied:
            return denied
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        if not 1 <= limit <= MAX_LIST:
            return _error(400, f"limit: expected 1..{MAX_LIST}")
        rows = await asyncio.to_thread(self.controller.journal.rollbacks, limit)
        return web.json_response(
            {"rollbacks": [r.as_json() for r in rows]}, dumps=lambda o: json.dumps(o, default=str)
        )

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.controller.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.controller.running:
            return web.Response(status=503, text="worker not running\n")
        return web.Response(text="ok\n")

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host or None, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ListenError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


async def serve(controller: Controller, server: ControllerServer, info: dict[str, Any]) -> None:
    """Runs until SIGTERM/SIGINT; the rollback in hand finishes, queued ones stay journaled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    controller.start()
    await server.start()
    log.info("rollback controller listening", extra=info)
    await stop.wait()
    log.info("stopping")
    await server.stop()
    await controller.stop()
