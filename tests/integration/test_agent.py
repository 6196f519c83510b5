"""The real `vigil run` process: endpoints, content negotiation, shutdown, bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentproc import AgentProcess, free_port, http_get, run_vigil

COLLECTORS = ("discovery", "sched", "gpu", "profile", "drift")


def test_metrics_health_and_readiness() -> None:
    with AgentProcess() as agent:
        text = agent.metrics()
        assert 'vigil_build_info{python_version="' in text
        for name in COLLECTORS:
            assert f'vigil_scrape_collector_success{{collector="{name}"}}' in text
        assert agent.get("/healthz") == (200, "ok\n")
        assert agent.get("/readyz") == (200, "ready\n")
        assert agent.get("/nope")[0] == 404


def test_openmetrics_by_content_negotiation() -> None:
    with AgentProcess() as agent:
        om = agent.metrics(accept="application/openmetrics-text; version=1.0.0")
        assert om.rstrip().endswith("# EOF")
        plain = agent.metrics()
        assert "# EOF" not in plain


def test_sigterm_stops_within_five_seconds_and_leaves_no_children() -> None:
    agent = AgentProcess()
    with agent:
        assert agent.proc is not None
        pid = agent.proc.pid
        started = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        rc = agent.proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    assert rc == 0, agent.logs()
    assert elapsed < 5.0
    orphans = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    assert orphans.strip() == ""
    assert "msg=stopped" in agent.logs()


def test_port_in_use_is_one_clear_message() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = run_vigil(["run", "--listen", f"127.0.0.1:{port}"], timeout=30)
    assert r.returncode == 1
    assert "address already in use" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--listen", "nonsense"], {}, "is not HOST:PORT"),
        (["run", "--listen", ":99999"], {}, "out of range"),
        (["run", "--collector.nvidia"], {}, "unknown collector 'nvidia'"),
        (["run"], {"VIGIL_COLECTOR_GPU": "1"}, "unknown environment variable VIGIL_COLECTOR_GPU"),
        (["run", "--discovery.interval", "fast"], {}, "is not a duration"),
    ],
)
def test_bad_configuration_exits_2_without_traceback(
    args: list[str], env: dict[str, str], message: str
) -> None:
    r = run_vigil(args, env=env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_config_file_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("collectors:\n  gpu:\n    intervall: 5s\n")
    r = run_vigil(["run", "--config", str(cfg)])
    assert r.returncode == 2
    assert "unknown key collectors.gpu.intervall" in r.stderr


def test_watched_process_is_exported_and_dropped_when_it_exits() -> None:
    marker = f"vigil_it_marker_{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        with AgentProcess(["--watch", marker, "--discovery.interval", "200ms"]) as agent:
            assert f'pid="{child.pid}"' in agent.metrics()
            child.kill()
            child.wait()
            deadline = time.monotonic() + 5
            while f'pid="{child.pid}"' in agent.metrics():
                assert time.monotonic() < deadline, "exited process still exported"
                time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_version_and_help() -> None:
    r = run_vigil(["version"])
    assert r.returncode == 0 and r.stdout.startswith("vigil ")
    r = run_vigil(["run", "--help"])
    assert r.returncode == 0
    for flag in ("--listen", "--config", "--watch", "--collector.gpu", "--path.procfs"):
        assert flag in r.stdout
    r = run_vigil([])
    assert r.returncode == 2 and "run" in r.stdout


def test_doctor_reports_every_collector_and_fails_only_when_explicitly_enabled() -> None:
    # Inference off: a server another test is starting may not answer yet (a FAIL line).
    r = run_vigil(["doctor", "--no-collector.inference"])
    for name in ("sched", "gpu", "profile", "drift"):
        assert f"  {name} " in r.stdout
    # No GPU driver on this machine: the gpu collector does not apply, which is no failure.
    gpu_line = next(line for line in r.stdout.splitlines() if line.startswith("  gpu "))
    assert "not ready" not in gpu_line and "not applicable" in r.stdout
    assert r.returncode == 0, r.stdout
    # On by default but unable to run: reported as FAIL (exit 1), and `vigil run` goes on.
    missing = ["--no-collector.inference", "--collector.profile.pyspy-path", "/nonexistent/py-spy"]
    r1 = run_vigil(["doctor", *missing])
    profile_line = next(line for line in r1.stdout.splitlines() if line.startswith("  profile "))
    assert "not ready" in profile_line and "`vigil run` goes on without it" in r1.stdout
    assert r1.returncode == 1
    # Switched on explicitly but unable to run: said so.
    r2 = run_vigil(["doctor", "--collector.profile", *missing])
    assert r2.returncode == 1
    assert "explicitly enabled collector cannot run" in r2.stdout


def test_http_get_helper_roundtrip() -> None:
    # The agent answers concurrently: a slow client does not block /healthz.
    with AgentProcess() as agent:
        slow = socket.create_connection(("127.0.0.1", agent.port))
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes headers
        try:
            assert http_get(agent.url + "/healthz", timeout=2)[0] == 200
        finally:
            slow.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
    reason="needs root to drop to another user with setpriv",
)
def test_doctor_as_an_unprivileged_user_explains_instead_of_crashing(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "agent.cli",
            "doctor",
            "--state-dir",
            str(tmp_path),
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")},
    )
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "FAIL privilege: not root" in r.stdout
    assert "tracefs" in r.stdout
