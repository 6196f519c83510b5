"""Categorical drift: chi-squared homogeneity of window counts against reference counts,
and the Jensen-Shannon distance between the two shares, for many features at once.

What it computes, per feature: the 2 x K contingency table (row 0 the reference's count of
each category, row 1 the window's; the last column counts window values the reference
never had, the ``__unseen__`` bucket) and ``scipy.stats.chi2_contingency(table)`` on it:
Pearson's statistic, its degrees of freedom and p-value, with Yates' continuity correction
when one degree of freedom is left, as scipy applies it.

Small counts: scipy's documentation quotes the guideline that the test is valid only
where every expected frequency is at least 5. Categories whose expected count falls below
5 in either row are therefore pooled into one cell before the test (a rare category of
the reference, a handful of unseen values), which keeps the chi-squared approximation
honest without dropping their mass; with the pooling off (``min_expected=0``) the result
is chi2_contingency's on the raw table. Columns empty in both rows carry no information
and are left out, as chi2_contingency requires.

Why it is fast: every feature's table is a row of one padded (features x K) matrix, so a
check is a handful of numpy operations over the whole matrix, with no loop per feature.
p-values come from ``scipy.special.chdtrc``, the function behind ``chi2.sf``, imported on
first use (scipy.stats itself would map all of scipy into the agent).

Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The guideline scipy's chi2_contingency documentation quotes: every expected frequency
# at least 5, or the chi-squared approximation of the statistic's distribution is poor.
MIN_EXPECTED = 5.0
# Categories reported per feature as "moved most": enough for an alert line to say where
# the mass went, few enough to read.
TOP_MOVED = 3


@dataclass(frozen=True)
class Chi2Result:
    """Per feature: the statistic, p-value and degrees of freedom of the test, the
    Jensen-Shannon distance between reference and window shares, and how many
    categories were pooled for having too few expected counts."""

    statistic: np.ndarray
    pvalue: np.ndarray
    dof: np.ndarray
    js_distance: np.ndarray
    pooled: np.ndarray


def chi2_homogeneity(
    ref: np.ndarray, win: np.ndarray, min_expected: float = MIN_EXPECTED
) -> Chi2Result:
    """Tests each row pair of ``ref`` and ``win`` (features x categories counts).

    Zero-padded columns are fine: a column empty in both rows is left out of the test.
    Every feature needs a non-empty reference and window.
    """
    ref = np.asarray(ref, dtype=np.float64)
    win = np.asarray(win, dtype=np.float64)
    if ref.shape != win.shape or ref.ndim != 2:
        raise ValueError(f"counts must be two equal 2-D arrays, got {ref.shape} and {win.shape}")
    if (ref < 0).any() or (win < 0).any():
        raise ValueError("counts must not be negative")
    n, m = ref.sum(axis=1), win.sum(axis=1)
    if (n <= 0).any() or (m <= 0).any():
        raise ValueError("every feature needs at least one reference and one window value")
    js = js_distance(ref, win)
    tot = ref + win
    total = n + m
    # Expected count of a column in the smaller row: min(n, m) * tot / total (scipy's
    # row total x column total / grand total). Compared multiplied out, no division.
    small = (tot > 0) & (np.minimum(n, m)[:, None] * tot < min_expected * total[:, None])
    pooled = small.sum(axis=1)
    obs_ref = np.concatenate([np.where(small, 0.0, ref), (ref * small).sum(1)[:, None]], axis=1)
    obs_win = np.concatenate([np.where(small, 0.0, win), (win * small).sum(1)[:, None]], axis=1)
    col = obs_ref + obs_win
    used = col > 0
    dof = used.sum(axis=1) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        exp_ref = n[:, None] * col / total[:, None]
        exp_win = m[:, None] * col / total[:, None]
    yates = (dof == 1)[:, None]
    obs_ref = np.where(yates, _yates(obs_ref, exp_ref), obs_ref)
    obs_win = np.where(yates, _yates(obs_win, exp_win), obs_win)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms_ref = np.where(used, (obs_ref - exp_ref) ** 2 / exp_ref, 0.0)
        terms_win = np.where(used, (obs_win - exp_win) ** 2 / exp_win, 0.0)
    stat = terms_ref.sum(axis=1) + terms_win.sum(axis=1)
    stat[dof == 0] = 0.0  # one category in all: nothing can differ (scipy: chi2 0, p 1)
    pvalue = np.ones_like(stat)
    live = dof > 0
    if live.any():
        from scipy.special import chdtrc  # see the module docstring

        pvalue[live] = chdtrc(dof[live].astype(np.float64), stat[live])
    return Chi2Result(stat, pvalue, dof, js, pooled)


def _yates(obs: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Each count moved by at most 0.5 towards its expected value (scipy's form)."""
    diff = np.where(np.isfinite(exp), exp - obs, 0.0)
    return obs + np.minimum(0.5, np.abs(diff)) * np.sign(diff)


def js_distance(ref: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) between each row's shares, as
    ``scipy.spatial.distance.jensenshannon(ref_row, win_row, base=2)``."""
    p = ref / ref.sum(axis=1, keepdims=True)
    q = win / win.sum(axis=1, keepdims=True)
    mid = (p + q) / 2.0
    div = (_rel_entr(p, mid).sum(axis=1) + _rel_entr(q, mid).sum(axis=1)) / 2.0
    # Rounding can leave a hair below zero where the shares are equal.
    return np.sqrt(np.maximum(div / np.log(2.0), 0.0))


def _rel_entr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(x / y), 0.0)


def counts(codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(features x K+1) counts of a (rows x features) matrix of category codes.

    Feature j's codes are 0 .. sizes[j]-1 for its reference categories; any other code
    (by convention -1) is a value the reference never had and counts in the last column,
    the ``__unseen__`` bucket. One bincount over the whole matrix: no loop per feature.
    """
    f = codes.shape[1]
    width = int(sizes.max(initial=0)) + 1
    c = codes.astype(np.int64)
    c = np.where((c < 0) | (c >= sizes[None, :]), width - 1, c)
    c += (np.arange(f, dtype=np.int64) * width)[None, :]
    return np.bincount(c.ravel(), minlength=f * width).reshape(f, width)


def top_moved(ref: np.ndarray, win: np.ndarray, k: int = TOP_MOVED) -> np.ndarray:
    """Indices (features x k) of the categories whose share moved most, largest first."""
    p = ref / ref.sum(axis=1, keepdims=True)
    q = win / win.sum(axis=1, keepdims=True)
    k = min(k, ref.shape[1])
    return np.argsort(-np.abs(q - p), axis=1, kind="stable")[:, :k]
