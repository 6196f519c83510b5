"""The two inference rollback triggers end to end, with real parts only: a real MLServer
(tests/inference/servers.py) → the agent's inference collector → Prometheus (the
production rules, `for` shortened to 2s, 1s scrape and evaluation) → Alertmanager
(alerts/alertmanager.yml) → the rollback controller → the release directory's `current`
switched, exactly once per fault.

- the server frozen (SIGSTOP): VigilInferenceProbeTimeouts;
- the model failing 2 % of at least the rule's minimum number of requests:
  VigilInferenceErrorRatio.

Prints the time from the fault to the switched release."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from agentproc import AgentProcess
from rbproc import (
    TOKEN,
    Binary,
    ControllerProcess,
    alertmanager,
    alertmanager_config,
    generate_rules,
    live,
    prometheus,
    release_dir,
    wait_for,
)
from servers import BAD, GOOD, MLServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

THRESHOLDS = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "alerts" / "thresholds.yml").read_text()
)


@dataclass
class Stack:
    root: Path
    server: MLServerProcess
    agent: AgentProcess
    controller: ControllerProcess
    prom: Binary

    def firing(self) -> set[str]:
        alerts = self.prom.get_json("/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    def logs(self) -> str:
        return "\n".join(
            [self.controller.logs()[-3000:], self.agent.logs()[-3000:], self.server.logs()[-2000:]]
        )


@contextmanager
def stack(tmp_path: Path) -> Iterator[Stack]:
    root = release_dir(tmp_path / "releases" / "iris", ["v1", "v2", "v3"])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    # The error-ratio alert names the model; the probe alert names the server (its process
    # and port, no model), so the policy maps both to the model's release directory.
    config = tmp_path / "rollback.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": {"iris-releases": {"action": "release_dir", "path": str(root)}},
                "policy": [
                    {"target": "iris-releases", "match": {"model": "iris"}},
                    {
                        "target": "iris-releases",
                        "match": {"alertname": "VigilInferenceProbeTimeouts", "comm": "mlserver"},
                    },
                ],
            }
        )
    )
    with MLServerProcess(tmp_path / "server") as server:
        agent_args = [
            "--watch",
            server.watch,
            "--state-dir",
            str(tmp_path / "agent-state"),
            "--discovery.interval",
            "1s",
            "--collector.inference.interval",
            "1s",
            "--no-collector.sched",
            "--no-collector.gpu",
            "--no-collector.profile",
        ]
        # Both of the server's per-model counters exist before the agent's first read.
        assert server.infer(GOOD)[0] == 200 and server.infer(BAD)[0] == 500
        with (
            AgentProcess(agent_args) as agent,
            ControllerProcess(
                ["--config", str(config), "--token-file", str(token_file)],
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
                st = Stack(root, server, agent, controller, prom)
                wait_for(
                    "the server's series in Prometheus",
                    lambda: prom.get_json(
                        "/api/v1/query?query=vigil_inference_up{kind=%22oip%22}%20==%201"
                    )["data"]["result"],
                    30,
                    st.logs,
                )
                yield st


def wait_switch(st: Stack, keep_failing: Callable[[], None], timeout: float) -> float:
    """Seconds until `current` moves off v3, calling ``keep_failing`` meanwhile."""
    first = time.monotonic()
    while live(st.root) == "v3":
        assert time.monotonic() - first < timeout, f"no rollback in {timeout}s\n{st.logs()}"
        keep_failing()
    return time.monotonic() - first


def exactly_one_rollback(st: Stack, alertname: str, keep_failing: Callable[[], None]) -> None:
    """The alert keeps firing and Alertmanager re-sends it: the controller acts once."""
    assert alertname in st.firing()
    deadline = time.monotonic() + 20
    while st.controller.metric("vigil_rollback_alerts_total", result="duplicate") < 1:
        assert time.monotonic() < deadline, f"no re-send seen\n{st.logs()}"
        keep_failing()
    (rb,) = st.controller.rollbacks()
    assert rb["result"] == "succeeded" and rb["plan"] == {"from": "v3", "to": "v2"}, rb
    assert rb["labels"]["alertname"] == alertname
    assert live(st.root) == "v2"


def test_frozen_server_rolls_the_model_back_once(tmp_path: Path) -> None:
    with stack(tmp_path) as st:
        # Healthy and answering: nothing fires, nothing is rolled back.
        for _ in range(20):
            assert st.server.infer(GOOD)[0] == 200
        time.sleep(3)
        assert st.controller.rollbacks() == [] and live(st.root) == "v3"

        st.server.pause()  # SIGSTOP
        try:
            took = wait_switch(st, lambda: time.sleep(0.1), timeout=60)
            exactly_one_rollback(st, "VigilInferenceProbeTimeouts", lambda: time.sleep(0.1))
            (rb,) = st.controller.rollbacks()
            assert rb["labels"]["kind"] == "oip"
            assert rb["labels"]["pid"] == str(st.server.pid)
            assert int(rb["labels"]["port"]) in (st.server.http_port, st.server.metrics_port)
        finally:
            st.server.resume()
    print(f"\nSIGSTOP -> release switched: {took:.2f}s")


def test_failing_requests_roll_the_model_back_once(tmp_path: Path) -> None:
    minimum = int(THRESHOLDS["inference_error_min_requests"])
    with stack(tmp_path) as st:
        # Requests failing at 5 %, but far fewer than the rule's minimum in its window:
        # noise, nothing fires.
        for i in range(200):
            assert st.server.infer(BAD if i % 20 == 0 else GOOD)[0] == (500 if i % 20 == 0 else 200)
        time.sleep(4)
        assert st.controller.rollbacks() == [] and live(st.root) == "v3"
        assert "VigilInferenceErrorRatio" not in st.firing()

        sent = [0]

        def traffic() -> None:
            # 1 request in 50 fails: 2 %, twenty times the rule's 0.1 %.
            for _ in range(50):
                sent[0] += 1
                bad = sent[0] % 50 == 0
                assert st.server.infer(BAD if bad else GOOD)[0] == (500 if bad else 200)

        took = wait_switch(st, traffic, timeout=90)
        # Only above the rule's minimum number of requests in its window.
        assert sent[0] >= minimum * 0.9, f"rolled back after {sent[0]} requests"
        exactly_one_rollback(st, "VigilInferenceErrorRatio", traffic)
        (rb,) = st.controller.rollbacks()
        assert rb["labels"]["model"] == "iris"
    print(f"\nfirst failing request -> release switched: {took:.2f}s ({sent[0]} requests)")
