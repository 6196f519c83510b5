"""The per-collector series cap: whole series dropped, deterministically, and counted."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from agent.config import resolve
from agent.options import ConfigError
from agent.registry import (
    DEFAULT_MAX_SERIES,
    CollectorSet,
    Entry,
    cap_series,
    max_series_default,
)


def gauge(name: str, n: int, label: str = "pod") -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, "a gauge", labels=[label])
    for i in range(n):
        g.add_metric([f"p{i:03d}"], float(i))
    return g


def histogram(name: str, pods: Iterable[str]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, "a histogram", labels=["pod"])
    for p in pods:
        # 3 buckets + sum + count = 5 samples per label set
        h.add_metric([p], [("0.1", 1.0), ("1", 2.0), ("+Inf", 3.0)], sum_value=1.5)
    return h


def samples(fams: Iterable[Metric]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [(s.name, tuple(sorted(s.labels.items()))) for f in fams for s in f.samples]


def test_within_the_cap_nothing_changes() -> None:
    fams = [gauge("a", 5), histogram("h", ["x", "y"])]
    kept, exported, dropped = cap_series(fams, 15)
    assert (exported, dropped) == (15, 0)
    assert kept == fams


def test_a_histogram_is_kept_or_dropped_whole() -> None:
    fams = [histogram("h", ["a", "b", "c"])]  # 15 samples, 5 per pod
    kept, exported, dropped = cap_series(fams, 12)
    assert (exported, dropped) == (10, 5)
    pods = {s.labels["pod"] for f in kept for s in f.samples}
    assert pods == {"a", "b"}
    for pod in pods:
        names = sorted(s.name for f in kept for s in f.samples if s.labels["pod"] == pod)
        assert names == ["h_bucket"] * 3 + ["h_count", "h_sum"]


def test_a_counter_keeps_total_and_created_together() -> None:
    c = CounterMetricFamily("c", "a counter", labels=["pod"])
    for p in ("a", "b"):
        c.add_metric([p], 1.0, created=100.0)
    kept, exported, dropped = cap_series([c], 3)
    assert (exported, dropped) == (2, 2)
    assert {s.name for f in kept for s in f.samples} == {"c_total", "c_created"}


def test_the_same_series_are_dropped_whatever_the_render_order() -> None:
    forward = [gauge("a", 10), histogram("h", ["x", "y", "z"])]
    backward = [gauge("a", 0), histogram("h", ["z", "y", "x"])]
    for i in reversed(range(10)):
        backward[0].add_metric([f"p{i:03d}"], float(i))
    a, _, _ = cap_series(forward, 17)
    b, _, _ = cap_series(backward, 17)
    assert sorted(samples(a)) == sorted(samples(b))
    # Families in rendered order: the gauge first, then as many whole histograms as fit.
    assert {s.labels["pod"] for s in a[1].samples} == {"x"}


def test_a_smaller_series_after_a_large_one_still_fits() -> None:
    fams = [histogram("h", ["a"]), gauge("g", 2)]
    kept, exported, dropped = cap_series(fams, 3)
    assert (exported, dropped) == (2, 5)
    assert [f.name for f in kept] == ["g"]


def test_the_input_families_are_not_modified() -> None:
    g = gauge("a", 10)
    cap_series([g], 3)
    assert len(g.samples) == 10


class Fixed:
    """A collector whose output is given."""

    def __init__(self, name: str, fams: list[Metric]) -> None:
        self.name = name
        self.fams = fams

    def start(self) -> None: ...

    def collect(self) -> list[Metric]:
        return self.fams

    def ready(self) -> bool:
        return True

    def close(self) -> None: ...


def scrape(cset: CollectorSet) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(cset)
    return reg


def test_the_scrape_says_what_each_cap_dropped() -> None:
    entries = [
        Entry("big", Fixed("big", [gauge("vigil_big", 50)]), "running"),
        Entry("small", Fixed("small", [gauge("vigil_small", 4)]), "running"),
    ]
    reg = scrape(CollectorSet(entries, max_series={"big": 20}))
    text = generate_latest(reg).decode()
    assert text.count("vigil_big{") == 20
    assert text.count("vigil_small{") == 4
    val = reg.get_sample_value
    assert val("vigil_scrape_collector_series_dropped", {"collector": "big"}) == 30
    assert val("vigil_scrape_collector_series", {"collector": "big"}) == 20
    assert val("vigil_scrape_collector_max_series", {"collector": "big"}) == 20
    assert val("vigil_scrape_collector_series_dropped", {"collector": "small"}) == 0
    assert val("vigil_scrape_collector_max_series", {"collector": "small"}) == DEFAULT_MAX_SERIES
    # Still a success: the collector worked, the agent trimmed it.
    assert val("vigil_scrape_collector_success", {"collector": "big"}) == 1


def test_every_collector_has_a_max_series_setting() -> None:
    from agent.collectors import SPECS

    cfg = resolve(SPECS)
    for spec in SPECS:
        assert cfg.max_series()[spec.name] == max_series_default(spec.name)
    cfg = resolve(SPECS, flag_values={"collector.gpu.max-series": "7"})
    assert cfg.max_series()["gpu"] == 7
    with pytest.raises(ConfigError, match=r"collector\.gpu\.max-series"):
        resolve(SPECS, env_values={"collector.gpu.max-series": "0"})
