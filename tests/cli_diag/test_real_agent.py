"""`vigil explain` and `vigil top` against a real `vigil run` that watches a real Python
process: the commands read the agent's own /v1/diagnosis, with the token the agent
generated, and refuse clearly without it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentproc import AgentProcess, run_vigil
from tmuxscreen import rows, top

pytestmark = pytest.mark.slow

MARK = "vigil_explain_workload"
WORKLOAD = """
import time

def work():
    x = 0
    for i in range(20000):
        x += i
    return x

while True:
    work()
    time.sleep(0.01)
"""
# Fast rounds so that the process appears in the diagnosis within seconds; the verdict
# itself may still be "not enough evidence": these tests are about the commands.
ARGS = [
    "--watch",
    MARK,
    "--no-collector.sched",
    "--no-collector.gpu",
    "--discovery.interval",
    "1s",
    "--collector.diagnosis.interval",
    "1s",
    "--collector.diagnosis.window",
    "20s",
]


@dataclass
class Setup:
    agent: AgentProcess
    state: Path
    pid: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("explain")
    script = tmp / f"{MARK}.py"
    script.write_text(WORKLOAD)
    state = tmp / "state"
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        with AgentProcess([*ARGS, "--state-dir", str(state)]) as agent:
            yield Setup(agent, state, proc.pid)
    finally:
        proc.kill()
        proc.wait()


def explain(s: Setup, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    """The agent's token is found in its state directory, as a user's would be; without
    it, the lookup is held to a directory with none (not the machine's default one)."""
    where = ["--state-dir", str(s.state if token else s.state / "elsewhere")]
    out = run_vigil(["explain", "--agent", s.agent.url, *where, *args])
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    return out


def wait_watched(s: Setup) -> dict[str, object]:
    """The agent's diagnosis once it names the workload (generous: a loaded machine)."""
    deadline = time.monotonic() + 90
    while True:
        out = explain(s, "--json")
        if out.returncode == 0:
            doc = json.loads(out.stdout)
            mine = [t for t in doc["targets"] if s.pid in (t.get("pids") or [t.get("pid")])]
            if mine:
                return dict(mine[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"{s.pid} never in the diagnosis: {out.stderr}\n{out.stdout}")
        time.sleep(0.5)


def test_explain_reads_the_agents_diagnosis_with_its_generated_token(setup: Setup) -> None:
    target = wait_watched(setup)
    assert target["status"] in ("ok", "causes", "insufficient_evidence")
    out = explain(setup, str(setup.pid))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"vigil explain: 1 watched process at {setup.agent.url}")
    at = next(i for i, ln in enumerate(lines) if ln.startswith(f"pid {setup.pid} ("))
    assert lines[at + 1].startswith("  verdict: ")


def test_explain_without_the_token_fails_with_the_hint(setup: Setup) -> None:
    out = explain(setup, token=False)
    assert out.returncode == 1
    assert "refused the token (bearer token required" in out.stderr
    assert f"{setup.state}/elsewhere/ingest-token: No such file" in out.stderr


def test_an_unwatched_pid_is_refused_with_the_watched_ones(setup: Setup) -> None:
    wait_watched(setup)
    out = explain(setup, "1")
    assert out.returncode == 1
    assert "no watched process '1'" in out.stderr and f"pid {setup.pid}" in out.stderr


def test_top_shows_the_watched_process(setup: Setup, tmp_path: Path) -> None:
    wait_watched(setup)
    token = (setup.state / "ingest-token").read_text().strip()
    with top(setup.agent.url, tmp_path, token=token) as screen:
        shown = screen.wait_for("the workload's row", lambda s: bool(rows(s)))
        assert any(r.startswith(f"pid {setup.pid} (") for r in rows(shown)), shown
        screen.keys("q")
        assert screen.exit_status() == 0
