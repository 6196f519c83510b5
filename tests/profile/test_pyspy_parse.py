"""How py-spy is called and how its exits are read (pure parts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.collectors.profile.pyspy import (
    MODES,
    ChildResult,
    WindowRun,
    classify,
    find_pyspy,
    reason_line,
    record_argv,
)

# What py-spy 0.4 prints, captured from real runs.
NOT_PYTHON = "Error: Failed to find python version from target process\n"
GONE = (
    "Error: Failed to get process executable name. Check that the process is running.\n"
    "\nCaused by:\n    0: No such file or directory (os error 2)\n"
)
DENIED = (
    "Permission Denied: Try running again with elevated permissions by going "
    "'sudo env \"PATH=$PATH\" !!'\n"
)
EXITED = (
    "py-spy> Sampling process 100 times a second for 3 seconds. Press Control-C to exit.\n\n"
    "py-spy> Stopped sampling because process exited\n"
    "py-spy> Wrote raw flamegraph data to 'z.txt'. Samples: 85 Errors: 0\n"
)
OK = "py-spy> Wrote raw flamegraph data to 'a.txt'. Samples: 199 Errors: 0\n"
PANIC = (
    "thread 'main' (20197) panicked at src/config.rs:398:65:\n"
    "invalid duration: ParseIntError { kind: InvalidDigit }\n"
)


@pytest.mark.parametrize(
    ("rc", "output", "outcome"),
    [
        (0, OK, "ok"),
        (0, EXITED, "exited"),  # exit status 0, but the window is incomplete
        (1, GONE, "exited"),
        (1, NOT_PYTHON, "unsupported"),
        (1, "Error: Unsupported version of Python: 3.99.0\n", "unsupported"),
        (1, DENIED, "denied"),
        (101, PANIC, "failed"),
        (-9, "", "failed"),
    ],
)
def test_classify(rc: int, output: str, outcome: str) -> None:
    assert classify(rc, output) == outcome


def test_reason_line_picks_the_error() -> None:
    assert reason_line(NOT_PYTHON) == "Error: Failed to find python version from target process"
    assert reason_line(PANIC).startswith("thread 'main'")
    assert reason_line(DENIED).startswith("Permission Denied")
    assert reason_line("") == "py-spy exited without output"


def test_every_recording_is_nonblocking() -> None:
    for mode in MODES:
        argv = record_argv("/x/py-spy", 42, mode, 19, 10, "/tmp/o.txt")
        assert argv[:2] == ["/x/py-spy", "record"]
        assert "--nonblocking" in argv
        assert argv[argv.index("--pid") + 1] == "42"
        assert argv[argv.index("--rate") + 1] == "19"
        assert argv[argv.index("--duration") + 1] == "10"
        assert argv[argv.index("--format") + 1] == "raw"
    assert "--idle" not in record_argv("p", 1, "cpu", 1, 1, "o")
    assert {"--idle", "--threads"} <= set(record_argv("p", 1, "wall", 1, 1, "o"))
    assert {"--idle", "--gil"} <= set(record_argv("p", 1, "gil", 1, 1, "o"))


def test_window_outcome_and_reason() -> None:
    def child(mode: str, rc: int | None, out: str, outcome: str) -> ChildResult:
        return ChildResult(mode, rc, out, "", 0.01, outcome)

    run = WindowRun(
        1,
        0.0,
        1.0,
        [
            child("cpu", 0, OK, "ok"),
            child("wall", 1, GONE, "exited"),
            child("gil", None, "", "timeout"),
        ],
    )
    assert run.outcome() == "exited"
    assert "Check that the process is running" in run.reason()
    assert run.cpu_seconds == pytest.approx(0.03)
    hung = WindowRun(1, 0.0, 1.0, [child("gil", None, "", "timeout")])
    assert hung.outcome() == "timeout" and "killed" in hung.reason()
    signalled = WindowRun(1, 0.0, 1.0, [child("cpu", -15, "", "failed")])
    assert signalled.reason() == "py-spy (cpu) killed by signal 15"
    assert WindowRun(1, 0.0, 1.0, [child("cpu", 0, OK, "ok")]).reason() == ""


def test_find_pyspy_prefers_the_option(tmp_path: Path) -> None:
    exe = tmp_path / "py-spy"
    exe.write_text("#!/bin/sh\n")
    assert find_pyspy(str(exe)) is None  # not executable
    exe.chmod(0o755)
    assert find_pyspy(str(exe)) == str(exe)
    assert find_pyspy(str(tmp_path)) is None  # a directory is not a binary
    assert find_pyspy(str(tmp_path / "nope")) is None


def test_find_pyspy_without_option_looks_beside_python_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = tmp_path / "py-spy"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setattr("sys.executable", "/nonexistent/bin/python")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_pyspy() == str(exe)
    monkeypatch.setenv("PATH", os.devnull)
    assert find_pyspy() is None
