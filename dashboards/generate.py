#!/usr/bin/env python3
"""Writes Vigil's Grafana dashboards (dashboards/*.json) and their ConfigMaps for Grafana's
sidecar (deploy/grafana-dashboards.yaml) from one description.

    python3 dashboards/generate.py          # rewrite the files
    python3 dashboards/generate.py --check  # exit 1 when a committed file is out of date

Plain Python, standard library only: the JSON is what Grafana 10/11 exports (schemaVersion
39), with a ``datasource`` variable instead of a fixed data source, so the same file
imports through the UI, the HTTP API and file provisioning alike.

Every series is filtered by ``cluster`` and ``node`` (labels added at scrape time, see
docs/dashboards.md), per-process series also by ``namespace`` and ``pod``. A variable's
"All" is ``.*``, which also matches series without the label (a bare-metal host has no
cluster, a process outside Kubernetes no pod).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
# Grafana's grid is 24 units wide; 8 puts three panels side by side.
THIRD, HALF, FULL = 8, 12, 24

NODE = 'cluster=~"$cluster", node=~"$node"'
GPU = NODE + ', gpu=~"$gpu"'
POD = NODE + ', namespace=~"$namespace", pod=~"$pod"'
MODEL = NODE + ', model=~"$model"'
# Prometheus' own per-target series (up, scrape_*) exist for every job; this keeps those of
# Vigil's agents: targets that also export vigil_build_info.
IS_AGENT = "and on (instance, job) vigil_build_info{" + NODE + "}"
RATE = "$__rate_interval"

REAL_GPU_ONLY = (
    " Shows data only on a real GPU that reports it: the fake NVML library used in tests "
    "does not raise it."
)


# --- builders ------------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t.update(instant=True, range=False)
    else:
        t.update(instant=False, range=True)
    if fmt:
        t["format"] = fmt
    return t


class Layout:
    """Places panels left to right, wrapping at the grid's width; rows span the width."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": FULL, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int = 8) -> None:
        if self.x + w > FULL:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = self.row_h = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _refs(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    *,
    stack: bool = False,
    log: bool = False,
    maximum: float | None = None,
    draw: str = "line",
) -> dict[str, Any]:
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
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "min": 0}
    if maximum is not None:
        defaults["max"] = maximum
    if log:
        del defaults["min"]
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _refs(targets),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    thresholds: list[tuple[float | None, str]] | None = None,
) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _refs(targets),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    hide: tuple[str, ...] = ("Time", "__name__", "job", "instance", "cluster", "agent_pod"),
    unit: str = "short",
) -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _refs(targets),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {"excludeByName": dict.fromkeys(hide, True), "renameByName": {}},
            },
        ],
    }


def heatmap(
    title: str, description: str, targets: list[dict[str, Any]], unit: str
) -> dict[str, Any]:
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _refs(targets),
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "scale": "exponential",
                "exponent": 0.5,
            },
            "yAxis": {"unit": unit, "axisPlacement": "left"},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"show": True, "yHistogram": True},
            "legend": {"show": True},
            "cellValues": {},
            "filterValues": {"le": 1e-9},
        },
    }


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


def cluster_node_vars() -> list[dict[str, Any]]:
    return [
        ds_variable(),
        query_variable("cluster", "Cluster", "label_values(vigil_build_info, cluster)"),
        query_variable("node", "Node", 'label_values(vigil_build_info{cluster=~"$cluster"}, node)'),
    ]


def pod_vars() -> list[dict[str, Any]]:
    return [
        query_variable(
            "namespace",
            "Namespace",
            "label_values(vigil_watched_process_info{" + NODE + "}, namespace)",
        ),
        query_variable(
            "pod",
            "Pod",
            "label_values(vigil_watched_process_info{" + NODE + ', namespace=~"$namespace"}, pod)',
            multi=False,
        ),
    ]


def annotation_builtin() -> dict[str, Any]:
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
    layout: Layout,
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *[
                {"type": "panel", "id": p, "name": p, "version": ""}
                for p in sorted({p["type"] for p in layout.panels if p["type"] != "row"})
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
        "annotations": {"list": [annotation_builtin(), *(annotations or [])]},
        "panels": layout.panels,
    }


# --- the dashboards --------------------------------------------------------------------------


def node_overview() -> dict[str, Any]:
    lay = Layout()
    lay.row("GPUs")
    lay.add(
        stat(
            "GPUs up",
            "GPUs that answer NVML on the selected nodes, out of those the agent knows. "
            "A lost GPU (NVML_ERROR_GPU_IS_LOST) does not come back without a reset.",
            [
                target(f"sum(vigil_gpu_up{{{GPU}}})", "up", instant=True),
                target(f"count(vigil_gpu_up{{{GPU}}})", "known", instant=True),
            ],
        ),
        w=4,
        h=6,
    )
    lay.add(
        stat(
            "Watched processes",
            "Processes the agent watches on the selected nodes: command lines matching "
            "--watch, plus every process holding a GPU.",
            [target(f"count(vigil_watched_process_info{{{NODE}}})", "processes", instant=True)],
        ),
        w=4,
        h=6,
    )
    lay.add(
        stat(
            "Collectors working",
            "Share of the agents' collectors whose last scrape succeeded "
            "(vigil_scrape_collector_success). Below 1: see the Vigil dashboard for which.",
            [target(f"avg(vigil_scrape_collector_success{{{NODE}}})", "ok", instant=True)],
            unit="percentunit",
            thresholds=[(None, "red"), (0.75, "orange"), (1, "green")],
        ),
        w=4,
        h=6,
    )
    lay.add(
        table(
            "GPU inventory",
            "Each GPU: model, PCI bus id, driver, UUID.",
            [target(f"vigil_gpu_info{{{GPU}}}", instant=True, fmt="table")],
            hide=("Time", "__name__", "job", "instance", "cluster", "agent_pod", "Value"),
        ),
        w=HALF,
        h=6,
    )
    lay.add(
        timeseries(
            "GPU utilization",
            "Share of time a kernel ran on the GPU, per GPU (NVML utilization.gpu).",
            [target(f"vigil_gpu_utilization_ratio{{{GPU}}}", "{{node}} GPU {{gpu}}")],
            "percentunit",
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "GPU memory used",
            "Device memory in use, per GPU, and the share of the total (dashed: the "
            "VigilGPUMemoryFull alert fires above 0.95).",
            [
                target(
                    f"vigil_gpu_memory_used_bytes{{{GPU}}} / vigil_gpu_memory_total_bytes{{{GPU}}}",
                    "{{node}} GPU {{gpu}}",
                )
            ],
            "percentunit",
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "GPU memory bandwidth use",
            "Share of time device memory was read or written (NVML utilization.memory).",
            [target(f"vigil_gpu_memory_utilization_ratio{{{GPU}}}", "{{node}} GPU {{gpu}}")],
            "percentunit",
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Temperature",
            "GPU die temperature.",
            [target(f"vigil_gpu_temperature_celsius{{{GPU}}}", "{{node}} GPU {{gpu}}")],
            "celsius",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Power",
            "Board power draw.",
            [target(f"vigil_gpu_power_watts{{{GPU}}}", "{{node}} GPU {{gpu}}")],
            "watt",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "SM clock",
            "Current streaming-multiprocessor clock; it drops when the GPU throttles.",
            [target(f'vigil_gpu_clock_hertz{{{GPU}, clock="sm"}}', "{{node}} GPU {{gpu}}")],
            "hertz",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Throttle reasons",
            "Clock event reasons active (1) per GPU: thermal and power slowdowns cost "
            "throughput; idle and application-clock settings are normal.",
            [
                target(
                    f"max by (node, gpu, reason) (vigil_gpu_clock_event_active{{{GPU}}})",
                    "{{node}} GPU {{gpu}} {{reason}}",
                )
            ],
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "XID errors",
            "New XID errors per GPU and code, from NVML's event stream (counted, never a "
            "last value). Codes 48, 63, 64, 79 and 94/95 call for a reset or a replacement.",
            [
                target(
                    "sum by (node, gpu, xid) "
                    f"(increase(vigil_gpu_xid_errors_total{{{GPU}}}[{RATE}]))",
                    "{{node}} GPU {{gpu}} XID {{xid}}",
                )
            ],
            draw="bars",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "ECC errors",
            "Corrected and uncorrected ECC errors per GPU; uncorrected ones corrupt results."
            + REAL_GPU_ONLY,
            [
                target(
                    "sum by (node, gpu, type) "
                    f"(increase(vigil_gpu_ecc_errors_total{{{GPU}}}[{RATE}]))",
                    "{{node}} GPU {{gpu}} {{type}}",
                )
            ],
            draw="bars",
        ),
        w=THIRD,
    )
    lay.row("Watched processes")
    lay.add(
        table(
            "Watched process list",
            "Every process the agent watches, with its pod attribution. `source` says why: "
            "`watch` (command line matched), `gpu` (holds a GPU).",
            [target(f"vigil_watched_process_info{{{NODE}}}", instant=True, fmt="table")],
            hide=("Time", "__name__", "job", "instance", "cluster", "agent_pod", "Value"),
        ),
        w=HALF,
        h=9,
    )
    lay.add(
        timeseries(
            "GPU memory by process",
            "Device memory each watched process holds, per GPU.",
            [
                target(
                    f"vigil_gpu_process_memory_used_bytes{{{GPU}}}",
                    "{{node}} GPU {{gpu}} {{namespace}}/{{pod}} {{comm}} {{pid}}",
                )
            ],
            "bytes",
        ),
        w=HALF,
        h=9,
    )
    lay.row("Agent")
    lay.add(
        timeseries(
            "Collector success",
            "1 when the collector produced its metrics in the scrape; 0 names the one that "
            "did not (`vigil doctor` on the node says why).",
            [target(f"vigil_scrape_collector_success{{{NODE}}}", "{{node}} {{collector}}")],
            maximum=1,
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Agent CPU",
            "CPU the agent itself uses, in cores.",
            [target(f"rate(process_cpu_seconds_total{{{NODE}}}[{RATE}]) {IS_AGENT}", "{{node}}")],
            "percentunit",
        ),
        w=HALF,
    )
    return dashboard(
        "vigil-node-overview",
        "Vigil / Node overview",
        "GPUs, watched processes and agent health of GPU inference nodes.",
        [
            *cluster_node_vars(),
            query_variable("gpu", "GPU", "label_values(vigil_gpu_info{" + NODE + "}, gpu)"),
        ],
        lay,
    )


def workload() -> dict[str, Any]:
    lay = Layout()
    hist = f"vigil_sched_runqueue_latency_seconds_bucket{{{POD}}}"
    lay.row("Is the GPU waiting for the CPU?")
    lay.add(
        timeseries(
            "GPU utilization of the pod's processes",
            "Share of GPU time the pod's processes kept a kernel running. Low here while the "
            "run-queue latency beside it is high: the GPU idles because the CPU side is "
            "starved.",
            [
                target(
                    f"sum by (pod, container, gpu) (vigil_gpu_process_utilization_ratio{{{POD}}})",
                    "{{pod}} {{container}} GPU {{gpu}}",
                )
            ],
            "percentunit",
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Run-queue latency p99",
            "99th percentile of the time the pod's threads waited for a CPU after waking up "
            "(eBPF, sched_wakeup -> sched_switch). Milliseconds here starve a GPU feeding loop.",
            [
                target(
                    f"histogram_quantile(0.99, sum by (le, pod, container) (rate({hist}[{RATE}])))",
                    "p99 {{pod}} {{container}}",
                ),
                target(
                    f"histogram_quantile(0.5, sum by (le, pod, container) (rate({hist}[{RATE}])))",
                    "p50 {{pod}} {{container}}",
                ),
            ],
            "s",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Off-CPU time",
            "Seconds per second the pod's threads spent blocked (off-CPU, not runnable): I/O, "
            "locks, the GIL, waiting on the GPU.",
            [
                target(
                    "sum by (pod, container) "
                    f"(rate(vigil_sched_offcpu_seconds_sum{{{POD}}}[{RATE}]))",
                    "{{pod}} {{container}}",
                )
            ],
            "s",
        ),
        w=THIRD,
    )
    lay.add(
        heatmap(
            "Run-queue latency",
            "Distribution of run-queue waits over time (log2 buckets from the kernel).",
            [target(f"sum by (le) (increase({hist}[{RATE}]))", "{{le}}", fmt="heatmap")],
            "s",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Context switches",
            "Switches per second: involuntary ones mean the threads were preempted (CPU "
            "contention), voluntary ones that they blocked.",
            [
                target(
                    "sum by (pod, container, kind) "
                    f"(rate(vigil_sched_context_switches_total{{{POD}}}[{RATE}]))",
                    "{{pod}} {{container}} {{kind}}",
                )
            ],
            "ops",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "CPU migrations",
            "Moves of the pod's threads between CPUs per second; many mean cold caches.",
            [
                target(
                    "sum by (pod, container) "
                    f"(rate(vigil_sched_migrations_total{{{POD}}}[{RATE}]))",
                    "{{pod}} {{container}}",
                )
            ],
            "ops",
        ),
        w=THIRD,
    )
    lay.row("Where does Python spend its time?")
    lay.add(
        timeseries(
            "GIL share",
            "Share of py-spy samples in which the sampled thread held the GIL. Near 1 with low "
            "GPU use: Python code, not the GPU, is the bottleneck.",
            [target(f"vigil_profile_gil_ratio{{{POD}}}", "{{pod}} {{container}} {{comm}} {{pid}}")],
            "percentunit",
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Active vs idle samples",
            "py-spy samples per second by state: `idle` threads wait (I/O, locks, the GPU).",
            [
                target(
                    f"sum by (pod, state) (rate(vigil_profile_samples_total{{{POD}}}[{RATE}]))",
                    "{{pod}} {{state}}",
                )
            ],
            "ops",
            stack=True,
        ),
        w=THIRD,
    )
    lay.add(
        table(
            "Top Python functions",
            "Functions with the largest share of samples in the last py-spy window: `self` "
            "is time in the function itself, `total` includes what it calls.",
            [
                target(
                    f"topk(20, max by (pod, container, function, kind) "
                    f'(vigil_profile_function_ratio{{{POD}, kind="self"}}))',
                    instant=True,
                    fmt="table",
                )
            ],
            unit="percentunit",
        ),
        w=THIRD,
        h=10,
    )
    lay.row("GPU memory")
    lay.add(
        timeseries(
            "GPU memory of the pod's processes",
            "Device memory each of the pod's processes holds.",
            [
                target(
                    f"sum by (pod, container, gpu) (vigil_gpu_process_memory_used_bytes{{{POD}}})",
                    "{{pod}} {{container}} GPU {{gpu}}",
                )
            ],
            "bytes",
        ),
        w=FULL,
    )
    return dashboard(
        "vigil-inference-workload",
        "Vigil / Inference workload",
        "One inference pod: GPU use next to CPU scheduling and Python profiles, so that "
        "'GPU idle because CPU-starved' shows at a glance.",
        [*cluster_node_vars(), *pod_vars()],
        lay,
    )


ROLLBACKS = 'vigil_rollbacks_total{cluster=~"$cluster"}'


def drift() -> dict[str, Any]:
    lay = Layout()
    lay.row("Drift")
    lay.add(
        stat(
            "Drift detected",
            "Per model version: 1 when the KS test rejects 'same distribution as the "
            "reference' for a feature (after the multiple-test correction).",
            [
                target(
                    f"max by (model, version) (vigil_drift_detected{{{MODEL}}})",
                    "{{model}} {{version}}",
                    instant=True,
                )
            ],
            thresholds=[(None, "green"), (1, "red")],
        ),
        w=HALF,
        h=6,
    )
    lay.add(
        stat(
            "Rollbacks in range",
            "Rollbacks the controller carried out in the time range, by result.",
            [
                target(
                    f"sum by (result) (increase({ROLLBACKS}[$__range]))"
                    f" or sum by (result) ({ROLLBACKS} unless {ROLLBACKS} offset $__range)",
                    "{{result}}",
                    instant=True,
                )
            ],
        ),
        w=HALF,
        h=6,
    )
    lay.add(
        timeseries(
            "p-value per feature",
            "KS p-value of each feature's current window against the reference; small means "
            "the inputs moved. Log scale.",
            [
                target(
                    f"vigil_drift_p_value{{{MODEL}}}",
                    "{{model}} {{version}} {{feature}}",
                )
            ],
            log=True,
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "KS statistic D per feature",
            "Largest gap between the window's and the reference's distribution functions "
            "(0: same, 1: disjoint). VigilInputDriftLarge fires above 0.35.",
            [
                target(
                    f"vigil_drift_ks_statistic{{{MODEL}}}",
                    "{{model}} {{version}} {{feature}}",
                )
            ],
            maximum=1,
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Detections",
            "vigil_drift_detected over time per model version.",
            [target(f"vigil_drift_detected{{{MODEL}}}", "{{model}} {{version}}")],
            maximum=1,
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Samples in window",
            "Samples in each model's current comparison window.",
            [target(f"vigil_drift_window_samples{{{MODEL}}}", "{{model}} {{version}}")],
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Ingest",
            "Samples accepted per second, and rejected ones by reason.",
            [
                target(
                    f"sum by (model, version) (rate(vigil_drift_samples_total{{{MODEL}}}[{RATE}]))",
                    "{{model}} {{version}} accepted",
                ),
                target(
                    "sum by (model, reason) "
                    f"(rate(vigil_drift_rejected_samples_total{{{MODEL}}}[{RATE}]))",
                    "{{model}} rejected: {{reason}}",
                ),
            ],
            "ops",
        ),
        w=THIRD,
    )
    lay.row("Rollbacks")
    lay.add(
        table(
            "Rollbacks",
            "Rollbacks by target, action and result since the rollback controller "
            "started (its journal keeps the full history).",
            [
                target(
                    f"sum by (target, action, result) ({ROLLBACKS})",
                    instant=True,
                    fmt="table",
                )
            ],
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Alerts received by the controller",
            "Alertmanager notifications the rollback controller received per second, by "
            "what it did with them.",
            [
                target(
                    "sum by (result) "
                    f'(rate(vigil_rollback_alerts_total{{cluster=~"$cluster"}}[{RATE}]))',
                    "{{result}}",
                )
            ],
            "ops",
        ),
        w=HALF,
    )
    return dashboard(
        "vigil-drift-rollbacks",
        "Vigil / Model drift & rollbacks",
        "Input drift per model and feature (two-sample KS tests against the reference), and "
        "the rollbacks it caused.",
        [
            *cluster_node_vars(),
            query_variable(
                "model", "Model", "label_values(vigil_drift_window_samples{" + NODE + "}, model)"
            ),
        ],
        lay,
        annotations=[
            prom_annotation(
                "Rollbacks",
                f"sum by (target, action, result) (increase({ROLLBACKS}[2m]) > 0"
                f" or ({ROLLBACKS} unless {ROLLBACKS} offset 2m))",
                "red",
                "Rollback {{result}}",
                "{{action}} of {{target}}",
            ),
            prom_annotation(
                "Drift detected",
                f"max by (model, version) (vigil_drift_detected{{{MODEL}}}) == 1",
                "orange",
                "Drift: {{model}} {{version}}",
                "KS test rejected the reference distribution",
            ),
        ],
    )


def vigil_itself() -> dict[str, Any]:
    lay = Layout()
    lay.row("Collectors")
    lay.add(
        timeseries(
            "Collector success",
            "1 when a collector produced its metrics in the scrape, 0 when it could not "
            "(not available on the node, or failed): `vigil doctor` says why.",
            [target(f"vigil_scrape_collector_success{{{NODE}}}", "{{node}} {{collector}}")],
            maximum=1,
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Collector render time",
            "Time each collector took to render its metrics in the scrape (it reads a "
            "snapshot, so this stays in the milliseconds).",
            [
                target(
                    f"vigil_scrape_collector_duration_seconds{{{NODE}}}", "{{node}} {{collector}}"
                )
            ],
            "s",
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Collector errors",
            "Unexpected errors per second raised by a collector while rendering a scrape.",
            [
                target(
                    "sum by (node, collector) "
                    f"(rate(vigil_collector_errors_total{{{NODE}}}[{RATE}]))",
                    "{{node}} {{collector}}",
                )
            ],
            "ops",
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Discovery",
            "Watched processes per node, and processes discovery could not read, by reason.",
            [
                target(
                    f"count by (node) (vigil_watched_process_info{{{NODE}}})", "{{node}} watched"
                ),
                target(
                    "sum by (node, reason) "
                    f"(increase(vigil_discovery_skipped_processes_total{{{NODE}}}[{RATE}]))",
                    "{{node}} skipped: {{reason}}",
                ),
            ],
        ),
        w=HALF,
    )
    lay.row("Scrapes")
    lay.add(
        timeseries(
            "Scrape size",
            "Series per scrape of each agent (Prometheus' scrape_samples_scraped).",
            [target(f"scrape_samples_scraped{{{NODE}}} {IS_AGENT}", "{{node}}")],
        ),
        w=HALF,
    )
    lay.add(
        timeseries(
            "Scrape duration",
            "Time Prometheus took to scrape each agent (scrape_duration_seconds).",
            [target(f"scrape_duration_seconds{{{NODE}}} {IS_AGENT}", "{{node}}")],
            "s",
        ),
        w=HALF,
    )
    lay.row("Resources")
    lay.add(
        timeseries(
            "Agent CPU",
            "CPU the agent uses, in cores (user + system).",
            [target(f"rate(process_cpu_seconds_total{{{NODE}}}[{RATE}]) {IS_AGENT}", "{{node}}")],
            "percentunit",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Agent memory",
            "Resident memory of the agent (the DaemonSet's limit is 512 MiB).",
            [target(f"process_resident_memory_bytes{{{NODE}}} {IS_AGENT}", "{{node}}")],
            "bytes",
        ),
        w=THIRD,
    )
    lay.add(
        timeseries(
            "Open file descriptors",
            "File descriptors the agent holds (BPF maps and programs, py-spy pipes, sockets).",
            [target(f"process_open_fds{{{NODE}}} {IS_AGENT}", "{{node}}")],
        ),
        w=THIRD,
    )
    lay.add(
        table(
            "Agents",
            "Version and Python of each agent.",
            [target(f"vigil_build_info{{{NODE}}}", instant=True, fmt="table")],
            hide=("Time", "__name__", "job", "cluster", "Value"),
        ),
        w=FULL,
        h=6,
    )
    return dashboard(
        "vigil-self",
        "Vigil / Vigil itself",
        "Is Vigil healthy: collectors' success and duration, scrape size, the agent's CPU "
        "and memory.",
        cluster_node_vars(),
        lay,
    )


DASHBOARDS = {
    "vigil-node-overview.json": node_overview,
    "vigil-inference-workload.json": workload,
    "vigil-drift-rollbacks.json": drift,
    "vigil-self.json": vigil_itself,
}
CONFIGMAPS = ROOT / "deploy" / "grafana-dashboards.yaml"


def render_json(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"


def render_configmaps(files: dict[str, str]) -> str:
    """One ConfigMap per dashboard, labelled for Grafana's dashboard sidecar.

    Written as JSON-in-YAML by hand (no PyYAML needed): each document is a JSON object,
    which YAML reads as is.
    """
    docs = []
    for name, text in files.items():
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "grafana-dashboard-" + name.removesuffix(".json"),
                "namespace": "vigil",
                "labels": {
                    "app.kubernetes.io/part-of": "vigil",
                    "grafana_dashboard": "1",
                },
                "annotations": {"grafana_folder": "Vigil"},
            },
            "data": {name: text},
        }
        docs.append(json.dumps(cm, indent=1))
    header = (
        "# GENERATED by dashboards/generate.py from the same code as dashboards/*.json.\n"
        "# Do not edit: change dashboards/generate.py and run it.\n"
    )
    return header + "---\n".join(d + "\n" for d in docs)


def outputs() -> dict[Path, str]:
    files = {name: render_json(make()) for name, make in DASHBOARDS.items()}
    out = {ROOT / "dashboards" / name: text for name, text in files.items()}
    out[CONFIGMAPS] = render_configmaps(files)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the files are current")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
    rel = [str(p.relative_to(ROOT)) for p in stale]
    if args.check and stale:
        print(f"out of date: {', '.join(rel)}; run python3 dashboards/generate.py", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {', '.join(rel)}" if rel else "all dashboards up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
