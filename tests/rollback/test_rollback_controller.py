"""The controller process driven over HTTP with Alertmanager-shaped payloads."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agentproc import http_get
from fake_kube import FakeKube, deployment_config, llm_fixture
from otlp_receiver import OtlpReceiver
from rbproc import DRIFT, TOKEN, ControllerProcess, alert, live, payload, release_dir


def test_a_rollback_alert_switches_current_once_however_often_it_is_resent(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    with ControllerProcess(["--release-dir", str(root)], tmp_path / "state") as c:
        started = time.monotonic()
        status, body = c.post(payload(alert(DRIFT)))
        answered = time.monotonic() - started
        assert status == 200 and body["alerts"][0]["result"] == "accepted"
        for _ in range(5):  # Alertmanager's re-sends of the same incident
            status, body = c.post(payload(alert(DRIFT)))
            assert status == 200 and body["alerts"][0]["result"] == "duplicate"
        (rb,) = c.wait_done()
        assert live(root) == "v2"
        assert rb["result"] == "succeeded" and rb["plan"] == {"from": "v3", "to": "v2"}
        assert rb["reason"] == "VigilInputDriftDetected: inputs drifted"
        assert (
            c.metric(
                "vigil_rollbacks_total",
                target=f"release-dir:{root}",
                action="release_dir",
                result="succeeded",
            )
            == 1
        )
        assert c.metric("vigil_rollback_alerts_total", result="accepted") == 1
        assert c.metric("vigil_rollback_alerts_total", result="duplicate") == 5
    assert answered < 1.0, "the webhook answers before acting"


def test_resolved_cooldown_and_unlabelled_alerts_do_not_act(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    with ControllerProcess(["--release-dir", str(root), "--cooldown", "1h"], tmp_path / "s") as c:
        first = alert({**DRIFT, "version": "v3"}, fingerprint="a1")
        resolved = alert(DRIFT, fingerprint="a1", status="resolved")
        again = alert(
            {**DRIFT, "version": "v2"}, fingerprint="a2", starts_at="2026-11-23T11:00:00Z"
        )
        info = alert({"model": "demo", "severity": "warning"}, fingerprint="a3")
        _, body = c.post(payload(first, info))
        assert [a["result"] for a in body["alerts"]] == ["accepted", "ignored"]
        c.wait_done()
        _, body = c.post(payload(resolved, again))
        assert [a["result"] for a in body["alerts"]] == ["resolved", "cooldown"]
        assert "cooldown 3600s" in body["alerts"][1]["detail"]
        time.sleep(0.3)
        assert live(root) == "v2" and len(c.rollbacks()) == 1


def test_the_hourly_cap_holds_across_targets(tmp_path: Path) -> None:
    roots = [release_dir(tmp_path / f"m{i}", ["v1", "v2"]) for i in range(3)]
    cfg = tmp_path / "rollback.yaml"
    cfg.write_text(
        json.dumps(
            {
                "max_per_hour": 2,
                "targets": {
                    "models": {"action": "release_dir", "path": str(tmp_path) + "/{model}"}
                },
                "policy": [{"match_re": {"model": "m.*"}, "target": "models"}],
            }
        )
    )
    with ControllerProcess(["--config", str(cfg)], tmp_path / "s") as c:
        alerts = [
            alert({"action": "rollback", "model": f"m{i}"}, fingerprint=f"f{i}") for i in range(3)
        ]
        _, body = c.post(payload(*alerts))
        assert [a["result"] for a in body["alerts"]] == ["accepted", "accepted", "rate_limited"]
        c.wait_done(2)
    assert [live(r) for r in roots] == ["v1", "v1", "v2"]


BAD_INPUT = [
    (b"not json", 400, "body is not JSON"),
    (
        b'{"version": "4", "alerts": [{"status": "firing"}]}',
        400,
        "alerts[0].labels.alertname: missing",
    ),
    (
        b'{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"}, '
        b'"fingerprint": "f", "startsAt": "noon"}]}',
        400,
        "alerts[0].startsAt",
    ),
    (b"{" + b" " * (2 * 1024 * 1024) + b"}", 413, "body larger than"),
]


def test_bad_input_is_a_4xx_with_the_reason_and_breaks_nothing(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    with ControllerProcess(["--release-dir", str(root)], tmp_path / "s") as c:
        for raw, status, message in BAD_INPUT:
            got, body = c.post(None, raw=raw)
            assert got == status and message in body["error"], (raw[:40], body)
        unlabelled = alert({"model": "demo"}, fingerprint="ok")
        assert c.post(payload(unlabelled))[1]["alerts"][0]["result"] == "ignored", "still serving"
        assert c.metric("vigil_rollback_alerts_total", result="invalid") == len(BAD_INPUT)
        assert c.rollbacks() == [] and live(root) == "v2"
        assert "Traceback" not in c.logs()


def test_the_token_guards_the_webhook_and_the_journal_lists(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    with ControllerProcess(["--release-dir", str(root)], tmp_path / "s") as c:
        assert c.post(payload(alert(DRIFT)), token=None)[0] == 401
        assert c.post(payload(alert(DRIFT)), token="wrong")[0] == 401
        assert http_get(c.url + "/v1/rollbacks")[0] == 401
        assert live(root) == "v3" and c.rollbacks() == []
        c.post(payload(alert(DRIFT)))
        c.wait_done()
        status, body = http_get(
            c.url + "/v1/rollbacks?limit=0", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 400 and "limit" in body
        (row,) = c.rollbacks()
        assert row["labels"]["model"] == "demo" and row["state"] == "done"
        assert row["decided_at"] <= row["started_at"] <= row["finished_at"]


def test_without_a_token_one_is_generated_for_alertmanager(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    state = tmp_path / "s"
    c = ControllerProcess(["--release-dir", str(root)], state, token=None)
    with c:
        token_file = state / "rollback-token"
        assert (token_file.stat().st_mode & 0o777) == 0o600
        c.token = token_file.read_text().strip()
        assert len(c.token) >= 32
        assert c.post(payload(alert(DRIFT)))[0] == 200
        c.wait_done()
    with ControllerProcess(["--release-dir", str(root)], state, token=None) as again:
        assert again.post(payload(alert(DRIFT, fingerprint="n")), token=c.token)[0] == 200


def test_dry_run_journals_but_changes_nothing(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    with ControllerProcess(["--release-dir", str(root), "--dry-run"], tmp_path / "s") as c:
        c.post(payload(alert(DRIFT)))
        (rb,) = c.wait_done()
    assert rb["result"] == "dry_run" and rb["dry_run"] is True and live(root) == "v3"
    assert rb["detail"].endswith("v3 -> v2")


def test_span_is_exported_with_the_rollback_attributes(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    labels = {"action": "rollback", "gpu": "0", "uuid": "GPU-aaaa", "instance": "n1:9475"}
    # A GPU alert reaches a release directory only through a rule that maps the GPU to it.
    cfg = tmp_path / "rollback.yaml"
    cfg.write_text(
        json.dumps(
            {
                "targets": {"demo": {"action": "release_dir", "path": str(root)}},
                "policy": [{"match": {"instance": "n1:9475", "gpu": "0"}, "target": "demo"}],
            }
        )
    )
    with (
        OtlpReceiver() as rx,
        ControllerProcess(["--config", str(cfg), "--otlp-endpoint", rx.url], tmp_path / "s") as c,
    ):
        c.post(payload(alert(labels, annotations={"summary": "GPU 0 is 96% full"})))
        c.wait_done()
        deadline = time.monotonic() + 10
        while not rx.traces and time.monotonic() < deadline:
            time.sleep(0.05)
    (span,) = [
        s
        for req in rx.traces
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    attrs = {kv.key: kv.value for kv in span.attributes}
    assert span.name == "rollback.execution"
    assert attrs["rollback.reason"].string_value == "VigilInputDriftDetected: GPU 0 is 96% full"
    assert attrs["rollback.target"].string_value == f"release-dir:{root}"
    assert attrs["rollback.action"].string_value == "release_dir"
    assert attrs["rollback.result"].string_value == "succeeded"
    assert [v.string_value for v in attrs["rollback.gpu_ids"].array_value.values] == ["GPU-aaaa"]
    resource = {
        kv.key: kv.value.string_value for kv in rx.traces[0].resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "vigil-rollback-controller"


def test_kubernetes_target_named_by_the_alert(tmp_path: Path) -> None:
    with FakeKube() as kube:
        llm_fixture(kube)
        cfg = deployment_config(tmp_path, kube)
        with ControllerProcess(["--config", str(cfg)], tmp_path / "s") as c:
            labels = {"action": "rollback", "namespace": "inference", "deployment": "llm"}
            c.post(payload(alert(labels)))
            c.post(payload(alert(labels)))
            (rb,) = c.wait_done()
            assert rb["result"] == "succeeded", rb["detail"]
            assert rb["target"] == "deployment:inference/llm"
            missing = alert(
                {"action": "rollback", "namespace": "inference", "deployment": "gone"},
                fingerprint="g",
            )
            c.post(payload(missing))
            rows = c.wait_done(2)
            assert rows[0]["result"] == "failed" and "HTTP 404" in rows[0]["detail"]
        assert len(kube.patches()) == 1
        dep = kube.deployments[("inference", "llm")]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "llm:v2"
