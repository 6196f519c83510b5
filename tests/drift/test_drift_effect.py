"""Numeric effect sizes against scipy: the Wasserstein distance, quartiles, and the IQR
scaling with its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from agent.collectors.drift.effect import quantiles_sorted, reference_stats, wasserstein_sorted


def w1(ref: np.ndarray, win: np.ndarray) -> np.ndarray:
    return wasserstein_sorted(np.sort(ref, axis=1), np.sort(win, axis=1))


def iqr(x: np.ndarray) -> np.ndarray:
    q75, q25 = np.quantile(x, [0.75, 0.25], axis=1)
    return q75 - q25


@pytest.mark.parametrize(
    ("n", "m"), [(1, 1), (2, 7), (37, 100), (1000, 1000), (5000, 700), (100_000, 5000)]
)
def test_wasserstein_within_1e3_iqr_of_scipy_continuous_and_tied(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 31 + m)
    ref = rng.normal(size=(3, n))
    win = rng.normal(0.4, 1.7, size=(3, m))
    for r, w in ((ref, win), (np.round(ref), np.round(win)), (np.round(ref), win)):
        got = w1(r, w)
        want = np.array([wasserstein_distance(r[i], w[i]) for i in range(3)])
        scale = np.maximum(iqr(r), 1.0) if n > 3 else np.ones(3)
        # Tiny samples are step functions with few steps: the grid is exact up to where a
        # level falls on a step, 1/1024 of the jump.
        assert np.abs(got - want) / scale == pytest.approx(np.zeros(3), abs=1e-3 * 10 ** (n < 100))


def test_wasserstein_of_disjoint_and_identical_samples_is_exact() -> None:
    ref = np.arange(10.0)[None]
    assert w1(ref, ref)[0] == pytest.approx(0.0, abs=1e-12)
    assert w1(ref, ref + 100.0)[0] == pytest.approx(100.0)  # every unit travels 100


def test_large_offsets_keep_their_precision() -> None:
    # Differences of quantiles, never sums of values: values near 1e9 lose no digits.
    rng = np.random.default_rng(2)
    ref = 1e9 + rng.normal(size=(1, 4000))
    win = 1e9 + 0.5 + rng.normal(size=(1, 3000))
    assert w1(ref, win)[0] == pytest.approx(wasserstein_distance(ref[0], win[0]), abs=1e-3)


def test_quartiles_as_numpy_default() -> None:
    rng = np.random.default_rng(4)
    for n in (1, 2, 5, 100, 1001):
        v = np.sort(rng.normal(size=(4, n)), axis=1)
        assert quantiles_sorted(v) == pytest.approx(
            np.quantile(v, [0.25, 0.5, 0.75], axis=1).T, rel=1e-12, abs=1e-12
        )


def test_scale_is_the_iqr_else_mean_absolute_deviation_else_one() -> None:
    spread = np.sort(np.arange(101.0))[None]
    assert reference_stats(spread).scale[0] == pytest.approx(50.0)  # q75 75 - q25 25
    # 90 % zeros: IQR 0; the ten ones deviate by 1 from the median 0.
    mostly_zero = np.sort(np.r_[np.zeros(90), np.ones(10)])[None]
    assert reference_stats(mostly_zero).scale[0] == pytest.approx(0.1)
    constant = np.full((1, 50), 3.0)
    assert reference_stats(constant).scale[0] == 1.0
