"""``GET /v1/profiles`` and ``GET /v1/profiles/{pid}``: the last window of each process.

``/v1/profiles/{pid}?format=collapsed`` (default) is what flamegraph.pl and speedscope
read; ``format=speedscope`` is speedscope's JSON; ``format=svg`` is a flamegraph drawn
here. ``view=cpu`` (default) shows where the CPU went (active samples only);
``view=wall`` adds idle threads, one tower per thread: where threads wait;
``view=wall-merged`` drops the thread root, so that threads running the same code (a
thread-per-request server's idle workers) are one tower.

Stacks name files, lines, pods and models: both routes need the agent's API token, which
the server's front checks before a handler here runs (agent/server.py, agent/auth.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from agent import __version__
from agent.collectors.profile.render import to_speedscope, to_svg
from agent.collectors.profile.stacks import Stack, format_collapsed, merge_threads

FORMATS = ("collapsed", "speedscope", "svg")
VIEWS = ("cpu", "wall", "wall-merged")


@dataclass(frozen=True)
class Profile:
    """What a route needs about one process: a name, its state, and its last stacks."""

    pid: int
    title: str
    state: str
    reason: str
    cpu: dict[Stack, int] | None  # None: no completed window yet
    wall: dict[Stack, int] | None
    subtitle: str = ""


class ProfileSource(Protocol):
    def listing(self) -> list[dict[str, Any]]: ...

    def profile(self, pid: int) -> Profile | None: ...


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def render(profile: Profile, fmt: str, view: str) -> tuple[bytes, str]:
    """The body and content type of one profile; pure, run off the event loop."""
    stacks = profile.cpu if view == "cpu" else profile.wall
    assert stacks is not None
    if view == "wall-merged":
        stacks = merge_threads(stacks)
    name = f"{profile.title} ({view})"
    if fmt == "speedscope":
        doc = to_speedscope(stacks, name, f"vigil@{__version__}")
        return json.dumps(doc).encode(), "application/json"
    if fmt == "svg":
        return to_svg(stacks, name, profile.subtitle).encode(), "image/svg+xml"
    return format_collapsed(stacks).encode(), "text/plain; charset=utf-8"


def routes(source: ProfileSource) -> list[web.RouteDef]:
    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"processes": source.listing()})

    async def one(request: web.Request) -> web.Response:
        raw = request.match_info["pid"]
        # str.isdigit() is also true for "²" or "٣", which int() then rejects: only ASCII
        # digits are a pid, anything else is a 400 rather than a ValueError (a 500).
        if not (raw.isascii() and raw.isdigit()):
            return _error(400, f"pid {raw!r} is not a process id (a decimal number)")
        fmt = request.query.get("format", "collapsed")
        if fmt not in FORMATS:
            return _error(400, f"unknown format {fmt!r}", allowed=list(FORMATS))
        view = request.query.get("view", "cpu")
        if view not in VIEWS:
            return _error(400, f"unknown view {view!r}", allowed=list(VIEWS))
        pid = int(raw)
        profile = source.profile(pid)
        if profile is None:
            return _error(404, f"pid {pid} is not a watched process (see /v1/profiles)")
        if profile.cpu is None:
            why = f": {profile.reason}" if profile.reason else ""
            return _error(
                404, f"no completed profile window for pid {pid} (state {profile.state}{why})"
            )
        loop = asyncio.get_running_loop()
        body, ctype = await loop.run_in_executor(None, render, profile, fmt, view)
        return web.Response(body=body, headers={"Content-Type": ctype})

    return [web.get("/v1/profiles", listing), web.get("/v1/profiles/{pid}", one)]
