"""The metric declarations (agent/catalogue.py, from which docs/metrics.md is generated) and
the real /metrics output agree; promtool finds no problem."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from agentproc import AgentProcess
from catalogue import load_catalogue, undocumented


def test_catalogue_is_well_formed() -> None:
    rows = load_catalogue()
    assert rows, "no declaration"
    for row in rows.values():
        # Only Vigil's own families and the agent's process_* (prometheus_client's).
        assert row.name.startswith(("vigil_", "process_")), row
        assert row.help, row


def test_everything_a_plain_agent_exports_is_catalogued() -> None:
    """The other direction (every catalogued family is exported) needs every collector
    fed with data: tests/dashboards/test_dashboard_data.py checks it on the full stack."""
    marker = "vigil_catalogue_marker"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        with AgentProcess(["--watch", marker]) as agent:
            text = agent.metrics()
    finally:
        child.kill()
        child.wait()
    assert undocumented(text, load_catalogue()) == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_is_clean() -> None:
    with AgentProcess() as agent:
        text = agent.metrics()
    r = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
