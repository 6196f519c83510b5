"""Command action: a real child process, no shell, the alert as environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.rollback.actions.base import DRY_RUN, FAILED, SUCCEEDED, ActionError
from agent.rollback.actions.command import CommandAction

DUMP_ENV = (
    "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); print('done')"
)


def test_runs_argv_with_labels_as_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_ROLLBACK_TOKEN", "must-not-leak")
    out_file = tmp_path / "env.json"
    a = CommandAction(
        [sys.executable, "-c", DUMP_ENV, str(out_file)],
        {"alertname": "VigilGPUMemoryFull", "gpu": "0", "model": "demo; rm -rf /"},
        {"VIGIL_ROLLBACK_ID": "7"},
        timeout=10,
    )
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == SUCCEEDED and out.detail == "done"
    env = json.loads(out_file.read_text())
    assert env["VIGIL_LABEL_ALERTNAME"] == "VigilGPUMemoryFull"
    assert env["VIGIL_LABEL_MODEL"] == "demo; rm -rf /", "passed as data, never interpreted"
    assert env["VIGIL_ROLLBACK_ID"] == "7"
    assert "VIGIL_ROLLBACK_TOKEN" not in env


def test_a_failing_command_is_a_failed_rollback_with_its_output(tmp_path: Path) -> None:
    a = CommandAction(
        [sys.executable, "-c", "import sys; print('no such model'); sys.exit(3)"],
        {},
        {},
        timeout=10,
    )
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == FAILED and "exited with 3" in out.detail and "no such model" in out.detail


def test_timeout_and_missing_binary_are_errors() -> None:
    slow = CommandAction([sys.executable, "-c", "import time; time.sleep(5)"], {}, {}, timeout=0.3)
    with pytest.raises(ActionError, match=r"did not finish within 0\.3s"):
        slow.apply({}, dry_run=False)
    with pytest.raises(ActionError, match="cannot run /nonexistent/hook"):
        CommandAction(["/nonexistent/hook"], {}, {}, timeout=1).apply({}, dry_run=False)


def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    a = CommandAction([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], {}, {}, timeout=5)
    assert a.apply(a.plan(), dry_run=True).result == DRY_RUN
    assert not marker.exists()
