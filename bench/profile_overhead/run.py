#!/usr/bin/env python3
"""What continuous py-spy profiling costs a CPU-bound Python workload, against its anchor.

    .venv/bin/python bench/profile_overhead/run.py [--rounds 5] [--period 20] [--rates 19,99]

One workload (a pure-Python loop counting its iterations, plus eight idle threads) runs
for the whole benchmark, pinned to one CPU together with everything that profiles it
(``taskset -c 1``): the worst case, where every CPU cycle py-spy or the agent spends is a
cycle the workload loses. Figures are per wall second (what users feel; it moves with the
rest of a shared host's load) and per CPU second of the workload (work per cycle it got).
Each round measures its throughput over ``--period`` seconds under every configuration,
in a rotated order:

  none        nothing profiles it
  vigil@R     `vigil run` with only the profile collector, default options except the rate
              (the first of --rates is the default rate)
  nonblocking@R  one `py-spy record --nonblocking` at each of --rates (the floor for any
              py-spy-based profiler: Vigil's py-spy CPU per sampled second at rate R is
              compared with this one's CPU per second at the same rate)
  blocking    `py-spy record` in its default blocking mode at its default 100 Hz (the anchor:
              what people run by hand, pausing the target for every sample)

It prints the median throughput per configuration, the median slowdown against `none` in
the same round, the CPU Vigil used per watched process: the agent's own CPU over the
period plus its py-spy children's (vigil_profile_pyspy_cpu_seconds_total per sampled
second), as a fraction of one core, and the ratio of Vigil's py-spy CPU to the single
non-blocking py-spy's at each rate.

With ``--node N`` (default 50, 0 to skip) it then measures the node budget: N idle
thread-per-request servers (32 idle request threads each) watched by one `vigil run` at
its defaults for ``--node-period`` seconds; it prints the py-spy CPU the node paid as a
share of one core next to the budget in force, and the windows the budget held back.
Needs root (or CAP_SYS_PTRACE) for py-spy.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.collectors.profile.settings import ProfileSettings  # noqa: E402
from agent.options import declared  # noqa: E402

DEFAULTS = {o.key: o.default for o in declared(ProfileSettings)}
PIN: list[str] = []  # the workload's CPU, from --cpu in main()
PROF_PIN: list[str] = []  # the profilers', from --profiler-cpu
PYSPY = str(Path(sys.executable).parent / "py-spy")

# The loop runs in the main thread; eight more threads wait on a queue, as a server's
# worker pool does: py-spy reads every thread at every sample (and blocking mode stops
# them all), so an idle pool is part of what profiling a real server costs.
WORKLOAD = """
import queue, sys, threading, time
jobs = queue.Queue()
for _ in range(8):
    threading.Thread(target=jobs.get, daemon=True).start()
def step():
    x = 0
    for i in range(2000):
        x += i * i
    return x
count = 0
last = time.monotonic()
while True:
    step()
    count += 1
    now = time.monotonic()
    if now - last >= 0.25:
        sys.stdout.write(f"{now} {count} {time.process_time()}\\n"); sys.stdout.flush()
        last = now
"""


class Workload:
    def __init__(self, path: Path) -> None:
        path.write_text(WORKLOAD)
        self.proc = subprocess.Popen(
            [*PIN, sys.executable, str(path)], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.pid = self.proc.pid  # taskset execs the interpreter in place
        self.line()

    def line(self) -> tuple[float, int, float]:
        assert self.proc.stdout is not None
        t, n, cpu = self.proc.stdout.readline().split()
        return float(t), int(n), float(cpu)

    def rate_over(self, seconds: float) -> tuple[float, float]:
        """Iterations per wall second and per CPU second of the workload, over ``seconds``.

        The first is what users feel; on a shared host it moves with everyone else's load.
        The second is the work done per cycle the workload got: it shows interference
        (caches, memory traffic) and is blind to time the workload was not running.
        """
        t0, n0, c0 = self.line()
        while True:
            t1, n1, c1 = self.line()
            if t1 - t0 >= seconds:
                return (n1 - n0) / (t1 - t0), (n1 - n0) / max(c1 - c0, 1e-9)

    def drain(self) -> None:
        # Reads what accumulated while a profiler was starting, so periods start fresh.
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end:
            self.line()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(
        r"^(vigil_profile_(?:pyspy_cpu_seconds_total|windows_total|budget_skips_total"
        r"|budget_cores)(?:\{result=\"ok\"\})?) (\S+)$",
        text,
        re.M,
    ):
        out[m.group(1)] = float(m.group(2))
    return out


def start_agent(marker: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = 19000 + os.getpid() % 1000
    cmd = [
        *PROF_PIN,
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        "--listen",
        f"127.0.0.1:{port}",
        "--watch",
        marker,
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.drift",
        "--no-collector.inference",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    agent = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return agent, port


def run_vigil(
    w: Workload, rate: int, period: float, marker: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Throughput under Vigil, and Vigil's CPU (agent + py-spy) per watched process."""
    agent, port = start_agent(marker, "--collector.profile.rate", str(rate))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until py-spy children run
            kids = subprocess.run(
                ["pgrep", "-P", str(agent.pid)], capture_output=True, text=True
            ).stdout.split()
            if kids:
                break
            time.sleep(0.2)
        w.drain()
        cpu0, before = cpu_seconds(agent.pid), scrape(port)
        rate_s = w.rate_over(period)
        cpu1 = cpu_seconds(agent.pid)
        # Children are charged when their window ends: wait for the window under way.
        time.sleep(float(DEFAULTS["window"]) + 3)
        after = scrape(port)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)
    windows = after.get('vigil_profile_windows_total{result="ok"}', 0) - before.get(
        'vigil_profile_windows_total{result="ok"}', 0
    )
    pyspy = after.get("vigil_profile_pyspy_cpu_seconds_total", 0) - before.get(
        "vigil_profile_pyspy_cpu_seconds_total", 0
    )
    per_sampled_second = pyspy / (windows * float(DEFAULTS["window"])) if windows else 0.0
    return rate_s, ((cpu1 - cpu0) / period, per_sampled_second)


def run_blocking(w: Workload, period: float) -> tuple[float, float]:
    spy = subprocess.Popen(
        [
            *PROF_PIN,
            PYSPY,
            "record",
            "--format",
            "raw",
            "--rate",
            "100",
            "--pid",
            str(w.pid),
            "-o",
            os.devnull,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # attach
        w.drain()
        return w.rate_over(period)
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=10)


def run_nonblocking(w: Workload, rate: int, period: float) -> tuple[tuple[float, float], float]:
    """Throughput under one non-blocking py-spy, and that py-spy's CPU per second."""
    spy = subprocess.Popen(
        [
            *PROF_PIN,
            *(PYSPY, "record", "--nonblocking", "--format", "raw", "--function"),
            *("--rate", str(rate), "--pid", str(w.pid), "-o", os.devnull),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        time.sleep(1.0)  # attach
        w.drain()
        got = w.rate_over(period)
    finally:
        spy.send_signal(signal.SIGINT)
        _, _, usage = os.wait4(spy.pid, 0)
        spy.returncode = 0
    return got, (usage.ru_utime + usage.ru_stime) / (time.monotonic() - started)


# A thread-per-request server whose 32 request threads wait on idle keep-alive clients:
# what most watched inference processes look like between requests.
IDLE_SERVER = """
import http.server, socket, threading
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
clients = [socket.create_connection(srv.server_address) for _ in range(32)]
while threading.active_count() < 34:
    threading.Event().wait(0.01)
print("ready", flush=True)
threading.Event().wait()
"""


def run_node(n: int, period: float, settle: float, tmp: Path) -> dict[str, float]:
    """py-spy CPU the node pays for ``n`` watched idle servers, against its budget.

    Measured from the agent's start by default (``settle`` 0): the budget lets the first
    windows start at once, so a new process gets a profile without waiting, and then holds
    the node back until the average is within the budget; a period of a few minutes shows
    the average the node pays, burst included.
    """
    script = tmp / "vigil_bench_idle_server.py"
    script.write_text(IDLE_SERVER)
    procs = [
        subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        agent, port = start_agent("vigil_bench_idle_server")
        try:
            deadline = time.monotonic() + 30
            before: dict[str, float] = {}
            while time.monotonic() < deadline:
                try:
                    before = scrape(port)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(settle)
            before = scrape(port)
            started = time.monotonic()
            time.sleep(period)
            after = scrape(port)
            elapsed = time.monotonic() - started
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=10)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    return {
        "pyspy_share": delta("vigil_profile_pyspy_cpu_seconds_total") / elapsed,
        "budget": after.get("vigil_profile_budget_cores", float("nan")),
        "skips": delta("vigil_profile_budget_skips_total"),
        "windows": delta('vigil_profile_windows_total{result="ok"}'),
        "elapsed": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="0: the node budget run only")
    ap.add_argument("--period", type=float, default=20.0)
    ap.add_argument("--rates", default=f"{DEFAULTS['rate']},99")
    # CPU 1 by default: on a shared 2-CPU host the context-switch benchmarks pin to CPU 0.
    ap.add_argument("--cpu", default="1")
    # Same CPU as the workload by default (worst case); another CPU shows interference only.
    ap.add_argument("--profiler-cpu", default=None)
    ap.add_argument("--node", type=int, default=50, help="idle servers for the budget run")
    ap.add_argument("--node-period", type=float, default=240.0)
    ap.add_argument("--node-settle", type=float, default=0.0)
    args = ap.parse_args()
    PIN[:] = ["taskset", "-c", args.cpu]
    PROF_PIN[:] = ["taskset", "-c", args.profiler_cpu or args.cpu]
    rates = [int(r) for r in args.rates.split(",")]
    # Stopped with SIGTERM, still stop the workload and any agent (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    configs = [
        "none",
        *(f"vigil@{r}" for r in rates),
        *(f"nonblocking@{r}" for r in rates),
        "blocking",
    ]
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    w = Workload(tmp / "vigil_bench_profile_workload.py")
    wall: dict[str, list[float]] = {c: [] for c in configs}
    percpu: dict[str, list[float]] = {c: [] for c in configs}
    slow: dict[str, list[float]] = {c: [] for c in configs}
    slow_cpu: dict[str, list[float]] = {c: [] for c in configs}
    cost: dict[str, list[tuple[float, float]]] = {c: [] for c in configs}
    try:
        for rnd in range(args.rounds):
            order = configs[rnd % len(configs) :] + configs[: rnd % len(configs)]
            got: dict[str, tuple[float, float]] = {}
            for c in order:
                if c == "none":
                    w.drain()
                    got[c] = w.rate_over(args.period)
                elif c == "blocking":
                    got[c] = run_blocking(w, args.period)
                elif c.startswith("nonblocking@"):
                    got[c], spy_cpu = run_nonblocking(w, int(c.split("@")[1]), args.period)
                    cost[c].append((0.0, spy_cpu))
                else:
                    got[c], cpu = run_vigil(
                        w, int(c.split("@")[1]), args.period, "vigil_bench_profile_workload"
                    )
                    cost[c].append(cpu)
                wall[c].append(got[c][0])
                percpu[c].append(got[c][1])
            for c in configs:
                slow[c].append(1 - got[c][0] / got["none"][0])
                slow_cpu[c].append(1 - got[c][1] / got["none"][1])
            print(
                f"round {rnd + 1}: "
                + "  ".join(f"{c}={got[c][0]:.0f}/s ({got[c][1]:.0f}/cpu-s)" for c in configs),
                flush=True,
            )
    finally:
        w.stop()
    if args.rounds:
        print(
            f"\nworkload on CPU {args.cpu}, profilers on CPU {args.profiler_cpu or args.cpu}; "
            f"{args.rounds} rounds x "
            f"{args.period:g} s; window {DEFAULTS['window']:g} s; medians of per-round figures"
        )
        print(
            "| configuration | iter per wall s | slowdown vs none (wall) | iter per CPU s "
            "| slowdown vs none (per CPU s) | Vigil CPU per watched process (share of one core) |"
        )
        print("|---|---|---|---|---|---|")
        med = statistics.median
        for c in configs:
            share = ""
            if cost[c]:
                agent, spy = med(a for a, _ in cost[c]), med(p for _, p in cost[c])
                total = med(a + p for a, p in cost[c])
                share = f"{100 * total:.2f} % (agent {100 * agent:.2f} %, py-spy {100 * spy:.2f} %)"
            print(
                f"| {c} | {med(wall[c]):.0f} | {100 * med(slow[c]):+.2f} % | {med(percpu[c]):.0f} "
                f"| {100 * med(slow_cpu[c]):+.2f} % | {share} |"
            )
        print()
        for r in rates:
            vigil = [p for _, p in cost[f"vigil@{r}"]]
            floor = [p for _, p in cost[f"nonblocking@{r}"]]
            ratios = [v / f for v, f in zip(vigil, floor, strict=True) if f > 0]
            print(
                f"py-spy CPU at {r} Hz: Vigil {100 * med(vigil):.2f} % of a core per sampled "
                f"second, one non-blocking py-spy {100 * med(floor):.2f} %: "
                f"{med(vigil) / med(floor):.2f}x (median of per-round ratios "
                f"{med(ratios):.2f}x; target <= 1.2x)"
            )
    if args.node:
        node = run_node(args.node, args.node_period, args.node_settle, tmp)
        print(
            f"\nnode budget: {args.node} idle thread-per-request servers (32 idle threads "
            f"each), {node['elapsed']:.0f} s after {args.node_settle:g} s: "
            f"py-spy {100 * node['pyspy_share']:.2f} % of a core, "
            f"budget {100 * node['budget']:.2f} %; {node['windows']:.0f} windows "
            f"profiled, {node['skips']:.0f} held back by the budget"
        )


if __name__ == "__main__":
    main()
