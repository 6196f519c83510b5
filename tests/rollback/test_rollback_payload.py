"""Webhook payload validation: every malformed field is named in the error."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rbproc import DRIFT, alert, payload

from agent.rollback.payload import PayloadError, parse_notification, parse_time


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_an_alertmanager_payload_parses() -> None:
    n = parse_notification(
        body(payload(alert(DRIFT), alert(DRIFT, status="resolved", fingerprint="aa")))
    )
    assert n.receiver == "vigil-rollback"
    first, second = n.alerts
    assert first.firing and first.name == "VigilInputDriftDetected"
    assert first.labels["model"] == "demo" and first.fingerprint == "5ef77f1f8a3ecfc8"
    assert first.starts_at == "2026-11-23T10:00:00.123456789Z"
    assert not second.firing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00.123456789Z", datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-23T12:00:00.5+02:00", datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_as_go_writes_them(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def _broken(mutate) -> dict:  # type: ignore[no-untyped-def]
    doc = payload(alert(DRIFT))
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "expected a JSON object"),
        (_broken(lambda d: d.update(version="3")), 'version: expected "4"'),
        (_broken(lambda d: d.pop("version")), "version"),
        (_broken(lambda d: d.update(alerts={"a": 1})), "alerts: expected a list"),
        (_broken(lambda d: d.update(alerts=[alert(DRIFT)] * 1001)), "at most 1000"),
        (_broken(lambda d: d["alerts"].append("x")), "alerts[1]: expected an object"),
        (_broken(lambda d: d["alerts"][0].update(status="pending")), "alerts[0].status"),
        (_broken(lambda d: d["alerts"][0].update(labels=["a"])), "alerts[0].labels: expected"),
        (_broken(lambda d: d["alerts"][0]["labels"].update(model=3)), "alerts[0].labels.model"),
        (_broken(lambda d: d["alerts"][0]["labels"].pop("alertname")), "labels.alertname"),
        (_broken(lambda d: d["alerts"][0].pop("fingerprint")), "alerts[0].fingerprint"),
        (_broken(lambda d: d["alerts"][0].pop("startsAt")), "alerts[0].startsAt: missing"),
        (_broken(lambda d: d["alerts"][0].update(startsAt="yesterday")), "RFC 3339"),
        (_broken(lambda d: d["alerts"][0].update(annotations={"s": None})), "annotations.s"),
    ],
)
def test_invalid_payloads_say_where(doc: object, message: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_notification(body(doc))
    assert message in str(err.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"null"])
def test_non_json_bodies_are_payload_errors(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_notification(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "JSON nested too deeply"),
        (b"1" * 5000, "body is not JSON"),  # past the int-digits limit: ValueError
    ],
)
def test_hostile_json_is_a_payload_error_not_a_crash(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_notification(raw)
    assert message in str(err.value)
