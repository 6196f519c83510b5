"""Drift of what users send a language model, with no change to the server: the prompt-
and generation-length histograms vLLM and SGLang export, tested window against reference.

Source: the inference collector's scrape of each server's /metrics (``vllm:request_prompt_
tokens``, ``vllm:request_generation_tokens``, ``sglang:prompt_tokens_histogram``,
``sglang:generation_tokens_histogram``: cumulative token-count buckets per model). The
collector hands each scrape's histograms to :meth:`LengthDrift.observe`.

* Reference: the bucket counts of the first :data:`REFERENCE_REQUESTS` requests the agent
  sees finish, captured per server and model; or a period an operator chose, stored with
  ``vigil drift lengths set`` (from two saved /metrics pages) per model name in
  ``STATE/drift/lengths/<model>.json`` (the name percent-encoded), which then serves every
  server of that model on the node: the same model is asked the same kind of question
  whichever replica answers it.
* Window: the requests that finished in the last :data:`WINDOW_S` seconds (the counts'
  increase since the oldest scrape kept within that time).
* Test: chi-squared homogeneity of the two sets of bucket counts (each bucket a category;
  chi2.py, so small buckets are pooled the same way), with the Jensen-Shannon distance as
  the effect size, Bonferroni over the two lengths.

Cost: one small count table per server, model and length per scrape; memory: at most
:data:`MAX_SNAPSHOTS` snapshots of a few dozen buckets per series.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from agent.collectors.drift.chi2 import chi2_homogeneity
from agent.discovery import LABEL_NAMES
from agent.metrics import MetricSpec

LENGTHS = ("prompt", "generation")
# Requests a captured reference holds: at a few dozen buckets, a thousand requests give
# most buckets the expected count of 5 the chi-squared approximation wants.
REFERENCE_REQUESTS = 1000
# The window: ten minutes of a busy server is thousands of requests, and a change in what
# users send shows within one alert `for` of it.
WINDOW_S = 600.0
# Fewer requests in the window: no decision (the table would be all pooled cells).
MIN_WINDOW_REQUESTS = 100
ALPHA = 0.05
# Scrapes kept per series: the window at a 1 s scrape interval, and a hard cap whatever
# the interval.
MAX_SNAPSHOTS = 1024

OWNER = "inference"


# The inference collector's per-model labels (its metrics.MODEL), plus which length.
_LABELS = (*LABEL_NAMES, "port", "kind", "model", "length")
P_VALUE = MetricSpec(
    "vigil_inference_length_drift_p_value",
    "gauge",
    "Chi-squared p-value of the window's prompt or generation length histogram "
    "(length=prompt|generation) against the reference period's (vLLM, SGLang).",
    OWNER,
    _LABELS,
)
EFFECT_SIZE = MetricSpec(
    "vigil_inference_length_drift_effect_size",
    "gauge",
    "Jensen-Shannon distance (0 same to 1 disjoint) between the window's and the "
    "reference's length distributions over the server's buckets.",
    OWNER,
    _LABELS,
)
DETECTED = MetricSpec(
    "vigil_inference_length_drift_detected",
    "gauge",
    "Whether the length distribution drifted from the reference (1) or not, at alpha 0.05 "
    "with Bonferroni over the two lengths; absent below 100 requests in the window.",
    OWNER,
    _LABELS,
)
REFERENCE_REQUESTS_METRIC = MetricSpec(
    "vigil_inference_length_reference_requests",
    "gauge",
    "Requests in the length reference (captured from the first 1,000 requests, or set "
    "with `vigil drift lengths set`); 0 while it is being captured.",
    OWNER,
    _LABELS,
)
METRICS = (P_VALUE, EFFECT_SIZE, DETECTED, REFERENCE_REQUESTS_METRIC)


@dataclass(frozen=True)
class Counts:
    """A histogram's upper bounds (+Inf last) and its per-bucket (not cumulative) counts."""

    bounds: tuple[float, ...]
    counts: np.ndarray

    @classmethod
    def from_cumulative(cls, buckets: Sequence[tuple[float, float]]) -> Counts:
        bounds = tuple(b for b, _ in buckets)
        cum = np.array([c for _, c in buckets], dtype=np.float64)
        return cls(bounds, np.diff(cum, prepend=0.0))

    @property
    def total(self) -> float:
        return float(self.counts.sum())


@dataclass(frozen=True)
class LengthResult:
    pvalue: float
    effect: float
    detected: bool


def compare_lengths(reference: Counts, window: Counts, alpha: float = ALPHA) -> LengthResult:
    """Chi-squared homogeneity of two length histograms over the same bounds."""
    if reference.bounds != window.bounds:
        raise ValueError("the histograms have different buckets")
    res = chi2_homogeneity(reference.counts[None], window.counts[None])
    p = float(res.pvalue[0])
    return LengthResult(p, float(res.js_distance[0]), p <= alpha / len(LENGTHS))


def reference_between(before: Counts | None, after: Counts) -> Counts:
    """The requests that finished between two scrapes of the same histogram."""
    if before is None:
        return after
    if before.bounds != after.bounds:
        raise ValueError("the two pages have different buckets for this histogram")
    diff = after.counts - before.counts
    if (diff < 0).any():
        raise ValueError("counts went down between the two pages (a server restart?)")
    return Counts(after.bounds, diff)


@dataclass
class _Series:
    reference: Counts | None = None
    start: Counts | None = None  # the first scrape: a capture counts from here
    snapshots: deque[tuple[float, Counts]] = field(
        default_factory=lambda: deque(maxlen=MAX_SNAPSHOTS)
    )
    result: LengthResult | None = None
    stored: bool = False  # the reference came from `vigil drift lengths set`


class LengthDrift:
    """Per (target labels, model, length): the reference, recent scrapes and the result."""

    def __init__(self, state_dir: Path | None) -> None:
        self._dir = Path(state_dir) / "drift" / "lengths" if state_dir is not None else None
        self._series: dict[tuple[tuple[str, ...], str, str], _Series] = {}
        self._stored: dict[str, tuple[tuple[int, int], dict[str, Counts]]] = {}
        self._lock = threading.Lock()

    def observe(
        self, target: tuple[str, ...], model: str, length: str, buckets: Sequence[Any], now: float
    ) -> None:
        """One scrape's cumulative (bound, count) buckets of one histogram."""
        if len(buckets) < 2:
            return  # sum and count only: no distribution to compare
        current = Counts.from_cumulative(buckets)
        stored = self._stored_reference(model).get(length)
        with self._lock:
            s = self._series.setdefault((target, model, length), _Series())
            last = s.snapshots[-1][1] if s.snapshots else None
            if last is not None and (
                last.bounds != current.bounds or current.total < last.total
            ):  # a restart (counts went down) or new buckets: start over, keep nothing stale
                s.snapshots.clear()
                s.start = None
                if s.reference is not None and s.reference.bounds != current.bounds:
                    s.reference = None
            if s.start is None:
                s.start = current
            s.snapshots.append((now, current))
            while len(s.snapshots) > 2 and s.snapshots[1][0] <= now - WINDOW_S:
                s.snapshots.popleft()
            if stored is not None and stored.bounds == current.bounds:
                s.reference, s.stored = stored, True
            elif s.stored:  # the stored one was deleted: capture anew from this scrape
                s.reference, s.stored, s.start = None, False, current
            elif s.reference is None:
                since = reference_between(s.start, current)
                if since.total >= REFERENCE_REQUESTS:
                    s.reference = since
                    # The window starts after the reference: no request is in both.
                    s.snapshots.clear()
                    s.snapshots.append((now, current))
            s.result = None
            if s.reference is not None and len(s.snapshots) >= 2:
                window = reference_between(s.snapshots[0][1], current)
                if window.total >= MIN_WINDOW_REQUESTS and s.reference.total > 0:
                    s.result = compare_lengths(s.reference, window)

    def forget(self, keep: Iterable[tuple[str, ...]]) -> None:
        """Drops the series of targets no longer watched."""
        live = set(keep)
        with self._lock:
            for key in [k for k in self._series if k[0] not in live]:
                del self._series[key]
            models = {k[1] for k in self._series}
            for model in [m for m in self._stored if m not in models]:
                self._stored.pop(model, None)  # observe() may have dropped it meanwhile

    def _stored_reference(self, model: str) -> dict[str, Counts]:
        if self._dir is None:
            return {}
        path = self._dir / (_safe(model) + ".json")
        try:
            st = os.stat(path)
        except OSError:
            self._stored.pop(model, None)
            return {}
        stamp = (st.st_ino, st.st_mtime_ns)
        cached = self._stored.get(model)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            refs = read_reference(path.read_bytes())
        except (OSError, ValueError):
            refs = {}  # a damaged file: the captured reference serves
        self._stored[model] = (stamp, refs)
        return refs

    def render(self) -> list[Any]:
        pval, effect, detected, requests = (spec.gauge() for spec in METRICS)
        with self._lock:
            items = sorted(self._series.items())
        for (target, model, length), s in items:
            lab = [*target, model, length]
            requests.add_metric(lab, s.reference.total if s.reference is not None else 0.0)
            if s.result is not None:
                pval.add_metric(lab, s.result.pvalue)
                effect.add_metric(lab, s.result.effect)
                detected.add_metric(lab, 1.0 if s.result.detected else 0.0)
        return [pval, effect, detected, requests]


# Longest file name stem: ext4 and most file systems allow 255 bytes per name; a stem past
# this is cut and told apart by a hash of the whole model name.
MAX_STEM = 200


def _safe(model: str) -> str:
    """A file name for a model name, one per name: served models are often "org/name", and
    "org/name" and "org_name" are two models. Percent-encoding keeps letters, digits and
    ``._-`` readable and is reversible; a stem too long for a file name is cut and ends in
    a hash of the whole name, so two long names that share a prefix still differ."""
    # quote() keeps "~" as is: encoded here, it marks a cut stem and nothing else.
    stem = quote(model, safe="._-").replace("~", "%7E")
    if stem in ("", ".", ".."):  # not names of a file of their own; no other stem ends in %
        stem += "%"
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(model.encode()).hexdigest()[:16]
        stem = f"{stem[: MAX_STEM - 17]}~{digest}"
    return stem


def reference_path(state_dir: Path, model: str) -> Path:
    return Path(state_dir) / "drift" / "lengths" / (_safe(model) + ".json")


def write_reference(refs: Mapping[str, Counts], source: str) -> bytes:
    doc = {
        "source": source,
        "lengths": {
            k: {"bounds": [_bound(b) for b in c.bounds], "counts": c.counts.tolist()}
            for k, c in refs.items()
        },
    }
    return json.dumps(doc).encode()


def read_reference(data: bytes) -> dict[str, Counts]:
    doc = json.loads(data)
    out = {}
    for k, v in doc["lengths"].items():
        if k not in LENGTHS:
            raise ValueError(f"unknown length {k!r}")
        bounds = tuple(float(b) for b in v["bounds"])
        counts = np.array(v["counts"], dtype=np.float64)
        if len(bounds) != len(counts) or (counts < 0).any():
            raise ValueError("bounds and counts do not match")
        out[k] = Counts(bounds, counts)
    return out


def _bound(b: float) -> float | str:
    return b if np.isfinite(b) else "+Inf"
