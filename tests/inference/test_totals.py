"""Restart-safe counters and histograms over a server's own (pure), and the reason labels
a failed request gets."""

from __future__ import annotations

import http.client
import socket

import pytest

from agent.collectors.inference import totals
from agent.collectors.inference.kinds import Histogram
from agent.collectors.inference.probe import classify

INF = float("inf")


def run(raws: list[float]) -> list[float]:
    prev = None
    out = []
    for raw in raws:
        prev = totals.count(prev, raw)
        out.append(prev.value)
    return out


@pytest.mark.parametrize(
    ("raws", "want"),
    [
        ([5], [5]),  # starts at the server's value
        ([5, 5, 8], [5, 5, 8]),
        ([100, 130, 7, 9], [100, 130, 137, 139]),  # restart: 7 done since
        ([100, 0, 0, 3], [100, 100, 100, 103]),  # restart to zero
        ([10, 4, 2, 6], [10, 14, 16, 20]),  # two restarts in a row
        ([0.5, 1.25], [0.5, 1.25]),
    ],
)
def test_count(raws: list[float], want: list[float]) -> None:
    assert run(raws) == want


def h(b1: float, b2: float, inf: float, s: float) -> Histogram:
    return Histogram(((0.1, b1), (1.0, b2), (INF, inf)), s, inf)


def hrun(raws: list[Histogram]) -> Histogram:
    prev = None
    for raw in raws:
        prev = totals.histogram(prev, raw)
    assert prev is not None
    return prev.value


def test_histogram_adds_increases() -> None:
    assert hrun([h(1, 2, 3, 0.5), h(2, 4, 6, 1.5)]) == h(2, 4, 6, 1.5)


def test_histogram_after_a_restart_adds_the_new_values_to_every_bucket() -> None:
    assert hrun([h(1, 2, 3, 0.5), h(2, 4, 6, 1.5), h(1, 1, 2, 0.25)]) == h(3, 5, 8, 1.75)


def test_histogram_reset_seen_in_one_bucket_only_is_a_reset() -> None:
    # Count equal but a bucket went down: only a restart explains it.
    assert hrun([h(5, 5, 5, 1.0), h(0, 5, 5, 2.0)]) == h(5, 10, 10, 3.0)


def test_sum_and_count_only_histograms() -> None:
    a = Histogram((), 1.0, 10)
    b = Histogram((), 3.0, 20)
    c = Histogram((), 0.5, 2)
    assert hrun([a, b, c]) == Histogram((), 3.5, 22)


def test_a_new_bucket_layout_starts_over() -> None:
    other = Histogram(((0.5, 1), (INF, 2)), 0.7, 2)
    assert hrun([h(1, 2, 3, 0.5), other]) == other


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timeout"),
        (ConnectionRefusedError(), "refused"),
        (ConnectionResetError(), "reset"),
        (BrokenPipeError(), "reset"),
        (http.client.RemoteDisconnected(), "reset"),
        (http.client.IncompleteRead(b""), "reset"),
        (http.client.BadStatusLine("x"), "protocol"),
        (http.client.LineTooLong("header"), "protocol"),
        (socket.gaierror(), "unreachable"),
        (OSError(113, "No route to host"), "unreachable"),
        (OSError(101, "Network is unreachable"), "unreachable"),
        (OSError(5, "I/O error"), "error"),
        (ValueError(), "error"),
    ],
)
def test_classify(exc: BaseException, reason: str) -> None:
    assert classify(exc) == reason
