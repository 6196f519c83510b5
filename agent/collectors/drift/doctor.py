"""`vigil doctor` checks for the drift collector: settings, references, state directory,
ingest token, tail file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.auth import TokenError, read_token_file
from agent.collectors.drift.monitor import DriftMonitor
from agent.collectors.drift.settings import DriftSettings
from agent.registry import Check, Paths

log = logging.getLogger("vigil.drift")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a parent this user may not enter
        return False


def ingest_check(paths: Paths) -> Check:
    """Where the API token comes from, and whether the agent can read (or make) it."""
    path = paths.token_file
    fix = f"--ingest-token-file FILE, or a writable --state-dir (the token goes to {path})"
    if path.exists():
        # The agent's own read: owner, mode and content are judged by the rule the API
        # applies, so doctor never calls "fine" a file the agent then refuses.
        try:
            read_token_file(path)
        except TokenError as exc:
            return Check("ingest", False, str(exc), fix)  # the message says how to repair it
        return Check("ingest", True, f"bearer token from {path}", fix)
    if paths.token_given:
        return Check("ingest", False, f"token file {path} does not exist", fix)
    parent = next((p for p in path.parents if _exists(p)), Path("/"))
    ok = parent.is_dir() and os.access(parent, os.W_OK)
    detail = (
        f"bearer token generated at {path} on first start (mode 0600)"
        if ok
        else f"cannot generate a token at {path}: {parent} is not writable"
    )
    return Check("ingest", ok, detail, fix)


def references_check(state: Path, settings: DriftSettings) -> Check:
    """Loads the references exactly as the agent would (checksums, max-references) and
    names every file it would refuse, with the command that repairs the first."""
    monitor = DriftMonitor(state, settings)
    level = log.level
    log.setLevel(logging.CRITICAL)  # the check's line says it all; no log line per file
    try:
        monitor.sync()
    except OSError as exc:
        return Check(
            "references",
            False,
            f"cannot read {monitor.store.refs}: {exc.strerror or exc}",
            f"check the permissions of {monitor.store.refs}",
        )
    finally:
        log.setLevel(level)
    where = monitor.store.refs
    loaded = len(monitor.tracked())
    if not monitor.refused:
        return Check("references", True, f"{loaded} loaded from {where}")
    refused = sorted(monitor.refused.values(), key=lambda e: str(e.path))
    first = refused[0]
    m, v = first.model, first.version
    names = ", ".join(str(e.path) for e in refused[:3]) + (" ..." if len(refused) > 3 else "")
    return Check(
        "references",
        False,
        f"{loaded} loaded from {where}; {len(refused)} refused, so drift of those model "
        f"versions cannot be detected: {names}. First: {first.message}",
        f"vigil drift reference set --model {m} --version {v} FILE (replace it), or "
        f"vigil drift reference delete --model {m} --version {v} (remove it)"
        + ("; or raise --collector.drift.max-references" if first.over_limit else ""),
    )


def doctor(settings: DriftSettings, paths: Paths) -> list[Check]:
    checks: list[Check] = []
    state = paths.state_dir
    checks.append(references_check(state, settings))
    parent = next((p for p in [state, *state.parents] if _exists(p)), Path("/"))
    writable = os.access(parent, os.W_OK)
    checks.append(
        Check(
            "state directory",
            writable,
            f"{state} {'is' if state.exists() else 'can be'} written"
            if writable
            else f"{parent} is not writable",
            f"--state-dir DIR (a writable directory), or chown {parent}",
        )
    )
    checks.append(ingest_check(paths))
    tail = settings.tail_file
    if tail:
        ok = os.access(tail, os.R_OK)
        checks.append(
            Check(
                "tail file",
                ok,
                tail + (" is readable" if ok else " is not readable"),
                f"check the path and permissions of {tail}",
            )
        )
    return checks
