"""The CPU budget and the backoff (pure, driven by a hand-moved clock)."""

from __future__ import annotations

import pytest

from agent.collectors.profile.schedule import CpuBudget, backoff_delay


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_delay(60, n) for n in range(8)] == [0, 60, 120, 240, 480, 960, 1920, 1920]


def test_budget_starts_full_and_refuses_while_in_debt() -> None:
    clock = Clock()
    b = CpuBudget(cores=0.1, burst_seconds=10, clock=clock)
    assert b.available() and b.wait() == 0.0
    b.charge(1.5)  # a window that cost 1.5 CPU-s against 1.0 in the bucket
    assert not b.available()
    assert b.wait() == pytest.approx(5.0, abs=0.01)  # 0.5 CPU-s of debt at 0.1 core
    clock.t += 4.9
    assert not b.available()
    clock.t += 0.2
    assert b.available()
    assert b.spent == 1.5


def test_budget_does_not_bank_more_than_one_burst() -> None:
    clock = Clock()
    b = CpuBudget(cores=0.5, burst_seconds=2, clock=clock)
    clock.t += 3600
    b.charge(1.0)
    b.charge(0.5)
    assert not b.available()  # an hour idle did not buy more than 1 CPU-s


def test_budget_long_run_average_is_bounded() -> None:
    clock = Clock()
    b = CpuBudget(cores=0.05, burst_seconds=10, clock=clock)
    start, spent = clock.t, 0.0
    for _ in range(1000):  # windows of 10 s costing 2 CPU-s each, started when allowed
        clock.t += b.wait()
        clock.t += 10
        b.charge(2.0)
        spent += 2.0
    assert spent / (clock.t - start) <= 0.05 * 1.01


def test_reservations_stop_free_slots_from_overdrawing_the_bucket() -> None:
    # Eight slots free, 0.5 CPU-s in the bucket, windows expected to cost 0.4 each: only
    # two may start before the first one ends, not eight.
    clock = Clock()
    b = CpuBudget(cores=0.05, burst_seconds=10, clock=clock)
    held = []
    while b.available() and len(held) < 8:
        held.append(b.reserve(0.4))
    assert len(held) == 2
    clock.t += 10  # both windows end, one cheaper than expected, one dearer
    b.charge(0.3, held[0])
    b.charge(0.6, held[1])
    assert b.spent == pytest.approx(0.9)
    assert b.tokens == pytest.approx(0.5 + 0.5 - 0.9)  # refill of 10 s at 0.05 core


def test_a_window_that_fails_gives_its_reservation_back() -> None:
    clock = Clock()
    b = CpuBudget(cores=0.05, burst_seconds=10, clock=clock)
    r = b.reserve(0.6)
    assert not b.available()
    b.charge(0.0, r)
    assert b.available() and b.spent == 0.0
