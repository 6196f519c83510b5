#!/usr/bin/env python3
"""/metrics latency while drift ingest is saturated: the previous code and this one.

A Prometheus scrape times out after 10 s by default, and the agent's promise is a scrape
under 1 s whatever ingest does. Load: ``--senders`` clients (default 16) each posting
~8 MiB JSON batches back to back, as fast as the agent answers; meanwhile a scraper GETs
/metrics every 200 ms and times each answer. Measured side by side in one run, rounds
interleaved (before, after, before, after, ...):

* before: the committed tree (``git archive HEAD``, unpacked in a temporary directory, run
  with the same Python): /metrics rendered on the default executor, shared with ingest
  parsing, no limit on concurrent ingest;
* after: this working tree: /metrics on its own thread, two ingest batches at a time
  (the rest answered 429 at once, body unread; the senders wait Retry-After, as asked).

Reported per version: scrape latency median, p99 and max; the agent's peak RSS (VmHWM);
batches accepted per second and 429s per second.

    .venv/bin/python bench/ingest_scrape/run.py [--rounds 2] [--seconds 20] [--senders 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from agentproc import free_port, http_get, stop_process  # noqa: E402

MAX_BODY = 8 * 1024 * 1024
FEATURES = ("age", "income")


def batch() -> bytes:
    """Valid rows, just under the 8 MiB body limit of both versions."""
    import random

    rng = random.Random(1)
    rows = [{"age": rng.gauss(0, 1), "income": rng.gauss(0, 1)} for _ in range(120_000)]
    body = json.dumps({"version": "v1", "rows": rows}).encode()
    while len(body) > MAX_BODY - 4096:
        rows = rows[: int(len(rows) * 0.97)]
        body = json.dumps({"version": "v1", "rows": rows}).encode()
    return body


def before_tree(tmp: Path) -> Path:
    """The committed code, unpacked: what the agent was before this working tree."""
    out = tmp / "before"
    out.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "agent"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


class Agent:
    def __init__(self, tree: Path, state: Path, extra: list[str]) -> None:
        self.tree, self.state = tree, state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env["PYTHONPATH"] = str(tree)
        self.env = env
        ref = state / "reference.csv"
        import random

        rng = random.Random(0)
        ref.write_text(
            "age,income\n" + "".join(f"{rng.gauss(0, 1)},{rng.gauss(0, 1)}\n" for _ in range(2000))
        )
        subprocess.run(
            [sys.executable, "-m", "agent.cli", "drift", "reference", "set", "--state-dir",
             str(state), "--model", "ranker", "--version", "v1", str(ref)],
            cwd=tree, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.log = open(state / "agent.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--listen", f"127.0.0.1:{self.port}",
             "--state-dir", str(state), "--no-collector.sched", "--no-collector.gpu",
             "--no-collector.profile", *extra],
            cwd=tree, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http_get(self.url + "/readyz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError((state / "agent.log").read_text())
            time.sleep(0.2)
        token = state / "ingest-token"
        self.headers = {"Content-Type": "application/json"}
        if token.exists():  # the previous code needed no token on loopback
            self.headers["Authorization"] = f"Bearer {token.read_text().strip()}"

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def load(agent: Agent, body: bytes, seconds: float, senders: int) -> dict[str, float]:
    stop = threading.Event()
    counts: dict[int, int] = {}
    lock = threading.Lock()
    scrapes: list[float] = []

    def send() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=120)
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/drift/ranker/samples", body=body, headers=agent.headers)
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.getheader("Connection", "").lower() == "close" or status == 429:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=120)
                if status == 429:  # as asked: a client that ignores it is only refused more
                    time.sleep(float(r.getheader("Retry-After", "1")))
            except OSError:
                status = -1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=120)
            with lock:
                counts[status] = counts.get(status, 0) + 1
        conn.close()

    def scrape() -> None:
        while not stop.is_set():
            start = time.monotonic()
            http_get(agent.url + "/metrics", timeout=60)
            scrapes.append(time.monotonic() - start)
            time.sleep(0.2)

    threads = [threading.Thread(target=send) for _ in range(senders)]
    threads.append(threading.Thread(target=scrape))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    ok = sum(n for s, n in counts.items() if s in (200, 422))
    return {
        "scrapes": len(scrapes),
        "median": statistics.median(scrapes),
        "p99": sorted(scrapes)[max(0, int(len(scrapes) * 0.99) - 1)],
        "max": max(scrapes),
        "rss": agent.peak_rss_mib(),
        "accepted_per_s": ok / seconds,
        "busy_per_s": counts.get(429, 0) / seconds,
        "other": sum(n for s, n in counts.items() if s not in (200, 422, 429)),
        "scrape_list": scrapes,  # type: ignore[dict-item]
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--senders", type=int, default=16)
    ns = p.parse_args()
    body = batch()
    print(
        f"batch: {len(body) / 2**20:.2f} MiB; {ns.senders} senders; {ns.seconds:g} s per round; "
        f"{ns.rounds} rounds; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    run_help = [sys.executable, "-m", "agent.cli", "run", "--help"]
    help_text = subprocess.run(run_help, cwd=ROOT, capture_output=True, text=True).stdout
    # Newer code also caps rows per request: lift it so both versions do the same work.
    after_extra = ["--collector.drift.max-rows", "1000000"] if "max-rows" in help_text else []
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        trees = {"before": before_tree(Path(tmp)), "after": ROOT}
        for r in range(ns.rounds):
            for name in ("before", "after"):
                state = Path(tmp) / f"{name}-{r}"
                state.mkdir()
                agent = Agent(trees[name], state, after_extra if name == "after" else [])
                try:
                    res = load(agent, body, ns.seconds, ns.senders)
                finally:
                    agent.stop()
                results[name].append(res)
                print(
                    f"round {r + 1} {name:6}: scrape median {res['median']:.3f} s, "
                    f"p99 {res['p99']:.3f} s, max {res['max']:.3f} s ({res['scrapes']:.0f}); "
                    f"peak RSS {res['rss']:.0f} MiB; accepted {res['accepted_per_s']:.2f}/s, "
                    f"429 {res['busy_per_s']:.1f}/s, other {res['other']:.0f}",
                    flush=True,
                )
    print("\n| version | scrapes | median | p99 | max | peak RSS | batches accepted/s |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in results.items():
        all_scrapes = sorted(s for r in rs for s in r["scrape_list"])  # type: ignore[attr-defined]
        p99 = all_scrapes[max(0, int(len(all_scrapes) * 0.99) - 1)]
        print(f"| {name} | {len(all_scrapes)} | {statistics.median(all_scrapes):.3f} s | "
              f"{p99:.3f} s | {all_scrapes[-1]:.3f} s | {max(r['rss'] for r in rs):.0f} MiB | "
              f"{statistics.median(r['accepted_per_s'] for r in rs):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
