"""Command: run a configured argv, never through a shell, with the alert as environment.

The alert's labels arrive as ``VIGIL_LABEL_<NAME>`` (upper-cased), with
``VIGIL_ROLLBACK_ID``, ``VIGIL_ROLLBACK_TARGET``, ``VIGIL_ROLLBACK_REASON``,
``VIGIL_ALERT_FINGERPRINT`` and ``VIGIL_ALERT_STARTS_AT``; only ``PATH`` and ``LANG``
are passed through from the controller's own environment, so no secret of the controller
leaks into the hook. Exit status 0 is success. A command cannot say whether an earlier,
interrupted run took effect: after a crash in the middle of one it runs again with the
same ``VIGIL_ROLLBACK_ID``, so a command should make that id idempotent.

A label that cannot become an environment variable (a name with ``=`` or anything but
letters, digits and ``_``; a NUL byte in a value) is refused with a message naming it,
before anything runs: the controller checks when the alert arrives, and again here.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from agent.rollback.actions.base import DRY_RUN, FAILED, SUCCEEDED, ActionError, Outcome, Refused

# The journal keeps this much of the command's output: enough for an error message.
OUTPUT_TAIL = 2000
PASSED_THROUGH = ("PATH", "LANG")
# POSIX portable environment names; anything else (an "=" above all) cannot be passed.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name_problem(name: str) -> str:
    """Why ``name`` cannot be an environment variable's name ("" when it can)."""
    if _ENV_NAME.fullmatch(name):
        return ""
    return f"{name!r} cannot be an environment variable name (letters, digits and _ only)"


def label_env_problem(labels: Mapping[str, str], extra: Mapping[str, str]) -> str:
    """Why the alert cannot be handed to a command as its environment ("" when it can)."""
    for name, value in labels.items():
        if not _ENV_NAME.fullmatch(name):
            return (
                f"label {name!r} cannot be passed as VIGIL_LABEL_<NAME>: "
                "a label name for a command must be letters, digits and _ only"
            )
        if "\0" in value:
            return f"label {name!r} has a NUL byte in its value, which no environment can hold"
    for name, value in extra.items():
        if "\0" in value or "\0" in name:
            return f"{name} would hold a NUL byte, which no environment can hold"
    return ""


def command_env(
    labels: dict[str, str], extra: dict[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    source: Mapping[str, str] = os.environ if base is None else base
    env = {k: source[k] for k in PASSED_THROUGH if k in source}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({f"VIGIL_LABEL_{k.upper()}": v for k, v in labels.items()})
    env.update(extra)
    return env


class CommandAction:
    kind = "command"

    def __init__(
        self,
        argv: list[str],
        labels: dict[str, str],
        extra_env: dict[str, str],
        timeout: float,
        runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    ) -> None:
        problem = label_env_problem(labels, extra_env)
        if problem:
            raise Refused(problem)
        self.argv = argv
        self.env = command_env(labels, extra_env)
        self.timeout = timeout
        self.runner = runner

    def plan(self) -> dict[str, Any]:
        return {"argv": self.argv}

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        if dry_run:
            return Outcome(DRY_RUN, f"would run {self.argv}")
        try:
            proc = self.runner(
                self.argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ActionError(f"{self.argv[0]} did not finish within {self.timeout:g}s") from None
        except OSError as exc:
            raise ActionError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        output = ((proc.stdout or "") + (proc.stderr or "")).strip()[-OUTPUT_TAIL:]
        if proc.returncode != 0:
            return Outcome(FAILED, f"{self.argv[0]} exited with {proc.returncode}: {output}")
        return Outcome(SUCCEEDED, output or f"{self.argv[0]} exited with 0")
