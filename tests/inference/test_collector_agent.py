"""Port discovery end to end: a server process found only by its command line (a watch
pattern) and the TCP port it listens on, its kind told from its /metrics — first through
the collector with the real discovery, then through a real `vigil run`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import AgentProcess, free_port, stop_process, wait_http_ready
from prometheus_client.parser import text_string_to_metric_families
from test_collector_http import Server, endless, reply

from agent.collectors.inference.collector import InferenceCollector
from agent.collectors.inference.settings import InferenceSettings
from agent.discovery import Discovery

FIXTURE = Path(__file__).parent / "fixtures" / "vllm.txt"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# A stand-in server: the vLLM exposition on /metrics, 200 on /health, on a port it picks.
SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = open(sys.argv[1], "rb").read()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        data = body if self.path == "/metrics" else b"" if self.path == "/health" else None
        self.send_response(404 if data is None else 200)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
"""


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    marker = f"vigil-inference-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(FIXTURE), str(port), marker])
    wait_http_ready(f"http://127.0.0.1:{port}/health", proc, "stand-in server", lambda: "")
    yield proc, port, marker
    stop_process(proc)


def test_collector_finds_a_watched_process_by_its_listening_port(
    server: tuple[subprocess.Popen[bytes], int, str],
) -> None:
    proc, port, marker = server
    discovery = Discovery(procfs="/proc", patterns=[marker])
    discovery.refresh()
    assert proc.pid in discovery.snapshot()
    c = InferenceCollector(discovery, InferenceSettings(), "/proc")
    c.open()
    try:
        c.refresh_now()  # the port proves to be a vLLM server by its metric names
        c.refresh_now()  # and is probed on vLLM's health path
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in c.collect()
            for s in f.samples
        }
    finally:
        c.close()
    labels = {
        "pid": str(proc.pid),
        "port": str(port),
        "kind": "vllm",
        "pod": "",
        "namespace": "",
        "container": "",
    }
    up = [
        v
        for (n, lab), v in samples.items()
        if n == "vigil_inference_up" and labels.items() <= dict(lab).items()
    ]
    assert up == [1.0]
    assert any(
        n == "vigil_inference_requests_total" and dict(lab).get("model") == MODEL
        for n, lab in samples
    )
    assert samples[("vigil_inference_targets", (("source", "discovered"),))] == 1


def test_a_real_agent_exports_inference_series_for_a_discovered_server(
    server: tuple[subprocess.Popen[bytes], int, str],
) -> None:
    proc, port, marker = server
    # Beside it, configured servers that serve 100 MB and garbage: the agent lives on.
    huge = Server({"/health": reply(200, ""), "/metrics": endless(100 * 1024 * 1024)})
    junk = Server({"/health": reply(200, ""), "/metrics": reply(200, b"\x00{{{ garbage")})
    try:
        run_agent(proc, port, marker, huge, junk)
    finally:
        huge.close()
        junk.close()


def run_agent(
    proc: subprocess.Popen[bytes], port: int, marker: str, huge: Server, junk: Server
) -> None:
    args = [
        "--watch",
        marker,
        "--collector.inference.interval",
        "1s",
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.profile",
        "--collector.inference.targets",
        f"http://127.0.0.1:{huge.port} kind=vllm",
        "--collector.inference.targets",
        f"http://127.0.0.1:{junk.port} kind=vllm",
    ]
    with AgentProcess(args) as agent:
        deadline = time.monotonic() + 30
        while True:
            families = {f.name: f for f in text_string_to_metric_families(agent.metrics())}
            up = [
                s for s in families["vigil_inference_up"].samples if s.labels["port"] == str(port)
            ]
            if up or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [(s.labels["pid"], s.labels["kind"], s.value) for s in up] == [
            (str(proc.pid), "vllm", 1.0)
        ]
        running = [
            s
            for s in families["vigil_inference_running_requests"].samples
            if s.labels["port"] == str(port)
        ]
        assert [(s.labels["model"], s.value) for s in running] == [(MODEL, 5.0)]
        success = families["vigil_scrape_collector_success"].samples
        assert [s.value for s in success if s.labels["collector"] == "inference"] == [1.0]
        errors = {
            (s.labels["port"], s.labels["reason"])
            for s in families["vigil_inference_scrape_errors"].samples
            if s.name.endswith("_total")
        }
        assert (str(huge.port), "too_large") in errors
        assert (str(junk.port), "parse") in errors
        # The server killed: the target stays, down, instead of silently vanishing.
        stop_process(proc)
        deadline = time.monotonic() + 30
        while True:
            families = {f.name: f for f in text_string_to_metric_families(agent.metrics())}
            up = [
                s.value
                for s in families["vigil_inference_up"].samples
                if s.labels["port"] == str(port)
            ]
            if up == [0.0] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert up == [0.0]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_server_in_another_network_namespace_without_a_pod_ip_is_counted_not_probed() -> None:
    if os.geteuid() != 0:
        pytest.skip("a new network namespace needs root")
    marker = f"vigil-inference-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    cmd = ["unshare", "--net", sys.executable, "-c", SERVER, str(FIXTURE), str(port), marker]
    proc = subprocess.Popen(cmd)
    try:
        discovery = Discovery(procfs="/proc", patterns=[marker])
        deadline = time.monotonic() + 20
        c = InferenceCollector(discovery, InferenceSettings(), "/proc")
        c.open()
        # The server's own loopback is not ours: it listens, but nothing can reach it.
        while True:
            discovery.refresh()
            c.refresh_now()
            fams = {f.name: f for f in c.collect()}
            dropped = {
                s.labels["reason"]: s.value for s in fams["vigil_inference_targets_dropped"].samples
            }
            if dropped.get("no_address") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        c.close()
        assert dropped["no_address"] == 1
        assert fams["vigil_inference_up"].samples == []
    finally:
        stop_process(proc)
