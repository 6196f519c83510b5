"""bench/fleet's node simulation: OpenMetrics that promtool backfills, made of the real
agent's series with label values varied, pods churning, and the same file on every run."""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "fleet"))
from simulate import Node, Template, openmetrics_family, parse, plan, write  # noqa: E402


def _fleet_run() -> ModuleType:
    # Loaded under its own name: "run" is too common a module name to put on sys.path.
    spec = importlib.util.spec_from_file_location("fleet_run", ROOT / "bench" / "fleet" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_run"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_RUN = _fleet_run()
inline, stages = _RUN.inline, _RUN.stages

START = 1_700_000_000.0


def simulate(n: int, minutes: int = 10) -> tuple[str, int]:
    buf = io.StringIO()
    samples = write(buf, Template.load(), plan(n), START, minutes * 60, 30)
    return buf.getvalue(), samples


def test_two_nodes_backfill_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (scripts/setup.sh installs it)"
    text, samples = simulate(2)
    assert text.endswith("# EOF\n")
    src = tmp_path / "fleet.om"
    src.write_text(text)
    res = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(src), str(tmp_path / "tsdb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    listing = subprocess.run(
        [promtool, "tsdb", "list", str(tmp_path / "tsdb")], capture_output=True, text=True
    ).stdout.splitlines()[1:]
    assert sum(int(line.split()[4]) for line in listing) == samples


def test_every_series_is_the_real_agents_with_the_scrape_labels() -> None:
    template = Template.load()
    names = {s.name for f in template.families for s in f.samples}
    text, _ = simulate(2, minutes=1)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0]
        assert name in names
        for label in ("instance", "job", "node", "cluster"):
            assert f'{label}="' in line, line


def test_gpus_pods_and_models_multiply_as_documented() -> None:
    template = Template.load()
    one = Node(0, 1, ("m",))
    assert template.series_per_node(Node(0, 2, ("m",))) > template.series_per_node(one)
    text, _ = simulate(1, minutes=0)
    node = plan(1)[0]
    gpus = set(re.findall(r'vigil_gpu_up\{[^}]*gpu="(\d+)"', text))
    assert len(gpus) == node.gpus
    pods = set(re.findall(r'vigil_profile_gil_ratio\{[^}]*pod="([^"]+)"', text))
    assert len(pods) == node.gpus  # one server per GPU
    models = set(re.findall(r'vigil_drift_detected\{[^}]*model="([^"]+)"', text))
    assert models == set(node.models)


def test_pods_churn_and_counters_only_grow() -> None:
    node = plan(1)[0]
    first = {p.name for p in node.pods(0)}
    later = {p.name for p in node.pods(4 * 3600)}
    assert first and first != later, "no pod restarted in four hours"
    text, _ = simulate(1, minutes=30)
    series: dict[str, list[float]] = {}
    for line in text.splitlines():
        if line.startswith(("vigil_sched_runqueue_latency_seconds_count", "vigil_gpu_energy")):
            key, value, _ = line.rsplit(" ", 2)
            series.setdefault(key, []).append(float(value))
    assert series
    for key, values in series.items():
        assert values == sorted(values), key


def test_the_same_arguments_give_the_same_file() -> None:
    assert simulate(2, minutes=2)[0] == simulate(2, minutes=2)[0]


def test_openmetrics_spells_counter_families_without_total() -> None:
    assert openmetrics_family("vigil_x_total", "counter") == ("vigil_x", "counter")
    assert openmetrics_family("vigil_y", "untyped") == ("vigil_y", "unknown")
    assert openmetrics_family("vigil_z_seconds", "histogram") == ("vigil_z_seconds", "histogram")


def test_the_exposition_parser_refuses_a_stray_sample() -> None:
    assert parse('# TYPE a gauge\na{x="1"} 2\n')[0].samples[0].labels == (("x", "1"),)
    with pytest.raises(ValueError, match="outside its family"):
        parse("# TYPE a gauge\nb 1\n")


def test_raw_equivalents_of_recorded_series() -> None:
    recs = {
        "a:m_total:rate1m": "sum by (model, outcome) (rate(vigil_m_total[1m]))",
        "a:m:ratio": 'sum(a:m_total:rate1m{outcome="error"}) / sum(a:m_total:rate1m)',
    }
    assert inline('a:m:ratio{cluster=~".*"}', recs) == (
        '(sum((sum by (model, outcome) (rate(vigil_m_total{outcome="error"}[1m])))) / '
        "sum((sum by (model, outcome) (rate(vigil_m_total[1m])))))"
    )
    order = stages(
        [("a:m:ratio", recs["a:m:ratio"]), ("a:m_total:rate1m", recs["a:m_total:rate1m"])]
    )
    assert [[n for n, _ in s] for s in order] == [["a:m_total:rate1m"], ["a:m:ratio"]]
