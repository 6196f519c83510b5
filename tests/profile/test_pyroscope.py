"""The Pyroscope ingest request, and a push to a real local HTTP receiver."""

from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.collectors.profile.pyroscope import app_name, ingest_url, push


def test_app_name_carries_labels_and_sanitises() -> None:
    assert (
        app_name("vllm", {"pod": "p-1", "namespace": "ml", "container": "", "comm": "python"})
        == "vllm.cpu{comm=python,namespace=ml,pod=p-1}"
    )
    assert app_name("we{ird}", {"k": "a=b,c d"}) == "we_ird_.cpu{k=a_b_c_d}"
    assert app_name("", {}) == "python.cpu{}"


def test_ingest_url_parameters() -> None:
    url = ingest_url("http://pyro:4040/", "app.cpu{pid=1}", 100.7, 110.2, 19)
    parts = urllib.parse.urlsplit(url)
    assert (parts.netloc, parts.path) == ("pyro:4040", "/ingest")
    q = dict(urllib.parse.parse_qsl(parts.query))
    assert q == {
        "name": "app.cpu{pid=1}",
        "from": "100",
        "until": "110",
        "format": "folded",
        "sampleRate": "19",
        "spyName": "pyspy",
        "units": "samples",
        "aggregationType": "sum",
    }
    # A window shorter than a second still spans one.
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ingest_url("h", "a", 5.1, 5.3, 1)).query))
    assert (q["from"], q["until"]) == ("5", "6")


def serve(status: int) -> tuple[ThreadingHTTPServer, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            got.append({"path": self.path, "body": body, "type": self.headers["Content-Type"]})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def test_push_posts_folded_stacks() -> None:
    server, got = serve(200)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        push(ingest_url(base, "a.cpu{}", 1, 2, 19), "main;hot 7\nmain;warm 3\n")
    finally:
        server.shutdown()
    assert got[0]["path"].startswith("/ingest?name=a.cpu%7B%7D&from=1&until=2&format=folded")
    assert got[0]["body"] == "main;hot 7\nmain;warm 3\n"
    assert got[0]["type"] == "text/plain"


def test_push_failure_raises_oserror() -> None:
    server, _ = serve(500)
    try:
        with pytest.raises(OSError):
            push(f"http://127.0.0.1:{server.server_address[1]}/ingest", "a 1\n")
    finally:
        server.shutdown()
    with pytest.raises(OSError):
        push("http://127.0.0.1:9/ingest", "a 1\n", timeout=2)
