"""The workload and drift dashboards pick processes and versions, name processes outside
Kubernetes, and lead from a profile panel to its flame graph.

The queries are evaluated by Prometheus' own engine (``promtool test rules``) on series
shaped as the agent exports them: a pod's process (pid label empty) and two bare ones.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana import dashboards, queries, substitute

BOARDS = dashboards()
WORKLOAD = BOARDS["vigil-inference-workload.json"]
DRIFT = BOARDS["vigil-drift-rollbacks.json"]
ALL = {
    k: ".*"
    for k in ("cluster", "node", "namespace", "pod", "container", "comm", "pid", "model", "version")
} | {"__rate_interval": "2m", "__range": "5m", "datasource": ""}
PER_PROCESS_LABELS = ("pod", "namespace", "container", "comm", "pid")


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in board["panels"] if p.get("title") == title]
    return found


def test_pod_is_multi_select_and_container_comm_pid_can_be_picked() -> None:
    vs = variables(WORKLOAD)
    for name in ("pod", "container", "comm", "pid"):
        assert vs[name]["multi"] and vs[name]["includeAll"], name
    # Every per-process query honours each choice.
    for q in queries("workload", WORKLOAD):
        if 'pod=~"$pod"' in q.expr:
            for label in ("container", "comm", "pid"):
                assert f'{label}=~"${label}"' in q.expr, (q.panel, label)


def test_drift_has_a_version_variable_narrowed_by_model() -> None:
    version = variables(DRIFT)["version"]
    assert "$model" in version["definition"] and version["multi"]
    with_version = [q for q in queries("drift", DRIFT) if "vigil_drift_" in q.expr]
    assert with_version
    for q in with_version:
        # vigil_drift_rejected_samples_total has no version (a rejected sample has none).
        if "rejected" not in q.expr:
            assert 'version=~"$version"' in q.expr, q.panel


def promtool_eval(tmp_path: Path, expr: str, series: dict[str, str]) -> list[dict[str, str]]:
    """The series ``expr`` returns at 10m on ``series`` (selector -> promtool values), by
    asking promtool to compare with nothing and reading what it says it got."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (scripts/setup.sh installs it)"
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "promql_expr_test": [{"expr": expr, "eval_time": "10m", "exp_samples": []}],
            }
        ],
    }
    path = tmp_path / "q.test.yml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    out = r.stdout + r.stderr
    if "got:" not in out:  # no series at all: the expected empty list matched
        assert r.returncode == 0, out
        return []
    got = out.split("got:", 1)[1].split("\n", 1)[0]
    return [
        {k: v for k, v in (p.split("=", 1) for p in _split_labels(inner))}
        for inner in re.findall(r"\{((?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*)\}", got)
    ]


def _split_labels(inner: str) -> list[str]:
    """``a="x", b="y,z"`` → ``['a=x', 'b=y,z']`` (commas inside quotes kept)."""
    out, cur, quoted = [], "", False
    for ch in inner:
        if ch == '"':
            quoted = not quoted
            continue
        if ch == "," and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def process_series(metric: str, extra: str = "") -> dict[str, str]:
    base = 'instance="n1:9475",job="vigil",node="n1",cluster="c1"' + extra
    return {
        f'{metric}{{{base},pod="llm-0",namespace="ml",container="server",comm="python3",pid=""}}': (
            "0+60x20"
        ),
        f'{metric}{{{base},pod="",namespace="",container="",comm="python3",pid="4242"}}': "0+30x20",
        f'{metric}{{{base},pod="",namespace="",container="",comm="triton",pid="4343"}}': "0+90x20",
    }


@pytest.mark.parametrize(
    ("title", "metric", "extra"),
    [
        ("Off-CPU time", "vigil_sched_offcpu_seconds_sum", ""),
        ("CPU migrations", "vigil_sched_migrations_total", ""),
        ("GPU memory of the pod's processes", "vigil_gpu_process_memory_used_bytes", ',gpu="0"'),
        ("GIL share", "vigil_profile_gil_ratio", ""),
        ("Active vs idle samples", "vigil_profile_samples_total", ',state="active"'),
        ("Stalled", "vigil_inference_stalled", ',port="8000",kind="vllm",model="m"'),
        (
            "KV cache use",
            "vigil_inference_kv_cache_usage_ratio",
            ',port="8000",kind="vllm",model="m"',
        ),
    ],
)
def test_processes_outside_kubernetes_are_separate_named_series(
    tmp_path: Path, title: str, metric: str, extra: str
) -> None:
    (q,) = panel(WORKLOAD, title)["targets"]
    got = promtool_eval(tmp_path, substitute(q["expr"], ALL), process_series(metric, extra))
    assert {r["process"] for r in got} == {"llm-0", "python3 pid 4242", "triton pid 4343"}
    assert "{{process}}" in q["legendFormat"] and "{{pod}}" not in q["legendFormat"]


def test_profile_panels_link_to_the_flame_graph_and_pyroscope(tmp_path: Path) -> None:
    pyroscope = variables(WORKLOAD)["pyroscope"]
    assert pyroscope["type"] == "textbox"
    for title, metric, extra in [
        ("GIL share", "vigil_profile_gil_ratio", ""),
        ("Active vs idle samples", "vigil_profile_samples_total", ',state="active"'),
    ]:
        p = panel(WORKLOAD, title)
        urls = [link["url"] for link in p["fieldConfig"]["defaults"]["links"]]
        svg = "http://${__field.labels.instance}/v1/profiles/${__field.labels.pid}?format=svg"
        assert svg in urls
        assert any(u.startswith("${pyroscope}/") for u in urls)
        # The labels the links read are on the series the panel shows.
        (q,) = p["targets"]
        got = promtool_eval(tmp_path, substitute(q["expr"], ALL), process_series(metric, extra))
        bare = [r for r in got if r.get("pid") == "4242"]
        assert bare and bare[0]["instance"] == "n1:9475" and bare[0]["comm"] == "python3"
