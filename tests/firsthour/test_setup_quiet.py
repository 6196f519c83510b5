"""`make run` on a fresh machine prints setup.sh's own lines and nothing else: no
setuptools "Editable installation" banner, no pip noise. Runs the real scripts/setup.sh
into a new virtualenv (the image's minimal set, from the hash-checked runtime lock)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_fresh_setup_prints_only_its_own_lines(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VIGIL_VENV": str(tmp_path / "venv"),
        "VIGIL_SETUP_MINIMAL": "1",  # runtime lock only: the same install path, less to fetch
        "VIGIL_BIN_DIR": "",  # leave root's `vigil` link alone
        "VIGIL_SETUP_NO_KERNEL": "1",
    }
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert (tmp_path / "venv" / "bin" / "vigil").exists(), out
    assert "Editable installation" not in out and "!!" not in out, out
    noise = [line for line in out.splitlines() if line.strip() and not line.startswith("setup: ")]
    assert noise == [], out
