"""Release directory action: previous healthy version, atomic switch, safe on re-apply."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rbproc import live, release_dir

from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError
from agent.rollback.actions.release_dir import ReleaseDirAction, previous_healthy
from agent.rollback.journal import Journal


def action(root: Path, j: Journal, **labels: str) -> ReleaseDirAction:
    return ReleaseDirAction(str(root), j, labels, "drift")


@pytest.fixture
def j(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j.db")


def test_rolls_back_to_the_previous_version_by_first_seen_order(tmp_path: Path, j: Journal) -> None:
    # names sort the other way round from their age: the history follows mtime, not names
    root = release_dir(tmp_path / "rel", ["v9", "v10", "v11"])
    a = action(root, j)
    plan = a.plan()
    assert plan == {"from": "v11", "to": "v10"}
    assert a.apply(plan, dry_run=False).result == SUCCEEDED
    assert live(root) == "v10"
    assert not [p for p in os.listdir(root) if p.startswith(".")], "no temporary link left"
    assert {v["version"]: v["healthy"] for v in j.versions(str(root))} == {
        "v9": 1,
        "v10": 1,
        "v11": 0,
    }


def test_an_unhealthy_version_is_never_chosen_again(tmp_path: Path, j: Journal) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2", "v3"])
    a = action(root, j)
    a.apply(a.plan(), dry_run=False)  # v3 -> v2, v3 unhealthy
    os.unlink(root / "current")
    os.symlink("v3", root / "current")  # someone redeploys v3 by hand, then it fails again
    a.apply(a.plan(), dry_run=False)
    assert live(root) == "v2"
    a.apply(a.plan(), dry_run=False)  # now v2 is bad too
    assert live(root) == "v1"
    with pytest.raises(ActionError, match="no healthy version before v1"):
        a.plan()


def test_a_version_added_later_comes_after_the_known_ones(tmp_path: Path, j: Journal) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2"])
    action(root, j).plan()
    (root / "v3").mkdir()
    os.utime(root / "v3", (1, 1))  # an old mtime (copied with cp -p): still newest by history
    os.unlink(root / "current")
    os.symlink("v3", root / "current")
    assert action(root, j).plan() == {"from": "v3", "to": "v2"}


def test_reapplying_a_done_plan_does_nothing_twice(tmp_path: Path, j: Journal) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2", "v3"])
    a = action(root, j)
    plan = a.plan()
    a.apply(plan, dry_run=False)
    again = a.apply(plan, dry_run=False)  # a restart after the switch, before the outcome
    assert again.result == SUCCEEDED and "before a restart" in again.detail
    assert live(root) == "v2"


def test_a_target_changed_since_the_decision_is_left_alone(tmp_path: Path, j: Journal) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2", "v3", "v4"], current="v3")
    a = action(root, j)
    plan = a.plan()
    os.unlink(root / "current")
    os.symlink("v4", root / "current")
    out = a.apply(plan, dry_run=False)
    assert out.result == SKIPPED and live(root) == "v4"


def test_an_alert_about_another_version_is_skipped(tmp_path: Path, j: Journal) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2"])
    a = action(root, j, version="v1", model="demo")
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == SKIPPED and "about version v1, live is v2" in out.detail
    assert live(root) == "v2"


def test_dry_run_changes_nothing(tmp_path: Path, j: Journal) -> None:
    root = release_dir(tmp_path / "rel", ["v1", "v2"])
    a = action(root, j)
    out = a.apply(a.plan(), dry_run=True)
    assert out.result == DRY_RUN and "v2 -> v1" in out.detail
    assert live(root) == "v2" and all(v["healthy"] for v in j.versions(str(root)))


@pytest.mark.parametrize("setup", ["missing", "file", "outside", "nodir"])
def test_broken_release_directories_are_clear_errors(
    tmp_path: Path, j: Journal, setup: str
) -> None:
    root = tmp_path / "rel"
    if setup != "nodir":
        release_dir(root, ["v1", "v2"])
        os.unlink(root / "current")
        if setup == "file":
            (root / "current").write_text("v2")
        elif setup == "outside":
            os.symlink("/etc", root / "current")
    with pytest.raises(ActionError) as err:
        action(root, j).plan()
    assert str(root) in str(err.value)


def test_previous_healthy_is_pure() -> None:
    hist = [{"version": v, "healthy": h} for v, h in [("a", 1), ("b", 0), ("c", 1), ("d", 1)]]
    assert previous_healthy(hist, "d", {"a", "b", "c", "d"}) == "c"
    assert previous_healthy(hist, "c", {"a", "b", "c", "d"}) == "a"
    assert previous_healthy(hist, "d", {"a", "b", "d"}) == "a", "deleted versions are skipped"
    assert previous_healthy(hist, "zz", {"a"}) is None
