"""Bounds at the door of both servers: slow clients dropped, concurrent ingest limited,
bodies capped, and /metrics answered whatever ingest is doing.

Threat-model rows: 4 (16 concurrent 8 MB ingest bodies), 8 (50 sockets sending half a
header, then silence).
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from agentproc import AgentProcess, http_get
from prometheus_client.parser import text_string_to_metric_families
from rbproc import ControllerProcess, release_dir

from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.store import ReferenceStore
from agent.server import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, MAX_BODY_BYTES

pytestmark = pytest.mark.slow

QUICK = ["--no-collector.sched", "--no-collector.gpu", "--no-collector.profile"]
FEATURES = ("age", "income")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("state")
    ReferenceStore(state).save(
        "ranker",
        "v1",
        ReferenceSample(np.random.default_rng(0).normal(size=(500, 2)), FEATURES),
        "test",
    )
    # Row 4 sends bodies just under the 8 MiB limit of about 150,000 rows: the row limit
    # (100,000 by default) is raised so that each is a valid batch the agent must parse,
    # the heaviest request its door lets in.
    args = [*QUICK, "--state-dir", str(state), "--collector.drift.max-rows", "200000"]
    with AgentProcess(args) as a:
        yield a


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    d = tmp_path_factory.mktemp("controller")
    root = release_dir(d / "models" / "demo", ["v1", "v2"])
    with ControllerProcess(["--release-dir", str(root)], d / "state") as c:
        yield c


def refused(url: str, route: str, reason: str) -> float:
    _, text = http_get(url + "/metrics", timeout=30)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "vigil_http_requests_refused_total" and s.labels == {
                "route": route,
                "reason": reason,
            }:
                return float(s.value)
    return 0.0


def closed_within(socks: list[socket.socket], seconds: float) -> int:
    """How many of ``socks`` the server closed (EOF or reset) within ``seconds``."""
    deadline = time.monotonic() + seconds
    closed: set[int] = set()
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            s.settimeout(0.01)
            try:
                if s.recv(4096) == b"":
                    closed.add(i)
            except TimeoutError:
                pass
            except OSError:
                closed.add(i)
    return len(closed)


@pytest.mark.parametrize("server", ["agent", "controller"])
def test_row8_half_a_header_then_silence_is_dropped_within_seconds(
    agent: AgentProcess, controller: ControllerProcess, server: str
) -> None:
    url = agent.url if server == "agent" else controller.url
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # no end of headers
        socks.append(s)
    try:
        # HEADER_TIMEOUT_S after connecting; the margin is for a loaded test machine.
        assert closed_within(socks, HEADER_TIMEOUT_S + 10) == 50
        assert http_get(url + "/healthz")[0] == 200  # and the server still serves
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("server", ["agent", "controller"])
def test_a_body_that_stops_coming_gets_408_and_is_counted(
    agent: AgentProcess, controller: ControllerProcess, server: str
) -> None:
    if server == "agent":
        url, path, token = agent.url, "/v1/drift/ranker/samples", agent.token()
        route = "/v1/drift/{model}/samples"
    else:
        url, path, token = controller.url, "/v1/alerts", str(controller.token)
        route = "/v1/alerts"
    before = refused(url, route, "timeout")
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT_S + 15) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"rows": ['.encode()
        )
        start = time.monotonic()
        answer = s.recv(4096)
        took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < BODY_TIMEOUT_S + 10
    assert refused(url, route, "timeout") == before + 1


def test_controller_body_limit_is_413_and_counted(controller: ControllerProcess) -> None:
    before = refused(controller.url, "/v1/alerts", "too_large")
    status, body = controller.post(None, raw=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert status == 413, body
    assert refused(controller.url, "/v1/alerts", "too_large") == before + 1


def test_agent_body_limit_is_413_and_counted(agent: AgentProcess) -> None:
    route = "/v1/drift/{model}/samples"
    before = refused(agent.url, route, "too_large")
    conn = http.client.HTTPConnection("127.0.0.1", int(agent.url.rsplit(":", 1)[1]), timeout=30)
    body = b"x" * (MAX_BODY_BYTES + 1024)
    conn.request("POST", "/v1/drift/ranker/samples", body=body, headers=agent.auth())
    assert conn.getresponse().status == 413
    conn.close()
    assert refused(agent.url, route, "too_large") == before + 1


def big_batch() -> bytes:
    """Just under the 8 MiB limit, every row valid."""
    rng = np.random.default_rng(1)
    rows = [{"age": float(a), "income": float(b)} for a, b in rng.normal(size=(150_000, 2))]
    body = json.dumps({"version": "v1", "rows": rows}).encode()
    while len(body) > MAX_BODY_BYTES - 1024:
        rows = rows[: int(len(rows) * 0.95)]
        body = json.dumps({"version": "v1", "rows": rows}).encode()
    return body


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_row4_sixteen_concurrent_8mb_bodies_are_bounded_and_scrapes_stay_fast(
    agent: AgentProcess,
) -> None:
    body = big_batch()
    port = int(agent.url.rsplit(":", 1)[1])
    # Filled by the threads, asserted here in the main thread: an assert inside a thread
    # would only be a warning.
    answers: list[tuple[int, str | None]] = []
    scrapes: list[tuple[int, float]] = []
    errors: list[BaseException] = []
    go = threading.Barrier(17)

    def send() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            go.wait()
            headers = {"Content-Type": "application/json", **agent.auth()}
            conn.request("POST", "/v1/drift/ranker/samples", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            answers.append((r.status, r.getheader("Retry-After")))
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    done = threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                start = time.monotonic()
                status, _ = http_get(agent.url + "/metrics", timeout=30)
                scrapes.append((status, time.monotonic() - start))
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    senders = [threading.Thread(target=send) for _ in range(16)]
    for t in senders:
        t.start()
    scraper = threading.Thread(target=scrape)
    go.wait()
    scraper.start()
    for t in senders:
        t.join(timeout=180)
    done.set()
    scraper.join(timeout=60)

    assert errors == []
    statuses = [s for s, _ in answers]
    assert len(statuses) == 16
    # Every row of the batch is valid: it is taken (200) or the door is full (429), and
    # any other answer, 4xx or 5xx, is a regression.
    assert set(statuses) <= {200, 429}, statuses
    busy = [retry for s, retry in answers if s == 429]
    assert busy and all(retry == "1" for retry in busy), answers
    assert refused(agent.url, "/v1/drift/{model}/samples", "busy") >= len(busy)
    assert scrapes and {s for s, _ in scrapes} == {200}, scrapes
    # The issue asks for scrapes under 1 s whatever ingest does. The median holds that on
    # a shared machine; the maximum gets room for one scheduling hiccup, still far below
    # Prometheus' 10 s timeout. bench/ingest_scrape measures the real numbers.
    took = sorted(t for _, t in scrapes)
    assert statistics.median(took) < 1.0, took
    assert took[-1] < 3.0, took
    assert agent.proc is not None
    # 16 unbounded parses took 1.3 GiB; the DaemonSet's memory limit is 512 MiB, and the
    # agent must stay under it (peak, not only after).
    assert peak_rss_bytes(agent.proc.pid) < 512 * 1024 * 1024
