"""docs/metrics.md and the real /metrics output agree both ways; promtool finds no problem."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from agentproc import AgentProcess
from catalogue import exposed_families, load_catalogue
from prometheus_client.parser import text_string_to_metric_families

BASE_TYPES = {"gauge", "counter", "histogram", "info"}


def test_catalogue_is_well_formed() -> None:
    rows = load_catalogue()
    assert rows, "empty catalogue"
    for row in rows.values():
        assert row.type in BASE_TYPES, row
        assert row.name.startswith(("vigil_", "process_")), row
        assert row.help, row
        if row.type == "counter":
            assert row.name.endswith("_total"), row
        # Base units only: no percents, no milliseconds.
        assert not any(bad in row.name for bad in ("_percent", "_ms", "_milliseconds")), row


def _running(text: str) -> set[str]:
    running = {"agent"}
    for fam in text_string_to_metric_families(text):
        if fam.name == "vigil_scrape_collector_success":
            running |= {s.labels["collector"] for s in fam.samples if s.value == 1.0}
    return running


def test_real_output_and_catalogue_agree_both_ways() -> None:
    marker = "vigil_catalogue_marker"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        with AgentProcess(["--watch", marker]) as agent:
            text = agent.metrics()
    finally:
        child.kill()
        child.wait()
    rows = load_catalogue()
    exposed = exposed_families(text)
    # Every exported family is catalogued, with the same type and no unlisted label.
    for name, (typ, labels) in exposed.items():
        assert name in rows, f"{name} is exported but missing from docs/metrics.md"
        row = rows[name]
        assert row.type == typ or (row.type == "info" and typ == "gauge"), (name, typ, row.type)
        assert labels <= row.labels, f"{name}: labels {sorted(labels - row.labels)} not listed"
    # Every catalogued family of a collector that ran in this scrape is exported.
    running = _running(text)
    missing = [r.name for r in rows.values() if r.collector in running and r.name not in exposed]
    assert not missing, f"catalogued but not exported by running collectors: {missing}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_is_clean() -> None:
    with AgentProcess() as agent:
        text = agent.metrics()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
