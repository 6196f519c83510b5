"""The metric catalogue (the declarations, agent/catalogue.py) as data, and the real output
as data."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from agent.catalogue import declarations


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    unit: str
    labels: frozenset[str]
    collector: str
    help: str


def load_catalogue() -> dict[str, Row]:
    """Declared families by exposed name (counters with _total)."""
    return {
        m.name: Row(m.name, m.type, m.unit, frozenset(m.labels), m.owner, m.help)
        for m in declarations()
    }


def _families(text: str) -> dict[str, tuple[str, frozenset[str], str]]:
    out: dict[str, tuple[str, frozenset[str], str]] = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels: set[str] = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le", "quantile"}
        prev = out.get(name)
        if prev is not None:
            labels |= prev[1]
        out[name] = (fam.type, frozenset(labels), fam.documentation)
    return out


def exposed_families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Family name as a user sees it (counters with _total) → (type, label names)."""
    return {name: (typ, labels) for name, (typ, labels, _) in _families(text).items()}


def undocumented(text: str, rows: dict[str, Row]) -> list[str]:
    """Exported families that are not declared, or exported with another type, an
    undeclared label or another help text."""
    problems = []
    for name, (typ, labels, help_) in _families(text).items():
        row = rows.get(name)
        if row is None:
            problems.append(f"{name}: exported but not declared")
        elif row.type != typ:
            problems.append(f"{name}: exported as {typ}, declared as {row.type}")
        elif not labels <= row.labels:
            problems.append(f"{name}: labels {sorted(labels - row.labels)} not declared")
        elif help_ != row.help:
            problems.append(f"{name}: exported with help {help_!r}, declared {row.help!r}")
    return problems
