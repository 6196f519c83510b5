"""vigil-client: what an inference server calls to send its inputs to Vigil's drift ingest.

Install it into the server's own environment (standard library only, Python >= 3.9)::

    pip install ./clients/python          # from a checkout of the Vigil repository

then::

    from vigil_client import DriftClient
    drift = DriftClient("http://127.0.0.1:9475", model="ranker", version="v7")
    ...
    drift.record({"age": 41.0, "income": 5200.0})   # in the request path: never blocks
    ...
    drift.close()                                    # at shutdown: sends what is queued

``record`` only puts the row on a bounded queue (``put_nowait``); a background thread
sends batches (every ``batch_size`` rows or ``flush_interval`` seconds). When the queue is
full, or the agent cannot be reached, rows are dropped, counted in :meth:`stats`, and the
count rides along with the next batch so the agent reports it as
``vigil_drift_rejected_samples_total{reason="client_dropped"}``. Standard library only, so
it adds nothing to the server's dependencies; it imports nothing of the agent, which
re-exports it as ``agent.drift.client``.

The agent's API needs a bearer token; the client finds it without set-up (see
:func:`find_token`): the ``token`` argument, else ``$VIGIL_INGEST_TOKEN``, else the file
``$VIGIL_INGEST_TOKEN_FILE``, else ``ingest-token`` in the agent's state directory
(``$VIGIL_STATE_DIR``, ``/var/lib/vigil`` as root, ``./var`` otherwise), where the agent
generates it on first start. A token read from a file is read again after a 401, so a
rotated token is picked up.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "MAX_CLIENT_DROPPED",
    "STATE_DIR_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "TOKEN_NAME",
    "DriftClient",
    "TokenLookup",
    "default_state_dirs",
    "find_token",
]

TOKEN_ENV = "VIGIL_INGEST_TOKEN"
TOKEN_FILE_ENV = "VIGIL_INGEST_TOKEN_FILE"
STATE_DIR_ENV = "VIGIL_STATE_DIR"
# Copies of agent/auth.py INGEST_TOKEN_NAME and of the rule in agent/config.py
# default_state_dir(): this package imports nothing of the agent. tests/security/
# test_http_auth.py checks that the copies agree.
TOKEN_NAME = "ingest-token"
# Copy of agent/collectors/drift/parse.py MAX_CLIENT_DROPPED
# (tests/drift/test_drift_bounds_parse.py checks that they agree): the most client_dropped
# one request may report.
MAX_CLIENT_DROPPED = 1_000_000


def default_state_dirs() -> list[str]:
    """The agent's default state directory for this user first, then the other one."""
    dirs = ["/var/lib/vigil", "./var"]
    return dirs if os.geteuid() == 0 else dirs[::-1]


@dataclass(frozen=True)
class TokenLookup:
    token: str | None
    source: str  # where the token came from, or "" when none was found
    path: str | None  # the file it was read from (to read it again after a rotation)
    tried: tuple[str, ...]  # what was looked at and why it did not serve

    def explain(self) -> str:
        """For error messages: where the token came from, or everywhere it was looked for."""
        if self.token is not None:
            return f"token from {self.source}"
        return "no ingest token found; looked in: " + "; ".join(self.tried)


def find_token(
    token: str | None = None,
    token_file: str | None = None,
    env: Mapping[str, str] | None = None,
    state_dirs: list[str] | None = None,
) -> TokenLookup:
    """The agent's API token: ``token`` > ``token_file`` > $VIGIL_INGEST_TOKEN >
    $VIGIL_INGEST_TOKEN_FILE > ``ingest-token`` in ``state_dirs`` (default: $VIGIL_STATE_DIR,
    then the agent's default state directories)."""
    env = os.environ if env is None else env
    tried: list[str] = []
    if token:
        return TokenLookup(token.strip(), "the token argument", None, ())
    files: list[tuple[str, str]] = []
    if token_file:
        files.append((token_file, "token_file"))
    elif env.get(TOKEN_ENV, "").strip():
        return TokenLookup(env[TOKEN_ENV].strip(), f"${TOKEN_ENV}", None, ())
    else:
        tried.append(f"${TOKEN_ENV} (not set)")
        if env.get(TOKEN_FILE_ENV):
            files.append((env[TOKEN_FILE_ENV], f"${TOKEN_FILE_ENV}"))
        else:
            tried.append(f"${TOKEN_FILE_ENV} (not set)")
            if state_dirs is None:
                state_dirs = [env[STATE_DIR_ENV]] if env.get(STATE_DIR_ENV) else []
                state_dirs += default_state_dirs()
            files += [(os.path.join(d, TOKEN_NAME), "") for d in state_dirs]
    for path, via in files:
        where = f"{path} ({via})" if via else path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as exc:
            tried.append(f"{where}: {exc.strerror or exc}")
            continue
        if not text:
            tried.append(f"{where}: empty")
            continue
        return TokenLookup(text, where, path, tuple(tried))
    return TokenLookup(None, "", None, tuple(tried))


class DriftClient:
    def __init__(
        self,
        url: str,
        model: str,
        version: str,
        token: str | None = None,
        token_file: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/v1/drift/{model}/samples"
        self.version = version
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self._token_args = (token, token_file)
        self.auth = find_token(token, token_file)
        self._queue: queue.Queue[Mapping[str, Any]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._stats = {
            "sent": 0,
            "rejected_by_agent": 0,
            "dropped_queue_full": 0,
            "dropped_send_failed": 0,
        }
        self._unreported = 0  # drops not yet told to the agent
        self._reread = False  # read the token file again before the next batch
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vigil-drift-client", daemon=True)
        self._thread.start()

    def record(self, row: Mapping[str, Any], outputs: Mapping[str, Any] | None = None) -> bool:
        """Queues one row of feature values; False (and counted) when it had to be dropped.

        ``outputs``: what the model answered for this row (a predicted label, a score, a
        confidence), as the reference names those columns (``--output``, ``--confidence``);
        they travel in the same row, so inputs and outputs are tested on the same requests.
        Categorical values are strings, numeric ones numbers.
        """
        if outputs:
            row = {**row, **outputs}
        try:
            self._queue.put_nowait(row)
            return True
        except queue.Full:
            with self._lock:
                self._stats["dropped_queue_full"] += 1
                self._unreported += 1
            return False

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "queued": self._queue.qsize()}

    def close(self, timeout: float = 5.0) -> None:
        """Sends what is queued (within ``timeout``) and stops the sender thread."""
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._send(batch)
            elif self._stop.is_set():
                return

    def _collect(self) -> list[Mapping[str, Any]]:
        batch: list[Mapping[str, Any]] = []
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            wait = deadline - time.monotonic()
            if self._stop.is_set():
                wait = 0.0  # closing: take what is there, do not wait for more
            try:
                batch.append(
                    self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _send(self, batch: list[Mapping[str, Any]]) -> None:
        with self._lock:
            # The agent refuses a larger count (400): after a long outage the rest goes out
            # with the next batches instead of failing every batch from then on.
            dropped = min(self._unreported, MAX_CLIENT_DROPPED)
            self._unreported -= dropped
        body: dict[str, Any] = {"version": self.version, "rows": batch}
        if dropped:
            body["client_dropped"] = dropped
        headers = {"Content-Type": "application/json"}
        if self.auth.token is None or (self.auth.path is not None and self._reread):
            # Not found yet (the agent writes it on its first start), or rotated (401).
            self.auth = find_token(*self._token_args)
            self._reread = False
        if self.auth.token is not None:
            headers["Authorization"] = f"Bearer {self.auth.token}"
        req = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                doc = json.loads(r.read() or b"{}")
            accepted = int(doc.get("accepted", len(batch)))
        except urllib.error.HTTPError as exc:
            if exc.code == 422:  # some rows refused by the agent (it counted them); the rest kept
                accepted = int(json.loads(exc.read() or b"{}").get("accepted", 0))
                self.last_error = f"agent refused {len(batch) - accepted} row(s)"
            else:
                why = f"HTTP {exc.code}: {exc.read()[:200]!r}"
                if exc.code == 401:
                    self._reread = True
                    why += f" ({self.auth.explain()})"
                self._failed(batch, dropped, why)
                return
        except (OSError, ValueError) as exc:
            self._failed(batch, dropped, str(exc))
            return
        with self._lock:
            self._stats["sent"] += accepted
            self._stats["rejected_by_agent"] += len(batch) - accepted

    def _failed(self, batch: list[Mapping[str, Any]], dropped: int, why: str) -> None:
        # No retry: the request path's data is a sample, not a ledger; what matters is
        # that the loss is counted and reported once the agent answers again.
        self.last_error = why
        with self._lock:
            self._stats["dropped_send_failed"] += len(batch)
            self._unreported += dropped + len(batch)
