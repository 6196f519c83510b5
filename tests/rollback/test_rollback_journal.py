"""The journal decides once per alert, enforces cooldown and the hourly cap, survives reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rbproc import DRIFT, alert

from agent.rollback.journal import DECIDED, DONE, Journal, Proposal
from agent.rollback.payload import Alert, parse_notification


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def as_alert(**kw: object) -> Alert:
    import json

    from rbproc import payload

    return parse_notification(json.dumps(payload(alert(DRIFT, **kw))).encode()).alerts[0]  # type: ignore[arg-type]


def proposal(target: str = "release-dir:/srv/demo") -> Proposal:
    return Proposal(target, "release-dir", "release_dir", {"path": "/srv/demo"}, "drift")


def decide(j: Journal, a: Alert, p: Proposal | None = None, **kw: object) -> str:
    args = {"cooldown": 600.0, "max_per_hour": 3, "dry_run": False, **kw}
    return j.decide(a, p or proposal(), **args).result  # type: ignore[arg-type]


def test_one_rollback_per_fingerprint_and_start(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    a = as_alert()
    assert decide(j, a) == "accepted"
    assert [decide(j, a) for _ in range(3)] == ["duplicate"] * 3
    assert len(j.rollbacks()) == 1
    assert len(j.notifications()) == 4, "every re-send is in the audit trail"


def test_a_new_start_of_the_same_alert_is_a_new_incident_after_cooldown(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path / "j.db", clock=clock)
    assert decide(j, as_alert()) == "accepted"
    clock.now += 599
    assert decide(j, as_alert(starts_at="2026-11-23T11:00:00Z")) == "cooldown"
    clock.now += 2
    assert decide(j, as_alert(starts_at="2026-11-23T12:00:00Z")) == "accepted"
    # the one refused for cooldown stays refused: its re-sends are duplicates
    assert decide(j, as_alert(starts_at="2026-11-23T11:00:00Z")) == "duplicate"


def test_cooldown_is_per_target_and_the_cap_is_global(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path / "j.db", clock=clock)
    results = [decide(j, as_alert(fingerprint=f"f{i}"), proposal(f"t{i}")) for i in range(4)]
    assert results == ["accepted", "accepted", "accepted", "rate_limited"]
    clock.now += 3601
    assert decide(j, as_alert(fingerprint="f9"), proposal("t9")) == "accepted"


def test_resolved_and_ignored_are_recorded_not_acted_on(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    assert decide(j, as_alert(status="resolved")) == "resolved"
    assert (
        j.decide(
            as_alert(fingerprint="x"),
            None,
            ignored="no rule",
            cooldown=1,
            max_per_hour=1,
            dry_run=False,
        ).result
        == "ignored"
    )
    assert j.rollbacks() == []
    assert [n["result"] for n in j.notifications()] == ["ignored", "resolved"]


def test_decisions_survive_reopening_and_unfinished_ones_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal(path)
    decide(j, as_alert(fingerprint="a"), proposal("t1"))
    decide(j, as_alert(fingerprint="b"), proposal("t2"))
    first = j.rollbacks()[-1]
    j.mark_started(first.id)
    j.set_plan(first.id, {"from": "v3", "to": "v2"})
    j.finish(first.id, "succeeded", "ok")
    j.close()
    again = Journal(path)
    assert [r.state for r in again.unfinished()] == [DECIDED]
    done = again.get(first.id)
    assert done is not None and done.state == DONE and done.plan == {"from": "v3", "to": "v2"}
    assert decide(again, as_alert(fingerprint="a")) == "duplicate"


def test_wal_mode_and_private_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "j.db"
    Journal(path).close()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_unreadable_journal_is_a_clear_error(tmp_path: Path) -> None:
    from agent.rollback.journal import JournalError

    bad = tmp_path / "j.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    # It opens, not ready: the problem names the file and the fix, and so does every call.
    j = Journal(bad)
    assert str(bad) in j.check() and "move the file aside" in j.check()
    try:
        j.rollbacks()
    except JournalError as exc:
        assert str(bad) in str(exc) and "corrupt" in str(exc)
    else:
        raise AssertionError("a corrupt journal must not be read")


def test_forgetting_specs_spares_listed_recent_and_other_namespaces(tmp_path: Path) -> None:
    clock = Clock()
    j = Journal(tmp_path / "j.db", clock=clock)
    for key in ("inferenceservice:a/kept", "inferenceservice:a/gone", "inferenceservice:ab/x"):
        assert j.record_spec(key, {"m": 1}, 1) == "recorded"
    clock.now += 10
    assert j.record_spec("inferenceservice:a/new", {"m": 1}, 1) == "recorded"
    # LIST of namespace "a" sent before "new" was recorded, listing only "kept".
    assert j.forget_specs("inferenceservice:a/", {"inferenceservice:a/kept"}, clock.now - 5) == 1
    assert not j.specs("inferenceservice:a/gone")
    for key in ("inferenceservice:a/kept", "inferenceservice:a/new", "inferenceservice:ab/x"):
        assert j.specs(key), key
    j.close()
