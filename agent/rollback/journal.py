"""The rollback journal: SQLite in WAL mode, the controller's memory and audit trail.

Three tables:

- ``notifications``: every alert of every webhook, re-sends and resolved ones included,
  with what the controller made of it (the audit trail);
- ``incidents``: one row per alert identity (fingerprint + startsAt); its primary key is
  what makes the controller idempotent however often Alertmanager re-sends;
- ``rollbacks``: one row per decision to act, written (and fsynced: ``synchronous=FULL``)
  *before* acting, then moved through ``decided → started → done``. On start the
  controller resumes every row that is not ``done``, so a crash neither loses a rollback
  nor, since each action checks its recorded plan, performs it twice.

``release_versions`` keeps the release directories' version history and health marks.
All access goes through one connection behind a lock; writes are short transactions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.rollback.payload import Alert

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    status TEXT NOT NULL,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    rollback_id INTEGER
);
CREATE TABLE IF NOT EXISTS incidents (
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    first_seen REAL NOT NULL,
    decision TEXT NOT NULL,
    rollback_id INTEGER,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE TABLE IF NOT EXISTS rollbacks (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    alertname TEXT NOT NULL,
    reason TEXT NOT NULL,
    target TEXT NOT NULL,
    target_name TEXT NOT NULL,
    action TEXT NOT NULL,
    params TEXT NOT NULL,
    labels TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    state TEXT NOT NULL,
    plan TEXT,
    result TEXT,
    detail TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    decided_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS rollbacks_target ON rollbacks (target, decided_at);
CREATE TABLE IF NOT EXISTS release_versions (
    dir TEXT NOT NULL,
    version TEXT NOT NULL,
    seq INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    healthy INTEGER NOT NULL DEFAULT 1,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dir, version)
);
"""

DECIDED, STARTED, DONE = "decided", "started", "done"


class JournalError(Exception):
    """The journal cannot be opened or written; the message says which file and why."""


@dataclass(frozen=True)
class Rollback:
    id: int
    fingerprint: str
    starts_at: str
    alertname: str
    reason: str
    target: str
    target_name: str
    action: str
    params: dict[str, Any]
    labels: dict[str, str]
    dry_run: bool
    state: str
    plan: dict[str, Any] | None
    result: str | None
    detail: str
    attempts: int
    decided_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Rollback:
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["labels"] = json.loads(d["labels"])
        d["plan"] = json.loads(d["plan"]) if d["plan"] else None
        d["dry_run"] = bool(d["dry_run"])
        return cls(**d)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Decision:
    result: str  # accepted, duplicate, resolved, ignored, cooldown, rate_limited
    detail: str = ""
    rollback_id: int | None = None


@dataclass(frozen=True)
class Proposal:
    """What the policy made of a firing alert, handed to :meth:`Journal.decide`."""

    target: str
    target_name: str
    action: str
    params: dict[str, Any]
    reason: str


class Journal:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if fresh:
                os.chmod(self.path, 0o600)  # labels and targets are operational detail
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a decision that was answered 2xx survives a power cut, not only a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args))

    # --- decisions -------------------------------------------------------------------------

    def decide(
        self,
        alert: Alert,
        proposal: Proposal | None,
        *,
        ignored: str = "",
        cooldown: float,
        max_per_hour: int,
        dry_run: bool,
    ) -> Decision:
        """Records one received alert and, in the same transaction, what to do about it."""
        now = self.clock()
        with self._tx() as db:
            decision = self._decide(
                db, alert, proposal, ignored, cooldown, max_per_hour, dry_run, now
            )
            db.execute(
                "INSERT INTO notifications (received_at, fingerprint, starts_at, status, alertname,"
                " labels, result, detail, rollback_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    now,
                    alert.fingerprint,
                    alert.starts_at,
                    alert.status,
                    alert.name,
                    json.dumps(alert.labels, sort_keys=True),
                    decision.result,
                    decision.detail,
                    decision.rollback_id,
                ),
            )
        return decision

    def _decide(
        self,
        db: sqlite3.Connection,
        alert: Alert,
        proposal: Proposal | None,
        ignored: str,
        cooldown: float,
        max_per_hour: int,
        dry_run: bool,
        now: float,
    ) -> Decision:
        if not alert.firing:
            return Decision("resolved", "recorded; resolved notifications are not acted on")
        seen = db.execute(
            "SELECT decision, rollback_id FROM incidents WHERE fingerprint=? AND starts_at=?",
            (alert.fingerprint, alert.starts_at),
        ).fetchone()
        if seen:
            return Decision("duplicate", f"already {seen['decision']}", seen["rollback_id"])

        def remember(result: str, detail: str, rollback_id: int | None = None) -> Decision:
            db.execute(
                "INSERT INTO incidents VALUES (?,?,?,?,?)",
                (alert.fingerprint, alert.starts_at, now, result, rollback_id),
            )
            return Decision(result, detail, rollback_id)

        if proposal is None:
            return remember("ignored", ignored)
        last = db.execute(
            "SELECT id, decided_at FROM rollbacks WHERE target=? AND decided_at>? "
            "ORDER BY decided_at DESC LIMIT 1",
            (proposal.target, now - cooldown),
        ).fetchone()
        if last:
            ago = now - last["decided_at"]
            return remember(
                "cooldown",
                f"{proposal.target} was rolled back {ago:.0f}s ago (rollback {last['id']}); "
                f"cooldown {cooldown:g}s",
            )
        (recent,) = db.execute(
            "SELECT COUNT(*) FROM rollbacks WHERE decided_at>?", (now - 3600,)
        ).fetchone()
        if recent >= max_per_hour:
            return remember(
                "rate_limited", f"{recent} rollbacks in the last hour (cap {max_per_hour})"
            )
        cur = db.execute(
            "INSERT INTO rollbacks (fingerprint, starts_at, alertname, reason, target, target_name,"
            " action, params, labels, dry_run, state, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                alert.fingerprint,
                alert.starts_at,
                alert.name,
                proposal.reason,
                proposal.target,
                proposal.target_name,
                proposal.action,
                json.dumps(proposal.params, sort_keys=True),
                json.dumps(alert.labels, sort_keys=True),
                int(dry_run),
                DECIDED,
                now,
            ),
        )
        assert cur.lastrowid is not None
        return remember("accepted", f"rollback {cur.lastrowid} of {proposal.target}", cur.lastrowid)

    # --- execution -------------------------------------------------------------------------

    def unfinished(self) -> list[Rollback]:
        rows = self._query("SELECT * FROM rollbacks WHERE state!=? ORDER BY id", (DONE,))
        return [Rollback.from_row(r) for r in rows]

    def get(self, rollback_id: int) -> Rollback | None:
        rows = self._query("SELECT * FROM rollbacks WHERE id=?", (rollback_id,))
        return Rollback.from_row(rows[0]) if rows else None

    def mark_started(self, rollback_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rollbacks SET state=?, started_at=?, attempts=attempts+1 WHERE id=?",
                (STARTED, self.clock(), rollback_id),
            )

    def set_plan(self, rollback_id: int, plan: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE rollbacks SET plan=? WHERE id=?", (json.dumps(plan), rollback_id))

    def finish(self, rollback_id: int, result: str, detail: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rollbacks SET state=?, result=?, detail=?, finished_at=? WHERE id=?",
                (DONE, result, detail, self.clock(), rollback_id),
            )

    def rollbacks(self, limit: int = 100) -> list[Rollback]:
        rows = self._query("SELECT * FROM rollbacks ORDER BY id DESC LIMIT ?", (limit,))
        return [Rollback.from_row(r) for r in rows]

    def notifications(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (limit,))
        return [{**dict(r), "labels": json.loads(r["labels"])} for r in rows]

    # --- release directory history ---------------------------------------------------------

    def versions(self, directory: str) -> list[dict[str, Any]]:
        """The known versions of a release directory, oldest first."""
        rows = self._query(
            "SELECT version, seq, first_seen, healthy, note FROM release_versions "
            "WHERE dir=? ORDER BY seq",
            (directory,),
        )
        return [dict(r) for r in rows]

    def add_versions(self, directory: str, names: list[str]) -> None:
        """Appends versions not seen before, in the given order, after the known ones."""
        with self._tx() as db:
            (top,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM release_versions WHERE dir=?", (directory,)
            ).fetchone()
            for name in names:
                cur = db.execute(
                    "INSERT OR IGNORE INTO release_versions (dir, version, seq, first_seen) "
                    "VALUES (?,?,?,?)",
                    (directory, name, top + 1, self.clock()),
                )
                top += cur.rowcount

    def mark_unhealthy(self, directory: str, version: str, note: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE release_versions SET healthy=0, note=? WHERE dir=? AND version=?",
                (note, directory, version),
            )
