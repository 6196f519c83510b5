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

``release_versions`` keeps the release directories' version history and health marks;
``object_specs`` the specs of the Kubernetes objects whose history the API server does not
keep (KServe InferenceServices), bounded per object and in number of objects (the rows of
an object gone from its namespace are dropped at the next successful LIST);
``object_rollbacks`` which object each rollback resolved to and changed, for the cooldown
per object (several pods' alerts resolve to one owner).
All access goes through one connection behind a lock; writes are short transactions.

Every failure is a :class:`JournalError` that names the file. A corrupt file (SQLite's
"database disk image is malformed", "file is not a database", found by a failing query or
by ``PRAGMA quick_check`` at open and at most every :data:`CHECK_EVERY_S` after) is
remembered in :attr:`Journal.problem` with the fix, which ``/readyz`` reports.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from agent.auth import ensure_private_dir
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
CREATE TABLE IF NOT EXISTS object_specs (
    object TEXT NOT NULL,
    seq INTEGER NOT NULL,
    digest TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    seen_at REAL NOT NULL,
    rolled_back INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (object, seq)
);
CREATE TABLE IF NOT EXISTS object_rollbacks (
    object TEXT NOT NULL,
    rollback_id INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (object, rollback_id)
);
"""

DECIDED, STARTED, DONE = "decided", "started", "done"
# /readyz re-reads every page at most this often: quick_check reads the whole file (a few
# ms for a journal of thousands of alerts), and corruption is found sooner by the queries.
CHECK_EVERY_S = 30.0
# Specs kept per object: a rollback goes back one good version; ten cover a day of
# deploys and rollbacks in the worst case, at a few KiB each.
SPECS_PER_OBJECT = 10
# Objects whose specs are kept at all: far above one namespace's models; what is refused
# past it is counted (vigil_rollback_history_refused_total). Deleted objects free their
# place (forget_specs, at the next successful LIST), so this bounds the live ones only.
MAX_SPEC_OBJECTS = 1000
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


class JournalError(Exception):
    """The journal cannot be opened or written; the message says which file and why."""


def corrupt_message(path: Path, detail: str) -> str:
    return (
        f"journal {path} is corrupt ({detail}): stop the controller, move the file aside "
        f"with its -wal and -shm files (mv {path} {path}.corrupt) and start it again. "
        "The new journal starts empty: its history is lost, and alerts that are still "
        "firing are decided again, so check what was rolled back first"
    )


def _is_corruption(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    return name.startswith(tuple(_CORRUPT)) or "malformed" in text or "not a database" in text


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
        # Set once the file is found corrupt: every later call fails with it, and
        # /readyz says it, until a person moves the file aside.
        self.problem = ""
        self._checked_at = float("-inf")
        try:
            ensure_private_dir(self.path.parent)  # 0700 when it makes it
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
        except sqlite3.Error as exc:
            if not _is_corruption(exc):
                raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
            # Keep running, not ready: the process answers /readyz and every webhook with
            # the file and the fix instead of exiting into a restart loop.
            self.problem = corrupt_message(self.path, str(exc))
        except OSError as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        self.check()

    def check(self) -> str:
        """The journal's problem ("" when none); re-reads every page at most every
        :data:`CHECK_EVERY_S` (``PRAGMA quick_check``)."""
        if self.problem or self.clock() - self._checked_at < CHECK_EVERY_S:
            return self.problem
        with self._lock:
            self._checked_at = self.clock()
            try:
                rows = [r[0] for r in self._db.execute("PRAGMA quick_check(3)")]
            except sqlite3.Error as exc:
                rows = [str(exc)]
            if rows != ["ok"]:
                self.problem = corrupt_message(self.path, "; ".join(rows))
        return self.problem

    def _error(self, exc: sqlite3.Error, doing: str) -> JournalError:
        """The error for a failed statement, naming the file; remembers corruption."""
        if _is_corruption(exc):
            self.problem = self.problem or corrupt_message(self.path, str(exc))
            return JournalError(self.problem)
        return JournalError(f"journal {self.path}: cannot {doing}: {exc}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self.problem:
                raise JournalError(self.problem)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise self._error(exc, "write") from None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            if self.problem:
                raise JournalError(self.problem)
            try:
                return list(self._db.execute(sql, args))
            except sqlite3.Error as exc:
                raise self._error(exc, "read") from None

    # --- decisions -------------------------------------------------------------------------

    def decide(
        self,
        alert: Alert,
        proposal: Proposal | None,
        *,
        ignored: str = "",
        ignored_result: str = "ignored",
        cooldown: float,
        max_per_hour: int,
        dry_run: bool,
    ) -> Decision:
        """Records one received alert and, in the same transaction, what to do about it;
        ``ignored_result`` (ignored, no_target, refused) says why there is no proposal."""
        now = self.clock()
        with self._tx() as db:
            decision = self._decide(
                db, alert, proposal, (ignored_result, ignored), cooldown, max_per_hour, dry_run, now
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
        ignored: tuple[str, str],
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
            return remember(*ignored)
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

    # --- Kubernetes object history ---------------------------------------------------------

    def record_spec(self, obj: str, spec: dict[str, Any], generation: int) -> str:
        """Keeps ``spec`` as the newest of ``obj`` unless it is the newest already.
        Returns "recorded", "unchanged" or "refused" (:data:`MAX_SPEC_OBJECTS` objects
        are known and this is not one of them)."""
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        digest = spec_digest(spec)
        with self._tx() as db:
            last = db.execute(
                "SELECT seq, digest FROM object_specs WHERE object=? ORDER BY seq DESC LIMIT 1",
                (obj,),
            ).fetchone()
            if last and last["digest"] == digest:
                return "unchanged"
            if last is None:
                (known,) = db.execute("SELECT COUNT(DISTINCT object) FROM object_specs").fetchone()
                if known >= MAX_SPEC_OBJECTS:
                    return "refused"
            seq = (last["seq"] if last else 0) + 1
            db.execute(
                "INSERT INTO object_specs (object, seq, digest, generation, spec, seen_at) "
                "VALUES (?,?,?,?,?,?)",
                (obj, seq, digest, int(generation), text, self.clock()),
            )
            # A digest rolled back from stays marked when it comes back, so that the
            # next rollback does not return to it.
            db.execute(
                "UPDATE object_specs SET rolled_back=1 WHERE object=? AND seq=? AND EXISTS "
                "(SELECT 1 FROM object_specs WHERE object=? AND digest=? AND rolled_back=1)",
                (obj, seq, obj, digest),
            )
            db.execute(
                "DELETE FROM object_specs WHERE object=? AND seq<=?",
                (obj, seq - SPECS_PER_OBJECT),
            )
        return "recorded"

    def forget_specs(self, prefix: str, keep: set[str], seen_before: float) -> int:
        """Drops the specs of every object whose key starts with ``prefix``, is not in
        ``keep`` and was last recorded before ``seen_before``; returns how many objects.
        The caller passes what a successful LIST of one namespace returned: an object gone
        from it was deleted (or opted out), and its rows would otherwise hold one of the
        :data:`MAX_SPEC_OBJECTS` places for good. ``seen_before`` (when the LIST was
        sent) spares an object a rollback's own read recorded after the LIST."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT object, MAX(seen_at) AS last FROM object_specs "
                "WHERE substr(object, 1, ?)=? GROUP BY object",
                (len(prefix), prefix),
            ).fetchall()
            gone = [
                r["object"] for r in rows if r["object"] not in keep and r["last"] < seen_before
            ]
            db.executemany("DELETE FROM object_specs WHERE object=?", [(o,) for o in gone])
        return len(gone)

    def specs(self, obj: str) -> list[dict[str, Any]]:
        """The recorded specs of ``obj``, oldest first."""
        rows = self._query(
            "SELECT seq, digest, generation, spec, seen_at, rolled_back FROM object_specs "
            "WHERE object=? ORDER BY seq",
            (obj,),
        )
        return [{**dict(r), "spec": json.loads(r["spec"])} for r in rows]

    def mark_rolled_back(self, obj: str, digest: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE object_specs SET rolled_back=1 WHERE object=? AND digest=?", (obj, digest)
            )

    def note_object_rollback(self, obj: str, rollback_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO object_rollbacks VALUES (?,?,?)",
                (obj, rollback_id, self.clock()),
            )

    def last_object_rollback(
        self, obj: str, since: float, other_than: int
    ) -> tuple[int, float] | None:
        """(rollback id, when) of the latest change of ``obj`` after ``since`` by another
        rollback than ``other_than``."""
        rows = self._query(
            "SELECT rollback_id, at FROM object_rollbacks WHERE object=? AND at>? "
            "AND rollback_id!=? ORDER BY at DESC LIMIT 1",
            (obj, since, other_than),
        )
        return (int(rows[0]["rollback_id"]), float(rows[0]["at"])) if rows else None


def spec_digest(spec: dict[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
