"""agent.loop: the one background-loop helper every periodic job of the agent runs on.

One step at a time is driven through ``run_once`` with a fake clock; the thread tests use
a real thread with an injected wait, and synchronise on events (generous timeouts, no
timing assertions).
"""

from __future__ import annotations

import itertools
import logging
import threading

import pytest

from agent.loop import ERROR_TEXT_MAX, Backoff, Loop

LONG = 3600.0  # an interval no test waits out: only a wake or a stop ends the wait
SETTLE = 5.0  # generous bound for another thread to get somewhere

_names = itertools.count()


def _name() -> str:
    # The rate limiter is process-wide and keyed by the loop's name: a fresh name per
    # test keeps one test's log line from suppressing another's.
    return f"test-loop-{next(_names)}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


log = logging.getLogger("vigil.test.loop")


# -- Backoff ---------------------------------------------------------------------------
def test_backoff_doubles_up_to_the_ceiling_and_resets() -> None:
    b = Backoff(1.0, 30.0)
    assert [b.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    b.reset()
    assert b.next() == 1.0
    assert b.current == 2.0


def test_backoff_with_another_factor() -> None:
    b = Backoff(0.5, 10.0, factor=3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.5, 4.5, 10.0, 10.0]


@pytest.mark.parametrize(("first", "ceiling", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_backoff_refuses_nonsense(first: float, ceiling: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(first, ceiling, factor)


# -- one step --------------------------------------------------------------------------
def test_step_delay_interval_or_the_steps_own() -> None:
    delays = iter([None, 0.25, -3.0])
    loop = Loop(_name(), lambda: next(delays), 2.0, logger=log)
    assert loop.run_once() == 2.0
    assert loop.run_once() == 0.25
    assert loop.run_once() == 0.0  # a negative delay is "at once", not an error
    assert (loop.steps, loop.errors) == (3, 0)


def test_fixed_rate_counts_the_interval_from_the_start_of_the_step() -> None:
    clock = FakeClock()
    took = iter([0.3, 1.7])

    def step() -> None:
        clock.now += next(took)

    loop = Loop(_name(), step, 1.0, logger=log, fixed_rate=True, clock=clock)
    assert loop.run_once() == pytest.approx(0.7)
    assert loop.run_once() == 0.0  # overran its interval: the next one at once


def test_without_fixed_rate_the_interval_follows_the_step() -> None:
    clock = FakeClock()

    def step() -> None:
        clock.now += 0.3

    assert Loop(_name(), step, 1.0, logger=log, clock=clock).run_once() == 1.0


def test_a_raising_step_is_counted_logged_with_the_owner_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = _name()
    errors = iter([ValueError("bad line"), ValueError("bad again"), KeyError("other cause")])

    def step() -> None:
        raise next(errors)

    loop = Loop(name, step, 2.0, logger=log, message="tail failed", fields={"path": "/var/log/x"})
    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert [loop.run_once() for _ in range(3)] == [2.0, 2.0, 2.0]
    assert loop.errors == 3 and loop.steps == 3
    assert loop.last_error == "KeyError: 'other cause'"
    records = [r for r in caplog.records if r.name == log.name]
    # The second ValueError within the minute is suppressed; another cause is not.
    assert [r.getMessage() for r in records] == ["tail failed", "tail failed"]
    first = records[0]
    assert first.levelno == logging.ERROR
    assert (first.loop, first.path, first.error) == (name, "/var/log/x", "ValueError: bad line")  # type: ignore[attr-defined]
    assert first.exc_info is not None  # unexpected: the traceback goes with it


def test_expected_failures_log_at_their_level_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def step() -> None:
        raise ConnectionError("x" * 10_000)

    loop = Loop(_name(), step, 2.0, logger=log, level=logging.WARNING, traceback=False)
    with caplog.at_level(logging.DEBUG, logger=log.name):
        loop.run_once()
    (record,) = [r for r in caplog.records if r.name == log.name]
    assert record.levelno == logging.WARNING and not record.exc_info
    # A huge error text (an API response body) is cut to a log line's worth.
    assert len(loop.last_error) == ERROR_TEXT_MAX
    assert record.error == loop.last_error  # type: ignore[attr-defined]


def test_backoff_after_failures_and_back_to_the_interval_after_a_success() -> None:
    outcomes = iter([1, 1, 1, 0, 1])

    def step() -> None:
        if next(outcomes):
            raise OSError("source down")

    loop = Loop(_name(), step, 10.0, logger=log, backoff=Backoff(1.0, 30.0))
    assert [loop.run_once() for _ in range(5)] == [1.0, 2.0, 4.0, 10.0, 1.0]


def test_base_exceptions_are_not_swallowed() -> None:
    def step() -> None:
        raise KeyboardInterrupt

    loop = Loop(_name(), step, 1.0, logger=log)
    with pytest.raises(KeyboardInterrupt):
        loop.run_once()


# -- the thread ------------------------------------------------------------------------
class Recorder:
    """A wait that records each delay asked for, then blocks on the loop's event (so only
    a wake or a stop ends it: nothing in these tests depends on time passing)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, event: threading.Event, timeout: float) -> object:
        self.delays.append(timeout)
        return event.wait(SETTLE * 4)


def test_the_thread_runs_a_step_then_waits_the_interval_until_woken() -> None:
    ran = threading.Semaphore(0)
    wait = Recorder()
    loop = Loop(_name(), ran.release, LONG, logger=log, wait=wait)
    loop.start()
    try:
        assert loop.running
        assert ran.acquire(timeout=SETTLE)  # the first step at once
        assert not ran.acquire(timeout=0.2)  # then it waits (the interval is an hour)
        loop.wake()
        assert ran.acquire(timeout=SETTLE)  # a wake runs the next step now
        assert wait.delays[:2] == [LONG, LONG]
    finally:
        assert loop.stop(timeout=SETTLE)
    assert not loop.running and loop.steps == 2


def test_wait_first_waits_one_interval_before_the_first_step() -> None:
    ran = threading.Semaphore(0)
    loop = Loop(_name(), ran.release, LONG, logger=log, wait_first=True)
    loop.start()
    try:
        assert not ran.acquire(timeout=0.2)
        loop.wake()
        assert ran.acquire(timeout=SETTLE)
    finally:
        assert loop.stop(timeout=SETTLE)


def test_a_raising_step_does_not_end_the_thread() -> None:
    ran = threading.Semaphore(0)
    calls = itertools.count()

    def step() -> None:
        ran.release()
        if next(calls) == 0:
            raise RuntimeError("first step fails")

    loop = Loop(_name(), step, LONG, logger=log)
    loop.start()
    try:
        assert ran.acquire(timeout=SETTLE)
        loop.wake()
        assert ran.acquire(timeout=SETTLE)  # still alive after the failure
        assert loop.errors == 1 and loop.running
    finally:
        assert loop.stop(timeout=SETTLE)


def test_stop_during_a_step_says_the_thread_is_still_running_then_ends_it() -> None:
    inside, release = threading.Event(), threading.Event()
    calls = itertools.count()

    def step() -> None:
        next(calls)
        inside.set()
        release.wait(SETTLE * 4)

    loop = Loop(_name(), step, 0.0, logger=log)
    loop.start()
    assert inside.wait(SETTLE)
    assert loop.stop(timeout=0.05) is False  # the step is not interrupted
    assert loop.running and loop.stopping
    release.set()
    assert loop.stop(timeout=SETTLE) is True
    assert loop.stop(timeout=SETTLE) is True  # again: harmless
    assert next(calls) == 1  # no step after the stop, though the interval is 0


def test_a_wake_during_a_step_is_not_lost() -> None:
    inside, release = threading.Event(), threading.Event()
    ran = threading.Semaphore(0)

    def step() -> None:
        ran.release()
        if not inside.is_set():
            inside.set()
            release.wait(SETTLE * 4)

    loop = Loop(_name(), step, LONG, logger=log)
    loop.start()
    try:
        assert inside.wait(SETTLE)
        loop.wake()  # while the first step runs
        release.set()
        assert ran.acquire(timeout=SETTLE)
        assert ran.acquire(timeout=SETTLE)  # the second step, without an hour's wait
    finally:
        assert loop.stop(timeout=SETTLE)


def test_stop_from_inside_a_step_ends_the_loop_after_it() -> None:
    result: list[bool] = []
    loop: Loop

    def step() -> None:
        result.append(loop.stop(timeout=SETTLE))  # must not join itself

    loop = Loop(_name(), step, 0.0, logger=log)
    loop.start()
    assert loop.stop(timeout=SETTLE)
    assert result == [False] and loop.steps == 1


def test_stop_before_start_and_start_twice() -> None:
    loop = Loop(_name(), lambda: None, 1.0, logger=log)
    assert loop.stop(timeout=0.0) is True and not loop.running
    loop = Loop(_name(), lambda: None, LONG, logger=log)
    loop.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            loop.start()
    finally:
        assert loop.stop(timeout=SETTLE)


def test_the_thread_is_a_named_daemon() -> None:
    seen: list[threading.Thread] = []
    loop = Loop("gpu-xid-test", lambda: seen.append(threading.current_thread()), LONG, logger=log)
    loop.start()
    try:
        for _ in range(int(SETTLE / 0.01)):
            if seen:
                break
            threading.Event().wait(0.01)
        assert seen and seen[0].name == "vigil-gpu-xid-test" and seen[0].daemon
    finally:
        assert loop.stop(timeout=SETTLE)
