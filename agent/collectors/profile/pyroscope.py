"""Pushing a window to a Pyroscope server through its ``/ingest`` API (folded stacks).

``POST {server}/ingest?name=APP{k=v,...}&from=UNIX&until=UNIX&format=folded&sampleRate=HZ
&spyName=pyspy&units=samples&aggregationType=sum`` with ``frame;frame;leaf COUNT`` lines
as the body, as documented for Pyroscope's server HTTP API.
"""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

# Pyroscope's name syntax reserves these in label keys and values.
_UNSAFE = re.compile(r"[{}=,\s\"]+")

Opener = Callable[[urllib.request.Request, float], object]


def app_name(app: str, labels: Mapping[str, str]) -> str:
    """``("vllm", {"pod": "p"})`` → ``vllm.cpu{pod=p}``; empty labels are left out."""
    safe_app = _UNSAFE.sub("_", app) or "python"
    inner = ",".join(
        f"{_UNSAFE.sub('_', k)}={_UNSAFE.sub('_', v)}" for k, v in sorted(labels.items()) if v
    )
    return f"{safe_app}.cpu{{{inner}}}"


def ingest_url(server: str, name: str, start: float, end: float, rate: int) -> str:
    query = urllib.parse.urlencode(
        {
            "name": name,
            "from": int(start),
            "until": max(int(end), int(start) + 1),
            "format": "folded",
            "sampleRate": rate,
            "spyName": "pyspy",
            "units": "samples",
            "aggregationType": "sum",
        }
    )
    return f"{server.rstrip('/')}/ingest?{query}"


def _urlopen(req: urllib.request.Request, timeout: float) -> object:
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def push(url: str, folded: str, timeout: float = 5.0, opener: Opener = _urlopen) -> None:
    """Sends one window; raises OSError (URLError, HTTPError, timeout) when it fails."""
    req = urllib.request.Request(
        url, data=folded.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    opener(req, timeout)
