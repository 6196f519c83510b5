"""Metric declarations: each family Vigil exports, written down once as data.

A :class:`MetricSpec` holds everything a user can learn about a family — the exposed name,
the type, the base unit, the label names, the help text and the collector (or agent part)
that owns it. Render code builds its families from the declaration (:meth:`MetricSpec.family`),
``scripts/gen-metrics-doc`` writes ``docs/metrics.md`` from the same declarations, and the
tests check the real ``/metrics`` output, the dashboards and the alert rules against them.
A name is checked when it is declared, so a counter without ``_total`` or a name whose
suffix contradicts its unit fails at import, not in review.

Only prometheus_client is imported here: every layer of the agent may declare metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

TYPES = ("gauge", "counter", "histogram")
# Base units only (house rule 5). A name carrying one of them as its suffix must declare it,
# and a declared unit must be the name's suffix.
UNITS = ("seconds", "bytes", "bytes_per_second", "ratio", "celsius", "watts", "joules", "hertz")
# Scaled or non-base units that would make a query multiply by a constant.
_NOT_BASE = re.compile(
    r"_(percent|ms|us|ns|milliseconds|microseconds|nanoseconds|minutes|hours|"
    r"kb|mb|gb|kilobytes|megabytes|gigabytes|kib|mib|gib|mhz|khz|milliwatts|millijoules)(_|$)"
)
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Suffixes Prometheus gives a histogram's own series; a family name must not take them.
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count", "_created")

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


class DeclarationError(ValueError):
    """A metric declared against the naming rules; raised at import."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric family as users see it on ``/metrics``.

    ``name`` is the exposed family name: counters with ``_total``, histograms without
    ``_bucket``/``_sum``/``_count``. ``unit`` is the base unit, "" for a count or a state.
    """

    name: str
    type: str
    help: str
    owner: str
    labels: tuple[str, ...] = ()
    unit: str = ""

    def __post_init__(self) -> None:
        problem = naming_problem(self)
        if problem:
            raise DeclarationError(f"{self.name}: {problem}")

    @property
    def series_names(self) -> tuple[str, ...]:
        """Names of the samples the family exposes (what a PromQL selector may name)."""
        if self.type == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_sum", "_count"))
        return (self.name,)

    def family(self, labels: Sequence[str] | None = None) -> Family:
        """A fresh, empty family for one scrape, of the declared type.

        ``labels`` narrows the declared label names for a render that has fewer (the sched
        collector per cgroup has no ``pid``); it may not add one. :meth:`gauge`,
        :meth:`counter` and :meth:`histogram` return the same, typed for ``add_metric``.
        """
        names = list(self.labels if labels is None else labels)
        extra = set(names) - set(self.labels)
        if extra:
            raise DeclarationError(f"{self.name}: labels {sorted(extra)} are not declared")
        if self.type == "counter":
            # CounterMetricFamily takes the name with or without _total and strips it.
            return CounterMetricFamily(self.name, self.help, labels=names)
        if self.type == "histogram":
            return HistogramMetricFamily(self.name, self.help, labels=names)
        return GaugeMetricFamily(self.name, self.help, labels=names)

    def gauge(self, labels: Sequence[str] | None = None) -> GaugeMetricFamily:
        fam = self.family(labels)
        if not isinstance(fam, GaugeMetricFamily):
            raise DeclarationError(f"{self.name} is declared a {self.type}, not a gauge")
        return fam

    def counter(self, labels: Sequence[str] | None = None) -> CounterMetricFamily:
        fam = self.family(labels)
        if not isinstance(fam, CounterMetricFamily):
            raise DeclarationError(f"{self.name} is declared a {self.type}, not a counter")
        return fam

    def histogram(self, labels: Sequence[str] | None = None) -> HistogramMetricFamily:
        fam = self.family(labels)
        if not isinstance(fam, HistogramMetricFamily):
            raise DeclarationError(f"{self.name} is declared a {self.type}, not a histogram")
        return fam


def naming_problem(m: MetricSpec) -> str:
    """Why a declaration breaks the naming rules, or "" (pure; tested case by case)."""
    if not _NAME.match(m.name):
        return "not a valid metric name"
    if m.type not in TYPES:
        return f"type {m.type!r} is not one of {', '.join(TYPES)}"
    if not m.help.strip():
        return "no help text"
    if not m.owner:
        return "no owner"
    if m.type == "counter" and not m.name.endswith("_total"):
        return "a counter's name ends in _total"
    if m.type != "counter" and m.name.endswith("_total"):
        return f"only counters end in _total (this is a {m.type})"
    if m.type == "histogram" and m.name.endswith(_HISTOGRAM_SERIES):
        return "a histogram is declared by its base name, without _bucket/_sum/_count"
    if _NOT_BASE.search(m.name):
        return "not a base unit (seconds, bytes, ratio, ...)"
    stem = m.name.removesuffix("_total")
    if m.unit:
        if m.unit not in UNITS:
            return f"unit {m.unit!r} is not a base unit ({', '.join(UNITS)})"
        if not stem.endswith("_" + m.unit):
            return f"unit {m.unit} but the name does not end in _{m.unit}"
    else:
        suffix = next((u for u in UNITS if stem.endswith("_" + u)), None)
        if suffix is not None:
            return f"the name ends in _{suffix} but no unit is declared"
    if len(set(m.labels)) != len(m.labels):
        return "a label is listed twice"
    for label in m.labels:
        if not _LABEL.match(label) or label.startswith("__"):
            return f"label {label!r} is not a valid label name"
        if label == "le" or label == "quantile":
            return f"label {label!r} is reserved for histograms and summaries"
    return ""


def by_name(specs: Iterable[MetricSpec]) -> dict[str, MetricSpec]:
    """Declarations keyed by exposed name; a name declared twice is an error."""
    out: dict[str, MetricSpec] = {}
    for m in specs:
        if m.name in out:
            raise DeclarationError(f"{m.name}: declared twice ({out[m.name].owner}, {m.owner})")
        out[m.name] = m
    return out
