"""The stall detector: running requests without progress for stall-after → stalled."""

from __future__ import annotations

import pytest

from agent.collectors.inference.stall import Progress, step

AFTER = 60.0


def run(seq: list[tuple[float, float | None, float | None, float | None]]) -> list[bool | None]:
    prev: Progress | None = None
    out = []
    for now, running, finished, tokens in seq:
        prev, stalled = step(prev, now, running, finished, tokens, AFTER)
        out.append(stalled)
    return out


def test_running_without_progress_stalls_after_the_limit_and_not_before() -> None:
    assert run([(0, 2, 10, 100), (30, 2, 10, 100), (59.9, 2, 10, 100), (60, 2, 10, 100)]) == [
        False,
        False,
        False,
        True,
    ]


def test_a_finished_request_is_progress() -> None:
    assert run([(0, 1, 10, None), (59, 1, 11, None), (100, 1, 11, None), (119, 1, 11, None)]) == [
        False,
        False,
        False,
        True,
    ]


def test_a_generated_token_alone_is_progress() -> None:
    # Long generations finish no request for minutes but do make tokens.
    assert run([(0, 1, 5, 100), (50, 1, 5, 150), (100, 1, 5, 200), (150, 1, 5, 250)]) == [False] * 4


def test_idle_is_never_stalled_and_the_clock_restarts_when_work_arrives() -> None:
    assert run([(0, 0, 5, 100), (100, 0, 5, 100), (130, 3, 5, 100), (189, 3, 5, 100)]) == [
        False,
        False,
        False,
        False,
    ]
    assert run([(0, 0, 5, 100), (100, 0, 5, 100), (130, 3, 5, 100), (190, 3, 5, 100)])[-1]


def test_stall_clears_on_progress() -> None:
    assert run([(0, 1, 1, 1), (70, 1, 1, 1), (75, 1, 2, 1)]) == [False, True, False]


def test_a_server_restart_counter_drop_is_progress_not_a_stall() -> None:
    assert run([(0, 1, 500, 9000), (61, 1, 0, 0)]) == [False, False]


@pytest.mark.parametrize(
    ("running", "finished", "tokens"),
    [(None, 1, 1), (1, None, None), (None, None, None)],
)
def test_cannot_tell_without_running_or_any_progress_counter(
    running: float | None, finished: float | None, tokens: float | None
) -> None:
    assert run([(0, running, finished, tokens), (1000, running, finished, tokens)]) == [None, None]


def test_only_one_progress_counter_is_enough() -> None:
    assert run([(0, 1, None, 7), (61, 1, None, 7)]) == [False, True]
