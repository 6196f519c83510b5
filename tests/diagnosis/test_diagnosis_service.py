"""Causes from the server and the model's inputs, in a real `vigil run`: a server whose
main thread waits on a pipe while requests wait (blocked), a process serving a model
whose live inputs drifted (input_drift, samples posted on the drift API), and a healthy
control. Each must be named with its own cause and nothing else."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agentproc import AgentProcess, free_port, run_vigil
from scenario import FAST, READY_S, causes, marker, settle, time_limit, workloads

pytestmark = [pytest.mark.bpf, pytest.mark.slow, pytest.mark.timeout(time_limit(settles=1))]

MODEL = "diag-fraud"


def post_samples(agent: AgentProcess, rows: list[dict[str, float]]) -> int:
    req = urllib.request.Request(
        f"{agent.url}/v1/drift/{MODEL}/samples",
        data=json.dumps({"version": "v1", "rows": rows}).encode(),
        headers={"Content-Type": "application/json", **agent.auth()},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def test_blocked_and_drift_each_named_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rng = np.random.default_rng(7)
    csv = tmp_path / "ref.csv"
    np.savetxt(csv, rng.normal(size=(2000, 2)), delimiter=",", header="x,y", comments="")
    r = run_vigil(
        ["drift", "reference", "set", "--model", MODEL, "--version", "v1", str(csv),
         "--state-dir", str(state)]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    mark = marker()
    port = free_port()
    control: list[Any] = []
    with workloads() as w:
        drifted = w.start("light", mark)
        args = [
            "--watch",
            mark,
            "--state-dir",
            str(state),
            "--collector.drift.check-interval",
            "1s",
            "--collector.diagnosis.model-owners",
            f"{MODEL}={drifted}",
            *FAST,
        ]
        with AgentProcess(args, ready_timeout=READY_S) as agent:
            blocked = w.start("blocked", mark, port=port)
            healthy = w.start("light", mark)
            shifted = rng.normal(loc=3.0, size=(600, 2))
            assert post_samples(agent, [{"x": a, "y": b} for a, b in shifted]) == 200
            expected: dict[int, set[str]] = {
                blocked: {"blocked"},
                drifted: {"input_drift"},
                healthy: set(),
            }

            def watch_control(pid: int, target: dict[str, Any]) -> None:
                if pid == healthy and target["causes"]:
                    control.append(target["causes"])

            final = settle(agent, expected, seen=watch_control)
    assert control == [], f"the healthy control showed causes: {control}"
    drift = final[drifted]["causes"][0]
    assert drift["summary"] == f"input drift detected for model {MODEL}"
    assert final[drifted]["signals"]["drift_detected"] is True
    assert final[blocked]["signals"]["queue_requests"] >= 1
    assert causes(final[healthy]) == set()
