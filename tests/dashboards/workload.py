"""A stand-in inference server: a Python process that does what one does to a CPU, and
answers on HTTP as a vLLM server does.

A "feeder" thread prepares batches in pure Python (holds the GIL, shows up in py-spy as
`prepare_batch`), the main thread "waits on the GPU" (sleeps: off-CPU time, voluntary
context switches) and scores the batch in Python (`score`). Runs until killed.

An HTTP server on a loopback port (the agent finds it among the process's listening
sockets) serves vLLM's paths: `/metrics` is the vLLM exposition fixture of
tests/inference/fixtures/ with every counter and histogram growing with time, so rates
and percentiles have data; `/health` answers one probe in three later than the agent's
probe timeout, so the probe failure series exist.
"""

from __future__ import annotations

import itertools
import math
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "inference" / "fixtures" / "vllm.txt"
LATE_ANSWER_S = 0.8  # past the agent's default probe timeout (0.5 s): a probe timeout
STARTED = time.monotonic()
# vLLM's prompt and generation length histograms (its 1-2-5 buckets), which the fixture
# lacks: the agent tests their drift, so the length-drift series need them. Cumulative
# shares of the requests of each engine (987 and 924, as the fixture's latency counts).
TOKENS_125 = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
LENGTH_SHARES = {
    "vllm:request_prompt_tokens": (0, 0, 0.01, 0.03, 0.08, 0.2, 0.4, 0.65, 0.88, 0.97, 0.99, 1),
    "vllm:request_generation_tokens": (0, 0.01, 0.03, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98, 1, 1, 1),
}


def length_histograms(model: str, engines: dict[str, int]) -> str:
    lines = []
    for family, shares in LENGTH_SHARES.items():
        lines += [f"# HELP {family} Number of tokens per request.", f"# TYPE {family} histogram"]
        for engine, n in engines.items():
            lab = f'model_name="{model}",engine="{engine}"'
            for le, share in (*zip(TOKENS_125, shares, strict=True), ("+Inf", 1)):
                lines.append(f'{family}_bucket{{{lab},le="{le}"}} {float(round(n * share))}')
            lines.append(f"{family}_count{{{lab}}} {float(n)}")
            lines.append(f"{family}_sum{{{lab}}} {float(n * 150)}")
    return "\n".join(lines) + "\n"


def cumulative_samples(text: str) -> set[str]:
    """Sample names of the exposition's counters and histograms (the values that only
    grow), from its # TYPE lines."""
    names: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            family, kind = parts[2], parts[3]
            if kind == "counter":
                names |= {family, family.removesuffix("_total") + "_total"}
            elif kind == "histogram":
                names |= {family + s for s in ("_bucket", "_sum", "_count")}
    return names


def grown(text: str, growing: set[str], factor: float) -> str:
    """The exposition with every growing value multiplied by ``factor``: the same shape
    (histogram buckets stay cumulative), as if the server had served ``factor`` times the
    traffic."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in growing:
                series, _, value = line.rpartition(" ")
                line = f"{series} {float(value) * factor!r}"
        out.append(line)
    return "\n".join(out) + "\n"


class VllmHandler(BaseHTTPRequestHandler):
    text = FIXTURE.read_text() + length_histograms(
        "meta-llama/Llama-3.1-8B-Instruct", {"0": 987, "1": 924}
    )
    growing = cumulative_samples(text)
    health_calls = itertools.count()

    def do_GET(self) -> None:
        if self.path == "/health":
            if next(self.health_calls) % 3 == 2:
                time.sleep(LATE_ANSWER_S)
            self.answer(b"", "text/plain")
        elif self.path == "/metrics":
            factor = 1.0 + (time.monotonic() - STARTED) / 10.0
            body = grown(self.text, self.growing, factor).encode()
            self.answer(body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self.send_error(404)

    def answer(self, body: bytes, content_type: str) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the prober gave up first (a timed out probe)

    def log_message(self, format: str, *args: object) -> None:
        pass  # stdout is the "ready" line for the test


def prepare_batch(n: int) -> list[float]:
    return [math.sin(i) * math.cos(i / 3.0) for i in range(n)]


def score(batch: list[float]) -> float:
    total = 0.0
    for x in batch:
        total += x * x
    return total


def feeder(q: queue.Queue[list[float]]) -> None:
    while True:
        q.put(prepare_batch(20_000))


def main() -> None:
    q: queue.Queue[list[float]] = queue.Queue(maxsize=4)
    threading.Thread(target=feeder, args=(q,), daemon=True, name="feeder").start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), VllmHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="http").start()
    print("ready", flush=True)
    while True:
        batch = q.get()
        time.sleep(0.005)  # the GPU's turn
        score(batch)


if __name__ == "__main__":
    sys.exit(main())
