"""`vigil` is on root's PATH after `make run`/`make test` (scripts/setup.sh links it), and
`vigil doctor`'s exit status says whether anything it printed failed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from agentproc import ROOT, run_vigil

QUICK = ["--no-collector.sched", "--no-collector.gpu"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the link is made for root only")
def test_setup_puts_vigil_on_the_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    env = {
        **os.environ,
        "VIGIL_BIN_DIR": str(bin_dir),
        "VIGIL_SETUP_NO_KERNEL": "1",
    }
    r = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert f"linked {bin_dir}/vigil" in r.stderr
    # A shell with only that directory and the system's on PATH, from anywhere.
    shell = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    v = subprocess.run(
        ["sh", "-c", "vigil version"], cwd=tmp_path, env=shell, capture_output=True, text=True
    )
    assert v.returncode == 0 and v.stdout.startswith("vigil "), v.stdout + v.stderr
    # A second run leaves the link as it is, and says nothing about it.
    again = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "linked" not in again.stderr, again.stderr


def test_setup_leaves_someone_elses_vigil_alone(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the link is made for root only")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    theirs = bin_dir / "vigil"
    theirs.write_text("#!/bin/sh\necho theirs\n")
    env = {**os.environ, "VIGIL_BIN_DIR": str(bin_dir), "VIGIL_SETUP_NO_KERNEL": "1"}
    r = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert theirs.read_text() == "#!/bin/sh\necho theirs\n"
    assert "is not a link: leaving it" in r.stderr


def test_doctor_exits_0_when_nothing_failed(tmp_path: Path) -> None:
    # inference off: it checks every server on the host, and one that other tests are
    # starting is rightly a FAIL until it listens.
    flags = [*QUICK, "--no-collector.inference"]
    r = run_vigil(["doctor", *flags, "--state-dir", str(tmp_path)])
    assert "FAIL" not in r.stdout, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def test_doctor_exits_1_whenever_it_prints_fail(tmp_path: Path) -> None:
    # profile is on by default (not asked for): before, a FAIL here still exited 0.
    r = run_vigil(
        [
            "doctor",
            *QUICK,
            "--state-dir",
            str(tmp_path),
            "--collector.profile.pyspy-path",
            "/nonexistent/py-spy",
        ]
    )
    assert "FAIL py-spy" in r.stdout, r.stdout
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_doctor_exits_2_on_a_usage_error() -> None:
    r = run_vigil(["doctor", "--no-such-flag"])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_doctor_help_documents_its_exit_status() -> None:
    r = run_vigil(["doctor", "--help"])
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "exit status: 0" in text and "1" in text and "2" in text
