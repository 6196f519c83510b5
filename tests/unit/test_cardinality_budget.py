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


# Declared families the template has no series of, each with why: the maximum node has none
# of them either (they exist only in another setup, or only once something failed).
NOT_IN_TEMPLATE = {
    "vigil_gpu_pcie_throughput_bytes_per_second": "only with --collector.gpu.pcie-throughput",
    "vigil_gpu_mig_info": "only for GPUs in MIG mode",
    "vigil_gpu_mig_memory_used_bytes": "only for GPUs in MIG mode",
    "vigil_gpu_mig_memory_free_bytes": "only for GPUs in MIG mode",
    "vigil_gpu_mig_memory_total_bytes": "only for GPUs in MIG mode",
    "vigil_gpu_xid_wait_errors_total": "only once waiting for Xid events failed",
    "vigil_gpu_nvml_errors_total": "only once an NVML call failed",
    "vigil_inference_deep_probe_up": "only with --collector.inference.deep-probe",
    "vigil_inference_scrape_errors_total": "only once a server's /metrics could not be read",
    "vigil_drift_reference_load_errors": "only for reference files that could not be loaded",
}
# Collectors whose count depends on what the processes do, not only on how many there are:
# the budget states their most (profile: every function slot filled; diagnosis: every cause
# held), the template less.
UPPER_BOUNDS = {"profile", "diagnosis"}


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


def test_the_template_has_series_of_every_family_the_agent_declares() -> None:
    """A node.prom captured before a family was added would leave it out of the budget."""
    template = Template.load()
    sampled = set()
    for fam in template.families:
        if fam.samples:
            sampled |= {fam.name, *(s.name for s in fam.samples)}
    declared = {m.name for m in declarations() if m.owner != "rollback-controller"}
    assert set(NOT_IN_TEMPLATE) <= declared, "NOT_IN_TEMPLATE names an undeclared family"
    missing = sorted(declared - sampled - set(NOT_IN_TEMPLATE))
    assert missing == [], f"bench/fleet/node.prom is stale (bench/fleet/README.md): {missing}"
    assert sorted(set(NOT_IN_TEMPLATE) & sampled) == [], "NOT_IN_TEMPLATE is out of date"


def test_the_template_is_one_process_with_one_server() -> None:
    """The simulator repeats the template's process per simulated process: a capture that
    watched two (another workload.py running beside it) would double every per-process
    count."""
    template = Template.load()
    seen: dict[str, set[str]] = defaultdict(set)
    for fam in template.families:
        for s in fam.samples:
            if s.name in ("vigil_watched_process_info", "vigil_inference_up"):
                seen[s.name].add(str(sorted(s.labels)))
    assert {k: len(v) for k, v in seen.items()} == {
        "vigil_watched_process_info": 1,
        "vigil_inference_up": 1,
    }, "bench/fleet/node.prom holds more than one process: capture it again, alone"


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
        if name in UPPER_BOUNDS:
            assert exported <= documented, f"{name}: {exported} series, over its budget"
        else:
            assert exported == documented, f"{name}: {exported} series, docs/scale.md says other"
        assert documented <= cap


def test_a_lower_cap_keeps_every_histogram_it_exports_whole_and_says_so() -> None:
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


def test_a_lower_cap_can_keep_part_of_a_process_families() -> None:
    """What docs/scale.md says the cap does not do: keep an entity's families together.
    Families go in order, so a process keeps its first families and loses the later."""
    fams = render_by_collector(MAX_NODE)["sched"]
    every = {f.name for f in fams if any("pod" in s.labels for s in f.samples)}
    capped = serve({"sched": fams}, {"sched": count(fams) // 2}).collect()
    kept: dict[str, set[str]] = defaultdict(set)
    for fam in capped:
        for s in fam.samples:
            if fam.name in every and "pod" in s.labels:
                kept[s.labels["pod"]].add(fam.name)
    assert len(kept) == MAX_PROCESSES  # every process keeps something
    assert any(set() < names < every for names in kept.values())
