"""Collector isolation: one collector failing never costs another its metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from agent.options import option
from agent.registry import (
    CollectorNotApplicable,
    CollectorSet,
    CollectorSpec,
    CollectorUnavailable,
    Context,
    Entry,
    SnapshotCollector,
    start_collectors,
)


class Fixed:
    def __init__(self, name: str, value: float) -> None:
        self.name = name
        self.value = value

    def start(self) -> None: ...

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily(f"test_{self.name}_value", "v")
        g.add_metric([], self.value)
        return [g]

    def ready(self) -> bool:
        return True

    def close(self) -> None: ...


class Raising(Fixed):
    def collect(self) -> Iterable[Metric]:
        # A generator that yields one family and then fails: the family must not leak.
        g = GaugeMetricFamily("test_partial_value", "v")
        g.add_metric([], 1.0)
        yield g
        raise RuntimeError("boom")


def scrape(entries: list[Entry]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CollectorSet(entries))
    return reg


def test_a_raising_collector_loses_only_its_own_metrics() -> None:
    reg = scrape(
        [
            Entry("a", Fixed("a", 1.0), "running"),
            Entry("bad", Raising("bad", 0), "running"),
            Entry("b", Fixed("b", 2.0), "running"),
        ]
    )
    assert reg.get_sample_value("test_a_value") == 1.0
    assert reg.get_sample_value("test_b_value") == 2.0
    assert reg.get_sample_value("test_partial_value") is None
    ok = {
        n: reg.get_sample_value("vigil_scrape_collector_success", {"collector": n})
        for n in ("a", "bad", "b")
    }
    assert ok == {"a": 1.0, "bad": 0.0, "b": 1.0}
    # Every scrape (each get_sample_value is one) counts the failure once.
    first = reg.get_sample_value("vigil_collector_errors_total", {"collector": "bad"})
    second = reg.get_sample_value("vigil_collector_errors_total", {"collector": "bad"})
    assert first is not None and first >= 1 and second == first + 1
    assert reg.get_sample_value("vigil_collector_errors_total", {"collector": "a"}) == 0.0
    # And the page still renders.
    assert b"test_b_value 2.0" in generate_latest(reg)


def test_unavailable_collectors_report_zero_and_nothing_else() -> None:
    reg = scrape(
        [
            Entry("gpu", None, "unavailable", "no NVML"),
            Entry("drift", None, "unavailable", "no state directory"),
        ]
    )
    text = generate_latest(reg).decode()
    assert reg.get_sample_value("vigil_scrape_collector_success", {"collector": "gpu"}) == 0.0
    assert reg.get_sample_value("vigil_scrape_collector_success", {"collector": "drift"}) == 0.0
    names = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert names == {
        "vigil_scrape_collector_success",
        "vigil_scrape_collector_duration_seconds",
        "vigil_collector_errors_total",
        "vigil_collector_state",
        "vigil_scrape_collector_series",
        "vigil_scrape_collector_max_series",
        "vigil_scrape_collector_series_dropped",
    }
    assert reg.get_sample_value("vigil_scrape_collector_series", {"collector": "gpu"}) == 0.0
    state = {"collector": "gpu", "state": "unavailable"}
    assert reg.get_sample_value("vigil_collector_state", state) == 1.0


def test_not_applicable_collector_succeeds_with_nothing_and_says_why() -> None:
    # A CPU-only node: nothing to observe is the right answer, not a failure.
    reg = scrape([Entry("gpu", None, "not_applicable", "no NVIDIA driver"), Entry("a", None, "x")])
    assert reg.get_sample_value("vigil_scrape_collector_success", {"collector": "gpu"}) == 1.0
    states = {
        s: reg.get_sample_value("vigil_collector_state", {"collector": "gpu", "state": s})
        for s in ("running", "unavailable", "not_applicable")
    }
    assert states == {"running": 0.0, "unavailable": 0.0, "not_applicable": 1.0}
    assert reg.get_sample_value("vigil_scrape_collector_success", {"collector": "a"}) == 0.0


class Flaky(SnapshotCollector):
    name = "flaky"

    def __init__(self) -> None:
        super().__init__(interval=3600)
        self.fail = False

    def refresh(self) -> Any:
        if self.fail:
            raise OSError("source went away")
        return 42.0

    def render(self, snapshot: Any) -> Iterable[Metric]:
        g = GaugeMetricFamily("test_flaky_value", "v")
        g.add_metric([], snapshot)
        return [g]


def test_snapshot_collector_drops_stale_numbers_after_a_failed_refresh() -> None:
    c = Flaky()
    assert not c.ready()
    c.refresh_now()
    assert c.ready()
    reg = scrape([Entry("flaky", c, "running")])
    assert reg.get_sample_value("test_flaky_value") == 42.0
    c.fail = True
    c.refresh_now()
    assert reg.get_sample_value("test_flaky_value") is None
    assert reg.get_sample_value("vigil_scrape_collector_success", {"collector": "flaky"}) == 0.0
    c.fail = False
    c.refresh_now()
    assert reg.get_sample_value("test_flaky_value") == 42.0


def test_start_collectors_turns_failures_into_entries() -> None:
    from agent.config import resolve
    from agent.discovery import Discovery

    @dataclass(frozen=True)
    class Value:
        value: float = option(1.0, "the value to export")

    def unavailable(ctx: Context, settings: Value) -> Fixed:
        raise CollectorUnavailable("no GPU driver", "install the driver")

    def absent(ctx: Context, settings: Value) -> Fixed:
        raise CollectorNotApplicable("no NVIDIA driver", "install the driver")

    def crashing(ctx: Context, settings: Value) -> Fixed:
        raise ValueError("bug")

    def fixed(ctx: Context, settings: Value) -> Fixed:
        return Fixed("ok", settings.value)

    def spec(name: str, factory: Any, **kw: Any) -> CollectorSpec:
        return CollectorSpec(name, name, Value, factory, doctor=lambda s, p: [], **kw)

    specs = (
        spec("ok", fixed),
        spec("gone", unavailable),
        spec("buggy", crashing),
        spec("cpu_only", absent),
        spec("off", fixed, default_enabled=False),
    )
    cfg = resolve(specs, flag_values={"collector.ok.value": "3"})
    ctx = Context(discovery=Discovery(procfs="/nonexistent"), paths=cfg.paths)
    entries = start_collectors(
        specs, ctx, {s.name: cfg.enabled(s.name) for s in specs}, cfg.settings
    )
    states = {e.name: (e.state, e.reason) for e in entries}
    assert states == {
        "ok": ("running", ""),
        "gone": ("unavailable", "no GPU driver"),
        "buggy": ("unavailable", "ValueError: bug"),
        "cpu_only": ("not_applicable", "no NVIDIA driver"),
    }
    running = entries[0].collector
    assert isinstance(running, Fixed) and running.value == 3.0
    ready, pending = CollectorSet(entries).ready()
    assert ready and pending == []
