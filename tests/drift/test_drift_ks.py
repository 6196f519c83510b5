"""The KS engine against scipy.stats.ks_2samp: statistics, p-values and decisions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import distributions, ks_2samp

from agent.collectors.drift.ks import ReferenceSample, SampleError, decide, ks_statistics
from agent.collectors.drift.kstwo import kstwo_sf
from agent.collectors.drift.monitor import Window

# scipy (and the engine, which mirrors it) warn when an exact p-value falls back to asymp.
pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp:RuntimeWarning")


def scipy_ks(
    ref: np.ndarray, win: np.ndarray, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = [ks_2samp(ref[:, j], win[:, j], method=method) for j in range(ref.shape[1])]
    return np.array([r.statistic for r in res]), np.array([r.pvalue for r in res])


def names(f: int) -> list[str]:
    return [f"f{i}" for i in range(f)]


def within_tolerance(p: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.abs(p - expected) <= np.maximum(1e-3, 0.05 * expected)


@pytest.mark.parametrize(
    ("n", "m", "shift", "decimals"),
    [
        (500, 200, 0.0, None),  # small: exact distribution
        (3000, 3000, 0.1, None),  # equal sizes: scipy's square-lattice formula
        (9999, 4000, 0.05, None),
        (2000, 800, 0.0, 1),  # tie-heavy: one decimal, many equal values on both sides
        (2000, 800, 0.3, 0),  # extreme ties: a handful of distinct values
    ],
)
def test_small_samples_match_scipy_auto_to_1e9(
    n: int, m: int, shift: float, decimals: int | None
) -> None:
    rng = np.random.default_rng(n + m)
    ref = rng.normal(size=(n, 12))
    win = rng.normal(size=(m, 12)) + shift * rng.random(12)
    if decimals is not None:
        ref, win = np.round(ref, decimals), np.round(win, decimals)
    res = ReferenceSample(ref, names(12)).test(win)
    d, p = scipy_ks(ref, win)
    assert res.method == "exact"
    np.testing.assert_array_equal(res.statistic, d)  # bit for bit, ties included
    np.testing.assert_allclose(res.pvalue, p, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("n", "m", "shift", "decimals"),
    [(12000, 3000, 0.03, None), (15000, 500, 0.0, 2), (20001, 4000, 0.2, None)],
)
def test_large_samples_match_scipy_asymp(
    n: int, m: int, shift: float, decimals: int | None
) -> None:
    rng = np.random.default_rng(n)
    ref = rng.normal(size=(n, 30))
    win = rng.normal(size=(m, 30)) + shift * rng.random(30)
    if decimals is not None:
        ref, win = np.round(ref, decimals), np.round(win, decimals)
    res = ReferenceSample(ref, names(30)).test(win, alpha=0.05)
    d, p = scipy_ks(ref, win)  # auto is asymp here
    assert res.method == "asymp"
    np.testing.assert_array_equal(res.statistic, d)
    assert within_tolerance(res.pvalue, p).all(), np.abs(res.pvalue - p).max()
    assert res.drifted is not None
    np.testing.assert_array_equal(res.drifted, decide(p, 0.05, "bonferroni"))


def test_asymp_method_on_small_samples_within_tolerance() -> None:
    rng = np.random.default_rng(7)
    for n, m in [(60, 40), (400, 300), (2500, 1500), (5000, 5000)]:
        ref, win = rng.normal(size=(n, 20)), rng.normal(size=(m, 20)) + 0.1
        res = ReferenceSample(ref, names(20)).test(win, method="asymp")
        _, p = scipy_ks(ref, win, method="asymp")
        assert within_tolerance(res.pvalue, p).all(), (n, m)


def test_kstwo_sf_everywhere_within_its_error_bound() -> None:
    for n in [50, 141, 700, 1000, 4762, 9091, 40000]:
        d = np.unique(np.concatenate([np.geomspace(0.2 / n, 0.999, 120), [0.5, 1.0, 0.0]]))
        p, err = kstwo_sf(d, float(n))
        exact = distributions.kstwo.sf(d, n)
        assert (np.abs(p - exact) <= err + 1e-15).all(), n
        assert within_tolerance(p, exact).all(), n


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_decisions_identical_even_at_the_threshold(correction: str) -> None:
    """alpha set so that a threshold falls exactly on (or next to) a scipy p-value."""
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(12000, 25))
    win = rng.normal(size=(2000, 25)) + np.linspace(0, 0.12, 25)
    sample = ReferenceSample(ref, names(25))
    _, p = scipy_ks(ref, win)
    rank = np.argsort(p)
    checked = 0
    for j in range(25):
        for nudge in (1 - 1e-6, 1.0, 1 + 1e-6):
            k = int(np.nonzero(rank == j)[0][0]) + 1 if correction == "bh" else 1
            alpha = p[j] * 25 / k * nudge
            if not 1e-12 < alpha < 1:
                continue
            res = sample.test(win, alpha=alpha, correction=correction)
            assert res.drifted is not None
            np.testing.assert_array_equal(res.drifted, decide(p, alpha, correction))
            checked += 1
    assert checked > 30


def test_benjamini_hochberg_step_up() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # thresholds 0.005 k: the largest k with p_(k) <= 0.005 k is k = 2
    assert decide(p, 0.05, "bh").tolist() == [True, True] + [False] * 8
    assert decide(p, 0.05, "bonferroni").tolist() == [True] + [False] * 9


def test_bad_samples_are_refused_with_the_reason() -> None:
    with pytest.raises(SampleError, match="non-finite"):
        ReferenceSample(np.array([[1.0], [np.nan]]), ["a"])
    with pytest.raises(SampleError, match="duplicate"):
        ReferenceSample(np.ones((3, 2)), ["a", "a"])
    ref = ReferenceSample(np.ones((3, 2)), ["a", "b"])
    with pytest.raises(SampleError, match="3 features, expected 2"):
        ref.test(np.ones((3, 3)))
    with pytest.raises(SampleError, match="no rows"):
        ref.test(np.ones((0, 2)))


values = st.lists(st.integers(-6, 6).map(lambda v: v / 2), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, values, st.floats(0.01, 0.5))
def test_property_any_small_sample_matches_scipy(
    a: list[float], b: list[float], alpha: float
) -> None:
    ref, win = np.array(a)[:, None], np.array(b)[:, None]
    res = ReferenceSample(ref, ["x"]).test(win, alpha=alpha)
    r = ks_2samp(a, b)
    assert res.statistic[0] == r.statistic
    assert abs(res.pvalue[0] - r.pvalue) <= 1e-9
    assert res.drifted is not None and bool(res.drifted[0]) == bool(r.pvalue <= alpha)


@settings(max_examples=40, deadline=None)
@given(st.integers(10_001, 14_000), st.integers(50, 3000), st.integers(0, 10**6))
def test_property_asymp_statistic_exact_pvalue_close(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.round(rng.standard_t(3, size=(n, 2)), 2)
    win = np.round(rng.standard_t(3, size=(m, 2)) * 1.1, 2)
    res = ReferenceSample(ref, ["x", "y"]).test(win, alpha=0.05)
    d, p = scipy_ks(ref, win)
    np.testing.assert_array_equal(res.statistic, d)
    assert within_tolerance(res.pvalue, p).all()
    assert res.drifted is not None
    np.testing.assert_array_equal(res.drifted, decide(p, 0.05, "bonferroni"))


def test_false_positive_rate_over_200_windows_is_at_most_5_percent() -> None:
    """Unshifted live data through a sliding window: alpha 0.05, Bonferroni over 20 features."""
    rng = np.random.default_rng(2026)
    ref = ReferenceSample(rng.normal(size=(20_000, 20)), names(20))
    window = Window(20, 1000, 0.0, clock=lambda: 0.0)
    flagged = 0
    for _ in range(200):
        window.append(rng.normal(size=(1000, 20)))  # a fresh window's worth of samples
        rows, _ = window.snapshot()
        res = ref.test(rows, alpha=0.05, correction="bonferroni")
        flagged += res.detected
    assert flagged / 200 <= 0.05, flagged


def test_window_keeps_the_last_n_and_honours_max_age() -> None:
    now = [0.0]
    w = Window(1, 5, 10.0, clock=lambda: now[0])
    w.append(np.arange(3.0)[:, None])
    now[0] = 8.0
    w.append(np.arange(3.0, 7.0)[:, None])
    rows, _ = w.snapshot()
    assert sorted(rows[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    now[0] = 15.0  # the first batch is now 15 s old
    assert sorted(w.snapshot()[0][:, 0].tolist()) == [3.0, 4.0, 5.0, 6.0]
    assert len(w) == 4


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-8, 8), min_size=2, max_size=300),
    st.lists(st.integers(-8, 8), min_size=1, max_size=200),
    st.integers(1, 150),
)
def test_property_sketch_brackets_never_change_d(a: list[int], b: list[int], k: int) -> None:
    """The sketch path (ranks bracketed, then refined) equals the direct path bit for bit."""
    ref = np.sort(np.array(a, dtype=float) / 4)[None, :]
    win = np.sort(np.array(b, dtype=float) / 3)[None, :]
    k = min(k, ref.shape[1])
    sketch = np.ascontiguousarray(ref[:, k - 1 :: k])
    assert ks_statistics(ref, win, k, sketch)[0] == ks_statistics(ref, win)[0]
