#!/usr/bin/env python3
"""A demo model server that serves from a release directory and follows its `current`.

    examples/model_server.py --release-dir /tmp/models/demo --listen 127.0.0.1:8080 \
        [--vigil-url http://127.0.0.1:9475 --model demo]

The release directory holds one subdirectory per version, each with a ``model.json``
(``{"weights": {"x": 2.0}, "bias": 0.5}``: a linear model, enough to see which version
answers), and ``current``, a symlink to the live version. The server checks ``current``
every 200 ms and loads the version it points to when it changes: this is what a
rollback by ``vigil rollback-controller`` looks like from the serving side.

    GET  /          {"model": "demo", "version": "v2", "loaded_at": ..., "reloads": 1}
    POST /predict   {"rows": [{"x": 1.0}]} -> {"version": "v2", "predictions": [2.5]}

With ``--vigil-url`` each batch of inputs is also sent to the Vigil agent's drift ingest
(``POST /v1/drift/<model>/samples``) under the live version, so that input drift is
measured on what the model really receives. The agent's API token is read from
``--vigil-token-file`` (the agent generates it as ``<state-dir>/ingest-token`` on its first
start; read again until it is there, and after a 401 in case it was rotated), else from
``$VIGIL_INGEST_TOKEN``. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("model-server")
# Often enough that a switch shows within a blink; a readlink costs microseconds.
POLL_INTERVAL_S = 0.2


class Model:
    def __init__(self, version: str, spec: dict[str, Any]) -> None:
        self.version = version
        self.weights: dict[str, float] = {k: float(v) for k, v in spec.get("weights", {}).items()}
        self.bias = float(spec.get("bias", 0.0))

    def predict(self, row: dict[str, float]) -> float:
        return self.bias + sum(w * float(row.get(k, 0.0)) for k, w in self.weights.items())


def load_version(release_dir: Path) -> Model:
    version = os.readlink(release_dir / "current").rstrip("/").split("/")[-1]
    spec_path = release_dir / version / "model.json"
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    return Model(version, spec)


class Server:
    def __init__(
        self, release_dir: Path, name: str, vigil_url: str | None, token_file: Path | None
    ) -> None:
        self.release_dir = release_dir
        self.name = name
        self.vigil_url = vigil_url.rstrip("/") if vigil_url else None
        self.token_file = token_file
        self.token: str | None = os.environ.get("VIGIL_INGEST_TOKEN") or None
        self.model = load_version(release_dir)
        self.loaded_at = time.time()
        self.reloads = 0
        self._stop = threading.Event()

    def watch(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            try:
                if (
                    os.readlink(self.release_dir / "current").rstrip("/").split("/")[-1]
                    == self.model.version
                ):
                    continue
                new = load_version(self.release_dir)
            except (OSError, ValueError) as exc:
                # Mid-deployment a version may be half copied; keep serving the old one.
                log.warning("cannot load current version, keeping %s: %s", self.model.version, exc)
                continue
            log.info("reloaded: %s -> %s", self.model.version, new.version)
            self.model, self.loaded_at = new, time.time()
            self.reloads += 1

    def forward(self, version: str, rows: list[dict[str, float]]) -> None:
        if not self.vigil_url:
            return
        if self.token_file is not None and self.token is None:
            with contextlib.suppress(OSError):
                self.token = self.token_file.read_text().strip() or None
        body = json.dumps({"version": version, "rows": rows}).encode()
        req = urllib.request.Request(
            f"{self.vigil_url}/v1/drift/{self.name}/samples",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            urllib.request.urlopen(req, timeout=2).close()
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and self.token_file is not None:
                self.token = None  # read the file again: the token may have been rotated
            log.warning("drift samples refused by %s: HTTP %s", self.vigil_url, exc.code)
        except OSError as exc:
            log.warning("drift samples not delivered to %s: %s", self.vigil_url, exc)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                m = server.model
                self._reply(
                    200,
                    {
                        "model": server.name,
                        "version": m.version,
                        "loaded_at": server.loaded_at,
                        "reloads": server.reloads,
                    },
                )

            def do_POST(self) -> None:
                if self.path != "/predict":
                    self._reply(404, {"error": "POST /predict"})
                    return
                try:
                    doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                    rows = doc["rows"]
                    model = server.model  # one version answers the whole batch
                    predictions = [model.predict(r) for r in rows]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    self._reply(
                        400, {"error": f'expected {{"rows": [{{feature: number}}]}}: {exc}'}
                    )
                    return
                self._reply(200, {"version": model.version, "predictions": predictions})
                threading.Thread(
                    target=server.forward, args=(model.version, rows), daemon=True
                ).start()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--release-dir", required=True, type=Path)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    p.add_argument("--model", default="demo", help="model name reported to Vigil (default demo)")
    p.add_argument("--vigil-url", help="Vigil agent to send inputs to, e.g. http://127.0.0.1:9475")
    p.add_argument(
        "--vigil-token-file",
        type=Path,
        help="the agent's API token (its <state-dir>/ingest-token); else $VIGIL_INGEST_TOKEN",
    )
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server = Server(ns.release_dir, ns.model, ns.vigil_url, ns.vigil_token_file)
    except OSError as exc:
        print(f"model-server: {ns.release_dir}/current: {exc.strerror}", file=sys.stderr)
        return 1
    host, _, port = ns.listen.rpartition(":")
    httpd = ThreadingHTTPServer((host or "0.0.0.0", int(port)), server.handler())
    threading.Thread(target=server.watch, daemon=True).start()
    log.info("serving %s %s on %s", ns.model, server.model.version, ns.listen)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
