"""CPU per inference target per probe interval: health probe + /metrics scrape + parse.

The page is a 2,000-line vLLM exposition (tests/inference/vllm_large.py: every family vLLM
v1 registers, one series set per data-parallel engine), served by a plain HTTP server in a
child process so that its work is not counted. Times are CPU time of the calling thread
(time.thread_time): other work on a shared machine does not count; medians over rounds.

Printed, per target per interval:

- anchor: prometheus_client's parser alone over the page (every sample iterated);
- parse: kinds.parse("vllm", page) — what the collector runs on each scrape;
- probe: one GET of /health (probe.get_ok), scrape: one GET of /metrics (probe.get) and the
  body decoded; full: probe + scrape + parse, as the collector does each interval;
- 50 targets: the full path for 50 targets in turn, per interval and per target.

Target: full ≤ 2 ms CPU per target per interval.
Usage: .venv/bin/python bench/inference/run.py [--rounds 200] [--targets 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "inference"))

from agentproc import free_port, stop_process, wait_http_ready  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from vllm_large import vllm_exposition  # noqa: E402

from agent.collectors.inference import kinds, probe  # noqa: E402

TARGET_MS = 2.0
MAX_BYTES = 8 * 1024 * 1024
TIMEOUT = 2.0

SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
page = open(sys.argv[2], "rb").read()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = page if self.path == "/metrics" else b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def cpu_ms(fn: Callable[[], object], rounds: int) -> float:
    """Median thread CPU time of one call, in ms."""
    fn()  # warm: imports, compiled patterns, connection paths
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        times.append((time.thread_time() - start) * 1000)
    return statistics.median(times)


def anchor(page: str) -> None:
    for family in text_string_to_metric_families(page):
        for _ in family.samples:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--targets", type=int, default=50)
    args = ap.parse_args()

    page = vllm_exposition()
    lines = len(page.splitlines())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.txt"
        path.write_text(page)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(path)])
        try:
            url = f"http://127.0.0.1:{port}/health"
            wait_http_ready(url, server, "the benchmark's HTTP server", lambda: "", timeout=10)

            def do_probe() -> None:
                probe.get_ok("127.0.0.1", port, "/health", TIMEOUT, MAX_BYTES)

            def do_scrape() -> str:
                body = probe.get("127.0.0.1", port, "/metrics", TIMEOUT, MAX_BYTES).body
                return body.decode("utf-8", "replace")

            def do_full() -> None:
                do_probe()
                kinds.parse("vllm", do_scrape(), 64)

            def do_many() -> None:
                for _ in range(args.targets):
                    do_full()

            anchor_ms = cpu_ms(lambda: anchor(page), max(args.rounds // 10, 10))
            parse_ms = cpu_ms(lambda: kinds.parse("vllm", page, 64), args.rounds)
            probe_ms = cpu_ms(do_probe, args.rounds)
            scrape_ms = cpu_ms(do_scrape, args.rounds)
            full_ms = cpu_ms(do_full, args.rounds)
            many_ms = cpu_ms(do_many, max(args.rounds // 20, 5))
        finally:
            stop_process(server)

    print(f"page: {lines} lines, {len(page.encode()) / 1024:.0f} KiB (vLLM, 2,000-line class)")
    print("CPU of the calling thread per target per interval, median:")
    print(f"  anchor: prometheus_client parser alone   {anchor_ms:8.3f} ms")
    print(f"  parse:  kinds.parse                       {parse_ms:8.3f} ms"
          f"  ({anchor_ms / parse_ms:.1f}x less)")  # fmt: skip
    print(f"  probe:  GET /health                       {probe_ms:8.3f} ms")
    print(f"  scrape: GET /metrics + decode             {scrape_ms:8.3f} ms")
    verdict = "met" if full_ms <= TARGET_MS else "MISSED"
    print(f"  full:   probe + scrape + parse            {full_ms:8.3f} ms"
          f"  (target <= {TARGET_MS} ms: {verdict})")  # fmt: skip
    print(f"  {args.targets} targets: {many_ms:8.1f} ms per interval, "
          f"{many_ms / args.targets:.3f} ms per target")  # fmt: skip
    return 0 if full_ms <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
