"""Helpers for the rollback tests: the controller as a real child process, real
Alertmanager-shaped payloads, release directories, and the real Prometheus and
Alertmanager binaries on loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from agentproc import ROOT, free_port, http_get, stop_process

VIGIL = [sys.executable, "-m", "agent.cli"]
TOKEN = "s3cret-token-for-tests"


# --- payloads -------------------------------------------------------------------------------


def alert(
    labels: dict[str, str],
    *,
    status: str = "firing",
    fingerprint: str = "5ef77f1f8a3ecfc8",
    starts_at: str = "2026-11-23T10:00:00.123456789Z",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 writes it in a webhook."""
    return {
        "status": status,
        "labels": {"alertname": "VigilInputDriftDetected", **labels},
        "annotations": annotations if annotations is not None else {"summary": "inputs drifted"},
        "startsAt": starts_at,
        "endsAt": "2026-11-23T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=vigil_drift_detected+%3D%3D+1",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    common = dict(alerts[0]["labels"]) if alerts else {}
    return {
        "receiver": "vigil-rollback",
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}/{action="rollback"}:{alertname="VigilInputDriftDetected"}',
        "truncatedAlerts": 0,
    }


DRIFT = {
    "action": "rollback",
    "model": "demo",
    "version": "v3",
    "severity": "critical",
    "instance": "n1:9475",
    "job": "vigil",
}


# --- release directories --------------------------------------------------------------------


def release_dir(root: Path, versions: list[str], current: str | None = None) -> Path:
    """Versions created oldest first (distinct mtimes), ``current`` -> the last by default."""
    root.mkdir(parents=True, exist_ok=True)
    base = time.time() - 1000
    for i, v in enumerate(versions):
        d = root / v
        d.mkdir()
        (d / "model.json").write_text(json.dumps({"weights": {"x": i + 1.0}, "bias": 0.0}))
        os.utime(d, (base + i * 10, base + i * 10))
    os.symlink(current or versions[-1], root / "current")
    return root


def live(root: Path) -> str:
    return os.readlink(root / "current")


# --- waiting --------------------------------------------------------------------------------


def wait_for(what: str, cond: Any, timeout: float, logs: Any = lambda: "") -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not within {timeout}s\n{logs()}")
        time.sleep(0.05)
    return time.monotonic() - start


class MetricsPage:
    """Serves a settable metrics page (``body``) on loopback for Prometheus to scrape."""

    def __init__(self, body: str = "") -> None:
        self.body = body
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = page.body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


# --- the controller as a child process ------------------------------------------------------


class ControllerProcess:
    def __init__(
        self,
        args: list[str],
        state_dir: Path,
        env: dict[str, str] | None = None,
        token: str | None = TOKEN,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.token = token
        self.args = [
            "rollback-controller",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state-dir",
            str(state_dir),
            *args,
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        if token:
            self.env["VIGIL_ROLLBACK_TOKEN"] = token
        self.env.update(env or {})
        self.log_path = state_dir.parent / f"controller-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ControllerProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*VIGIL, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if http_get(self.url + "/readyz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"controller not ready:\n{self.logs()}")

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        return stop_process(self.proc) if self.proc else None

    def logs(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def post(
        self, body: Any, token: str | None = "default", raw: bytes | None = None
    ) -> tuple[int, Any]:
        token = self.token if token == "default" else token
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            self.url + "/v1/alerts", data=data, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def rollbacks(self, limit: int = 100) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, body = http_get(self.url + f"/v1/rollbacks?limit={limit}", headers=headers)
        assert status == 200, body
        return list(json.loads(body)["rollbacks"])

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        _, text = http_get(self.url + "/metrics")
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def wait_done(self, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rollbacks(max(100, count))
            if len([r for r in rows if r["state"] == "done"]) >= count:
                return rows
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollbacks not done: {rows}\n{self.logs()}")
            time.sleep(0.05)


def run_controller(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    full.update(env or {})
    return subprocess.run(
        [*VIGIL, "rollback-controller", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- real Prometheus and Alertmanager -------------------------------------------------------


def generate_rules(path: Path, for_: str = "2s") -> Path:
    """The production rules with every `for` shortened: what the end-to-end tests load."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-alerts"), "--for", for_, "-o", str(path)],
        check=True,
    )
    return path


def alertmanager_config(path: Path, webhook_url: str, token_file: Path, repeat: str = "2s") -> Path:
    """alerts/alertmanager.yml pointed at a test controller, with second-scale timings."""
    cfg = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    for route in [cfg["route"], *cfg["route"]["routes"]]:
        route.update({"group_wait": "0s", "group_interval": "1s", "repeat_interval": repeat})
    path.write_text(yaml.safe_dump(cfg))
    return path


class Binary:
    """A real server binary on a loopback port, with its own data dir, killed on exit."""

    def __init__(
        self, name: str, args: list[str], workdir: Path, port: int, ready_path: str
    ) -> None:
        self.name, self.port, self.workdir = name, port, workdir
        self.url = f"http://127.0.0.1:{port}"
        self.args = args
        self.ready_path = ready_path
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Binary:
        binary = shutil.which(self.name)
        assert binary, f"{self.name} is not installed (scripts/setup.sh installs it)"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()}")
            try:
                if http_get(self.url + self.ready_path, timeout=1.0)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready:\n{self.log_path.read_text()}")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def get_json(self, path: str) -> Any:
        status, body = http_get(self.url + path)
        assert status == 200, body
        return json.loads(body)


def alertmanager(workdir: Path, config: Path) -> Binary:
    port = free_port()
    return Binary(
        "prometheus-alertmanager",
        [
            f"--config.file={config}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: one instance, nothing else bound
        ],
        workdir,
        port,
        "/-/ready",
    )


def prometheus(workdir: Path, rules: Path, scrape_target: str, alertmanager_url: str) -> Binary:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "alerting": {
                    "alertmanagers": [
                        {
                            "static_configs": [
                                {"targets": [alertmanager_url.removeprefix("http://")]}
                            ]
                        }
                    ]
                },
                "scrape_configs": [
                    {"job_name": "vigil", "static_configs": [{"targets": [scrape_target]}]}
                ],
            }
        )
    )
    return Binary(
        "prometheus",
        [
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Re-send firing alerts to Alertmanager every second (default 1m).
            "--rules.alert.resend-delay=1s",
        ],
        workdir,
        port,
        "/-/ready",
    )
