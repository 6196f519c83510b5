"""Vigil's own monotonic counters over a server's counters (pure).

A server's counters start again from 0 when it restarts; exported as read, a rate over
the restart would see a drop (Prometheus takes it for a reset, but a restart between two
of Vigil's scrapes would hide the requests done before it). Vigil keeps its own totals
instead: the first value as read, then every increase; after a decrease (a restart) the
new value is all increase. A histogram is one counter per bucket plus sum and count,
reset together when the count goes down or any bucket does.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.collectors.inference.kinds import Histogram


@dataclass(frozen=True)
class Total:
    value: float  # what Vigil exports
    last: float  # the server's value at the last read


def count(prev: Total | None, raw: float) -> Total:
    if prev is None:
        return Total(raw, raw)
    delta = raw - prev.last if raw >= prev.last else raw
    return Total(prev.value + delta, raw)


@dataclass(frozen=True)
class HistogramTotal:
    value: Histogram
    last: Histogram


def _reset(prev: Histogram, raw: Histogram) -> bool:
    if raw.count < prev.count or raw.sum_seconds < prev.sum_seconds:
        return True
    return any(b < a for (_, a), (_, b) in zip(prev.buckets, raw.buckets, strict=True))


def histogram(prev: HistogramTotal | None, raw: Histogram) -> HistogramTotal:
    if prev is None:
        return HistogramTotal(raw, raw)
    bounds = tuple(le for le, _ in raw.buckets)
    if bounds != tuple(le for le, _ in prev.last.buckets):
        # A server that changed its bucket layout (a new version): the old totals cannot be
        # carried into buckets that do not exist any more; start over from this read.
        return HistogramTotal(raw, raw)
    base = (
        Histogram(tuple((le, 0.0) for le in bounds), 0.0, 0.0)
        if _reset(prev.last, raw)
        else (prev.last)
    )
    acc = prev.value
    return HistogramTotal(
        Histogram(
            tuple(
                (le, total + now - before)
                for (le, total), (_, now), (_, before) in zip(
                    acc.buckets, raw.buckets, base.buckets, strict=True
                )
            ),
            acc.sum_seconds + raw.sum_seconds - base.sum_seconds,
            acc.count + raw.count - base.count,
        ),
        raw,
    )
