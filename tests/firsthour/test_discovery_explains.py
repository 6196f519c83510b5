"""A plain `python serve.py` that loads scikit-learn is watched by a real agent with the
default --watch, the agent logs it, and `vigil doctor` says which Python processes it would
watch and, for the others, the --watch that would."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import ROOT, AgentProcess, run_vigil, stop_process

pytestmark = pytest.mark.slow

QUICK = ["--no-collector.sched", "--no-collector.profile", "--no-collector.gpu"]
# The scikit-learn the inference tests' server venv holds (scripts/setup.sh installs it).
SERVERS_PY = Path(os.environ.get("VIGIL_SERVERS_VENV", ROOT / ".venv-servers")) / "bin" / "python"

SERVE = """\
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
from sklearn.linear_model import LogisticRegression

model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(int(model.predict([[2.5]])[0])).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


print("serving", flush=True)
HTTPServer(("127.0.0.1", 0), Handler).serve_forever()
"""
IDLE = "import time\nprint('idle', flush=True)\ntime.sleep(600)\n"


def start(python: str, script: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [python, script.name],  # as a user types it: `python serve.py` in its directory
        cwd=script.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the model is loaded
    assert line.strip() in ("serving", "idle"), line + proc.stdout.read()
    return proc


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], subprocess.Popen[str]]]:
    if not SERVERS_PY.exists():
        pytest.fail(f"{SERVERS_PY} missing: run `make test` (scripts/setup.sh installs it)")
    (tmp_path / "serve.py").write_text(SERVE)
    (tmp_path / "idle.py").write_text(IDLE)
    serve = start(str(SERVERS_PY), tmp_path / "serve.py")
    idle = start(sys.executable, tmp_path / "idle.py")
    try:
        yield serve, idle
    finally:
        stop_process(serve)
        stop_process(idle)


def watched_pids(text: str) -> dict[int, str]:
    out = {}
    for m in re.finditer(r"^vigil_watched_process_info\{([^}]*)\} 1", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[int(labels["pid"])] = labels["source"]
    return out


def test_a_sklearn_server_is_watched_by_default_and_the_agent_says_so(
    servers: tuple[subprocess.Popen[str], subprocess.Popen[str]],
) -> None:
    serve, idle = servers
    with AgentProcess([*QUICK, "--discovery.interval", "1s"]) as agent:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = agent.metrics()
            if serve.pid in watched_pids(text):
                break
            time.sleep(0.5)
        logs = agent.logs()
    pids = watched_pids(text)
    assert pids.get(serve.pid) == "runtime", text
    assert idle.pid not in pids
    runtime = re.search(r'^vigil_discovery_watched_processes\{reason="runtime"\} (\S+)', text, re.M)
    assert runtime and float(runtime.group(1)) >= 1.0, text
    added = [
        ln for ln in logs.splitlines() if "watching process" in ln and f"pid={serve.pid}" in ln
    ]
    assert len(added) == 1, logs
    assert "reasons=runtime" in added[0] and "serve.py" in added[0]


def test_doctor_lists_python_processes_and_the_watch_that_would_match(
    servers: tuple[subprocess.Popen[str], subprocess.Popen[str]],
) -> None:
    serve, idle = servers
    r = run_vigil(["doctor", *QUICK])
    out = r.stdout
    assert "Traceback" not in out + r.stderr, out + r.stderr
    lines = out.splitlines()
    serve_line = next((ln for ln in lines if f"pid {serve.pid} " in ln), "")
    assert " watched (" in serve_line and "scikit-learn" in serve_line, out
    i, idle_line = next(
        ((i, ln) for i, ln in enumerate(lines) if f"pid {idle.pid} " in ln), (0, "")
    )
    assert "not watched" in idle_line, out
    suggestion = lines[i + 1]
    assert "to watch it: --watch 'python.*idle\\.py'" in suggestion, out
    # The suggestion, pasted as the user would, makes it watched.
    flag = shlex.split(suggestion.split("to watch it:", 1)[1])
    r2 = run_vigil(["doctor", *QUICK, *flag])
    idle_line = next(ln for ln in r2.stdout.splitlines() if f"pid {idle.pid} " in ln)
    assert " watched (command line matches --watch)" in idle_line, r2.stdout
