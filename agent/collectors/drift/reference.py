"""A model version's reference, all feature kinds together, and the check of a window
against it: KS for numeric features, chi-squared homogeneity for categorical ones, one
multiple-testing correction over each role's p-values (inputs decide
``vigil_drift_detected``, outputs ``vigil_drift_output_detected``), effect sizes and the
explanation of every feature's shift.

The numeric part is the KS engine's presorted :class:`ReferenceSample`; the categorical
part is each feature's category counts. Both are derived from one (features x rows)
sorted matrix, the form the store keeps on disk (a categorical column holds sorted
codes), so a reference is one file whatever its kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.collectors.drift import chi2, effect
from agent.collectors.drift.ks import (
    CORRECTIONS,
    ReferenceSample,
    SampleError,
    as_matrix,
    decide,
    settle,
)
from agent.collectors.drift.ks import _effective_n as effective_n
from agent.collectors.drift.schema import CATEGORICAL, UNSEEN, Schema

KS, CHI2 = "ks", "chi2"


@dataclass(frozen=True)
class Shift:
    """How one feature moved. Numeric: reference and window quartiles (q25, median,
    q75). Categorical: the categories whose share moved most, with both shares."""

    reference_quartiles: tuple[float, float, float] | None = None
    window_quartiles: tuple[float, float, float] | None = None
    categories: tuple[tuple[str, float, float], ...] = ()  # (category, ref share, window share)
    unseen: int = 0  # window values in the __unseen__ bucket

    def describe(self) -> str:
        """One short phrase: which way and how far. Two significant digits: enough to act
        on, and the phrase (a label value of vigil_drift_explanation) stays the same from
        one check to the next while the shift does."""
        if self.reference_quartiles is not None and self.window_quartiles is not None:
            r, w = self.reference_quartiles, self.window_quartiles
            return f"median {w[1] - r[1]:+.2g} (q25 {w[0] - r[0]:+.2g}, q75 {w[2] - r[2]:+.2g})"
        parts = [f"{c} {100 * (ws - rs):+.0f} pp" for c, rs, ws in self.categories]
        return ", ".join(parts)


@dataclass(frozen=True)
class DriftResult:
    """One check of a window against a reference, all features at once.

    ``statistic`` is KS D for numeric features and Pearson's chi-squared for categorical
    ones (``tests`` says which); ``pvalue`` is uncorrected; ``effect`` is the Wasserstein
    distance over the reference IQR (numeric) or the Jensen-Shannon distance (categorical).
    """

    feature_names: tuple[str, ...]
    statistic: np.ndarray
    pvalue: np.ndarray
    method: str
    n_reference: int
    n_window: int
    tests: tuple[str, ...]
    schema: Schema
    effect: np.ndarray
    shifts: tuple[Shift, ...]
    drifted: np.ndarray | None = None
    alpha: float | None = None
    correction: str | None = None
    exact_recomputed: int = 0
    notes: tuple[str, ...] = ()

    def _any(self, outputs: bool) -> bool:
        if self.drifted is None:
            return False
        return any(
            bool(d) and self.schema.is_output(i) == outputs for i, d in enumerate(self.drifted)
        )

    @property
    def detected(self) -> bool:
        """Some input feature drifted."""
        return self._any(outputs=False)

    @property
    def output_detected(self) -> bool:
        """Some output feature drifted."""
        return self._any(outputs=True)

    def top(self, k: int = 3) -> list[int]:
        """Drifted features, at most k of each (role, kind), largest effect first within
        each, the groups in schema order of their first feature.

        Ranked only within a group: an input and an output answer different alerts, and
        a Wasserstein distance in IQRs (unbounded) and a Jensen-Shannon distance (0 to 1)
        are on different scales. Across kinds, the alert rules rank by each effect over
        its kind's large-drift threshold (alerts/thresholds.yml), where that number lives.
        """
        if self.drifted is None:
            return []
        groups: dict[tuple[str, str], list[int]] = {}
        for i in range(len(self.feature_names)):
            if self.drifted[i]:
                groups.setdefault((self.schema.roles[i], self.schema.kinds[i]), []).append(i)
        out: list[int] = []
        for idx in groups.values():
            out.extend(sorted(idx, key=lambda i: -float(self.effect[i]))[:k])
        return out


class Reference:
    def __init__(self, sorted_values: np.ndarray, schema: Schema) -> None:
        """From the (features x rows) matrix, each row sorted, as the store keeps it."""
        arr = np.ascontiguousarray(sorted_values, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(schema.names) or arr.shape[1] == 0:
            raise SampleError(f"reference has shape {arr.shape} for {len(schema.names)} features")
        self.schema = schema
        self._sorted = arr
        cat = np.array([k == CATEGORICAL for k in schema.kinds])
        self._num_idx = np.nonzero(~cat)[0]
        self._cat_idx = np.nonzero(cat)[0]
        self._all_numeric = not cat.any()  # the window needs no column selection (a copy)
        self.numeric: ReferenceSample | None = None
        self.numeric_stats: effect.NumericReferenceStats | None = None
        if self._num_idx.size:
            names = [schema.names[i] for i in self._num_idx]
            self.numeric = ReferenceSample.from_sorted(arr[self._num_idx], names)
            self.numeric_stats = effect.reference_stats(self.numeric.sorted_values)
        self._sizes = np.array(
            [len(schema.categories[schema.names[i]]) for i in self._cat_idx], dtype=np.int64
        )
        self.cat_counts = np.zeros((0, 1))
        if self._cat_idx.size:
            codes = arr[self._cat_idx]
            bad = (codes != np.round(codes)) | (codes < 0) | (codes >= self._sizes[:, None])
            if bad.any():
                raise SampleError("a categorical column holds codes outside its categories")
            self.cat_counts = chi2.counts(codes.T, self._sizes)

    @classmethod
    def from_rows(cls, values: np.ndarray, schema: Schema) -> Reference:
        """From a (rows x features) sample; sorts each feature once."""
        arr = as_matrix(values, len(schema.names), "reference")
        return cls(np.sort(arr.T, axis=1), schema)

    @classmethod
    def of(cls, sample: ReferenceSample | Reference) -> Reference:
        if isinstance(sample, Reference):
            return sample
        return cls(sample.sorted_values, Schema.numeric(sample.feature_names))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def sorted_values(self) -> np.ndarray:
        return self._sorted

    @property
    def n(self) -> int:
        return int(self._sorted.shape[1])

    @property
    def n_features(self) -> int:
        return len(self.schema.names)

    def test(
        self,
        window: np.ndarray,
        alpha: float | None = None,
        correction: str = "bonferroni",
        method: str = "auto",
    ) -> DriftResult:
        """Tests each feature of ``window`` (m x f, categorical columns as codes)."""
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}")
        win = as_matrix(window, self.n_features, "window")
        f = self.n_features
        stat, p, err, eff = np.zeros(f), np.ones(f), np.zeros(f), np.zeros(f)
        shifts: list[Shift] = [Shift()] * f
        mode = CHI2
        notes: tuple[str, ...] = ()
        if self.numeric is not None and self.numeric_stats is not None:
            num = win if self._all_numeric else win[:, self._num_idx]
            ks = self.numeric.statistics(num, method)
            stat[self._num_idx], p[self._num_idx], err[self._num_idx] = ks.d, ks.pvalue, ks.error
            mode, notes = ks.mode, tuple(ks.notes)
            st = self.numeric_stats
            w = effect.wasserstein_sorted(self.numeric.sorted_values, ks.win_sorted)
            eff[self._num_idx] = w / st.scale
            wq = effect.quantiles_sorted(ks.win_sorted)
            for k, i in enumerate(self._num_idx):
                shifts[i] = Shift(
                    tuple(float(x) for x in st.quartiles[k]),  # type: ignore[arg-type]
                    tuple(float(x) for x in wq[k]),  # type: ignore[arg-type]
                )
        if self._cat_idx.size:
            wc = chi2.counts(win[:, self._cat_idx], self._sizes)
            res = chi2.chi2_homogeneity(self.cat_counts, wc)
            stat[self._cat_idx], p[self._cat_idx] = res.statistic, res.pvalue
            eff[self._cat_idx] = res.js_distance
            self._explain_categorical(wc, shifts)
        drifted, recomputed = None, 0
        if alpha is not None:
            if not 0.0 < alpha < 1.0:
                raise ValueError(f"alpha must be in (0, 1), got {alpha}")
            drifted = np.zeros(f, dtype=bool)
            en = effective_n(self.n, len(win))
            for outputs in (False, True):
                group = np.array([self.schema.is_output(i) == outputs for i in range(f)])
                if not group.any():
                    continue
                gp, ge = p[group], err[group]
                recomputed += settle(gp, ge, stat[group], en, alpha, correction)
                p[group] = gp
                drifted[group] = decide(gp, alpha, correction)
        return DriftResult(
            feature_names=self.feature_names,
            statistic=stat,
            pvalue=p,
            method=mode,
            n_reference=self.n,
            n_window=len(win),
            tests=tuple(CHI2 if k == CATEGORICAL else KS for k in self.schema.kinds),
            schema=self.schema,
            effect=eff,
            shifts=tuple(shifts),
            drifted=drifted,
            alpha=alpha,
            correction=correction if alpha is not None else None,
            exact_recomputed=recomputed,
            notes=notes,
        )

    def _explain_categorical(self, wc: np.ndarray, shifts: list[Shift]) -> None:
        top = chi2.top_moved(self.cat_counts, wc)
        ref_share = self.cat_counts / self.cat_counts.sum(axis=1, keepdims=True)
        win_share = wc / wc.sum(axis=1, keepdims=True)
        unseen_col = self.cat_counts.shape[1] - 1
        for k, i in enumerate(self._cat_idx):
            cats = self.schema.categories[self.schema.names[i]]
            moved = []
            for c in top[k]:
                if c < len(cats) or c == unseen_col:
                    name = cats[c] if c < len(cats) else UNSEEN
                    moved.append((name, float(ref_share[k, c]), float(win_share[k, c])))
            shifts[i] = Shift(categories=tuple(moved), unseen=int(wc[k, unseen_col]))


def encode_reference(
    columns: Sequence[Sequence[object]], schema_names: Sequence[str], categorical: set[str]
) -> tuple[np.ndarray, dict[str, tuple[str, ...]]]:
    """Reference columns (numbers, or strings for ``categorical`` ones) -> (rows x
    features) matrix with categories as codes, and each categorical column's categories
    (sorted, so that the same data always gives the same file)."""
    n = len(columns[0]) if columns else 0
    out = np.empty((n, len(schema_names)))
    cats: dict[str, tuple[str, ...]] = {}
    for j, name in enumerate(schema_names):
        col = columns[j]
        if name in categorical:
            values = sorted(set(col))  # type: ignore[type-var]
            cats[name] = tuple(str(v) for v in values)
            index = {v: i for i, v in enumerate(values)}
            out[:, j] = [index[v] for v in col]
        else:
            out[:, j] = col  # type: ignore[assignment]
    return out, cats
