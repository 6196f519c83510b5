"""Real Prometheus and real Alertmanager drive the controller.

Prometheus evaluates the production rules (every `for` shortened to 2s by
scripts/gen-alerts) against a metric it scrapes; Alertmanager routes with
alerts/alertmanager.yml (only its URL, token file and timings changed). The scraped
endpoint here serves `vigil_drift_detected` directly, so this test isolates the alert →
rollback path; test_rollback_e2e.py runs the same loop from drifted samples through the
agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from otlp_receiver import OtlpReceiver
from rbproc import (
    TOKEN,
    Binary,
    ControllerProcess,
    MetricsPage,
    alertmanager,
    alertmanager_config,
    generate_rules,
    live,
    prometheus,
    release_dir,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Exporter(MetricsPage):
    """The drift gauge of one model version, settable."""

    def drift(self, value: int) -> None:
        self.body = (
            "# TYPE vigil_drift_detected gauge\n"
            f'vigil_drift_detected{{model="demo",version="v3"}} {value}\n'
        )


@dataclass
class Stack:
    root: Path
    exporter: Exporter
    controller: ControllerProcess
    prometheus: Binary
    alertmanager: Binary
    otlp: OtlpReceiver


@contextmanager
def stack(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[Stack]:
    root = release_dir(tmp_path / "models" / "demo", ["v1", "v2", "v3"])
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # a token others can read is refused
    exporter = Exporter()
    exporter.drift(0)
    with ExitStack() as es:
        otlp = es.enter_context(OtlpReceiver())
        controller = es.enter_context(
            ControllerProcess(
                [
                    "--release-dir",
                    str(root),
                    "--token-file",
                    str(token_file),
                    "--otlp-endpoint",
                    otlp.url,
                ],
                tmp_path / "state",
                env=env,
                token=TOKEN,
            )
        )
        am_cfg = alertmanager_config(
            tmp_path / "alertmanager.yml", controller.url + "/v1/alerts", token_file
        )
        am = es.enter_context(alertmanager(tmp_path, am_cfg))
        rules = generate_rules(tmp_path / "rules.yml")
        prom = es.enter_context(prometheus(tmp_path, rules, exporter.target, am.url))
        # Prometheus hands its first targets to the scraper up to 5s after start; timings
        # are measured from a running loop, as in production.
        wait_for(
            "the first scrape",
            lambda: prom.get_json('/api/v1/query?query=up{job="vigil"}==1')["data"]["result"],
            15,
        )
        yield Stack(root, exporter, controller, prom, am, otlp)
    exporter.server.shutdown()


def test_alert_fires_alertmanager_delivers_and_the_controller_rolls_back_once(
    tmp_path: Path,
) -> None:
    with stack(tmp_path) as s:
        c = s.controller
        s.exporter.drift(1)
        took = wait_for("rollback", lambda: live(s.root) == "v2", 20, c.logs)
        alerts = s.prometheus.get_json("/api/v1/alerts")["data"]["alerts"]
        assert [(a["labels"]["alertname"], a["state"]) for a in alerts] == [
            ("VigilInputDriftDetected", "firing")
        ]
        # Alertmanager re-sends the notification (repeat_interval 2s): still one rollback.
        wait_for(
            "a re-send",
            lambda: c.metric("vigil_rollback_alerts_total", result="duplicate") >= 1,
            10,
            c.logs,
        )
        (rb,) = c.rollbacks()
        assert rb["result"] == "succeeded" and rb["plan"] == {"from": "v3", "to": "v2"}
        assert rb["labels"]["alertname"] == "VigilInputDriftDetected"
        assert rb["labels"]["model"] == "demo" and rb["labels"]["job"] == "vigil"
        assert (
            rb["reason"] == "VigilInputDriftDetected: Inputs of demo v3 drifted from its reference"
        )
        wait_for("span", lambda: s.otlp.traces, 5)
        # The drift ends: the resolved notification is recorded, nothing more happens.
        s.exporter.drift(0)
        wait_for(
            "resolved",
            lambda: c.metric("vigil_rollback_alerts_total", result="resolved") >= 1,
            15,
            c.logs,
        )
        assert live(s.root) == "v2" and len(c.rollbacks()) == 1
    spans = [
        sp
        for req in s.otlp.traces
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
    ]
    assert [sp.name for sp in spans] == ["rollback.execution"]
    print(f"\nmetric=1 -> symlink switched: {took:.2f}s")


def test_a_controller_crash_before_acting_is_completed_after_restart(tmp_path: Path) -> None:
    with stack(tmp_path, env={"VIGIL_ROLLBACK_FAILPOINT": "before-action"}) as s:
        c = s.controller
        s.exporter.drift(1)
        assert c.proc is not None
        wait_for("crash at the failpoint", lambda: c.proc.poll() is not None, 20, c.logs)  # type: ignore[union-attr]
        assert live(s.root) == "v3", "crashed before acting"
        c.env.pop("VIGIL_ROLLBACK_FAILPOINT")
        c.start()
        wait_for("rollback after restart", lambda: live(s.root) == "v2", 15, c.logs)
        wait_for(
            "a re-send",
            lambda: c.metric("vigil_rollback_alerts_total", result="duplicate") >= 1,
            10,
            c.logs,
        )
        (rb,) = c.rollbacks()
        assert rb["result"] == "succeeded" and rb["attempts"] == 2
        assert live(s.root) == "v2"
