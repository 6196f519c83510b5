#!/usr/bin/env python3
"""Rollback controller: how fast the webhook answers, and how long the loop takes.

1. Webhook answer time for a new alert (policy + journal transaction with fsync, then 200)
   and for a re-send (duplicate), against an anchor: a bare aiohttp server on the same
   machine that reads the same body and answers 200. Requests interleaved (anchor, new,
   re-send, anchor, ...), medians and p99, ratios to the anchor.
2. Alert → rollback with real Prometheus and Alertmanager (1s scrape and evaluation, the
   production rules with `for: 2s`): time from the metric turning 1 to Prometheus showing
   the alert firing (the anchor: what Prometheus alone takes), and to `current` switched.

    .venv/bin/python bench/rollback/run.py [--requests 300] [--loops 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "rollback")]

from agentproc import free_port, http_get  # noqa: E402
from rbproc import TOKEN, ControllerProcess, alert, payload, release_dir  # noqa: E402

ANCHOR = """
import sys
from aiohttp import web
async def h(request):
    await request.read()
    return web.json_response({"alerts": []})
app = web.Application()
app.add_routes([web.post("/v1/alerts", h), web.get("/readyz", lambda r: web.Response(text="ok"))])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def post(url: str, body: bytes) -> float:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def webhook(tmp: Path, n: int) -> None:
    root = release_dir(tmp / "rel", ["v1", "v2", "v3"])
    port = free_port()
    anchor = subprocess.Popen([sys.executable, "-c", ANCHOR, str(port)])
    args = [
        "--release-dir",
        str(root),
        "--dry-run",
        "--cooldown",
        "0s",
        "--max-per-hour",
        "1000000",
    ]
    try:
        while True:
            try:
                if http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        with ControllerProcess(args, tmp / "state") as c:
            labels = {"action": "rollback", "model": "demo", "version": "v3"}
            times: dict[str, list[float]] = {"anchor": [], "new": [], "resend": []}
            for i in range(n):
                new = json.dumps(payload(alert(labels, fingerprint=f"f{i:08x}"))).encode()
                times["anchor"].append(post(f"http://127.0.0.1:{port}/v1/alerts", new))
                times["new"].append(post(c.url + "/v1/alerts", new))
                times["resend"].append(post(c.url + "/v1/alerts", new))
            done = len([r for r in c.wait_done(n, timeout=120) if r["state"] == "done"])
    finally:
        anchor.terminate()
        anchor.wait()
    a = statistics.median(times["anchor"])
    print(f"webhook, {n} requests each (rollbacks done: {done}):")
    print("| request | median | p99 | median / anchor |")
    print("|---|---|---|---|")
    for key, label in (
        ("anchor", "anchor: bare aiohttp 200"),
        ("new", "new alert (journaled, fsync)"),
        ("resend", "re-send (duplicate)"),
    ):
        m = statistics.median(times[key])
        print(
            f"| {label} | {m * 1e3:.2f} ms | {pct(times[key], 0.99) * 1e3:.2f} ms | {m / a:.2f}x |"
        )


def loop(tmp: Path, loops: int) -> None:
    from test_rollback_stack import stack

    firing, switched = [], []
    for i in range(loops):
        with stack(tmp / f"loop{i}") as s:
            s.exporter.drift(1)
            start = time.monotonic()
            while not any(
                a["state"] == "firing"
                for a in s.prometheus.get_json("/api/v1/alerts")["data"]["alerts"]
            ):
                time.sleep(0.02)
            firing.append(time.monotonic() - start)
            while (s.root / "current").readlink().name != "v2":
                assert time.monotonic() - start < 30, s.controller.logs()
                time.sleep(0.02)
            switched.append(time.monotonic() - start)
    f, w = statistics.median(firing), statistics.median(switched)
    print(f"\nalert -> rollback, {loops} runs (1s scrape/evaluation, for: 2s):")
    print("| measure | runs | median | median / anchor |")
    print("|---|---|---|---|")
    runs_f = ", ".join(f"{x:.2f}" for x in firing)
    runs_w = ", ".join(f"{x:.2f}" for x in switched)
    print(f"| anchor: metric=1 -> Prometheus alert firing | {runs_f} s | {f:.2f} s | 1.00x |")
    print(f"| metric=1 -> `current` switched | {runs_w} s | {w:.2f} s | {w / f:.2f}x |")
    print(f"| of which Alertmanager + controller | | {w - f:.2f} s | |")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--loops", type=int, default=3)
    ns = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        webhook(Path(tmp), ns.requests)
        if ns.loops:
            loop(Path(tmp), ns.loops)


if __name__ == "__main__":
    main()
