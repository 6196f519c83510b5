"""What the test fakes of the Kubernetes API share: a real HTTP server on loopback.

The official ``kubernetes`` client is exercised over the wire, so a fake must be a live
server it can reach through a kubeconfig. A fake subclasses :class:`FakeKubeServer`,
names the HTTP methods it answers and implements :meth:`FakeKubeServer.handle`; the
module functions read request bodies and answer JSON, as the API server does.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self


def status(code: int, message: str = "", reason: str = "") -> dict[str, Any]:
    """A ``Status`` document, the body the API server sends with every error."""
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    if message:
        doc["message"] = message
    if reason:
        doc["reason"] = reason
    return doc


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    length = int(h.headers.get("Content-Length", "0"))
    return h.rfile.read(length) if length else b""


def read_json(h: BaseHTTPRequestHandler) -> Any:
    """The request's JSON body, or None when it has none."""
    raw = read_body(h)
    return json.loads(raw) if raw else None


def reply_json(h: BaseHTTPRequestHandler, code: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


class FakeKubeServer:
    """Listens on 127.0.0.1 at a free port from construction; serves inside ``with``."""

    methods: tuple[str, ...] = ("GET",)
    # A fake that streams chunked responses (a watch) needs HTTP/1.1.
    protocol_version = "HTTP/1.0"
    # How soon shutdown() is noticed by the serving loop.
    poll_interval = 0.5
    # Whether open requests (a hanging watch) may be left behind when the server closes,
    # rather than waited for.
    daemon_threads = False
    user = "agent"
    token = "test-token"

    def __init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = fake.protocol_version

            def log_message(self, *args: Any) -> None:
                pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", lambda h, m=method: fake.handle(h, m))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = self.daemon_threads
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(self.poll_interval,), daemon=True
        )

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        """Writes a kubeconfig that points the official client at this server."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": self.user, "user": {"token": self.token}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": self.user}}
                    ],
                }
            )
        )
        return path
