"""Only the holder of the leader lock acts; the other controller journals and waits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rbproc import DRIFT, alert, live, payload, release_dir

from agent.config import ConfigError
from agent.rollback import config as cfgmod
from agent.rollback.cli import _leader_lock
from agent.rollback.controller import Controller
from agent.rollback.journal import DONE, Journal
from agent.rollback.payload import parse_notification
from agent.rollback.tracing import RollbackTracer


def test_a_controller_without_the_lock_waits_then_acts_once(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    cfg = cfgmod.load(
        flags={
            "release_dir": str(root),
            "state_dir": str(tmp_path / "state"),
            "insecure_no_auth": True,
        }
    )
    journal = Journal(cfg.journal_path)
    leader = {"held": False}
    controller = Controller(cfg, journal, RollbackTracer(""), leader=lambda: leader["held"])

    async def scenario() -> None:
        controller.start()
        notification = parse_notification(json.dumps(payload(alert(DRIFT))).encode())
        for _, decision in controller.receive(notification):
            if decision.rollback_id is not None:
                controller.enqueue(decision.rollback_id)
        await asyncio.sleep(2.5)
        assert live(root) == "v3", "acted without the leader lock"
        leader["held"] = True
        for _ in range(50):
            await asyncio.sleep(0.1)
            if live(root) == "v2":
                break
        await controller.stop()

    asyncio.run(scenario())
    assert live(root) == "v2"
    assert [rb.state for rb in journal.rollbacks()] == [DONE]
    journal.close()


def test_leader_election_settings() -> None:
    assert _leader_lock("off", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    assert _leader_lock("auto", {}) is None
    with pytest.raises(ConfigError, match="POD_NAMESPACE and POD_NAME"):
        _leader_lock("on", {})
