"""Alertmanager webhook payloads (version 4): parsing and validation, pure.

Every rule that a payload breaks becomes a :class:`PayloadError` whose message names the
field (``alerts[2].startsAt: ...``), which the controller returns as a 400 body. Nothing
here touches the network, the journal or the clock.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Alertmanager batches at most the alerts of one group; 1000 is far above any real group
# and bounds the work one request can cause.
MAX_ALERTS = 1000
# RFC 3339 as Go writes it: up to nanoseconds, "Z" or an offset.
_RFC3339 = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE
)


class PayloadError(ValueError):
    """The payload is not a valid Alertmanager webhook; the message says where and why."""


@dataclass(frozen=True)
class Alert:
    status: str  # "firing" or "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str  # as sent: with the fingerprint, the identity of one incident
    ends_at: str
    fingerprint: str
    generator_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass(frozen=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    alerts: list[Alert]


def parse_time(text: str) -> datetime:
    """RFC 3339 with up to nanoseconds (what Go emits) → an aware datetime (µs precision)."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    base, frac, zone = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone.upper() == "Z" else zone
    dt = datetime.fromisoformat(f"{base}.{micro}{zone}")
    return dt.astimezone(UTC)


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object of strings, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError(f"{where}.{k}: expected a string, got {type(v).__name__}")
    return dict(value)


def _alert(raw: Any, where: str) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(f"{where}: expected an object, got {type(raw).__name__}")
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status: expected 'firing' or 'resolved', got {status!r}")
    labels = _str_map(raw.get("labels"), f"{where}.labels")
    if not labels.get("alertname"):
        raise PayloadError(f"{where}.labels.alertname: missing")
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise PayloadError(f"{where}.fingerprint: missing (Alertmanager 0.19+ always sends it)")
    starts_at = raw.get("startsAt")
    if not isinstance(starts_at, str):
        raise PayloadError(f"{where}.startsAt: missing")
    try:
        parse_time(starts_at)
    except ValueError as exc:
        raise PayloadError(f"{where}.startsAt: {exc}") from None
    ends_at = raw.get("endsAt", "")
    if not isinstance(ends_at, str):
        raise PayloadError(f"{where}.endsAt: expected a string")
    return Alert(
        status=status,
        labels=labels,
        annotations=_str_map(raw.get("annotations"), f"{where}.annotations"),
        starts_at=starts_at,
        ends_at=ends_at,
        fingerprint=fingerprint,
        generator_url=str(raw.get("generatorURL", "")),
    )


def parse_notification(body: bytes) -> Notification:
    """One webhook body → a :class:`Notification`, or :class:`PayloadError`."""
    try:
        doc = json.loads(body)
    except RecursionError:
        # The decoder recurses once per nesting level: a body of a few thousand "["
        # would otherwise escape as a 500, which Alertmanager retries for ever.
        raise PayloadError("body is not JSON: JSON nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError and the int-digits limit (a number of
        # more than 4300 digits) are all ValueErrors; each is a bad body, never a 500.
        raise PayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("version") != "4":
        raise PayloadError(
            f'version: expected "4" (Alertmanager webhook), got {doc.get("version")!r}'
        )
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: expected a list")
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(
            f"alerts: {len(alerts)} alerts in one notification (at most {MAX_ALERTS})"
        )
    return Notification(
        receiver=str(doc.get("receiver", "")),
        status=str(doc.get("status", "")),
        group_key=str(doc.get("groupKey", "")),
        alerts=[_alert(a, f"alerts[{i}]") for i, a in enumerate(alerts)],
    )
