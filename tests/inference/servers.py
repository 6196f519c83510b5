"""A real Open Inference Protocol v2 server for the tests: MLServer (scikit-learn runtime)
from .venv-servers (scripts/setup.sh installs it), serving a model trained on the spot.

Faults are real, not simulated in Vigil's view of it:

- errors: a request whose features include a negative number raises in the model
  (``infer(BAD)``), and MLServer answers 500 and counts the request as failed;
- latency: ``set_faults(sleep_seconds=...)`` makes every prediction wait in the handler;
- probe timeouts: ``pause()`` sends SIGSTOP to the server (``resume()`` SIGCONT);
- down: ``kill()``.

Usage::

    with MLServerProcess(tmp_path) as server:
        server.infer(GOOD)
        server.pause()
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from agentproc import ROOT, free_port, http_get, stop_process, wait_http_ready

VENV = Path(os.environ.get("VIGIL_SERVERS_VENV", ROOT / ".venv-servers"))
PYTHON = VENV / "bin" / "python"
MLSERVER = VENV / "bin" / "mlserver"
# What a watch pattern finds: the console script's path is in the server's command line.
# A test's agent watches only its own server (MLServerProcess.watch): tests run in
# parallel, and another test's frozen server must not roll this test's model back.
WATCH = r"bin/mlserver start"

GOOD = [5.1, 3.5, 1.4, 0.2]  # an iris setosa
BAD = [5.1, -3.5, 1.4, 0.2]  # a negative length: the model raises

TRAIN = """
import sys
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), sys.argv[1])
"""

# The model's runtime: MLServer's own scikit-learn runtime, with faults a test can switch
# on. It runs inside the server, imported from the model directory.
RUNTIME = """
import asyncio
import json
import os

from mlserver.codecs import NumpyRequestCodec
from mlserver_sklearn import SKLearnModel

FAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faults.json")


class FaultyModel(SKLearnModel):
    async def predict(self, payload):
        try:
            with open(FAULTS) as f:
                faults = json.load(f)
        except FileNotFoundError:
            faults = {}
        if faults.get("sleep_seconds"):
            await asyncio.sleep(float(faults["sleep_seconds"]))
        features = NumpyRequestCodec.decode_request(payload)
        if (features < 0).any():
            raise ValueError("negative feature: no iris has one")
        return await super().predict(payload)
"""


def require_venv() -> None:
    """A clear failure, not a skip: `make test` installs the server, so its absence is a
    broken setup, not an optional part."""
    if not MLSERVER.exists():
        raise RuntimeError(f"{MLSERVER} is missing: run scripts/setup.sh (it installs MLServer)")


class MLServerProcess:
    """`mlserver start` on free loopback ports (HTTP, gRPC, metrics), one model."""

    def __init__(self, workdir: Path, model: str = "iris", version: str = "v1") -> None:
        require_venv()
        self.workdir = workdir
        self.model = model
        self.version = version
        self.model_dir = workdir / "models" / model
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.log_path = workdir / f"mlserver-{self.http_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: http.client.HTTPConnection | None = None

    # --- setting up ---------------------------------------------------------------------

    def prepare(self) -> None:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        model_file = self.model_dir / "model.joblib"
        if not model_file.exists():
            subprocess.run(
                [str(PYTHON), "-c", TRAIN, str(model_file)],
                check=True,
                capture_output=True,
                timeout=120,
            )
        (self.model_dir / "runtime.py").write_text(RUNTIME)
        (self.model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": self.model,
                    "implementation": "runtime.FaultyModel",
                    "parameters": {"uri": "./model.joblib", "version": self.version},
                }
            )
        )
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": self.http_port,
            # MLServer always serves gRPC; it gets a free port nobody uses.
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            # Inference in the server's own process (no worker pool), so that the pid the
            # tests stop is the one that answers.
            "parallel_workers": 0,
            "metrics_dir": str(self.workdir / ".metrics"),
            "environments_dir": str(self.workdir / ".envs"),
        }
        (self.workdir / "models" / "settings.json").write_text(json.dumps(settings))

    # --- the process --------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> MLServerProcess:
        self.prepare()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(MLSERVER), "start", str(self.workdir / "models")],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group: a test's SIGSTOP never reaches pytest.
                start_new_session=True,
            )
        try:
            wait_http_ready(
                f"{self.url}/v2/models/{self.model}/ready",
                self.proc,
                "MLServer",
                self.logs,
                timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The server's own pid: `mlserver` is a Python console script (no wrapper
        process), and with parallel_workers=0 it answers requests itself."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def watch(self) -> str:
        """A --watch pattern that matches this server and no other."""
        return f"{WATCH} {re.escape(str(self.workdir / 'models'))}"

    def cmdline(self) -> str:
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        self._close()
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            stop_process(self.proc)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> MLServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults and requests ------------------------------------------------------------

    def set_faults(self, sleep_seconds: float = 0.0) -> None:
        """Written whole and renamed, so the model never reads half a file."""
        tmp = self.model_dir / "faults.json.tmp"
        tmp.write_text(json.dumps({"sleep_seconds": sleep_seconds}))
        tmp.replace(self.model_dir / "faults.json")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def infer(self, features: list[float], timeout: float = 10.0) -> tuple[int, Any]:
        """One OIP v2 inference request over a kept-alive connection; (status, body)."""
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, len(features)],
                        "datatype": "FP64",
                        "data": features,
                    }
                ]
            }
        )
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self.http_port, timeout=timeout
                )
            try:
                self._conn.request(
                    "POST",
                    f"/v2/models/{self.model}/infer",
                    body=body,
                    headers={"Content-Type": "application/json"},
                )
                resp = self._conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException):
                # The server closed a kept-alive connection between requests: retry once.
                self._close()
                if attempt == 2:
                    raise
                continue
            try:
                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, data.decode(errors="replace")
        raise AssertionError("unreachable")

    def metrics(self) -> str:
        """The server's own /metrics text (its metrics port)."""
        status, text = http_get(self.metrics_url)
        assert status == 200, text
        return text
