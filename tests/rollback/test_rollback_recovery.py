"""A crash between the journal's decision and the action's outcome: the restarted
controller completes the rollback, once. The crash is real (the process exits at a
failpoint, as a kill would leave it); the restart is a new process on the same journal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rbproc import DRIFT, ControllerProcess, alert, live, payload, release_dir

from agent.rollback.controller import FAILPOINT_EXIT


def crash_then_restart(tmp_path: Path, failpoint: str) -> tuple[Path, list[dict], str]:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    state = tmp_path / "state"
    args = ["--release-dir", str(root)]
    crashing = ControllerProcess(args, state, env={"VIGIL_ROLLBACK_FAILPOINT": failpoint}).start()
    status, body = crashing.post(payload(alert(DRIFT)))
    assert status == 200 and body["alerts"][0]["result"] == "accepted"
    assert crashing.proc is not None
    assert crashing.proc.wait(10) == FAILPOINT_EXIT, crashing.logs()
    live_after_crash = live(root)
    with ControllerProcess(args, state, port=crashing.port) as again:
        # Alertmanager re-sends the same incident to the restarted controller.
        assert again.post(payload(alert(DRIFT)))[1]["alerts"][0]["result"] == "duplicate"
        rows = again.wait_done()
        time.sleep(0.3)
        rows = again.rollbacks()
    return root, rows, live_after_crash


@pytest.mark.parametrize("failpoint", ["before-action", "after-action"])
def test_a_crash_between_decision_and_outcome_completes_once(
    tmp_path: Path, failpoint: str
) -> None:
    root, rows, live_after_crash = crash_then_restart(tmp_path, failpoint)
    # before-action: nothing was switched yet; after-action: it was, but not journaled
    assert live_after_crash == ("v3" if failpoint == "before-action" else "v2")
    (rb,) = rows
    assert rb["state"] == "done" and rb["result"] == "succeeded" and rb["attempts"] == 2
    assert rb["plan"] == {"from": "v3", "to": "v2"}
    assert live(root) == "v2", "rolled back once: v2, not v1"
    if failpoint == "after-action":
        assert "before a restart" in rb["detail"]
