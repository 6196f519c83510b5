#!/usr/bin/env python3
"""Memory and CPU of `vigil run` next to prometheus-node-exporter, on the same host, one run.

    .venv/bin/python bench/footprint/run.py [--settle 60] [--window 120] [--every 2]

The agent runs as the DaemonSet runs it: every collector at its defaults, one watched
workload (tests/dashboards/workload.py, the dashboards' stand-in inference server) on two
GPUs served by the fake libnvidia-ml.so.1 (tests/gpu, built here with gcc), a drift
reference and one window of samples posted to it so the drift check runs. Beside it,
Debian's prometheus-node-exporter with its default collectors. Both are scraped every
--scrape seconds, as Prometheus would. After --settle seconds, both are sampled in turn
every --every seconds for --window seconds:

  RSS   VmRSS of the process, plus its children's (py-spy, while one runs)
  PSS   Pss from /proc/<pid>/smaps_rollup, same processes (shared pages split fairly)
  CPU   utime+stime over the window, of the process alone and with its children (reaped
        ones through cutime+cstime), as a percentage of one core

and prints medians, maxima, the agent's peak since start (VmHWM: the probe compile) and
the ratio agent / node-exporter. Targets: agent RSS ≤ 150 MiB and CPU ≤ 1 % of a core.
The run fails, rather than print figures for less work, when a collector did not start,
no drift check ran or py-spy never read the workload. Needs root (BPF, py-spy) and
`apt-get install prometheus-node-exporter` (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "gpu"))

from agentproc import AgentProcess, free_port, stop_process, wait_http_ready  # noqa: E402
from fakenvml import build, two_gpus  # noqa: E402

from agent.collectors import SPECS  # noqa: E402

NODE_EXPORTER = "prometheus-node-exporter"
TARGET_RSS_MIB, TARGET_CPU_PCT = 150.0, 1.0
MODEL = "fraud"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


def children(pid: int) -> list[int]:
    """Live descendants of ``pid`` (py-spy and whatever it starts)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int, reaped: bool = True) -> int:
    """utime+stime of ``pid``, plus its reaped children's (cutime+cstime) unless not
    ``reaped``; 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11 : 15 if reaped else 13])


def thread_ticks(pid: int) -> dict[int, int]:
    """utime+stime per live thread of ``pid``."""
    out: dict[int, int] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = int(fields[11]) + int(fields[12])
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of the agent's threads, from `py-spy dump` (the kernel's are all
    "python")."""
    pyspy = Path(sys.executable).parent / "py-spy"
    exe = str(pyspy) if pyspy.exists() else shutil.which("py-spy")
    if exe is None:
        return {}
    out = subprocess.run(
        [exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
    ).stdout
    return {int(t): name for t, name in re.findall(r'^Thread (\d+) \(\w+\): "(.*)"', out, re.M)}


@dataclass
class Subject:
    name: str
    pid: int
    rss: list[float] = field(default_factory=list)  # MiB, process + children
    pss: list[float] = field(default_factory=list)
    own_rss: list[float] = field(default_factory=list)  # MiB, the process alone
    cpu_start: int = 0
    cpu_end: int = 0
    own_start: int = 0  # the process alone, children not counted
    own_end: int = 0

    def ticks(self) -> tuple[int, int]:
        """(with children, alone)."""
        own = cpu_ticks(self.pid, reaped=False)
        total = cpu_ticks(self.pid) + sum(cpu_ticks(c) for c in children(self.pid))
        return total, own

    def sample(self) -> None:
        pids = [self.pid, *children(self.pid)]
        own = kib(f"/proc/{self.pid}/status", "VmRSS")
        self.own_rss.append(own / MiB)
        self.rss.append(sum(kib(f"/proc/{p}/status", "VmRSS") for p in pids) / MiB)
        self.pss.append(sum(kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids) / MiB)


def scrape(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
    except OSError as exc:
        print(f"scrape {url} failed: {exc}", file=sys.stderr)


def feed_drift(agent: AgentProcess, work: Path) -> None:
    """A reference for one model, then a window of samples that moved: the check runs."""
    rng = random.Random(7)
    reference = work / "reference.jsonl"
    with reference.open("w") as f:
        for _ in range(2000):
            f.write(json.dumps({"amount": rng.gauss(50, 10), "age": rng.gauss(40, 12)}) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "drift", "reference", "set", "--model", MODEL,
         "--version", "v1", "--state-dir", str(work / "state"), str(reference)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=agent.env,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"vigil drift reference set failed:\n{done.stdout}{done.stderr}")
    rows = [{"amount": rng.gauss(80, 10), "age": rng.gauss(40, 12)} for _ in range(1000)]
    deadline = time.monotonic() + 60  # the agent picks the reference up at its next look
    while True:
        req = urllib.request.Request(
            f"{agent.url}/v1/drift/{MODEL}/samples",
            data=json.dumps({"version": "v1", "rows": rows}).encode(),
            headers={"Content-Type": "application/json", **agent.auth()},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise SystemExit(f"posting drift samples failed: {exc.code} {exc.read()!r}") from None


def row(label: str, a: float, b: float, unit: str) -> str:
    ratio = f"{a / b:.2f}x" if b else "-"
    return f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {ratio} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settle", type=float, default=60.0, help="seconds before sampling")
    ap.add_argument("--window", type=float, default=120.0, help="seconds of sampling")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--scrape", type=float, default=15.0, help="seconds between scrapes")
    args = ap.parse_args()

    exporter = shutil.which(NODE_EXPORTER)
    if exporter is None:
        print(
            f"{NODE_EXPORTER} is not installed: scripts/setup.sh installs it "
            f"(apt-get install {NODE_EXPORTER})",
            file=sys.stderr,
        )
        return 2
    if os.geteuid() != 0:
        print("needs root: the sched collector loads BPF, py-spy attaches", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="vigil-footprint-") as tmp:
        work = Path(tmp)
        tag = f"vigil-footprint-{os.getpid()}"
        workload = subprocess.Popen(
            # The tag (ignored by the script) tells this workload from those that tests
            # running on the same host start from the same file.
            [sys.executable, str(ROOT / "tests" / "dashboards" / "workload.py"), tag],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert workload.stdout is not None and workload.stdout.readline().strip() == "ready"
        lib = build(work / "nvml")
        scenario = two_gpus(work / "scenario.txt", (workload.pid,) * 3)
        scenario.write()
        env = {
            "TMPDIR": str(work),
            "LD_LIBRARY_PATH": str(lib.parent),
            "FAKE_NVML_SCENARIO": str(scenario.path),
            "FAKE_NVML_CALLS": str(work / "nvml-calls"),
        }
        # As the pattern is written (workload\.py), the agent's own command line does not match.
        agent_args = ["--watch", rf"workload\.py {tag}", "--state-dir", str(work / "state")]
        ne_port = free_port()
        ne_log = (work / "node-exporter.log").open("w")
        node_exporter = subprocess.Popen(
            [exporter, f"--web.listen-address=127.0.0.1:{ne_port}"],
            stdout=ne_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        ne_url = f"http://127.0.0.1:{ne_port}/metrics"
        try:
            wait_http_ready(
                ne_url, node_exporter, NODE_EXPORTER,
                lambda: (work / "node-exporter.log").read_text(),
            )  # fmt: skip
            with AgentProcess(agent_args, env=env, ready_timeout=120) as agent:
                feed_drift(agent, work)
                started = set(re.findall(r'msg="collector started" collector=(\S+)', agent.logs()))
                missing = sorted({spec.name for spec in SPECS} - started)
                if missing:
                    raise SystemExit(f"collectors not running: {missing}:\n{agent.logs()}")
                a = Subject("vigil", agent.proc.pid)  # type: ignore[union-attr]
                n = Subject(NODE_EXPORTER, node_exporter.pid)
                start_rss = kib(f"/proc/{a.pid}/status", "VmRSS") / MiB
                t0 = time.monotonic()
                next_scrape = t0
                phase_end = t0 + args.settle
                sampling = False
                while True:
                    now = time.monotonic()
                    if now >= next_scrape:
                        scrape(agent.url + "/metrics")
                        scrape(ne_url)
                        next_scrape += args.scrape
                    if not sampling and now >= phase_end:
                        sampling = True
                        for s in (a, n):
                            s.cpu_start, s.own_start = s.ticks()
                        threads_start = thread_ticks(a.pid)
                        w0 = time.monotonic()
                        phase_end = w0 + args.window
                    elif sampling and now >= phase_end:
                        for s in (a, n):
                            s.cpu_end, s.own_end = s.ticks()
                        threads_end = thread_ticks(a.pid)
                        wall = time.monotonic() - w0
                        break
                    if sampling:
                        # Interleaved, in alternating order, so neither always goes first.
                        pair = (a, n) if len(a.rss) % 2 == 0 else (n, a)
                        for s in pair:
                            s.sample()
                    time.sleep(args.every)
                if agent.proc is None or agent.proc.poll() is not None:
                    raise SystemExit(f"the agent exited:\n{agent.logs()}")
                names = thread_names(a.pid)
                peak = kib(f"/proc/{a.pid}/status", "VmHWM") / MiB  # start included
                # The figures count only if the work was done: a drift check ran and
                # py-spy read the workload.
                final = agent.metrics()
                checks = {
                    "a drift check": r"^vigil_drift_last_check_timestamp_seconds\{[^}]*\} [1-9]",
                    "py-spy reading the workload": (
                        rf'^vigil_profile_up\{{[^}}]*pid="{workload.pid}"[^}}]*\}} 1'
                    ),
                }
                for what, pattern in checks.items():
                    if not re.search(pattern, final, re.M):
                        raise SystemExit(f"no sign of {what} in /metrics:\n{final}")
        finally:
            stop_process(node_exporter)
            workload.kill()
            workload.wait()

    cpu = {s.name: 100.0 * (s.cpu_end - s.cpu_start) / CLK_TCK / wall for s in (a, n)}
    own = {s.name: 100.0 * (s.own_end - s.own_start) / CLK_TCK / wall for s in (a, n)}
    print(f"collectors: {', '.join(sorted(started))}; agent RSS when ready {start_rss:.1f} MiB")
    print(f"agent peak RSS since start (VmHWM, the probe compile): {peak:.1f} MiB")
    print(f"settle {args.settle:.0f} s, window {wall:.0f} s, {len(a.rss)} samples each")
    print()
    print(f"| measure | vigil | {NODE_EXPORTER} | ratio |")
    print("|---|---|---|---|")
    med = statistics.median
    for label, va, vn in (
        ("RSS, process, median", med(a.own_rss), med(n.own_rss)),
        ("RSS, process, max", max(a.own_rss), max(n.own_rss)),
        ("RSS with children, median", med(a.rss), med(n.rss)),
        ("RSS with children, max", max(a.rss), max(n.rss)),
        ("PSS with children, median", med(a.pss), med(n.pss)),
        ("PSS with children, max", max(a.pss), max(n.pss)),
    ):
        print(row(label, va, vn, "MiB"))
    print(row("CPU, process, % of a core", own["vigil"], own[NODE_EXPORTER], "%"))
    print(row("CPU with children, % of a core", cpu["vigil"], cpu[NODE_EXPORTER], "%"))
    print()
    # Where the agent's own CPU goes, by thread (threads that ended in the window, such as
    # one per profiling window, are summed as "other").
    by_thread = {
        names.get(tid, f"thread {tid}"): 100.0 * (t - threads_start.get(tid, 0)) / CLK_TCK / wall
        for tid, t in threads_end.items()
    }
    by_thread["other"] = own["vigil"] - sum(by_thread.values())
    print("| agent thread | % of a core |")
    print("|---|---|")
    for name, pct in sorted(by_thread.items(), key=lambda kv: -kv[1]):
        if pct >= 0.005:
            print(f"| {name} | {pct:.2f} % |")
    print()
    verdict = {True: "met", False: "NOT met"}
    rss_ok = max(a.own_rss) <= TARGET_RSS_MIB
    own_ok = own["vigil"] <= TARGET_CPU_PCT
    all_ok = cpu["vigil"] <= TARGET_CPU_PCT
    print(f"agent RSS ≤ {TARGET_RSS_MIB:.0f} MiB: {verdict[rss_ok]} (max {max(a.own_rss):.1f})")
    print(f"agent CPU ≤ {TARGET_CPU_PCT:.0f} % of a core: {verdict[own_ok]} ({own['vigil']:.2f} %)")
    print(
        f"agent + py-spy children CPU ≤ {TARGET_CPU_PCT:.0f} % of a core: {verdict[all_ok]} "
        f"({cpu['vigil']:.2f} %; py-spy {cpu['vigil'] - own['vigil']:.2f} %)"
    )
    return 0 if rss_ok and own_ok and all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
