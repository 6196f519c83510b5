"""A small real HTTP server that answers ``GET /v1/diagnosis`` from a JSON file, behind the
agent's own bearer check (agent.auth.bearer_problem), for the formatting tests of
`vigil explain` and `vigil top`; the tests against a real `vigil run` are in
test_real_agent.py. The answer can be swapped while it runs (``doc``), and the route can
be left out (``diagnosis=False``) to play an agent of an older version."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from agentproc import free_port
from aiohttp import web

from agent.auth import bearer_problem

HERE = Path(__file__).resolve().parent
# The engine's own fixture when it is there (the contract's reference answer), else ours.
ENGINE_FIXTURE = HERE.parent / "diagnosis" / "fixtures" / "diagnosis.json"
OWN_FIXTURE = HERE / "fixture.json"
TOKEN = "test-token-0123456789"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


class FakeAgent:
    def __init__(
        self,
        doc: dict[str, Any],
        diagnosis: bool = True,
        version: str = "0.9.0",
        port: int | None = None,
    ) -> None:
        self.doc = doc
        self.diagnosis = diagnosis
        self.version = version
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        refusal = bearer_problem(request.headers.get("Authorization"), TOKEN)
        if refusal:
            return web.json_response({"error": refusal.message}, status=refusal.status)
        return web.json_response(self.doc)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=f'vigil_build_info{{version="{self.version}"}} 1.0\n')

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        if self.diagnosis:
            app.router.add_get("/v1/diagnosis", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> FakeAgent:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
