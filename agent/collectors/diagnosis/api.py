"""``GET /v1/diagnosis``: the verdicts, their evidence and signals, as JSON.

``?pod=NAME`` or ``?pid=N`` narrows the answer to one pod or process (404 when it is not
watched). The document names pods, containers and Python functions: the route needs the
agent's API token, which the server's front checks before this handler runs
(agent/server.py, agent/auth.py). docs/diagnosis.md describes the document.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

ROUTE = "/v1/diagnosis"


class DiagnosisSource(Protocol):
    def report(self, pod: str | None = None, pid: int | None = None) -> dict[str, Any] | None: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def routes(source: DiagnosisSource) -> list[web.RouteDef]:
    async def diagnosis(request: web.Request) -> web.Response:
        unknown = sorted(set(request.query) - {"pod", "pid"})
        if unknown:
            return _error(400, f"unknown parameter {unknown[0]!r} (allowed: pod, pid)")
        pod = request.query.get("pod")
        raw = request.query.get("pid")
        pid = None
        if raw is not None:
            # isdigit() alone accepts "²", which int() rejects: only ASCII digits.
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
                return _error(400, f"pid {raw[:20]!r} is not a process id (a decimal number)")
            pid = int(raw)
        if pod is not None and not pod:
            return _error(400, "pod is empty")
        doc = source.report(pod, pid)
        if doc is None:
            return _error(503, "no diagnosis yet: the first round has not run")
        if (pod is not None or pid is not None) and not doc["targets"]:
            what = f"pod {pod!r}" if pod is not None else f"pid {pid}"
            return _error(404, f"{what} is not a watched pod or process (see {ROUTE})")
        return web.json_response(doc)

    return [web.get(ROUTE, diagnosis)]
