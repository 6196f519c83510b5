"""The one interface every rollback action implements.

An action works in two steps so that a crash at any point is safe:

- ``plan()`` looks at the target and says what the rollback will do (``{"from": "v3",
  "to": "v2"}``); the controller stores the plan in the journal;
- ``apply(plan, dry_run)`` does it, and first checks where the target stands against the
  plan: already at ``to`` means a previous attempt did it before a restart (success,
  nothing done twice); neither ``from`` nor ``to`` means someone else changed the target
  since, and the action leaves it alone.

Expected failures (no earlier version, a paused Deployment, an API error) raise
:class:`ActionError` with a message for the journal; they never crash the controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

SUCCEEDED, SKIPPED, FAILED, DRY_RUN = "succeeded", "skipped", "failed", "dry_run"
# The target exists but was not handed over to the controller (a Deployment without the
# opt-in label, a namespace outside the allow-list): nothing was changed, on purpose.
REFUSED = "refused"


class ActionError(Exception):
    """The rollback cannot be done; the message says why, for the journal."""


class Refused(ActionError):
    """The target may not be acted on; the message says what would allow it."""


@dataclass(frozen=True)
class Outcome:
    result: str  # succeeded, skipped, failed, dry_run or refused
    detail: str


class Action(Protocol):
    kind: str

    def plan(self) -> dict[str, Any]: ...

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome: ...


def gpu_ids_of(labels: dict[str, str]) -> list[str]:
    """GPUs an alert names, for the span: its ``uuid`` label, else its ``gpu`` index."""
    for key in ("uuid", "gpu"):
        if labels.get(key):
            return [labels[key]]
    return []
