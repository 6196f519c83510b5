"""The dashboards as files: current Grafana schema, importable as is, the variables users
filter by, generated from dashboards/generate.py, and only catalogued metrics."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from grafana import (
    PROMETHEUS_SERIES,
    ROOT,
    catalogue,
    dashboards,
    family,
    metric_names,
    queries,
    resolve_variables,
    substitute,
)

PANEL_TYPES = {"timeseries", "heatmap", "table", "stat"}
BOARDS = dashboards()
EXPECTED = {
    "vigil-node-overview.json",
    "vigil-inference-workload.json",
    "vigil-drift-rollbacks.json",
    "vigil-self.json",
    "vigil-diagnosis.json",
}


def test_the_dashboards_exist() -> None:
    assert set(BOARDS) == EXPECTED


def test_committed_json_is_what_the_generator_writes() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def generator(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """dashboards/generate.py imported as the script runs it: its directory on sys.path."""
    monkeypatch.syspath_prepend(str(ROOT / "dashboards"))
    yield importlib.import_module("generate")
    for name in ("generate", "panels"):
        sys.modules.pop(name, None)


def test_check_names_a_stale_file_and_writes_nothing(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ROOT / "dashboards" / "vigil-self.json"
    committed = path.read_text()
    fresh = generator.outputs()
    assert fresh[path] == committed
    edited = fresh[path].replace('"version": 1', '"version": 2', 1)
    assert edited != committed
    monkeypatch.setattr(generator, "outputs", lambda: {**fresh, path: edited})
    assert generator.main(["--check"]) == 1
    assert "out of date: dashboards/vigil-self.json;" in capsys.readouterr().err
    assert path.read_text() == committed


def test_layout_wraps_at_the_grid_width_and_rows_start_a_line(generator: ModuleType) -> None:
    p = sys.modules["panels"]
    q = [p.target("up")]
    placed = p.layout(
        [
            p.row("a"),
            p.stat("s", "d", q, w=4, h=6),
            p.timeseries("t", "d", q, w=p.HALF),
            p.timeseries("u", "d", q, w=p.HALF),  # 4 + 12 + 12 > 24: below the taller one
            p.timeseries("v", "d", q),
            p.row("b"),
            p.table("w", "d", q, w=p.FULL, h=6),
        ]
    )
    assert [(x["id"], x["title"], x["gridPos"]) for x in placed] == [
        (1, "a", {"h": 1, "w": 24, "x": 0, "y": 0}),
        (2, "s", {"h": 6, "w": 4, "x": 0, "y": 1}),
        (3, "t", {"h": 8, "w": 12, "x": 4, "y": 1}),
        (4, "u", {"h": 8, "w": 12, "x": 0, "y": 9}),
        (5, "v", {"h": 8, "w": 8, "x": 12, "y": 9}),
        (6, "b", {"h": 1, "w": 24, "x": 0, "y": 17}),
        (7, "w", {"h": 6, "w": 24, "x": 0, "y": 18}),
    ]
    # Stats and tables show the latest value; graphs a range.
    assert [(x["type"], x.get("targets", [{}])[0].get("instant")) for x in placed] == [
        ("row", None),
        ("stat", True),
        ("timeseries", False),
        ("timeseries", False),
        ("timeseries", False),
        ("row", None),
        ("table", True),
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_current_schema_and_panel_types(name: str) -> None:
    board = BOARDS[name]
    assert board["schemaVersion"] >= 39
    assert board["uid"] and len(board["uid"]) <= 40  # Grafana's limit on uids
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        if p["type"] == "row":
            continue
        assert p["type"] in PANEL_TYPES, f"{p['title']}: {p['type']}"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["description"].strip(), f"{p['title']} has no description"
        assert p["targets"], f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            assert t["expr"].strip()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in BOARDS[name]["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


# Each dashboard's filter variables, in the order they narrow each other. The diagnosis
# board filters like the workload board it links to, so a row's filters carry over.
PER_PROCESS = ["datasource", "cluster", "node", "namespace", "pod", "container", "comm", "pid"]
CASCADES = {
    "vigil-node-overview.json": ["datasource", "cluster", "node", "gpu"],
    "vigil-inference-workload.json": PER_PROCESS,
    "vigil-drift-rollbacks.json": ["datasource", "cluster", "node", "model", "version", "feature"],
    "vigil-self.json": ["datasource", "cluster", "node"],
    "vigil-diagnosis.json": PER_PROCESS,
}


def test_every_dashboard_has_its_cascade_checked() -> None:
    assert set(CASCADES) == set(BOARDS)


@pytest.mark.parametrize(("name", "wanted"), list(CASCADES.items()))
def test_variables_cascade_cluster_node_namespace_pod(name: str, wanted: list[str]) -> None:
    vs = {k: v for k, v in variables(BOARDS[name]).items() if v["type"] != "textbox"}
    assert list(vs) == wanted
    ds = vs["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    # Each variable's query is narrowed by the ones before it (cluster -> node -> ...).
    for i, var in enumerate(wanted[1:]):
        q = vs[var]["definition"]
        assert q.startswith("label_values("), q
        for earlier in wanted[1 : i + 1]:
            if earlier in ("cluster", "node", "namespace", "pod", "container", "comm", "model"):
                assert f"${earlier}" in q, f"{var} is not narrowed by {earlier}: {q}"
        assert vs[var]["allValue"] == ".*"


def test_variable_resolution_and_substitution() -> None:
    board = BOARDS["vigil-inference-workload.json"]
    asked: list[tuple[str, str]] = []

    def label_values(selector: str, label: str) -> list[str]:
        asked.append((selector, label))
        return {
            "cluster": ["c1"],
            "node": ["n2", "n1"],
            "namespace": [],
            "pod": ["p.1"],
            "container": ["server"],
            "comm": ["python3"],
            "pid": [],
        }[label]

    values = resolve_variables(board, label_values, {"node": "n1"})
    assert values == {
        "cluster": "c1",
        "node": "n1",
        "namespace": ".*",
        "pod": r"p\\.1",
        "container": "server",
        "comm": "python3",
        "pid": ".*",
    }
    assert 'node=~"n1"' in asked[2][0] and 'namespace=~".*"' in asked[3][0]
    assert (
        substitute(
            'x{a=~"$pod", b="${node}"}[$__rate_interval]', values | {"__rate_interval": "5s"}
        )
        == r'x{a=~"p\\.1", b="n1"}[5s]'
    )


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('vigil_gpu_up{cluster=~"$cluster", gpu="0"}', {"vigil_gpu_up"}),
        (
            "histogram_quantile(0.99, sum by (le, pod) (rate(vigil_sched_runqueue_latency_seconds"
            '_bucket{pod=~"$pod"}[$__rate_interval])))',
            {"vigil_sched_runqueue_latency_seconds_bucket"},
        ),
        (
            'rate(process_cpu_seconds_total{node=~"a"}[5m]) and on (instance, job) '
            'vigil_build_info{node=~"a"}',
            {"process_cpu_seconds_total", "vigil_build_info"},
        ),
        ("sum(x) or (y unless y offset 2m) > 0", {"x", "y"}),
        ('topk(20, max without (pid) (z{kind="self"}))', {"z"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_metric_is_in_the_catalogue() -> None:
    from promql import recording_rules

    cat = catalogue()
    recorded = {name for name, _ in recording_rules()}
    missing: dict[str, set[str]] = {}
    for name, board in BOARDS.items():
        for q in queries(name, board):
            for metric in metric_names(q.expr):
                if metric in PROMETHEUS_SERIES or metric in recorded:
                    continue  # recorded ones are checked in tests/alerts/test_recording_rules.py
                if family(metric, cat) is None:
                    missing.setdefault(metric, set()).add(f"{name}: {q.panel}")
    assert not missing, "not declared (agent/catalogue.py):\n" + "\n".join(
        f"  {m} ({', '.join(sorted(where))})" for m, where in sorted(missing.items())
    )


def test_dashboards_link_each_other_keeping_variables() -> None:
    for board in BOARDS.values():
        (link,) = board["links"]
        assert link["tags"] == ["vigil"] and link["includeVars"] and link["keepTime"]
        assert "vigil" in board["tags"]
