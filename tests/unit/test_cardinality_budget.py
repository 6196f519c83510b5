"""The series budget of docs/scale.md against a node at the documented maximum configuration.

The node is a real agent's exposition (bench/fleet/node.prom, written by the dashboard data
test from a real agent with real eBPF, py-spy, drift and a vLLM-shaped server over the fake
NVML library) with its processes, GPUs, models and features multiplied up to the maximum the
budget documents, served through the agent's own CollectorSet with the default caps.
"""

from __future__ import annotations

import copy
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from agent.catalogue import declarations
from agent.registry import CollectorSet, Entry, max_series_default

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "fleet"))
from simulate import Node, Template  # noqa: E402

SCALE = ROOT / "docs" / "scale.md"
# The documented maximum node (docs/scale.md, "The budget").
MAX_GPUS, MAX_PROCESSES, MAX_MODELS, MAX_FEATURES = 8, 64, 8, 32
MAX_NODE = Node(
    0,
    MAX_GPUS,
    tuple(f"model-{i}" for i in range(MAX_MODELS)),
    pods_per_gpu=MAX_PROCESSES // MAX_GPUS,
    features=MAX_FEATURES,
)


def owners() -> dict[str, str]:
    out = {}
    for m in declarations():
        for name in (m.name, *m.series_names):
            out[name] = m.owner
    return out


def render_by_collector(node: Node) -> dict[str, list[Metric]]:
    """The node's families, grouped by the collector that declares them (process_* and the
    agent's own series under "agent")."""
    template = Template.load()
    types = {f.name: f.type for f in template.families}
    own = owners()
    text: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for fam, line, value in template.render(node, 0.0, 0.0):
        name = line.split("{", 1)[0]
        owner = own.get(name) or own.get(fam) or "agent"
        text[owner][fam].append(f"{line} {value!r}")
    out = {}
    for owner, fams in text.items():
        body = "".join(
            f"# TYPE {fam} {types[fam]}\n" + "\n".join(lines) + "\n" for fam, lines in fams.items()
        )
        out[owner] = list(text_string_to_metric_families(body))
    return out


class Fixed:
    def __init__(self, name: str, fams: list[Metric]) -> None:
        self.name = name
        self.fams = fams

    def start(self) -> None: ...

    def collect(self) -> list[Metric]:
        return self.fams

    def ready(self) -> bool:
        return True

    def close(self) -> None: ...


def serve(fams: dict[str, list[Metric]], caps: dict[str, int] | None = None) -> CollectorRegistry:
    entries = [Entry(name, Fixed(name, f), "running") for name, f in fams.items()]
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CollectorSet(entries, max_series=caps))
    return reg


def budget_rows() -> Iterator[tuple[str, int, int]]:
    """(collector, series at the maximum node, default cap) from docs/scale.md's table."""
    for line in SCALE.read_text().splitlines():
        m = re.match(r"^\| `([a-z]+)` \|[^|]*\| ([0-9,]+) \| ([0-9,]+) \|$", line)
        if m:
            yield m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))


def count(fams: list[Metric]) -> int:
    return sum(len(f.samples) for f in fams)


def test_the_maximum_node_fits_every_cap_and_the_documented_budget() -> None:
    fams = render_by_collector(MAX_NODE)
    fams.pop("agent")  # rendered by the wrapper itself, not capped
    rows = {name: (series, cap) for name, series, cap in budget_rows()}
    assert set(rows) == set(fams), "docs/scale.md's budget table and the collectors differ"
    reg = serve(fams)
    for name, (documented, cap) in rows.items():
        assert cap == max_series_default(name), f"{name}: docs/scale.md states another cap"
        exported = reg.get_sample_value("vigil_scrape_collector_series", {"collector": name})
        dropped = reg.get_sample_value("vigil_scrape_collector_series_dropped", {"collector": name})
        assert (exported, dropped) == (count(fams[name]), 0), name
        assert exported <= documented, f"{name}: {exported} series, over its documented budget"
        assert documented <= cap


def test_a_lower_cap_drops_whole_processes_series_and_says_so() -> None:
    fams = render_by_collector(MAX_NODE)
    reg = serve({"sched": fams["sched"]}, {"sched": 1000})
    text = generate_latest(reg).decode()
    dropped = reg.get_sample_value("vigil_scrape_collector_series_dropped", {"collector": "sched"})
    exported = reg.get_sample_value("vigil_scrape_collector_series", {"collector": "sched"})
    assert exported is not None and dropped is not None
    assert exported <= 1000 and exported + dropped == count(fams["sched"])
    # Every histogram that is there is whole: all its buckets, its sum and its count.
    parts: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        m = re.match(r"^vigil_sched_runqueue_latency_seconds_(bucket|sum|count)\{(.*)\} ", line)
        if m:
            parts[re.sub(r',?le="[^"]*"', "", m.group(2))].append(m.group(1))
    assert parts, "no run-queue histogram kept"
    for labels, kinds in parts.items():
        assert sorted(kinds) == ["bucket"] * 27 + ["count", "sum"], labels


@pytest.mark.parametrize("collector", ["sched", "inference", "drift"])
def test_what_the_cap_keeps_is_the_same_on_every_scrape(collector: str) -> None:
    fams = render_by_collector(MAX_NODE)[collector]
    cap = count(fams) // 3
    first = generate_latest(serve({collector: fams}, {collector: cap}))
    # The same families with their series in another order (a dict filled differently).
    shuffled = []
    for f in fams:
        g = copy.copy(f)
        g.samples = list(reversed(f.samples))
        shuffled.append(g)
    again = generate_latest(serve({collector: shuffled}, {collector: cap}))
    kept = lambda body: sorted(  # noqa: E731
        line for line in body.decode().splitlines() if line.startswith("vigil_" + collector)
    )
    assert kept(first) == kept(again)
