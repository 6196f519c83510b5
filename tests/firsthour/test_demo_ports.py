"""The example scripts refuse a taken port at once, naming it, and trust only answers from
the processes they started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import ROOT, free_port

DEMO = ROOT / "examples" / "rollback-demo.sh"
PORTS = ROOT / "examples" / "ports.py"
PORT_VARS = ("AGENT_PORT", "CONTROLLER_PORT", "AM_PORT", "PROM_PORT", "MODEL_PORT")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port someone else holds: listening, never answering."""
    s = socket.socket()
    s.bind(("127.0.0.1", free_port()))
    s.listen()
    yield s
    s.close()


@pytest.mark.parametrize("taken", ["AGENT_PORT", "PROM_PORT"])
def test_demo_exits_at_once_naming_a_taken_port(
    taken: str, listener: socket.socket, tmp_path: Path
) -> None:
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update({var: str(free_port()) for var in PORT_VARS})
    env.update({taken: str(port), "DEMO_DIR": str(tmp_path / "demo")})
    started = time.monotonic()
    # Its own session: should the script start servers after all, they go with it.
    proc = subprocess.Popen(
        ["bash", str(DEMO), "--once"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    took = time.monotonic() - started
    assert done.returncode != 0, done.stdout + done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, done.stderr
    assert str(port) in errors[0] and taken in errors[0], errors
    assert "all up" not in done.stdout
    assert took < 30, took  # nothing was started and waited for (generous: a noisy machine)
    assert not (tmp_path / "demo" / "agent.log").exists()  # nothing was started


def owns(pid: int, port: int) -> bool:
    done = subprocess.run(
        [sys.executable, str(PORTS), "owns", str(pid), str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def test_owner_check_tells_our_listener_from_another_process(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert owns(os.getpid(), port)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not owns(other.pid, port)  # alive, but the answer on the port is not its
    finally:
        other.kill()
        other.wait()
    assert not owns(os.getpid(), free_port())


def test_free_check_names_every_taken_port(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    free = free_port()
    done = subprocess.run(
        [sys.executable, str(PORTS), "free", f"MODEL_PORT={free}", f"AGENT_PORT={port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"port {port} (AGENT_PORT) is already in use on 127.0.0.1: stop what listens "
        f"there or set AGENT_PORT to a free port"
    ]
