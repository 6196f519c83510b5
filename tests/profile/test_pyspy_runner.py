"""The py-spy shell against real processes: exits, hangs, refusals, and their handling."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from agentproc import run_vigil
from conftest import WATCH, Workloads

from agent.collectors import SPECS
from agent.collectors.profile import pyspy as pyspy_mod
from agent.collectors.profile.collector import ProfileCollector, factory
from agent.collectors.profile.doctor import doctor
from agent.collectors.profile.pyspy import Runner, find_pyspy
from agent.collectors.profile.settings import ProfileSettings
from agent.config import ConfigError, resolve
from agent.discovery import Discovery
from agent.registry import CollectorUnavailable, Context

PYSPY = find_pyspy()
needs_pyspy = pytest.mark.skipif(PYSPY is None, reason="py-spy is not installed")


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@needs_pyspy
def test_process_exiting_mid_window_drops_the_window(workloads: Workloads, tmp_path: Path) -> None:
    assert PYSPY is not None
    proc = workloads.start("mix")
    killer = threading.Timer(1.0, proc.kill)
    killer.start()
    run = Runner(PYSPY, tmp_path).record_window(proc.pid, 100, 3)
    killer.join()
    # py-spy exits 0 and writes what it had; the window must still be dropped.
    assert run.outcome() == "exited", [(c.returncode, c.output) for c in run.children]
    assert run.ended - run.started < 3.0


@needs_pyspy
def test_non_python_process_is_unsupported(tmp_path: Path) -> None:
    assert PYSPY is not None
    proc = subprocess.Popen(["sleep", "30"])
    try:
        started = time.monotonic()
        run = Runner(PYSPY, tmp_path).record_window(proc.pid, 100, 2)
    finally:
        proc.kill()
        proc.wait()
    assert run.outcome() == "unsupported"
    assert "python version" in run.reason().lower()
    assert time.monotonic() - started < 2.0  # py-spy gives up at once, not at window end
    assert run.cpu_seconds > 0  # the children's rusage is accounted


def test_hung_py_spy_is_killed_at_window_end_plus_grace(tmp_path: Path) -> None:
    # A py-spy that never ends (stuck on a target, say) must not hold its slot.
    hung = tmp_path / "py-spy"
    hung.write_text(f"#!{sys.executable}\nimport time\nwhile True:\n    time.sleep(1)\n")
    hung.chmod(0o755)
    runner = Runner(str(hung), tmp_path, grace=0.5)
    started = time.monotonic()
    run = runner.record_window(os.getpid(), 10, 1)
    elapsed = time.monotonic() - started
    assert run.outcome() == "timeout"
    assert "killed" in run.reason()
    assert 1.4 <= elapsed < 3.0
    assert runner.live_pids() == []
    assert not list(tmp_path.glob("*.txt"))


def test_close_kills_children_at_once(tmp_path: Path) -> None:
    hung = tmp_path / "py-spy"
    hung.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    hung.chmod(0o755)
    runner = Runner(str(hung), tmp_path)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(runner.record_window(1, 10, 30).outcome()))
    t.start()
    deadline = time.monotonic() + 5
    while len(runner.live_pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = runner.live_pids()
    assert len(pids) == 3
    runner.close()
    t.join(timeout=3)
    assert result == ["stopped"]
    assert all(gone(p) for p in pids)


def unprivileged_pyspy(tmp_path: Path) -> str:
    """The real py-spy, run as `nobody`: no CAP_SYS_PTRACE, another user's targets."""
    assert PYSPY is not None
    copy = tmp_path / "py-spy-real"
    shutil.copy(PYSPY, copy)
    wrapper = tmp_path / "py-spy"
    wrapper.write_text(
        f"#!/bin/sh\nexec setpriv --reuid=nobody --regid=nogroup --clear-groups "
        f'--inh-caps=-all {copy} "$@"\n'
    )
    wrapper.chmod(0o755)
    for p in (tmp_path, *tmp_path.parents[:3]):
        p.chmod(p.stat().st_mode | 0o711)
    return str(wrapper)


@needs_pyspy
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_permission_denied_is_said_once_and_backed_off(
    workloads: Workloads, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "out"
    work.mkdir()
    work.chmod(0o777)
    pids = {workloads.start("sleep").pid, workloads.start("mix").pid}
    discovery = Discovery(patterns=[WATCH], interval=60)
    discovery.refresh()
    assert pids <= set(discovery.snapshot())
    settings = ProfileSettings(window=1, max_concurrent=30)
    collector = ProfileCollector(discovery, unprivileged_pyspy(tmp_path), settings)
    caplog.set_level(logging.INFO, logger="vigil.profile")
    collector.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = {p["pid"]: p["state"] for p in collector.listing()}
            if all(states.get(pid) == "denied" for pid in pids):
                break
            time.sleep(0.1)
        listing = {p["pid"]: p for p in collector.listing()}
        for pid in pids:
            assert listing[pid]["state"] == "denied", listing
            assert listing[pid]["retry_in_seconds"] > 30
            assert "Permission Denied" in listing[pid]["reason"]
        time.sleep(1.5)  # a window later: nothing retried, nothing logged again
        said = [r for r in caplog.records if "CAP_SYS_PTRACE" in r.getMessage()]
        assert len(said) == 1
        assert collector.windows["denied"] == len(pids)
    finally:
        collector.close()


def test_missing_py_spy_makes_the_collector_unavailable_with_the_reason() -> None:
    settings = ProfileSettings(pyspy_path="/nonexistent/py-spy")
    ctx = Context(discovery=Discovery(patterns=[]), paths=resolve(SPECS).paths)
    with pytest.raises(CollectorUnavailable) as err:
        factory(ctx, settings)
    assert err.value.reason == "py-spy not found (/nonexistent/py-spy)"
    assert "pip install" in err.value.fix
    assert ctx.routes == []
    r = run_vigil(
        [
            "doctor",
            "--collector.profile",
            "--collector.profile.pyspy-path",
            "/nonexistent/py-spy",
            "--no-collector.sched",
            "--no-collector.gpu",
        ]
    )
    assert r.returncode == 1
    assert "FAIL py-spy: not found (/nonexistent/py-spy)" in r.stdout
    assert "fix: pip install" in r.stdout


def test_window_must_be_whole_seconds() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(SPECS, flag_values={"collector.profile.window": "2500ms"})
    assert str(err.value).startswith(
        "collector.profile.window (from --collector.profile.window): 2.5s is not a whole number"
    )


@needs_pyspy
def test_doctor_reports_py_spy_version_and_privilege() -> None:
    checks = {c.what: c for c in doctor(ProfileSettings(), resolve(SPECS).paths)}
    assert checks["py-spy"].ok and checks["py-spy"].detail.endswith(
        subprocess.run([str(PYSPY), "--version"], capture_output=True, text=True).stdout.split()[1]
    )
    assert checks["ptrace privilege"].ok == (os.geteuid() == 0)
    assert "yama ptrace_scope" in checks


def test_a_py_spy_that_cannot_be_executed_fails_the_window_cleanly(tmp_path: Path) -> None:
    bogus = tmp_path / "py-spy"
    bogus.write_text("this is not a program\n")  # executable bit, no format: ENOEXEC
    bogus.chmod(0o755)
    run = Runner(str(bogus), tmp_path).record_window(os.getpid(), 10, 1)
    assert run.outcome() == "failed"
    assert run.reason().startswith(f"cannot run {bogus}: ")


def test_a_child_that_cannot_be_watched_is_killed_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pidfd_open failing (EMFILE, say) after the spawn used to leave the child running,
    # in _live, and never reaped.
    hung = tmp_path / "py-spy"
    hung.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    hung.chmod(0o755)
    spawned: list[int] = []
    real_spawn = pyspy_mod._spawn

    def spawn(*args: object) -> subprocess.Popen[bytes]:
        proc = real_spawn(*args)  # type: ignore[arg-type]
        spawned.append(proc.pid)
        return proc

    def no_fds(pid: int, flags: int = 0) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(pyspy_mod, "_spawn", spawn)
    monkeypatch.setattr(pyspy_mod.os, "pidfd_open", no_fds)
    runner = Runner(str(hung), tmp_path)
    started = time.monotonic()
    run = runner.record_window(os.getpid(), 10, 30)
    assert time.monotonic() - started < 5
    assert run.outcome() == "failed"
    assert "cannot watch py-spy" in run.reason() and "Too many open files" in run.reason()
    assert runner.live_pids() == []
    assert len(spawned) == 1 and gone(spawned[0])  # killed and reaped: not even a zombie
    assert not list(tmp_path.glob("*.txt")) and not list(tmp_path.glob("*.log"))
