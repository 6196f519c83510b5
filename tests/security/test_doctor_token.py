"""`vigil doctor` judges the ingest token file by the agent's own rule: a file the agent
would refuse (wrong owner, readable or writable by others, empty) is never reported fine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agentproc import run_vigil

from agent import auth
from agent.collectors import SPECS
from agent.collectors.drift.doctor import ingest_check
from agent.config import resolve
from agent.registry import Paths


def _paths(state: Path, token_file: str = "") -> Paths:
    flags = {"state-dir": str(state), "ingest-token-file": token_file}
    return resolve(SPECS, flag_values=flags).paths


def _token(tmp_path: Path, mode: int, text: str = "s3cret-token\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _agent_says(path: Path) -> str:
    try:
        auth.read_token_file(path)
    except auth.TokenError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    ("mode", "text", "why"),
    [
        (0o644, "s3cret\n", "is readable by others"),
        (0o620, "s3cret\n", "is writable by its group"),
        (0o602, "s3cret\n", "is writable by others"),
        (0o600, "\n", "is empty"),
    ],
)
def test_a_token_file_the_agent_refuses_fails_the_check_with_the_agents_reason(
    tmp_path: Path, mode: int, text: str, why: str
) -> None:
    path = _token(tmp_path, mode, text)
    check = ingest_check(_paths(tmp_path / "state", str(path)))
    assert not check.ok
    assert why in check.detail
    assert check.detail == _agent_says(path)  # one rule, one wording


def test_a_file_of_another_user_fails_the_check(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = _token(tmp_path, 0o600)
    os.chown(path, 12345, -1)
    check = ingest_check(_paths(tmp_path / "state", str(path)))
    assert not check.ok and "belongs to uid 12345" in check.detail
    assert f"chown {os.geteuid()} {path}" in check.detail  # the repair, spelled out


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_token_file_passes(tmp_path: Path, mode: int) -> None:
    path = _token(tmp_path, mode)
    check = ingest_check(_paths(tmp_path / "state", str(path)))
    assert check.ok and check.detail == f"bearer token from {path}"
    assert _agent_says(path) == ""


def test_vigil_doctor_reports_the_refused_token_file(tmp_path: Path) -> None:
    path = _token(tmp_path, 0o644)
    r = run_vigil(
        ["doctor", "--state-dir", str(tmp_path / "state"), "--ingest-token-file", str(path)],
        timeout=60,
    )
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    line = next((ln for ln in out.splitlines() if "ingest" in ln and str(path) in ln), "")
    assert "FAIL" in line and "is readable by others" in line, out
