"""The node's py-spy budget holds with many watched processes: 50 real thread-per-request
servers, each with 32 idle request threads, cost the node no more than its budget."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.collectors.profile.collector import ProfileCollector
from agent.collectors.profile.pyspy import find_pyspy
from agent.collectors.profile.settings import ProfileSettings
from agent.discovery import Discovery

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed"),
]

PROCESSES = 50
# A socketserver with a thread per connection; 32 clients connect and send nothing, so
# 32 request threads sit in readline(), as a server's idle keep-alive connections do.
SERVER = """
import http.server, socket, sys, threading
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
clients = [socket.create_connection(srv.server_address) for _ in range(32)]
while threading.active_count() < 34:  # main, serve_forever, 32 request threads
    threading.Event().wait(0.01)
print("ready", flush=True)
threading.Event().wait()
"""


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]]]]:
    script = tmp_path / "vigil_budget_server.py"
    script.write_text(SERVER)
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(PROCESSES):
            procs.append(
                subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
            )
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield script, procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def children_cpu() -> float:
    """CPU of this process's reaped children: py-spy's, since the servers are reaped last."""
    t = os.times()
    return t.children_user + t.children_system


def test_fifty_idle_servers_cost_no_more_than_the_node_budget(
    servers: tuple[Path, list[subprocess.Popen[str]]],
) -> None:
    script, procs = servers
    discovery = Discovery(patterns=[re.escape(str(script))], interval=60)
    discovery.refresh()
    assert {p.pid for p in procs} <= set(discovery.snapshot())
    pyspy = find_pyspy()
    assert pyspy is not None
    settings = ProfileSettings(window=2)  # the default budget: 1 % per process, 5 % per node
    collector = ProfileCollector(discovery, pyspy, settings)
    period = 30.0
    before = children_cpu()
    collector.start()
    try:
        time.sleep(period)
    finally:
        collector.close()  # kills and reaps the windows under way: their CPU counts too
    spent = children_cpu() - before
    budget = settings.cpu_budget * period
    metrics = {f.name: f for f in collector.collect()}
    # Unbudgeted, 50 such processes would keep py-spy busy at about a core (2.5 % of a
    # core each at 9 Hz). The bound: the budget, one burst, and the windows that were
    # under way when it ran out (at most max-concurrent of them), generously.
    assert spent <= budget + 1.5, (spent, budget, collector.windows)
    assert collector.windows["ok"] >= 1
    assert metrics["vigil_profile_budget_cores"].samples[0].value == pytest.approx(0.05)
    assert metrics["vigil_profile_budget_skips"].samples[0].value >= PROCESSES - 8
