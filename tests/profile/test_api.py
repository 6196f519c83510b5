"""The profile routes in process, with a stub source: fast checks of request validation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent.collectors.profile.api import Profile, routes


class NoProcesses:
    def listing(self) -> list[dict[str, Any]]:
        return []

    def profile(self, pid: int) -> Profile | None:
        return None


async def _get(path: str) -> tuple[int, dict[str, Any]]:
    app = web.Application()
    app.add_routes(routes(NoProcesses()))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path)
        return resp.status, await resp.json()


# "²" and "٣" satisfy str.isdigit() but not int(): they used to raise ValueError (a 500).
@pytest.mark.parametrize("pid", ["²", "%C2%B2", "%D9%A3", "12%C2%B2", "-1", "1.5", "x"])
def test_non_ascii_digit_pids_are_a_400(pid: str) -> None:
    status, body = asyncio.run(_get(f"/v1/profiles/{pid}"))
    assert status == 400
    assert "not a process id" in body["error"]


def test_an_unwatched_pid_is_a_404() -> None:
    status, body = asyncio.run(_get("/v1/profiles/123"))
    assert status == 404 and "not a watched process" in body["error"]


def test_wall_merged_view_shows_threads_running_the_same_code_as_one_tower() -> None:
    from agent.collectors.profile.api import render

    wall = {
        ("thread (0x1): Thread-1", "wait (threading.py:1)"): 9,
        ("thread (0x2): Thread-2", "wait (threading.py:1)"): 9,
    }
    p = Profile(1, "p", "ok", "", cpu={}, wall=wall)
    split, _ = render(p, "collapsed", "wall")
    merged, _ = render(p, "collapsed", "wall-merged")
    assert len(split.decode().splitlines()) == 2
    assert merged.decode() == "wait (threading.py:1) 18\n"
