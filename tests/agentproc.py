"""Start a real `vigil run` (or any vigil command) as a child process, for tests.

Usage::

    with AgentProcess(["--watch", "myworkload"]) as agent:
        text = agent.metrics()
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VIGIL = [sys.executable, "-m", "agent.cli"]


# Ports for the servers the tests start: below the kernel's ephemeral range (32768-60999
# by default), so no outgoing connection takes one between the check and the child's
# bind, and one band per pytest-xdist worker, so two workers never hand out the same port.
_PORT_BAND = 4000
_PORT_BASE = 20000
_port_cursor = random.randrange(_PORT_BAND)


def free_port() -> int:
    """A loopback port that is free now and that no other test worker will pick."""
    global _port_cursor
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = _PORT_BASE + (int(worker) if worker.isdigit() else 0) % 3 * _PORT_BAND
    for _ in range(_PORT_BAND):
        # Round robin through the band: a port handed out is not handed out again until
        # the band wraps, even when its server has not bound it yet.
        _port_cursor = (_port_cursor + 1) % _PORT_BAND
        port = low + _port_cursor
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {low}-{low + _PORT_BAND - 1}")


def http_get(
    url: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_http_ready(
    url: str,
    proc: subprocess.Popen[Any],
    what: str,
    logs: Callable[[], str],
    timeout: float = 30.0,
) -> None:
    """Until ``url`` answers 200; raises with ``logs()`` if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(url, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{logs()}")
        time.sleep(0.1)


class AgentProcess:
    """`vigil run` on a free loopback port; waits for /readyz; SIGTERM on exit."""

    def __init__(
        self,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        wait_ready: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["run", "--listen", f"127.0.0.1:{self.port}", *(args or [])]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        full_env.update(env or {})
        self.env = full_env
        self.ready_timeout = ready_timeout
        self.wait_ready = wait_ready
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vigil-agent-{self.port}.log"

    def __enter__(self) -> AgentProcess:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*VIGIL, *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if self.wait_ready:
            try:
                self.wait_until_ready()
            except BaseException:
                self.__exit__(None, None, None)  # never leave an agent behind a failed start
                raise
        return self

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                status, _ = http_get(self.url + "/readyz", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"agent not ready after {self.ready_timeout}s:\n{self.logs()}")

    def metrics(self, accept: str | None = None) -> str:
        status, body = http_get(
            self.url + "/metrics", headers={"Accept": accept} if accept else None
        )
        assert status == 200, body
        return body

    def get(self, path: str, auth: bool = False, **kw: Any) -> tuple[int, str]:
        """GET ``path``; ``auth`` adds the agent's API token (the /v1 routes need it)."""
        if auth:
            kw["headers"] = {**(kw.get("headers") or {}), **self.auth()}
        return http_get(self.url + path, **kw)

    def token_path(self) -> Path:
        """Where this agent's API token is: --ingest-token-file, else the one it generated
        in its state directory (the default one when the args name none)."""
        args = self.args
        for flag in ("--ingest-token-file", "--state-dir"):
            if flag in args:
                value = Path(args[args.index(flag) + 1])
                return value if flag == "--ingest-token-file" else value / "ingest-token"
        state = self.env.get("VIGIL_STATE_DIR") or (
            "/var/lib/vigil" if os.geteuid() == 0 else str(ROOT / "var")
        )
        return Path(state) / "ingest-token"

    def token(self) -> str:
        return self.token_path().read_text().strip()

    def auth(self) -> dict[str, str]:
        """Headers that authenticate to the /v1 APIs."""
        return {"Authorization": f"Bearer {self.token()}"}

    def logs(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


def run_vigil(
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    full_env.update(env or {})
    return subprocess.run(
        [*VIGIL, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
