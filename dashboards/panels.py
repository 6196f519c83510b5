"""The words Vigil's dashboards are written in: a query, four panel types, a row, the
variables and annotations, and the dashboard around them, each as Grafana 10/11 exports it
(schemaVersion 39). dashboards/generate.py describes each dashboard as a list of these calls.

A panel says only its size; ``layout`` places the list left to right, wrapping at the
grid's width, and numbers the panels, so adding one never means editing coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Every query reads the data source the user picks in the ``datasource`` variable, never a
# fixed uid: the same file then imports through the UI, the HTTP API and provisioning alike.
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39  # what Grafana 10.4 writes; later versions migrate it up on load

# Grafana's grid is 24 units wide; 8 puts three panels side by side, the default: three
# graphs still show a useful time axis on a laptop screen.
THIRD, HALF, FULL = 8, 12, 24
HEIGHT = 8  # grid rows (30 px each): a graph with its legend below stays readable

# Grafana's unit ids, named because the ids do not say what they mean: "percentunit" is a
# 0-1 ratio shown as a percentage, "ops" a rate per second, "short" a plain count.
COUNT = "short"
RATIO = "percentunit"
PER_SECOND = "ops"
SECONDS = "s"
BYTES = "bytes"
CELSIUS = "celsius"
WATTS = "watt"
HERTZ = "hertz"

# A stat without thresholds stays green: its value informs, it is not a verdict.
NO_THRESHOLDS: list[tuple[float | None, str]] = [(None, "green")]
# Columns of an instant query's table that say nothing per row: the scrape's bookkeeping,
# the cluster (picked in the variable above) and the agent's own pod.
HIDDEN_COLUMNS = ("Time", "__name__", "job", "instance", "cluster", "agent_pod")
# An info metric's value is always 1: the labels are the information.
INFO_HIDDEN_COLUMNS = (*HIDDEN_COLUMNS, "Value")


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A panel's JSON without its id and position, and the size ``layout`` places it at."""

    body: dict[str, Any]
    w: int
    h: int


def target(expr: str, legend: str = "") -> Target:
    """One PromQL query; without a legend Grafana names series by their labels."""
    return Target(expr, legend)


def _targets(
    targets: list[Target], *, instant: bool = False, fmt: str = ""
) -> list[dict[str, Any]]:
    """Stats and tables show the latest value (instant queries); graphs a range."""
    out = []
    for i, t in enumerate(targets):
        q: dict[str, Any] = {"datasource": DS, "expr": t.expr, "legendFormat": t.legend or "__auto"}
        q.update(instant=instant, range=not instant)
        if fmt:
            q["format"] = fmt
        q["refId"] = chr(ord("A") + i)
        out.append(q)
    return out


def _panel(
    kind: str, title: str, description: str, targets: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
    }


def row(title: str) -> Panel:
    return Panel({"type": "row", "title": title, "collapsed": False}, FULL, 1)


def timeseries(
    title: str,
    description: str,
    targets: list[Target],
    unit: str = COUNT,
    *,
    w: int = THIRD,
    h: int = HEIGHT,
    stack: bool = False,
    log: bool = False,
    maximum: float | None = None,
    draw: str = "line",
) -> Panel:
    """A graph from 0 (log scale: from the data), stepped lines as the samples are."""
    custom: dict[str, Any] = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "lineInterpolation": "stepAfter" if draw == "line" else "linear",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
        "scaleDistribution": {"type": "log", "log": 10} if log else {"type": "linear"},
    }
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if not log:  # 0 has no logarithm
        defaults["min"] = 0
    if maximum is not None:
        defaults["max"] = maximum
    body = _panel("timeseries", title, description, _targets(targets))
    body["fieldConfig"] = {"defaults": defaults, "overrides": []}
    body["options"] = {
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return Panel(body, w, h)


def stat(
    title: str,
    description: str,
    targets: list[Target],
    unit: str = COUNT,
    *,
    w: int = THIRD,
    h: int = HEIGHT,
    thresholds: list[tuple[float | None, str]] = NO_THRESHOLDS,
) -> Panel:
    """The latest value of each query, coloured by ``thresholds`` ((from, colour) steps)."""
    steps = [{"color": c, "value": v} for v, c in thresholds]
    body = _panel("stat", title, description, _targets(targets, instant=True))
    body["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "color": {"mode": "thresholds"},
        },
        "overrides": [],
    }
    body["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return Panel(body, w, h)


def table(
    title: str,
    description: str,
    targets: list[Target],
    unit: str = COUNT,
    *,
    w: int = THIRD,
    h: int = HEIGHT,
    hide: tuple[str, ...] = HIDDEN_COLUMNS,
) -> Panel:
    """One row per series of the latest values, label columns in ``hide`` left out."""
    body = _panel("table", title, description, _targets(targets, instant=True, fmt="table"))
    body["fieldConfig"] = {"defaults": {"unit": unit}, "overrides": []}
    body["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    body["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {"excludeByName": dict.fromkeys(hide, True), "renameByName": {}},
        },
    ]
    return Panel(body, w, h)


def heatmap(
    title: str,
    description: str,
    targets: list[Target],
    unit: str,
    *,
    w: int = THIRD,
    h: int = HEIGHT,
) -> Panel:
    """A histogram's buckets over time, as Prometheus has them (no recalculation)."""
    body = _panel("heatmap", title, description, _targets(targets, fmt="heatmap"))
    body["fieldConfig"] = {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}}
    body["options"] = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5},
        "yAxis": {"unit": unit, "axisPlacement": "left"},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"show": True, "yHistogram": True},
        "legend": {"show": True},
        "cellValues": {},
        # Cells that counted nothing stay blank instead of taking the scale's lowest colour.
        "filterValues": {"le": 1e-9},
    }
    return Panel(body, w, h)


@dataclass(frozen=True)
class Link:
    """A data link: a click on a series (or table cell) opens ``url``, in which Grafana
    replaces ``${__field.labels.NAME}`` by that series' label and ``${var}`` by a variable."""

    title: str
    url: str


def with_links(panel: Panel, links: list[Link]) -> Panel:
    """The panel with data links on every field it shows."""
    body = {**panel.body}
    field_config = {**body["fieldConfig"]}
    field_config["defaults"] = {
        **field_config["defaults"],
        "links": [{"title": k.title, "url": k.url, "targetBlank": True} for k in links],
    }
    body["fieldConfig"] = field_config
    return Panel(body, panel.w, panel.h)


def layout(panels: Iterable[Panel]) -> list[dict[str, Any]]:
    """Places panels left to right, wrapping at the grid's width; a row starts a new line
    and spans it. Ids count from 1 in order."""
    out: list[dict[str, Any]] = []
    x = y = line_h = 0
    for pid, p in enumerate(panels, start=1):
        if p.body["type"] == "row" or x + p.w > FULL:
            y, x, line_h = y + line_h, 0, 0
        grid = {"h": p.h, "w": p.w, "x": x, "y": y}
        if p.body["type"] == "row":
            out.append({"id": pid, **p.body, "gridPos": grid, "panels": []})
            y += p.h
            continue
        out.append({**p.body, "id": pid, "gridPos": grid})
        x += p.w
        line_h = max(line_h, p.h)
    return out


def ds_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values", "qryType": 1},
        "definition": query,
        "refresh": 2,  # on time range change: pods come and go
        "includeAll": True,
        "allValue": ".*",
        "multi": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "regex": "",
        "options": [],
    }


def textbox_variable(name: str, label: str, description: str, default: str = "") -> dict[str, Any]:
    """A free-text variable (a URL the dashboard cannot discover), kept when saved."""
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "textbox",
        "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
        "hide": 0,
    }


def _annotation_builtin() -> dict[str, Any]:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def prom_annotation(name: str, expr: str, color: str, title: str, text: str) -> dict[str, Any]:
    """A mark on every graph at each time ``expr`` has a series."""
    return {
        "name": name,
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": "15s",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": "",
        "useValueForTime": False,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[dict[str, Any]],
    panels: Iterable[Panel],
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    placed = layout(panels)
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *[
                {"type": "panel", "id": p, "name": p, "version": ""}
                for p in sorted({p["type"] for p in placed if p["type"] != "row"})
            ],
        ],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vigil", "gpu", "inference"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: the point of putting panels side by side
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        # One dropdown to the other Vigil dashboards, carrying the selection over.
        "links": [
            {
                "title": "Vigil",
                "type": "dashboards",
                "tags": ["vigil"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "annotations": {"list": [_annotation_builtin(), *(annotations or [])]},
        "panels": placed,
    }
