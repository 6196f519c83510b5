"""A real `vigil run` profiling real Python workloads with a known profile, through py-spy."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agentproc import AgentProcess
from conftest import WATCH, Workloads

pytestmark = pytest.mark.slow

WINDOW_S = 2
# 100 Hz x 2 s = ~200 samples per thread and window: a 70 % share is then measured
# within +-3.2 points (one standard deviation), so +-10 points is a 3-sigma bound.
RATE = 100


@dataclass
class Receiver:
    """A Pyroscope stand-in that records what was pushed to /ingest."""

    requests: list[tuple[str, dict[str, list[str]], str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                outer.requests.append((url.path, urllib.parse.parse_qs(url.query), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@dataclass
class Setup:
    agent: AgentProcess
    pids: dict[str, int]
    receiver: Receiver
    workloads: Workloads


@pytest.fixture(scope="module")
def setup(module_workloads: Workloads) -> Iterator[Setup]:
    pids = {kind: module_workloads.start(kind).pid for kind in ("mix", "sleep", "gil", "nogil")}
    pids["native"] = module_workloads.start_native().pid
    receiver = Receiver()
    url = receiver.start()
    args = [
        "--watch",
        WATCH,
        "--watch",
        "^sleep 86399$",
        "--discovery.interval",
        "0.5s",
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.drift",
        "--collector.profile.window",
        f"{WINDOW_S}s",
        "--collector.profile.rate",
        str(RATE),
        "--collector.profile.max-concurrent",
        "15",
        "--collector.profile.cpu-budget",
        "1",
        "--collector.profile.cpu-budget-per-process",
        "1",
        "--collector.profile.pyroscope-url",
        url,
    ]
    with AgentProcess(args) as agent:
        s = Setup(agent, pids, receiver, module_workloads)
        wait_for(lambda: all(window(s, k) for k in ("mix", "sleep", "gil", "nogil")), 25, s)
        yield s
    assert receiver.server is not None
    receiver.server.shutdown()


def listing(s: Setup) -> dict[int, dict[str, Any]]:
    status, body = s.agent.get("/v1/profiles", auth=True)
    assert status == 200, body
    return {p["pid"]: p for p in json.loads(body)["processes"]}


def window(s: Setup, kind: str) -> dict[str, Any] | None:
    return listing(s).get(s.pids[kind], {}).get("last_window")


def wait_for(cond: Any, timeout: float, s: Setup) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out; agent log:\n{s.agent.logs()[-3000:]}")


def samples(text: str, name: str, pid: int, **labels: str) -> dict[str, float]:
    """{label set as text: value} of series ``name`` for ``pid`` (pid is a label here)."""
    out = {}
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        lab = m.group(1)
        if f'pid="{pid}"' in lab and all(f'{k}="{v}"' in lab for k, v in labels.items()):
            out[lab] = float(m.group(2))
    return out


def one(text: str, name: str, pid: int, **labels: str) -> float:
    got = samples(text, name, pid, **labels)
    assert len(got) == 1, (name, labels, got)
    return next(iter(got.values()))


def idle_share(text: str, pid: int) -> float:
    active = one(text, "vigil_profile_samples_total", pid, state="active")
    idle = one(text, "vigil_profile_samples_total", pid, state="idle")
    return idle / (active + idle)


def test_function_ratios_match_the_known_profile(setup: Setup) -> None:
    text = setup.agent.metrics()
    pid = setup.pids["mix"]
    hot = one(
        text,
        "vigil_profile_function_ratio",
        pid,
        kind="self",
        function="hot (vigil_test_workload.py)",
    )
    warm = one(
        text,
        "vigil_profile_function_ratio",
        pid,
        kind="self",
        function="warm (vigil_test_workload.py)",
    )
    hot_total = one(
        text,
        "vigil_profile_function_ratio",
        pid,
        kind="total",
        function="hot (vigil_test_workload.py)",
    )
    assert hot == pytest.approx(0.70, abs=0.10)
    assert warm == pytest.approx(0.30, abs=0.10)
    assert hot_total == pytest.approx(0.70, abs=0.10)
    # <module> is on every stack of the main thread: its ~100 % total says nothing and
    # would take a top-K slot from the user's functions.
    assert not samples(
        text,
        "vigil_profile_function_ratio",
        pid,
        function="<module> (vigil_test_workload.py)",
        kind="total",
    )
    # The sleeping thread is idle, so it is not in the CPU shares: top K is bounded.
    assert not samples(text, "vigil_profile_function_ratio", pid, function="sleeper")
    assert len(samples(text, "vigil_profile_function_ratio", pid)) <= 2 * 10


def test_idle_share_and_gil_ratio(setup: Setup) -> None:
    text = setup.agent.metrics()
    p = setup.pids
    assert idle_share(text, p["sleep"]) >= 0.95  # a process that only sleeps
    assert idle_share(text, p["mix"]) == pytest.approx(0.5, abs=0.1)  # 1 of 2 threads sleeps
    assert idle_share(text, p["nogil"]) <= 0.1  # hashing: busy, but outside the GIL
    assert one(text, "vigil_profile_gil_ratio", p["gil"]) == pytest.approx(1.0, abs=0.1)
    assert one(text, "vigil_profile_gil_ratio", p["mix"]) == pytest.approx(1.0, abs=0.1)
    assert one(text, "vigil_profile_gil_ratio", p["nogil"]) <= 0.1
    assert one(text, "vigil_profile_gil_ratio", p["sleep"]) <= 0.05
    assert one(text, "vigil_profile_up", p["mix"]) == 1.0


def test_non_python_process_is_marked_and_backed_off(setup: Setup) -> None:
    pid = setup.pids["native"]
    # Wait for two more windows of the Python workloads: py-spy must not be started again.
    first = window(setup, "mix")
    assert first is not None
    wait_for(
        lambda: (window(setup, "mix") or {}).get("start", 0) > first["start"] + WINDOW_S, 15, setup
    )
    entry = listing(setup)[pid]
    assert entry["state"] == "unsupported"
    assert "python version" in entry["reason"].lower()
    assert entry["retry_in_seconds"] > 40  # the 60 s default backoff, not the next window
    text = setup.agent.metrics()
    assert one(text, "vigil_profile_up", pid) == 0.0
    assert 'vigil_profile_windows_total{result="unsupported"} 1.0' in text
    assert not samples(text, "vigil_profile_gil_ratio", pid)
    status, body = setup.agent.get(f"/v1/profiles/{pid}", auth=True)
    assert status == 404 and "unsupported" in json.loads(body)["error"]


def test_svg_flamegraph_shows_the_hot_function_widest(setup: Setup) -> None:
    status, body = setup.agent.get(f"/v1/profiles/{setup.pids['mix']}?format=svg", auth=True)
    assert status == 200
    svg = ET.fromstring(body)
    ns = {"s": "http://www.w3.org/2000/svg"}
    frames = []  # name, x, y, width
    for g in svg.iterfind(".//s:g[@class='frame']", ns):
        title = g.find("s:title", ns)
        rect = g.find("s:rect", ns)
        assert title is not None and title.text and rect is not None
        frames.append(
            (
                title.text.split(" (")[0],
                float(rect.get("x", "0")),
                float(rect.get("y", "0")),
                float(rect.get("width", "0")),
            )
        )
    root = max(f[3] for f in frames)
    hot = [f for f in frames if f[0] == "hot"]
    assert len(hot) == 1
    _, hx, hy, hw = hot[0]
    # Its callers (below it, spanning it) are wider by construction; every other frame,
    # the other function of the loop included, is narrower than the hot function.
    others = [
        f
        for f in frames
        if f is not hot[0] and not (f[2] > hy and f[1] <= hx and f[1] + f[3] >= hx + hw)
    ]
    assert others and all(f[3] < hw for f in others), others
    assert hw / root == pytest.approx(0.70, abs=0.10)


def test_collapsed_and_speedscope_formats(setup: Setup) -> None:
    pid = setup.pids["mix"]
    status, body = setup.agent.get(f"/v1/profiles/{pid}", auth=True)
    assert status == 200
    lines = body.splitlines()
    assert lines and all(re.fullmatch(r".+ \d+", ln) for ln in lines)
    assert any(";hot (vigil_test_workload.py:" in ln for ln in lines)
    status, body = setup.agent.get(f"/v1/profiles/{pid}?format=speedscope", auth=True)
    assert status == 200
    doc = json.loads(body)
    prof = doc["profiles"][0]
    assert prof["type"] == "sampled" and len(prof["samples"]) == len(prof["weights"])
    frames = doc["shared"]["frames"]
    assert all(0 <= i < len(frames) for s in prof["samples"] for i in s)
    assert {"hot", "warm", "<module>"} <= {f["name"] for f in frames}
    assert sum(prof["weights"]) == listing(setup)[pid]["last_window"]["samples"]["active"]
    # The wall view adds the sleeping thread, under its own thread root.
    status, body = setup.agent.get(f"/v1/profiles/{pid}?view=wall", auth=True)
    assert status == 200 and "sleeper (vigil_test_workload.py:" in body
    assert body.startswith("thread (")


def test_bad_requests_get_clear_errors(setup: Setup) -> None:
    pid = setup.pids["mix"]
    status, body = setup.agent.get(f"/v1/profiles/{pid}?format=pdf", auth=True)
    assert status == 400
    assert json.loads(body)["allowed"] == ["collapsed", "speedscope", "svg"]
    status, body = setup.agent.get(f"/v1/profiles/{pid}?view=gpu", auth=True)
    assert status == 400 and json.loads(body)["allowed"] == ["cpu", "wall", "wall-merged"]
    status, body = setup.agent.get("/v1/profiles/notapid", auth=True)
    assert status == 400 and "not a process id" in json.loads(body)["error"]
    status, body = setup.agent.get("/v1/profiles/999999999", auth=True)
    assert status == 404 and "not a watched process" in json.loads(body)["error"]


def test_windows_are_pushed_to_pyroscope(setup: Setup) -> None:
    pid = str(setup.pids["mix"])
    wait_for(
        lambda: any(f"pid={pid}" in q["name"][0] for _, q, _ in setup.receiver.requests), 10, setup
    )
    path, query, body = next(r for r in setup.receiver.requests if f"pid={pid}" in r[1]["name"][0])
    assert path == "/ingest"
    assert re.fullmatch(r"python\.cpu\{comm=python,pid=\d+\}", query["name"][0])
    assert query["format"] == ["folded"] and query["sampleRate"] == [str(RATE)]
    assert int(query["from"][0]) < int(query["until"][0])
    assert ";hot (vigil_test_workload.py:" in body
    assert all(re.fullmatch(r".+ \d+", ln) for ln in body.splitlines())


def test_series_of_an_exited_process_disappear(setup: Setup) -> None:
    proc = next(p for p in setup.workloads.procs if p.pid == setup.pids["nogil"])
    pid = proc.pid

    def profile_series() -> list[str]:
        return [
            ln
            for ln in setup.agent.metrics().splitlines()
            if ln.startswith("vigil_profile_") and f'pid="{pid}"' in ln
        ]

    assert len(profile_series()) >= 4  # samples x2, gil ratio, up, functions
    proc.kill()
    proc.wait()
    wait_for(lambda: not profile_series(), 5, setup)
    assert setup.agent.get(f"/v1/profiles/{pid}", auth=True)[0] == 404


def test_sigterm_leaves_no_py_spy_behind(workloads: Workloads) -> None:
    workloads.start("mix")
    args = [
        "--watch",
        WATCH,
        "--discovery.interval",
        "0.5s",
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.drift",
        "--collector.profile.window",
        "5s",
    ]
    agent = AgentProcess(args)
    with agent:
        assert agent.proc is not None
        deadline = time.monotonic() + 10
        kids: list[int] = []
        while time.monotonic() < deadline and not kids:
            out = subprocess.run(
                ["pgrep", "-P", str(agent.proc.pid), "py-spy"], capture_output=True, text=True
            ).stdout
            kids = [int(x) for x in out.split()]
            time.sleep(0.1)
        assert kids, agent.logs()  # one recording per process and window
        rc = agent.stop()
    assert rc == 0, agent.logs()
    survivors = [pid for pid in kids if Path(f"/proc/{pid}").exists()]
    assert survivors == [], "py-spy children survived the agent"
