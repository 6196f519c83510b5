"""The exposition of N simulated Vigil nodes over a stretch of time, as OpenMetrics text that
``promtool tsdb create-blocks-from openmetrics`` backfills into a Prometheus TSDB.

Every simulated series comes from a real agent's ``/metrics`` (``node.prom``: written by
tests/dashboards/test_dashboard_data.py with VIGIL_NODE_EXPOSITION set, from a real agent
with real eBPF, py-spy, drift and inference on a vLLM-shaped workload and the fake NVML
library); only label values are varied, so names, label sets, histogram layouts and the
per-process / per-GPU / per-model multiplicity are the agent's own. Each template sample
belongs to one entity:

- a process (it has a ``pod`` label): repeated per simulated pod, with its pod, pid, GPU and
  model rewritten; pods churn (each lives 20 to 120 minutes, then comes back under a new
  name and pid), as rolling updates and crashes make them do;
- a GPU (``gpu`` without ``pod``): repeated per simulated GPU, GPUs per node from a mix;
- a model (``model`` without ``pod``: drift): repeated per model served on the node;
- the node (anything else): once.

Values keep their shape: counters, histogram buckets, sums and counts grow (by the same
factor for one histogram, so buckets stay cumulative), gauges wobble around the template's
value, 0/1 states stay as they are. The scrape adds ``instance``, ``job``, ``node``,
``cluster`` and ``agent_pod`` as deploy/servicemonitor.yaml does. Pure but for writing:
the same arguments give the same file.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).resolve().parent / "node.prom"
# GPUs per node and how common each size is: 8-GPU servers dominate inference fleets,
# with 4- and 2-GPU nodes beside them.
GPU_MIX = ((8, 0.5), (4, 0.3), (2, 0.2))
MODELS = 20  # distinct models served across the fleet
PODS_PER_GPU = 1  # one server process per GPU, as vLLM and TGI run without tensor parallelism
POD_LIFETIME_S = (20 * 60, 120 * 60)
CLUSTER = "sim-cluster"
PROCESS_KEYS = ("pod", "namespace", "container", "comm", "pid")
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)


def parse(text: str) -> list[Family]:
    """The families of a Prometheus text exposition, in order (samples with their labels)."""
    fams: list[Family] = []
    by_name: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, text_ = line[7:].partition(" ")
            helps[name] = text_
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            fam = Family(name, typ.strip(), helps.get(name, ""))
            fams.append(fam)
            by_name[name] = fam
        elif line and not line.startswith("#"):
            m = _LINE.match(line)
            if m is None:
                raise ValueError(f"cannot read {line!r}")
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            fam = fams[-1]
            if not name.startswith(fam.name):
                raise ValueError(f"{name} outside its family {fam.name}")
            if name.endswith("_created"):
                continue  # creation times are metadata, not series Prometheus keeps apart
            pairs = tuple((k, v) for k, v in _LABEL.findall(labels))
            fam.samples.append(Sample(name, pairs, float(value)))
    return fams


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    pid: str
    gpu: int
    model: str


@dataclass(frozen=True)
class Node:
    index: int
    gpus: int
    models: tuple[str, ...]
    pods_per_gpu: int = PODS_PER_GPU
    # Drift features per model; 0 keeps the template's own.
    features: int = 0

    @property
    def name(self) -> str:
        return f"gpu-node-{self.index:04d}"

    def pods(self, t: float) -> list[Pod]:
        """The node's pods at ``t`` seconds into the stretch: one per GPU, each with its own
        lifetime; a restarted pod has a new name and pid."""
        out = []
        for g in range(self.gpus):
            for k in range(self.pods_per_gpu):
                rng = random.Random(f"{self.index}/{g}/{k}")
                life = rng.uniform(*POD_LIFETIME_S)
                generation = int((t + rng.uniform(0, life)) // life)
                model = self.models[(g * self.pods_per_gpu + k) % len(self.models)]
                suffix = random.Random(f"{self.index}/{g}/{k}/{generation}").getrandbits(40)
                out.append(
                    Pod(
                        f"{model}-{suffix:010x}"[:40],
                        "inference",
                        str(10_000 + (g * 64 + k) * 97 + generation * 13),
                        g,
                        model,
                    )
                )
        return out


def plan(n: int, seed: int = 7) -> list[Node]:
    """N nodes with GPUs from the mix, each serving 1 or 2 models of the fleet's pool."""
    rng = random.Random(seed)
    sizes, weights = zip(*GPU_MIX, strict=True)
    out = []
    for i in range(n):
        gpus = rng.choices(sizes, weights)[0]
        first = rng.randrange(MODELS)
        models = (f"model-{first:02d}",) + ((f"model-{(first + 1) % MODELS:02d}",) * (gpus > 2))
        out.append(Node(i, gpus, models))
    return out


@dataclass(frozen=True)
class Template:
    """The template's samples sorted by entity (see the module docstring)."""

    families: list[Family]
    first_gpu: str
    first_feature: str = ""

    @classmethod
    def load(cls, path: Path = TEMPLATE) -> Template:
        fams = parse(path.read_text())
        gpus = sorted(
            {v for f in fams for s in f.samples for k, v in s.labels if k == "gpu"}, key=str
        )
        features = sorted(
            {v for f in fams for s in f.samples for k, v in s.labels if k == "feature"}
        )
        return cls(fams, gpus[0] if gpus else "0", features[0] if features else "")

    def series_per_node(self, node: Node, t: float = 0.0) -> int:
        return sum(1 for _ in self.render(node, t, 0.0))

    def render(self, node: Node, t: float, step_index: float) -> Iterator[tuple[str, str, float]]:
        """(family name, sample line without value, value) of one node at ``t``."""
        target = (
            ("instance", f"{node.name}:9475"),
            ("job", "vigil-agent"),
            ("node", node.name),
            ("cluster", CLUSTER),
            ("agent_pod", f"vigil-agent-{node.index:05x}"),
        )
        pods = node.pods(t)
        for fam in self.families:
            for s in fam.samples:
                keys = dict(s.labels)
                if "pod" in keys:
                    if "gpu" in keys and keys["gpu"] != self.first_gpu:
                        continue  # one template GPU per process; the pod's own GPU below
                    for pod in pods:
                        labels = dict(keys)
                        if labels.get("pod"):
                            labels.update(pod=pod.name, namespace=pod.namespace, pid="")
                        else:
                            labels["pid"] = pod.pid
                        if "gpu" in labels:
                            labels.update(gpu=str(pod.gpu), uuid=_uuid(node, pod.gpu))
                        if "model" in labels:
                            labels["model"] = pod.model
                        yield fam.name, _line(s.name, labels, target), s.value
                elif "gpu" in keys:
                    if keys["gpu"] != self.first_gpu:
                        continue
                    for g in range(node.gpus):
                        labels = dict(keys)
                        labels.update(gpu=str(g), uuid=_uuid(node, g))
                        if "pci_bus_id" in labels:
                            labels["pci_bus_id"] = f"00000000:{g + 16:02X}:00.0"
                        yield fam.name, _line(s.name, labels, target), s.value
                elif "model" in keys:
                    features: list[str | None] = [None]
                    if node.features and "feature" in keys:
                        if keys["feature"] != self.first_feature:
                            continue
                        features = [f"feature-{j:03d}" for j in range(node.features)]
                    for model in node.models:
                        for feature in features:
                            labels = dict(keys, model=model)
                            if feature is not None:
                                labels["feature"] = feature
                            yield fam.name, _line(s.name, labels, target), s.value
                else:
                    yield fam.name, _line(s.name, keys, target), s.value


def _uuid(node: Node, gpu: int) -> str:
    return f"GPU-{node.index:08x}-{gpu:04x}-4000-8000-000000000000"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, labels: dict[str, str], target: Iterable[tuple[str, str]]) -> str:
    # honor_labels: the agent's own labels win over the target's
    merged = dict(target)
    merged.update(labels)
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in merged.items())
    return f"{name}{{{body}}}"


def value_at(name: str, base: float, t: float, phase: float) -> float:
    """A sample's value ``t`` seconds in: counters grow, gauges wobble, states stay."""
    if name.endswith(COUNTER_SUFFIXES):
        # The same growth for every series of one histogram keeps its buckets cumulative.
        return base + (base + 1.0) * t / 600.0
    if base in (0.0, 1.0) or math.isnan(base):
        return base
    v = base * (1.0 + 0.1 * math.sin(t / 300.0 + phase))
    return min(v, 1.0) if name.endswith("_ratio") else v


def openmetrics_family(name: str, typ: str) -> tuple[str, str]:
    """(family name, type) in OpenMetrics' spelling: a counter's family has no _total."""
    if typ == "counter" and name.endswith("_total"):
        return name[: -len("_total")], typ
    return name, {"untyped": "unknown"}.get(typ, typ)


def write(
    out: TextIO,
    template: Template,
    nodes: list[Node],
    start: float,
    duration: float,
    step: float,
) -> int:
    """OpenMetrics for ``nodes`` every ``step`` seconds from ``start`` (Unix seconds) for
    ``duration``; returns the number of samples written. Families are written whole, as
    OpenMetrics wants, each series' samples in time order."""
    times = [start + i * step for i in range(int(duration // step) + 1)]
    singles = [Template([f], template.first_gpu, template.first_feature) for f in template.families]
    # A node's lines change only when one of its pods restarts: rendered once per pod set.
    cache: dict[tuple[int, int, tuple[Pod, ...]], list[tuple[str, str, float, float]]] = {}
    written = 0
    for k, single in enumerate(singles):
        fam = single.families[0]
        rows: list[str] = []
        for t in times:
            rel = t - start
            stamp = f"{t:.3f}"
            for node in nodes:
                key = (k, node.index, tuple(node.pods(rel)))
                lines = cache.get(key)
                if lines is None:
                    lines = [
                        (
                            line.split("{", 1)[0],
                            line,
                            base,
                            zlib.crc32(line.encode()) / 2**32 * 6.283,
                        )
                        for _, line, base in single.render(node, rel, 0.0)
                    ]
                    cache[key] = lines
                for sample_name, line, base, phase in lines:
                    rows.append(f"{line} {_num(value_at(sample_name, base, rel, phase))} {stamp}")
        cache.clear()
        if not rows:
            continue
        name, typ = openmetrics_family(fam.name, fam.type)
        out.write(f"# HELP {name} {fam.help}\n# TYPE {name} {typ}\n")
        out.write("\n".join(rows))
        out.write("\n")
        written += len(rows)
    out.write("# EOF\n")
    return written


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))
