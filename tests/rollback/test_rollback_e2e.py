"""The whole loop, with real parts only: drifted samples → the agent's KS test →
Prometheus (production rules, `for` shortened to 2s, 1s scrape and evaluation) →
Alertmanager (alerts/alertmanager.yml) → the rollback controller → `current` switched →
the demo model server answers with the previous version.

Prints the time from the first drifted sample to the switched symlink."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from agentproc import ROOT, AgentProcess, free_port, http_get, run_vigil
from otlp_receiver import OtlpReceiver
from rbproc import (
    TOKEN,
    ControllerProcess,
    alertmanager,
    alertmanager_config,
    generate_rules,
    live,
    prometheus,
    release_dir,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Enough samples for the KS test to reject at any sensible significance when the mean
# moves by two standard deviations (D ≈ 0.68), and few enough to post in one request.
BATCH = 400


def normal(mean: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, 1.0) for _ in range(n)]


def post_samples(agent: AgentProcess, version: str, values: list[float]) -> None:
    body = json.dumps({"version": version, "columns": {"x": values}}).encode()
    req = urllib.request.Request(
        f"{agent.url}/v1/drift/demo/samples",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **agent.auth()},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status < 300


def test_drifted_inputs_roll_the_model_back_once(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "models" / "demo", ["v1", "v2", "v3"])
    state = tmp_path / "agent-state"
    reference = tmp_path / "reference.csv"
    reference.write_text("x\n" + "".join(f"{v!r}\n" for v in normal(0.0, 2000, seed=1)))
    res = run_vigil(
        [
            "drift",
            "reference",
            "set",
            "--state-dir",
            str(state),
            "--model",
            "demo",
            "--version",
            "v3",
            str(reference),
        ]
    )
    assert res.returncode == 0, res.stdout + res.stderr
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)  # a token others can read is refused

    demo_port = free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "model_server.py"),
            "--release-dir",
            str(root),
            "--listen",
            f"127.0.0.1:{demo_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent_args = [
        "--state-dir",
        str(state),
        "--collector.drift.check-interval",
        "500ms",
        "--collector.drift.window",
        "1000",
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.profile",
    ]
    try:
        with (
            OtlpReceiver() as otlp,
            AgentProcess(agent_args) as agent,
            ControllerProcess(
                [
                    "--release-dir",
                    str(root),
                    "--token-file",
                    str(token_file),
                    "--otlp-endpoint",
                    otlp.url,
                ],
                tmp_path / "controller-state",
                token=TOKEN,
            ) as controller,
        ):
            am_cfg = alertmanager_config(
                tmp_path / "am.yml", controller.url + "/v1/alerts", token_file
            )
            rules = generate_rules(tmp_path / "rules.yml")
            with (
                alertmanager(tmp_path, am_cfg) as am,
                prometheus(tmp_path, rules, f"127.0.0.1:{agent.port}", am.url) as prom,
            ):
                # Inputs like the reference first: no alert, no rollback.
                post_samples(agent, "v3", normal(0.0, BATCH, seed=2))
                wait_for(
                    "the first scrape",
                    lambda: prom.get_json('/api/v1/query?query=up{job="vigil"}')["data"]["result"],
                    10,
                )
                time.sleep(2)
                assert controller.rollbacks() == [] and live(root) == "v3"

                first = time.monotonic()
                seed = 100
                while live(root) != "v2":
                    assert time.monotonic() - first < 30, controller.logs() + agent.logs()
                    post_samples(agent, "v3", normal(2.0, BATCH, seed=seed))
                    seed += 1
                    time.sleep(0.25)
                took = time.monotonic() - first

                firing = [
                    a
                    for a in prom.get_json("/api/v1/alerts")["data"]["alerts"]
                    if a["state"] == "firing"
                ]
                assert {a["labels"]["alertname"] for a in firing} >= {"VigilInputDriftDetected"}
                wait_for(
                    "a re-send",
                    lambda: (
                        controller.metric("vigil_rollback_alerts_total", result="duplicate") >= 1
                    ),
                    10,
                    controller.logs,
                )
                (rb,) = controller.rollbacks()
                assert rb["result"] == "succeeded" and rb["plan"] == {"from": "v3", "to": "v2"}
                assert rb["labels"]["model"] == "demo" and rb["labels"]["version"] == "v3"
                wait_for("span", lambda: otlp.traces, 5)
                (span,) = [
                    sp
                    for req in otlp.traces
                    for rs in req.resource_spans
                    for ss in rs.scope_spans
                    for sp in ss.spans
                ]
                attrs = {kv.key: kv.value.string_value for kv in span.attributes}
                assert span.name == "rollback.execution"
                assert attrs["rollback.result"] == "succeeded"
                assert attrs["rollback.target"] == f"release-dir:{root}"
                assert attrs["rollback.reason"].startswith("VigilInputDriftDetected: ")
                wait_for(
                    "the demo server to reload",
                    lambda: (
                        json.loads(http_get(f"http://127.0.0.1:{demo_port}/")[1])["version"] == "v2"
                    ),
                    3,
                )
    finally:
        demo.terminate()
        demo.wait(5)
    assert took < 15, f"first drifted sample -> symlink switched took {took:.1f}s"
    print(f"\nfirst drifted sample -> symlink switched: {took:.2f}s")
