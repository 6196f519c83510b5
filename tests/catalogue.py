"""The metric catalogue (docs/metrics.md) as data, and the real output as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CATALOGUE = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    unit: str
    labels: frozenset[str]
    collector: str
    help: str


def load_catalogue(path: Path = CATALOGUE) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| name ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, typ, unit, labels, collector, help_ = cells[:6]
        assert name not in rows, f"{name} listed twice in {path.name}"
        rows[name] = Row(
            name, typ, unit, frozenset(x for x in labels.split(",") if x), collector, help_
        )
    return rows


def exposed_families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Family name as a user sees it (counters with _total) → (type, label names)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels: set[str] = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le", "quantile"}
        prev = out.get(name)
        if prev is not None:
            labels |= prev[1]
        out[name] = (fam.type, frozenset(labels))
    return out


def undocumented(text: str, rows: dict[str, Row]) -> list[str]:
    """Exported families missing from the catalogue, or exported with another type or an
    unlisted label."""
    problems = []
    for name, (typ, labels) in exposed_families(text).items():
        row = rows.get(name)
        if row is None:
            problems.append(f"{name}: exported but missing from docs/metrics.md")
        elif row.type != typ and not (row.type == "info" and typ == "gauge"):
            problems.append(f"{name}: exported as {typ}, catalogued as {row.type}")
        elif not labels <= row.labels:
            problems.append(f"{name}: labels {sorted(labels - row.labels)} not catalogued")
    return problems
