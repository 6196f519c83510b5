"""Stall detection from progress, not from the health code (pure).

vLLM's /health stays 200 while its engine is wedged, so "is it alive" is answered by
progress: a model with requests running whose finished-request and generated-token
counters have not moved for ``stall_after`` seconds is stalled. Any change of either
counter counts as progress (a decrease too: the server restarted, which is not a stall).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """What the detector remembers about one model between scrapes."""

    since: float  # when progress was last seen, or work arrived
    finished: float | None
    tokens: float | None
    running: float | None = None


def step(
    prev: Progress | None,
    now: float,
    running: float | None,
    finished: float | None,
    tokens: float | None,
    stall_after: float,
) -> tuple[Progress, bool | None]:
    """One scrape's numbers → the new memory and whether the model is stalled.

    Returns None for "cannot tell": the server exports no running count, or neither a
    finished nor a token counter. An idle model (nothing running) is never stalled, and
    the clock restarts when work arrives.
    """
    fresh = Progress(now, finished, tokens, running)
    if running is None or (finished is None and tokens is None):
        return fresh, None
    if (
        prev is None
        or running <= 0
        or prev.running is None
        or prev.running <= 0
        or finished != prev.finished
        or tokens != prev.tokens
    ):
        return fresh, False
    return Progress(prev.since, finished, tokens, running), now - prev.since >= stall_after
