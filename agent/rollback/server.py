"""The controller's HTTP side (aiohttp) and its process lifetime.

  POST /v1/alerts      Alertmanager webhook (version 4); bearer token
  GET  /v1/rollbacks   the journal's rollbacks, newest first (?limit=N); bearer token
  GET  /metrics        vigil_rollbacks_total, vigil_rollback_alerts_total
  GET  /healthz        the process is alive
  GET  /readyz         the journal is sound, every outcome is journaled, the worker runs;
                       otherwise 503 with the journal's file and the fix

The webhook answers as soon as the decisions are journaled (a few milliseconds, one
fsync); rollbacks happen after, in the controller's worker. Bad input is a 4xx whose body
says what is wrong; a journal that cannot be written is a 503, which Alertmanager retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from agent.auth import BearerAuth
from agent.rollback.controller import Controller
from agent.rollback.journal import JournalError
from agent.rollback.payload import PayloadError, parse_notification
from agent.server import Refusals, front_middleware, parse_listen, read_body, start_site
from agent.webconfig import BasicAuth, WebConfig, ssl_context

log = logging.getLogger("vigil.rollback.server")

# A webhook carries one group of alerts, a few KiB each; 1 MiB bounds a hostile body.
MAX_BODY_BYTES = 1024 * 1024
MAX_LIST = 1000


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class ControllerServer:
    def __init__(
        self,
        controller: Controller,
        listen: str,
        token: str | None,
        web_config: WebConfig | None = None,
    ) -> None:
        self.controller = controller
        self.host, self.port = parse_listen(listen)
        self.web_config = web_config or WebConfig()
        # The same front as the agent's (agent/server.py): bearer token on /v1 (None:
        # --insecure-no-auth), basic auth and TLS from --web.config.file, refusals counted.
        self.basic = BasicAuth(self.web_config.users) if self.web_config.users else None
        self.refusals = Refusals(["/v1/alerts", "/v1/rollbacks"])
        controller.registry.register(self.refusals)
        bearer = BearerAuth(token=token) if token is not None else None
        self.app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[front_middleware(bearer, self.basic, self.refusals)],
        )
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

    async def post_alerts(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request)
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
            return _error(503, str(exc))
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
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        if not 1 <= limit <= MAX_LIST:
            return _error(400, f"limit: expected 1..{MAX_LIST}")
        try:
            rows = await asyncio.to_thread(self.controller.journal.rollbacks, limit)
        except JournalError as exc:
            log.error("journal read failed", extra={"error": str(exc)})
            return _error(503, str(exc))
        pending = self.controller.unrecorded_outcomes()
        out = []
        for r in rows:
            row = r.as_json()
            if r.id in pending:
                # Done, but not journaled yet: say what happened, and that it is not on disk.
                row.update(pending[r.id], recorded=False)
            out.append(row)
        return web.json_response({"rollbacks": out}, dumps=lambda o: json.dumps(o, default=str))

    async def metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.controller.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        problem = await asyncio.to_thread(self.controller.journal.check)
        if problem:
            return web.Response(status=503, text=problem + "\n")
        for rid, pending in sorted(self.controller.unrecorded_outcomes().items()):
            return web.Response(
                status=503,
                text=f"rollback {rid} is done ({pending['result']}) but its outcome is not "
                f"journaled yet (retrying): {pending['journal_error']}\n",
            )
        if not self.controller.running:
            return web.Response(status=503, text="worker not running\n")
        return web.Response(text="ok\n")

    async def start(self) -> None:
        tls = ssl_context(self.web_config.tls) if self.web_config.tls else None
        self._runner, _ = await start_site(self.app, self.host, self.port, tls)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self.basic is not None:
            self.basic.close()


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
