"""The two-sample Kolmogorov-Smirnov engine: one presorted reference, many live windows.

What it computes: for every feature at once, the statistic D and the p-value that
``scipy.stats.ks_2samp(reference, window)`` would give (two-sided), and optionally the
drift decision at a significance level with a multiple-testing correction.

Why it is fast: scipy sorts both samples and evaluates both empirical CDFs at all
``n + m`` points on every call. Here the reference is sorted once, when it is set; a
check sorts only the window (m values per feature) and finds each window value's rank in
the reference with a binary search, so D costs O(m log n) per feature instead of
O((n + m) log(n + m)). D is the same float, bit for bit: the candidates are the same
``count/n1 - count/n2`` differences scipy forms, and their maximum is attained at the
same pair of counts (see :func:`ks_statistics`).

p-values follow scipy's ``method="auto"``: the exact two-sample distribution when both
samples have at most 10,000 values (scipy's own routine, so agreement is exact), else the
asymptotic ``kstwo.sf(D, round(n·m/(n+m)))``. scipy evaluates that one value at a time in
Python (up to milliseconds each); here its cheap branches run vectorised (they are the same
closed forms, ``2·smirnov(n, D)``), and only the body of the distribution (p above ~0.025)
uses a vectorised Pelz-Good series, accurate to 1e-5 for n > 140. Where that 1e-5 could
move a p-value across a decision threshold, the p-value is recomputed exactly, so drift
decisions are always those scipy's p-values would give.

Pure numpy/scipy; no I/O. Cost per check: one sort of the window plus two binary searches
per feature; the exact small-sample path costs what scipy's costs (memoised per (n, m, D)).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from agent.collectors.drift.kstwo import kstwo_sf, kstwo_sf_exact

# scipy's ks_2samp(method="auto") goes exact when both sizes are at most this.
MAX_EXACT_N = 10_000
CORRECTIONS = ("bonferroni", "bh")
# Sketch of the reference used to bracket ranks: 1,024 values per feature bracket every
# window value's rank to within n/1,024 for the price of 2,048 searches in the window,
# far fewer than one search per window value. Below 4 sketches' worth of rows the
# reference is searched directly (the brackets would be too loose to save anything).
SKETCH_SIZE = 1024


class SampleError(ValueError):
    """Values that cannot be tested (wrong shape, not finite, empty); says which."""


@dataclass(frozen=True)
class KsResult:
    """One check of a window against a reference, all features at once."""

    feature_names: tuple[str, ...]
    statistic: np.ndarray  # D per feature, identical to ks_2samp's
    pvalue: np.ndarray  # per feature
    method: str  # "exact" or "asymp": what scipy's method="auto" would use
    n_reference: int
    n_window: int
    # Present when a significance level was given.
    drifted: np.ndarray | None = None
    alpha: float | None = None
    correction: str | None = None
    exact_recomputed: int = 0  # p-values recomputed exactly to settle a decision
    notes: tuple[str, ...] = ()  # scipy's fallbacks (exact → asymp), as scipy words them

    @property
    def detected(self) -> bool:
        return bool(self.drifted is not None and self.drifted.any())


@dataclass(frozen=True)
class KsStatistics:
    """:meth:`ReferenceSample.statistics`: per feature D, p-value and its error bound."""

    d: np.ndarray
    pvalue: np.ndarray
    error: np.ndarray  # p-values of the asymptotic series are exact to within this
    mode: str
    notes: tuple[str, ...]
    win_sorted: np.ndarray  # (features x m), each row sorted


def as_matrix(values: np.ndarray, n_features: int | None, what: str) -> np.ndarray:
    """Checks a (rows x features) sample: 2-D, non-empty, finite; returns float64."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and n_features == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise SampleError(f"{what} must be a 2-D array (rows x features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise SampleError(f"{what} has no rows")
    if n_features is not None and arr.shape[1] != n_features:
        raise SampleError(f"{what} has {arr.shape[1]} features, expected {n_features}")
    if not np.isfinite(arr).all():
        rows, cols = np.nonzero(~np.isfinite(arr))
        raise SampleError(
            f"{what} has a non-finite value (NaN or infinity) at row {rows[0]}, column {cols[0]}"
        )
    return arr


class ReferenceSample:
    """A reference sample (n rows x f features), sorted once per feature."""

    def __init__(self, values: np.ndarray, feature_names: Sequence[str]) -> None:
        names = tuple(str(f) for f in feature_names)
        if not names:
            raise SampleError("a reference needs at least one feature")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SampleError(f"duplicate feature names: {', '.join(dup)}")
        arr = as_matrix(values, len(names), "reference")
        # Features as rows, contiguous: each check walks one feature's values in order.
        self._sorted = np.ascontiguousarray(np.sort(arr.T, axis=1))
        self._step, self._sketch = make_sketch(self._sorted)
        self.feature_names = names

    @classmethod
    def from_sorted(
        cls, sorted_by_feature: np.ndarray, feature_names: Sequence[str]
    ) -> ReferenceSample:
        """Rebuilds from :attr:`sorted_values` (as stored), without sorting again."""
        arr = np.ascontiguousarray(sorted_by_feature, dtype=np.float64)
        self = cls.__new__(cls)
        names = tuple(feature_names)
        if arr.ndim != 2 or arr.shape[0] != len(names) or arr.shape[1] == 0:
            raise SampleError(f"stored reference has shape {arr.shape} for {len(names)} features")
        if not np.isfinite(arr).all() or (np.diff(arr, axis=1) < 0).any():
            raise SampleError("stored reference is not sorted finite values")
        self._sorted = arr
        self._step, self._sketch = make_sketch(arr)
        self.feature_names = names
        return self

    @property
    def sorted_values(self) -> np.ndarray:
        """(features x n) sorted values; what the store persists."""
        return self._sorted

    @property
    def n(self) -> int:
        return int(self._sorted.shape[1])

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def test(
        self,
        window: np.ndarray,
        alpha: float | None = None,
        correction: str = "bonferroni",
        method: str = "auto",
    ) -> KsResult:
        """KS-tests each feature of ``window`` (m x f) against the reference.

        With ``alpha``, also decides drift per feature (see :func:`decide`); p-values near a
        decision threshold are then computed exactly so that decisions match scipy's.
        """
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
        st = self.statistics(window, method)
        pvalue, error, d = st.pvalue, st.error, st.d
        n1, n2 = self.n, st.win_sorted.shape[1]
        mode, notes = st.mode, st.notes
        drifted = None
        recomputed = 0
        if alpha is not None:
            if not 0.0 < alpha < 1.0:
                raise ValueError(f"alpha must be in (0, 1), got {alpha}")
            recomputed = settle(pvalue, error, d, _effective_n(n1, n2), alpha, correction)
            drifted = decide(pvalue, alpha, correction)
        return KsResult(
            feature_names=self.feature_names,
            statistic=d,
            pvalue=pvalue,
            method=mode,
            n_reference=n1,
            n_window=n2,
            drifted=drifted,
            alpha=alpha,
            correction=correction if alpha is not None else None,
            exact_recomputed=recomputed,
            notes=tuple(notes),
        )

    def statistics(self, window: np.ndarray, method: str = "auto") -> KsStatistics:
        """D, p-values and their error bounds of each feature of ``window`` (m x f), no
        decision; the sorted window comes back for the effect sizes to reuse."""
        if method not in ("auto", "exact", "asymp"):
            raise ValueError(f"method must be auto, exact or asymp, not {method!r}")
        win = as_matrix(window, self.n_features, "window")
        # A C-ordered copy first: sorting rows of the transposed view in place would
        # stride across the whole window for every value (measured 1.4x slower).
        w_sorted = np.array(win.T, order="C")
        w_sorted.sort(axis=1)
        d = ks_statistics(self._sorted, w_sorted, self._step, self._sketch)
        pvalue, error, mode, d, notes = _pvalues(d, self.n, int(win.shape[0]), method)
        return KsStatistics(d, pvalue, error, mode, tuple(notes), w_sorted)


def make_sketch(ref_sorted: np.ndarray) -> tuple[int, np.ndarray | None]:
    """Every k-th reference value per feature, about SKETCH_SIZE of them (none if small)."""
    n1 = ref_sorted.shape[1]
    if n1 < 4 * SKETCH_SIZE:
        return 0, None
    k = n1 // SKETCH_SIZE
    return k, np.ascontiguousarray(ref_sorted[:, k - 1 :: k])


def ks_statistics(
    ref_sorted: np.ndarray, win_sorted: np.ndarray, step: int = 0, sketch: np.ndarray | None = None
) -> np.ndarray:
    """D per feature; both arguments are (features x size), each row sorted ascending.

    Between two window values F_win is flat and F_ref only grows, so F_ref - F_win peaks
    just below a window value (count of reference values < it, minus the window values
    before it) and F_win - F_ref peaks at a window value. Ties in the window only add
    dominated candidates; ties with the reference are why both ``left`` and ``right``
    ranks are needed. Each candidate is formed as scipy forms it (count/n1 - count/n2).

    With a sketch (every ``step``-th reference value), each window value's rank is first
    bracketed to within ``step`` (see :func:`_candidates`); only the window values whose
    bracket could hold the maximum are then ranked exactly.
    """
    f, n1 = ref_sorted.shape
    n2 = win_sorted.shape[1]
    before = np.arange(n2) / n2  # window CDF just below its j-th value (if untied)
    at = np.arange(1, n2 + 1) / n2  # window CDF at its j-th value (last of a tie group)
    out = np.empty(f)
    for j in range(f):
        ref, win = ref_sorted[j], win_sorted[j]
        if sketch is None:
            left, right = _ranks(ref, win, win)
            max_s = float(np.max(left / n1 - before))
            min_s = float(np.max(at - right / n1))
        else:
            lc, rc = _candidates(sketch[j], win, step, n1, n2)
            left, right = _ranks(ref, win[lc], win[rc])
            max_s = float(np.max(left / n1 - before[lc]))
            min_s = float(np.max(at[rc] - right / n1))
        min_s = min(max(min_s, 0.0), 1.0)
        out[j] = min_s if min_s > max_s else max_s
    return out


def _ranks(
    ref: np.ndarray, for_left: np.ndarray, for_right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """#ref < v for ``for_left``, #ref <= v for ``for_right``."""
    left = np.searchsorted(ref, for_left, side="left")
    # `right` differs from `left` only where a value equals a reference value; one
    # gather finds out whether any does, cheaper than a second binary search.
    if for_right is for_left and not (ref[np.minimum(left, ref.size - 1)] == for_left).any():
        return left, left
    return left, np.searchsorted(ref, for_right, side="right")


def _candidates(
    sk: np.ndarray, win: np.ndarray, k: int, n1: int, n2: int
) -> tuple[np.ndarray, np.ndarray]:
    """Window positions whose exact rank could give the maximum of each side.

    sk[i] = ref[(i+1)k - 1], so b = #(sk < w) brackets #(ref < w) in [bk, bk + k - 1]
    (likewise #(sk <= w) for #(ref <= w)). In integers, n1*n2*(F_ref - F_win) is
    rank*n2 - j*n1 exactly; a position is a candidate when its bracket reaches the best
    lower bound. b is found from the other side: sk[i] < w[j] exactly when
    #(w <= sk[i]) <= j, so b is constant on runs of the window that start where a sketch
    value lands, and all the work is per run (about 1,000), not per window value.
    """
    slack = k * n2  # bracket width (k - 1 ranks), scaled, rounded up
    # F_ref - F_win: on a run with constant b its lower bound falls as j grows, so the
    # run's best is its first position and its candidates are its first few.
    starts, ends, bs = _runs(np.searchsorted(win, sk, side="right"), n2)
    low = bs * (k * n2) - starts * n1
    last = np.minimum(ends - 1, (bs * (k * n2) + slack - low.max()) // n1)
    plus = _spans(starts, last)
    # F_win - F_ref: the bound rises along a run; its candidates are its last few.
    starts, ends, bs = _runs(np.searchsorted(win, sk, side="left"), n2)
    upper_rank = np.minimum(bs * k + (k - 1), n1) * n2
    low = ends * n1 - upper_rank  # at j = end - 1: (j + 1) * n1 - rank * n2
    first = np.maximum(starts, -((upper_rank + low.max() - slack) // -n1) - 1)
    minus = _spans(first, ends - 1)
    return plus, minus


def _runs(marks: np.ndarray, n2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of window positions with a constant count #{i: marks[i] <= j}: (start, end, count)."""
    # marks is sorted (a search of sorted values), so deduplication is a neighbour test
    # (np.unique would sort again: measured 4x slower here).
    starts = np.concatenate(([0], marks[marks < n2])).astype(np.int64)
    starts = starts[np.concatenate(([True], starts[1:] != starts[:-1]))]
    ends = np.append(starts[1:], n2)
    return starts, ends, np.searchsorted(marks, starts, side="right").astype(np.int64)


def _spans(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """All integers in [first[r], last[r]] for every r, concatenated."""
    count = np.maximum(last - first + 1, 0)
    offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return np.repeat(first, count) + offsets


def _effective_n(n1: int, n2: int) -> float:
    # As scipy: sorted floats, so the product cannot overflow, rounded half to even.
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.round(m * n / (m + n)))


def _pvalues(
    d: np.ndarray, n1: int, n2: int, method: str
) -> tuple[np.ndarray, np.ndarray, str, np.ndarray, list[str]]:
    """p-values as ks_2samp(method=...) gives them, plus each one's error bound."""
    notes: list[str] = []
    g = math.gcd(n1, n2)
    mode = method
    if mode == "auto":
        mode = "exact" if max(n1, n2) <= MAX_EXACT_N else "asymp"
    elif mode == "exact" and n1 // g >= np.iinfo(np.int32).max / (n2 // g):
        mode = "asymp"
        notes.append(
            f"Exact ks_2samp calculation not possible with samples sizes {n1} and {n2}. "
            "Switching to 'asymp'."
        )
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=3)
    d = d.copy()
    p = np.empty_like(d)
    error = np.zeros_like(d)
    en = _effective_n(n1, n2)
    if mode == "exact":
        fallback = np.zeros(d.shape, dtype=bool)
        for j, dj in enumerate(d):
            ok, d_exact, prob = _exact(n1, n2, g, float(dj))
            d[j] = d_exact
            if ok:
                p[j] = min(max(prob, 0.0), 1.0)
            else:
                fallback[j] = True
        if fallback.any():
            notes.append("ks_2samp: Exact calculation unsuccessful. Switching to method=asymp.")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=3)
            p[fallback], error[fallback] = kstwo_sf(d[fallback], en)
    else:
        p, error = kstwo_sf(d, en)
    return p, error, mode, d, notes


@lru_cache(maxsize=4096)
def _exact(n1: int, n2: int, g: int, d: float) -> tuple[bool, float, float]:
    """scipy's exact two-sample p-value; memoised, as windows repeat (n, m, D) often."""
    kernel = _exact_kernel()
    if kernel is not None:
        return _exact_two_sided(n1, n2, g, d, kernel)
    # Imported here: scipy.stats costs ~0.7 s to import, which every `vigil` command
    # would pay otherwise. The routine is private, so a scipy that moved it is an error.
    try:
        from scipy.stats._stats_py import _attempt_exact_2kssamp
    except ImportError:  # pragma: no cover - depends on the installed scipy
        _attempt_exact_2kssamp = None
    if _attempt_exact_2kssamp is not None:
        ok, d_exact, prob = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
        return bool(ok), float(d_exact), float(prob)
    # pragma: no cover - public route when the private helper moved: same numbers, slower
    raise RuntimeError("this scipy lacks the exact two-sample KS routine; use method='asymp'")


# The exact path without `import scipy.stats`: that import maps all of scipy (optimize,
# linalg, sparse, special...) into the agent for good, +64 MiB resident at the first drift
# check (bench/footprint: 146 -> 82 MiB). The one compiled routine scipy's exact path needs
# is its own extension module, loaded alone (+1 MiB); the few lines around it are
# scipy.stats._stats_py._attempt_exact_2kssamp's two-sided branch, so the numbers are the
# same (tests/drift compare them with scipy's). Where the file is not there, scipy.stats.
_PYTHRAN = "scipy.stats._stats_pythran"


@lru_cache(maxsize=1)
def _exact_kernel() -> Callable[[int, int, int, int], float] | None:
    """scipy's compiled ``_compute_outer_prob_inside_method``, or None where it is absent."""
    loaded = sys.modules.get(_PYTHRAN)
    if loaded is None:
        scipy = importlib.util.find_spec("scipy")  # finds, does not import
        if scipy is None or not scipy.submodule_search_locations:
            return None
        for where in scipy.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(where, "stats", "_stats_pythran" + suffix)
                if not os.path.exists(path):
                    continue
                spec = importlib.util.spec_from_file_location(_PYTHRAN, path)
                if spec is None or spec.loader is None:
                    continue
                try:
                    module = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(module)
                except ImportError:
                    return None
                sys.modules[_PYTHRAN] = module  # scipy.stats, if imported later, reuses it
                loaded = module
                break
            if loaded is not None:
                break
    kernel = getattr(loaded, "_compute_outer_prob_inside_method", None)
    return kernel if callable(kernel) else None


def _prob_outside_square(n: int, h: int) -> float:
    """Pr(D_{n,n} >= h/n), as scipy's ``_compute_prob_outside_square`` (Horner form)."""
    p = 0.0
    k = int(np.floor(n / h))
    while k >= 0:
        p1 = 1.0
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        p = p1 * (1.0 - p)
        k -= 1
    return 2 * p


def _exact_two_sided(
    n1: int, n2: int, g: int, d: float, kernel: Callable[[int, int, int, int], float]
) -> tuple[bool, float, float]:
    """scipy's ``_attempt_exact_2kssamp(n1, n2, g, d, "two-sided")``: (ok, d, p)."""
    lcm = (n1 // g) * n2
    h = int(np.round(d * lcm))
    d = h * 1.0 / lcm
    if h == 0:
        return True, d, 1.0
    try:
        with np.errstate(invalid="raise", over="raise"):
            prob = _prob_outside_square(n1, h) if n1 == n2 else kernel(n1, n2, g, h)
    except (FloatingPointError, OverflowError):
        return False, d, math.nan
    prob = float(prob)
    return (0 <= prob <= 1), d, prob


def thresholds(n_tests: int, alpha: float, correction: str) -> np.ndarray:
    """The p-value thresholds a correction compares against, ascending."""
    if correction == "bonferroni":
        return np.array([alpha / n_tests])
    if correction == "bh":
        return alpha * np.arange(1, n_tests + 1) / n_tests
    raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")


def decide(pvalue: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """Which features drifted: Bonferroni (p ≤ alpha/f) or Benjamini-Hochberg step-up."""
    p = np.asarray(pvalue, dtype=np.float64)
    t = thresholds(p.size, alpha, correction)
    if correction == "bonferroni":
        return p <= t[0]
    order = np.sort(p)
    passing = np.nonzero(order <= t)[0]
    if passing.size == 0:
        return np.zeros(p.shape, dtype=bool)
    return p <= order[passing[-1]]


def settle(
    p: np.ndarray, error: np.ndarray, d: np.ndarray, en: float, alpha: float, correction: str
) -> int:
    """Recomputes exactly (in place) the p-values whose error could change a decision.

    Decisions are monotone in every p-value (a lower p never un-rejects anything), so the
    decisions at p - error and at p + error bracket the true ones; where they agree, the
    true decisions are known without computing anything more.
    """
    recomputed = 0
    while True:
        low = decide(np.clip(p - error, 0.0, 1.0), alpha, correction)
        high = decide(np.clip(p + error, 0.0, 1.0), alpha, correction)
        differ = low & ~high
        if not differ.any():
            return recomputed
        todo = differ & (error > 0)
        if not todo.any():  # an exact p-value flips because of others' uncertainty
            todo = undecided(p, error, alpha, correction)
            if not todo.any():
                return recomputed
        p[todo] = kstwo_sf_exact(d[todo], en)
        error[todo] = 0.0
        recomputed += int(todo.sum())


def undecided(pvalue: np.ndarray, error: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """Features whose p ± error straddles a threshold: only these can flip a decision.

    BH rejects p_i ≤ t_k* with k* the largest k such that #{p ≤ t_k} ≥ k; once no
    interval contains any t_k, every count is fixed and so is every decision.
    """
    t = thresholds(pvalue.size, alpha, correction)
    lo, hi = pvalue - error, pvalue + error
    idx = np.searchsorted(t, lo, side="left")
    has = idx < t.size
    out = np.zeros(pvalue.shape, dtype=bool)
    out[has] = t[idx[has]] <= hi[has]
    return out & (error > 0)
