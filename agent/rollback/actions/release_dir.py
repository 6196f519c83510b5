"""Release directory: switch the ``current`` symlink back to the previous healthy version.

The directory holds one subdirectory per model version and ``current``, a relative
symlink to the live one (``current -> v3``)::

    /srv/models/demo/{v1,v2,v3}  current -> v3

The order of versions is a history the controller keeps in its journal: a version is
appended when first seen, and versions first seen together are ordered by modification
time (then name), so copying a new version in is all a deployment has to do. Rolling back
marks the version rolled back from unhealthy (it is never chosen again) and points
``current`` at the newest healthy version before it. The switch is atomic: a new symlink
is made beside ``current`` and renamed over it (``rename(2)``), so a reader sees either
the old or the new version, never a missing link.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent.atomic import fsync_dir
from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError, Outcome
from agent.rollback.journal import Journal

CURRENT = "current"


def list_versions(directory: Path) -> list[tuple[float, str]]:
    """(mtime, name) of each version subdirectory; dot-names and ``current`` are not versions."""
    out = []
    for entry in os.scandir(directory):
        if entry.name == CURRENT or entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            out.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    return sorted(out)


def read_current(directory: Path) -> str:
    link = directory / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        raise ActionError(f"{link} does not exist; create it: ln -s VERSION {link}") from None
    except OSError as exc:
        raise ActionError(f"{link} is not a symlink ({exc.strerror})") from None
    name = Path(target)
    if name.is_absolute():
        if name.parent != directory.resolve() and name.parent != directory:
            raise ActionError(f"{link} points outside {directory}: {target}")
        name = Path(name.name)
    if len(name.parts) != 1 or name.name in ("", ".", ".."):
        raise ActionError(f"{link} -> {target} is not a version of {directory}")
    return name.name


def switch_current(directory: Path, version: str) -> None:
    """Points ``current`` at ``version`` atomically, and makes the rename durable."""
    tmp = directory / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)
    os.replace(tmp, directory / CURRENT)
    fsync_dir(directory)


def previous_healthy(history: list[dict[str, Any]], current: str, present: set[str]) -> str | None:
    """The newest healthy version older than ``current`` that still exists, or None."""
    names = [h["version"] for h in history]
    if current not in names:
        return None
    healthy = {h["version"] for h in history if h["healthy"]}
    for name in reversed(names[: names.index(current)]):
        if name in healthy and name in present:
            return name
    return None


class ReleaseDirAction:
    kind = "release_dir"

    def __init__(
        self,
        path: str,
        journal: Journal,
        labels: dict[str, str],
        reason: str,
        version_label: str = "version",
    ) -> None:
        self.directory = Path(path)
        self.journal = journal
        self.labels = labels
        self.reason = reason
        self.version_label = version_label

    def _sync_history(self) -> tuple[list[dict[str, Any]], set[str]]:
        try:
            found = list_versions(self.directory)
        except OSError as exc:
            raise ActionError(f"cannot read release directory {self.directory}: {exc}") from None
        key = str(self.directory)
        self.journal.add_versions(key, [name for _, name in found])
        return self.journal.versions(key), {name for _, name in found}

    def plan(self) -> dict[str, Any]:
        history, present = self._sync_history()
        current = read_current(self.directory)
        about = self.labels.get(self.version_label) if self.version_label else None
        if about is not None and about != current:
            # The alert is about a version that is no longer live (already rolled back,
            # or replaced): acting would roll back a version nobody complained about.
            return {"from": current, "skip": f"alert is about version {about}, live is {current}"}
        target = previous_healthy(history, current, present)
        if target is None:
            raise ActionError(f"no healthy version before {current} in {self.directory}")
        return {"from": current, "to": target}

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        if "skip" in plan:
            return Outcome(SKIPPED, plan["skip"])
        old, new = plan["from"], plan["to"]
        current = read_current(self.directory)
        key = str(self.directory)
        if current == new:
            self.journal.mark_unhealthy(key, old, f"rolled back: {self.reason}")
            return Outcome(SUCCEEDED, f"current already -> {new} (switched before a restart)")
        if current != old:
            return Outcome(SKIPPED, f"current moved to {current} since the decision (from {old})")
        if not (self.directory / new).is_dir():
            raise ActionError(f"version {new} has disappeared from {self.directory}")
        if dry_run:
            return Outcome(DRY_RUN, f"would switch {self.directory / CURRENT}: {old} -> {new}")
        # Marked first: if the switch fails, the bad version is still known as bad.
        self.journal.mark_unhealthy(key, old, f"rolled back: {self.reason}")
        try:
            switch_current(self.directory, new)
        except OSError as exc:
            raise ActionError(f"cannot switch {self.directory / CURRENT} to {new}: {exc}") from None
        return Outcome(SUCCEEDED, f"{self.directory / CURRENT}: {old} -> {new}")
