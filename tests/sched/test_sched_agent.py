"""The sched collector inside a real `vigil run`: /metrics, process churn, set-up failures."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest
from agentproc import ROOT, VIGIL, AgentProcess, free_port, http_get, run_vigil
from schedwork import WATCH_MARK, Workloads

pytestmark = pytest.mark.bpf

ONLY_SCHED = ["--no-collector.gpu", "--no-collector.profile", "--no-collector.drift"]
FAST = ["--collector.sched.interval", "0.2s", "--discovery.interval", "0.5s"]


def sched_series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("vigil_sched_")]


def sample(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def wait_for(agent: AgentProcess, needle: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = agent.metrics()
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared:\n{agent.logs()[-2000:]}")


def test_metrics_show_watched_processes_only_and_survive_churn(workloads: Workloads) -> None:
    forker = workloads.start("forker", True, None, "10000")
    other = workloads.start("mixed", False)
    with AgentProcess(["--watch", WATCH_MARK, *ONLY_SCHED, *FAST]) as agent:
        comm = Path(f"/proc/{forker.pid}/comm").read_text().strip()
        text = wait_for(agent, f'pid="{forker.pid}"')
        assert 'vigil_scrape_collector_success{collector="sched"} 1.0' in text
        for family in ("vigil_sched_runqueue_latency_seconds", "vigil_sched_offcpu_seconds"):
            assert f"# TYPE {family} histogram" in text
            assert re.search(
                rf'^{family}_bucket{{comm="{comm}",container="",le="\+Inf",namespace="",'
                rf'pid="{forker.pid}",pod=""}} ',
                text,
                re.M,
            ), text
        assert f'pid="{other.pid}"' not in text

        for _ in range(5):  # warm up the scrape path before measuring memory
            agent.metrics()
        before = agent.metrics()
        series0 = len(sched_series(before))
        threads0 = sample(before, "vigil_sched_watched_threads")
        rss0 = sample(before, "process_resident_memory_bytes")

        assert forker.stdin is not None and forker.stdout is not None
        forker.stdin.write(b"g")
        forker.stdin.flush()
        ready, _, _ = select.select([forker.stdout], [], [], 90)
        assert ready and forker.stdout.readline() == b"done\n", "the forker did not finish"
        # Discovery and two sched refreshes must see the children gone: about 1.5 s on an
        # idle machine, longer on a busy one, so wait for it within a bound.
        deadline = time.monotonic() + 20
        after = agent.metrics()
        while time.monotonic() < deadline and (
            len(sched_series(after)) != series0
            or sample(after, "vigil_sched_watched_threads") != threads0
        ):
            time.sleep(0.5)
            after = agent.metrics()
        assert len(sched_series(after)) == series0, "series left behind by exited processes"
        assert sample(after, "vigil_sched_watched_threads") == threads0
        rss1 = sample(after, "process_resident_memory_bytes")
        assert rss1 - rss0 < 4 * 2**20, f"agent memory grew by {(rss1 - rss0) / 2**20:.1f} MiB"
        assert sample(after, 'vigil_sched_dropped_events_total{reason="threads_full"}') == 0


def test_doctor_compiles_the_probe() -> None:
    r = run_vigil(["doctor"], timeout=30)
    assert "Traceback" not in r.stderr
    block = r.stdout.split("\n  sched", 1)[1].split("\n  gpu", 1)[0]
    assert block.lstrip().startswith("ready"), r.stdout
    assert "ok   probe sched.bpf.c compiles and attaches" in block
    assert "ok   scheduler tracepoint fields" in block


def test_without_privilege_sched_says_why_and_the_agent_runs_on(tmp_path: Path) -> None:
    # The same agent as an unprivileged user: no BPF, but discovery and /metrics still work.
    port = free_port()
    log = tmp_path / "agent.log"
    tmp_path.chmod(0o777)
    cmd = [
        *VIGIL,
        "run",
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path),
        *ONLY_SCHED,
    ]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    with open(log, "w") as out:
        proc = subprocess.Popen([*nobody, *cmd], cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            status, text = http_get(f"http://127.0.0.1:{port}/metrics")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    logs = log.read_text()
    assert status == 200, logs
    assert 'vigil_scrape_collector_success{collector="sched"} 0.0' in text
    assert 'vigil_scrape_collector_success{collector="discovery"} 1.0' in text
    assert "collector unavailable" in logs and "collector=sched" in logs
    assert "not root" in logs
    assert "Traceback" not in logs
