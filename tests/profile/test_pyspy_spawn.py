"""How py-spy children are started: armed by setpriv to die with the agent, with no Python
run between fork and exec, waited on by their own pid; and without setpriv, started all
the same, unarmed, with one log line saying so."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.profile import pyspy as pyspy_mod
from agent.collectors.profile.pyspy import Runner

needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed"
)

# A stand-in py-spy that records, into its --output file, its own pid and the death
# signal the kernel will send it (prctl PR_GET_PDEATHSIG), then exits as py-spy does.
FAKE = """\
import ctypes, sys, os
sig = ctypes.c_int(0)
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
out = sys.argv[sys.argv.index("--output") + 1]
with open(out, "w") as f:
    f.write(f"{os.getpid()} {sig.value}")
"""


def fake_pyspy(tmp_path: Path) -> Path:
    path = tmp_path / "py-spy"
    path.write_text(f"#!{sys.executable}\n{FAKE}")
    path.chmod(0o755)
    return path


def spawned_pids(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[dict[str, Any]]]:
    """Records each child's pid as the Runner holds it, and Popen's keyword arguments."""
    pids: list[int] = []
    kwargs: list[dict[str, Any]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kw: Any) -> subprocess.Popen[bytes]:
        kwargs.append(kw)
        proc = real_popen(*args, **kw)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(pyspy_mod.subprocess, "Popen", popen)
    return pids, kwargs


@needs_setpriv
def test_children_are_armed_to_die_with_the_agent_and_waited_on_by_their_own_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids, kwargs = spawned_pids(monkeypatch)
    run = Runner(str(fake_pyspy(tmp_path)), tmp_path).record_window(os.getpid(), 10, 1)
    assert run.outcome() == "ok", run.reason()
    recorded = [run.text(mode).split() for mode in pyspy_mod.MODES]
    # setpriv execs py-spy in its own process: the pid the agent waits on is py-spy's.
    assert sorted(int(pid) for pid, _ in recorded) == sorted(pids)
    assert {int(sig) for _, sig in recorded} == {9}  # SIGKILL when the agent dies
    # No Python between fork and exec: a lock another thread held at the fork would
    # never be released in the child.
    assert all(kw.get("preexec_fn") is None for kw in kwargs)


def test_without_setpriv_children_start_unarmed_and_it_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pids, kwargs = spawned_pids(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="vigil.profile"):
        runner = Runner(str(fake_pyspy(tmp_path)), tmp_path, which=lambda _: None)
        runs = [runner.record_window(os.getpid(), 10, 1) for _ in range(2)]
    assert [r.outcome() for r in runs] == ["ok", "ok"]
    assert {int(r.text("cpu").split()[1]) for r in runs} == {0}  # no death signal
    said = [r for r in caplog.records if "setpriv" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert all(kw.get("preexec_fn") is None for kw in kwargs) and len(pids) == 6


@needs_setpriv
def test_a_text_file_as_py_spy_is_refused_not_run_by_the_shell(tmp_path: Path) -> None:
    # setpriv's execvp would hand a file of no executable format to /bin/sh.
    marker = tmp_path / "ran"
    bogus = tmp_path / "py-spy"
    bogus.write_text(f"touch {marker}\n")
    bogus.chmod(0o755)
    run = Runner(str(bogus), tmp_path).record_window(os.getpid(), 10, 1)
    assert run.outcome() == "failed"
    assert run.reason().startswith(f"cannot run {bogus}: ") and "Exec format" in run.reason()
    assert not marker.exists()
