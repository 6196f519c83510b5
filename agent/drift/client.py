"""A tiny client an inference server calls to send its inputs to Vigil's drift ingest.

    from agent.drift.client import DriftClient
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
it adds nothing to the server's dependencies; the module imports nothing else of Vigil.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


class DriftClient:
    def __init__(
        self,
        url: str,
        model: str,
        version: str,
        token: str | None = None,
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
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._queue: queue.Queue[Mapping[str, Any]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._stats = {
            "sent": 0,
            "rejected_by_agent": 0,
            "dropped_queue_full": 0,
            "dropped_send_failed": 0,
        }
        self._unreported = 0  # drops not yet told to the agent
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vigil-drift-client", daemon=True)
        self._thread.start()

    def record(self, row: Mapping[str, Any]) -> bool:
        """Queues one row of feature values; False (and counted) when it had to be dropped."""
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
            dropped, self._unreported = self._unreported, 0
        body: dict[str, Any] = {"version": self.version, "rows": batch}
        if dropped:
            body["client_dropped"] = dropped
        req = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode(), headers=self._headers, method="POST"
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
                self._failed(batch, dropped, f"HTTP {exc.code}: {exc.read()[:200]!r}")
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
