"""Categorical drift math against scipy: chi-squared homogeneity (chi2_contingency),
the small-count pooling, the Jensen-Shannon distance and the count table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from agent.collectors.drift.chi2 import (
    MIN_EXPECTED,
    chi2_homogeneity,
    counts,
    js_distance,
    top_moved,
)

TOL = 1e-9


def scipy_table(ref: np.ndarray, win: np.ndarray) -> tuple[float, float, int]:
    """chi2_contingency on the 2 x K table without its empty columns (scipy refuses a
    zero expected frequency); one column left means nothing can differ."""
    table = np.vstack([ref, win]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0
    res = chi2_contingency(table)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def pooled_by_hand(ref: np.ndarray, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The guideline scipy's documentation quotes, applied one category at a time: every
    category whose expected count is below 5 in either row goes into one pooled cell."""
    n, m = ref.sum(), win.sum()
    keep_r, keep_w, pool_r, pool_w = [], [], 0, 0
    for r, w in zip(ref, win, strict=True):
        expected_small = min(n, m) * (r + w) / (n + m)
        if r + w > 0 and expected_small < MIN_EXPECTED:
            pool_r, pool_w = pool_r + r, pool_w + w
        else:
            keep_r.append(r)
            keep_w.append(w)
    return np.array([*keep_r, pool_r]), np.array([*keep_w, pool_w])


def test_agrees_with_chi2_contingency_on_random_tables_with_ties_and_zeros() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        k = int(rng.integers(1, 12))
        ref = rng.integers(0, 60, size=k)
        win = rng.integers(0, 60, size=k)
        ref[rng.random(k) < 0.2] = 0  # categories one side lacks
        ref[0] += 1
        win[-1] += 1
        got = chi2_homogeneity(ref[None], win[None], min_expected=0)
        stat, p, dof = scipy_table(ref, win)
        assert got.dof[0] == dof
        assert got.statistic[0] == pytest.approx(stat, rel=TOL, abs=TOL)
        assert got.pvalue[0] == pytest.approx(p, rel=TOL, abs=TOL)


def test_yates_correction_on_one_degree_of_freedom_as_scipy() -> None:
    # Two categories: dof 1, where chi2_contingency moves each count by up to 0.5.
    for ref, win in [([30, 10], [20, 25]), ([5, 5], [5, 5]), ([100, 1], [99, 3])]:
        r, w = np.array(ref), np.array(win)
        got = chi2_homogeneity(r[None], w[None], min_expected=0)
        stat, p, dof = scipy_table(r, w)
        assert dof == 1
        assert got.statistic[0] == pytest.approx(stat, rel=TOL, abs=TOL)
        assert got.pvalue[0] == pytest.approx(p, rel=TOL, abs=TOL)


def test_unseen_bucket_is_a_column_of_its_own() -> None:
    # The reference never saw the last column; the window put 40 values there.
    ref = np.array([[500, 300, 200, 0]])
    win = np.array([[200, 150, 110, 40]])
    got = chi2_homogeneity(ref, win, min_expected=0)
    stat, p, dof = scipy_table(ref[0], win[0])
    assert dof == 3
    assert got.statistic[0] == pytest.approx(stat, rel=TOL)
    assert got.pvalue[0] == pytest.approx(p, rel=TOL, abs=TOL)
    assert got.pvalue[0] < 1e-10  # 40 values of a new category are drift


def test_rare_categories_are_pooled_and_match_scipy_on_the_pooled_table() -> None:
    rng = np.random.default_rng(11)
    pooled_any = 0
    for _ in range(200):
        k = int(rng.integers(2, 30))
        shares = rng.dirichlet(np.full(k, 0.3))  # a few frequent, many rare categories
        ref = rng.multinomial(int(rng.integers(50, 2000)), shares)
        win = rng.multinomial(int(rng.integers(20, 500)), shares)
        got = chi2_homogeneity(ref[None], win[None])
        pr, pw = pooled_by_hand(ref, win)
        stat, p, dof = scipy_table(pr, pw)
        assert got.dof[0] == dof
        assert got.statistic[0] == pytest.approx(stat, rel=TOL, abs=TOL)
        assert got.pvalue[0] == pytest.approx(p, rel=TOL, abs=TOL)
        pooled_any += int(got.pooled[0] > 0)
    assert pooled_any > 100  # the case under test did occur


def test_many_features_at_once_with_padding_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(2, 9, size=40)
    width = int(sizes.max()) + 1
    ref = np.zeros((40, width), dtype=np.int64)
    win = np.zeros((40, width), dtype=np.int64)
    for j, k in enumerate(sizes):
        ref[j, :k] = rng.integers(1, 80, size=k)
        win[j, :k] = rng.integers(0, 80, size=k)
        win[j, -1] = rng.integers(0, 5)  # unseen
    together = chi2_homogeneity(ref, win)
    for j in range(40):
        alone = chi2_homogeneity(ref[j : j + 1, : sizes[j]].copy(), win[j : j + 1, : sizes[j]])
        if win[j, -1] == 0:
            assert together.statistic[j] == pytest.approx(alone.statistic[0], rel=TOL, abs=TOL)
            assert together.pvalue[j] == pytest.approx(alone.pvalue[0], rel=TOL, abs=TOL)


def test_one_category_in_all_is_no_evidence() -> None:
    got = chi2_homogeneity(np.array([[50, 0]]), np.array([[9, 0]]))
    assert (got.statistic[0], got.pvalue[0], got.dof[0]) == (0.0, 1.0, 0)


def test_bad_tables_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="equal 2-D"):
        chi2_homogeneity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="negative"):
        chi2_homogeneity(np.array([[1, -1]]), np.array([[1, 1]]))
    with pytest.raises(ValueError, match="at least one"):
        chi2_homogeneity(np.array([[0, 0]]), np.array([[1, 1]]))


def test_js_distance_as_scipy_base_2_and_in_unit_interval() -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 50, size=(50, 7)).astype(float)
    win = rng.integers(0, 50, size=(50, 7)).astype(float)
    ref[:, 0] += 1
    win[:, 1] += 1
    ref[3, 4:] = 0  # some categories absent on one side
    win[4, :3] = 0
    got = js_distance(ref, win)
    want = [jensenshannon(ref[i], win[i], base=2) for i in range(50)]
    assert got == pytest.approx(want, abs=TOL)
    same = js_distance(np.array([[3.0, 1.0]]), np.array([[6.0, 2.0]]))
    disjoint = js_distance(np.array([[3.0, 0.0]]), np.array([[0.0, 2.0]]))
    assert same[0] == pytest.approx(0.0, abs=1e-12) and disjoint[0] == pytest.approx(1.0)


def test_counts_put_unknown_codes_in_the_unseen_column() -> None:
    codes = np.array([[0, 1], [2, 0], [-1, 1], [1, 5], [0, 0]], dtype=float)
    c = counts(codes, np.array([3, 2]))
    # Feature 0 has 3 categories (0, 1, 2); feature 1 has 2 (0, 1); width 4, last unseen.
    assert c.tolist() == [[2, 1, 1, 1], [2, 2, 0, 1]]


def test_top_moved_names_the_largest_share_changes_first() -> None:
    ref = np.array([[50, 30, 20, 0]])
    win = np.array([[20, 30, 20, 30]])  # half of category 0's share went to unseen
    top = top_moved(ref, win, k=2)
    assert set(top[0].tolist()) == {0, 3}
