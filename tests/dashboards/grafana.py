"""What Grafana does with a dashboard's queries, for the tests: read the JSON, find every
PromQL expression, resolve template variables, and name the metrics an expression reads."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Series Prometheus itself writes for every scrape target; not Vigil's, so not declared,
# but the "Vigil itself" dashboard reads them.
from promql import PROMETHEUS_SERIES as PROMETHEUS_SERIES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str  # panel title, or "annotation: <name>"
    ref: str
    expr: str
    instant: bool
    description: str


def queries(name: str, board: dict[str, Any]) -> Iterator[Query]:
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            yield Query(
                name,
                panel["title"],
                t.get("refId", "?"),
                t["expr"],
                bool(t.get("instant")) and not t.get("range"),
                panel.get("description", ""),
            )
    for ann in board.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            yield Query(name, f"annotation: {ann['name']}", "A", ann["expr"], False, "")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (selectors' names, not labels or functions)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables ($__rate_interval, $pod)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = _GROUPING.sub("", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        rest = text[m.end() :].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if word.lower() in _KEYWORDS:
            continue
        before = text[: m.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # the unit of a number or duration (5m, 1e3)
        names.add(word)
    return names


def catalogue() -> dict[str, str]:
    """The declarations (agent/catalogue.py): metric family (exposed name) -> type."""
    from agent.catalogue import declarations

    return {m.name: m.type for m in declarations()}


def family(name: str, cat: dict[str, str]) -> str | None:
    """The catalogue row a series name belongs to (histograms' _bucket/_sum/_count)."""
    if name in cat:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and cat.get(base) == "histogram":
            return base
    return None


Resolver = Callable[[str, str], list[str]]  # (match[] selector, label) -> values

_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<sel>.+),\s*)?(?P<label>\w+)\s*\)\s*$")


_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]])")


def regex_escape(value: str) -> str:
    """A value as Grafana writes it into a =~ matcher: regex specials backslashed, and the
    backslash doubled for PromQL's string literal: ``p.1`` becomes ``p\\\\.1``."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value)


def substitute(text: str, values: dict[str, str]) -> str:
    """Replaces $name and ${name} by the values, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


ALL = "$__all"  # a preference for a variable's "All", as Grafana stores it


def resolve_variables(
    board: dict[str, Any], label_values: Resolver, prefer: dict[str, str]
) -> dict[str, str]:
    """Grafana's variable resolution: in order, each query variable's label_values() is run
    with the variables before it substituted; the value is the preferred one when it is
    among the answers (or ``ALL``: the variable's "All"), else the first answer, else "All"
    (the variable's allValue)."""
    values: dict[str, str] = {}
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = _LABEL_VALUES.match(substitute(q, values))
        assert m, f"variable {var['name']}: not a label_values() query: {q}"
        found = sorted(v for v in label_values(m.group("sel") or "", m.group("label")) if v)
        if prefer.get(var["name"]) == ALL:
            values[var["name"]] = var.get("allValue") or ".*"
        elif prefer.get(var["name"]) in found:
            values[var["name"]] = regex_escape(prefer[var["name"]])
        elif found:
            values[var["name"]] = regex_escape(found[0])
        else:
            values[var["name"]] = var.get("allValue") or ".*"
    return values
