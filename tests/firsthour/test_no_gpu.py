"""A CPU-only node, as a new user's first `vigil run` sees it: the gpu collector is not
applicable, not failing, and the alert rules agree.

The agent is a real `vigil run` on this machine (no NVIDIA driver); what it exports for the
gpu collector becomes the input of a promtool unit test of the real rule file, held for
longer than VigilCollectorFailing's `for`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from agentproc import AgentProcess, run_vigil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "vigil.rules.yml"
ARGS = [
    "--kubernetes.mode",
    "off",
    "--no-collector.sched",
    "--no-collector.profile",
    "--no-collector.drift",
    "--collector.gpu",
]


def gpu_series(text: str) -> dict[str, float]:
    """The agent's per-collector series for gpu, as promtool series selectors → value."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("collector") != "gpu" or not s.name.startswith(
                ("vigil_scrape_collector_success", "vigil_collector_state")
            ):
                continue
            labels = {"instance": "cpu1:9475", "job": "vigil", **s.labels}
            sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{s.name}{{{sel}}}"] = s.value
    return out


@pytest.fixture
def no_driver(tmp_path: Path) -> dict[str, str]:
    # An empty directory first on the library path: whatever this machine has, no NVML.
    empty = tmp_path / "no-nvml"
    empty.mkdir()
    return {"LD_LIBRARY_PATH": str(empty)}


def test_cpu_only_node_exports_not_applicable_and_no_alert(
    tmp_path: Path, no_driver: dict[str, str]
) -> None:
    with AgentProcess(ARGS, env=no_driver) as agent:
        text = agent.metrics()
    series = gpu_series(text)
    assert "vigil_gpu_up" not in text
    assert any('state="not_applicable"' in k and v == 1.0 for k, v in series.items()), series
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (scripts/setup.sh installs it)"
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": k, "values": f"{v:g}x40"} for k, v in sorted(series.items())
                ],
                "alert_rule_test": [
                    {"alertname": "VigilCollectorFailing", "eval_time": "40m", "exp_alerts": []}
                ],
            }
        ],
    }
    path = tmp_path / "cpu-only.test.yml"
    path.write_text(yaml.safe_dump(test))
    r = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_doctor_on_a_cpu_only_node_says_not_applicable(no_driver: dict[str, str]) -> None:
    r = run_vigil(["doctor", "--collector.gpu"], env=no_driver)
    lines = [line for line in r.stdout.splitlines() if "NVML" in line or "nvmlInit" in line]
    assert lines and all("not applicable" in line for line in lines), r.stdout
    assert not [line for line in lines if "FAIL" in line]
    assert "Traceback" not in r.stdout + r.stderr
