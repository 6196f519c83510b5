#!/usr/bin/env python3
"""Writes Vigil's Grafana dashboards (dashboards/*.json) and their ConfigMaps for Grafana's
sidecar (deploy/grafana-dashboards.yaml) from one description.

    python3 dashboards/generate.py          # rewrite the files
    python3 dashboards/generate.py --check  # exit 1 when a committed file is out of date

Plain Python, standard library only: the JSON is what Grafana 10/11 exports (schemaVersion
39), with a ``datasource`` variable instead of a fixed data source, so the same file
imports through the UI, the HTTP API and file provisioning alike.

Every series is filtered by ``cluster`` and ``node`` (labels added at scrape time, see
docs/deploy.md), per-process series also by ``namespace``, ``pod`` (several at once),
``container``, ``comm`` and ``pid``. A variable's "All" is ``.*``, which also matches series
without the label (a bare-metal host has no cluster, a process outside Kubernetes no pod).
Per-process legends name the pod, or outside Kubernetes the command and pid (``process``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from panels import (
    BYTES,
    CELSIUS,
    COUNT,
    FULL,
    HALF,
    HERTZ,
    INFO_HIDDEN_COLUMNS,
    PER_SECOND,
    RATIO,
    SECONDS,
    WATTS,
    Link,
    Panel,
    Target,
    dashboard,
    ds_variable,
    heatmap,
    prom_annotation,
    query_variable,
    row,
    stat,
    table,
    target,
    textbox_variable,
    timeseries,
    with_links,
)

ROOT = Path(__file__).resolve().parent.parent

NODE = 'cluster=~"$cluster", node=~"$node"'
GPU = NODE + ', gpu=~"$gpu"'
POD = (
    NODE
    + ', namespace=~"$namespace", pod=~"$pod", container=~"$container", comm=~"$comm"'
    + ', pid=~"$pid"'
)
MODEL = NODE + ', model=~"$model"'
VERSION = MODEL + ', version=~"$version"'
# Prometheus' own per-target series (up, scrape_*) exist for every job; this keeps those of
# Vigil's agents: targets that also export vigil_build_info.
IS_AGENT = "and on (instance, job) vigil_build_info{" + NODE + "}"
RATE = "$__rate_interval"
PER_GPU = "{{node}} GPU {{gpu}}"  # the legend of a per-GPU series
# Fleet panels read the recording rules' series (alerts/recording.tmpl.yml), which keep
# `cluster` and at most `node`: at 1,000 nodes a raw aggregation reads every GPU's and
# every pod's series on each refresh (docs/scale.md). Per-model series have no node.
CLUSTER = 'cluster=~"$cluster"'


def cluster_node_vars() -> list[dict[str, Any]]:
    return [
        ds_variable(),
        query_variable("cluster", "Cluster", "label_values(vigil_build_info, cluster)"),
        query_variable("node", "Node", 'label_values(vigil_build_info{cluster=~"$cluster"}, node)'),
    ]


def pod_vars() -> list[dict[str, Any]]:
    watched = "vigil_watched_process_info{" + NODE + ', namespace=~"$namespace"'
    return [
        query_variable(
            "namespace",
            "Namespace",
            "label_values(vigil_watched_process_info{" + NODE + "}, namespace)",
        ),
        query_variable("pod", "Pod", f"label_values({watched}}}, pod)"),
        query_variable(
            "container", "Container", f'label_values({watched}, pod=~"$pod"}}, container)'
        ),
        query_variable(
            "comm",
            "Command",
            f'label_values({watched}, pod=~"$pod", container=~"$container"}}, comm)',
        ),
        # Per-process series carry a pid only outside a pod (in a pod, the pod names them
        # and the pid label is empty): the choice lists those processes only.
        query_variable(
            "pid",
            "PID (outside pods)",
            f'label_values({watched}, pod=~"$pod", pod="", container=~"$container", '
            'comm=~"$comm"}, pid)',
        ),
    ]


def by_process(expr: str) -> str:
    """``expr`` with a ``process`` label for legends: the pod, or outside Kubernetes (no
    pod) "COMM pid PID", so that bare processes do not merge into one blank series."""
    joined = f'label_join({expr}, "process", " pid ", "comm", "pid")'
    return f'label_replace({joined}, "process", "$1", "pod", "(.+)")'


# The agent serves the last profile window of a process at /v1/profiles/<pid> (behind its
# API token, see docs/profile.md); `instance` is the agent's scrape address.
PROFILE_LINKS = [
    Link(
        "Flame graph (SVG) of this process",
        "http://${__field.labels.instance}/v1/profiles/${__field.labels.pid}?format=svg",
    ),
    Link("Profiled processes on this node", "http://${__field.labels.instance}/v1/profiles"),
    Link(
        "Pyroscope (set the pyroscope variable)",
        "${pyroscope}/?query=${__field.labels.comm}.cpu&from=${__from}&until=${__to}",
    ),
]


# --- the dashboards --------------------------------------------------------------------------


def node_overview() -> dict[str, Any]:
    panels = [
        row("GPUs"),
        stat(
            "GPUs up",
            "GPUs that answer NVML on the selected nodes (all their GPUs, whatever the GPU "
            "choice), out of those the agent knows. A lost GPU (NVML_ERROR_GPU_IS_LOST) does "
            "not come back without a reset. Reads the per-node recorded series.",
            [
                target(f"sum(node:vigil_gpu_up:sum{{{NODE}}})", "up"),
                target(f"sum(node:vigil_gpu_up:count{{{NODE}}})", "known"),
            ],
            w=4,
            h=6,
        ),
        stat(
            "Watched processes",
            "Processes the agent watches on the selected nodes: command lines matching "
            "--watch, plus every process holding a GPU.",
            [target(f"sum(node:vigil_watched_process_info:count{{{NODE}}})", "processes")],
            w=4,
            h=6,
        ),
        stat(
            "Collectors working",
            "Share of the agents' collectors whose last scrape succeeded "
            "(vigil_scrape_collector_success). Below 1: see the Vigil dashboard for which.",
            [target(f"avg(vigil_scrape_collector_success{{{NODE}}})", "ok")],
            RATIO,
            thresholds=[(None, "red"), (0.75, "orange"), (1, "green")],
            w=4,
            h=6,
        ),
        table(
            "GPU inventory",
            "Each GPU: model, PCI bus id, driver, UUID.",
            [target(f"vigil_gpu_info{{{GPU}}}")],
            hide=INFO_HIDDEN_COLUMNS,
            w=HALF,
            h=6,
        ),
        timeseries(
            "GPU utilization by node",
            "Mean utilization of each node's GPUs: the fleet at a glance, from the per-node "
            "recorded series (node:vigil_gpu_utilization_ratio:avg).",
            [target(f"node:vigil_gpu_utilization_ratio:avg{{{NODE}}}", "{{node}}")],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "GPU memory used by node",
            "Share of each node's GPU memory in use, over all its GPUs "
            "(node:vigil_gpu_memory_used_bytes:ratio).",
            [target(f"node:vigil_gpu_memory_used_bytes:ratio{{{NODE}}}", "{{node}}")],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "Pods waiting longest for a CPU",
            "The ten pods with the highest 99th percentile run-queue wait over the last "
            "minute (node_namespace_pod:vigil_sched_runqueue_latency_seconds:p99_rate1m). "
            "Milliseconds here starve a GPU feeding loop; the workload dashboard shows why.",
            [
                target(
                    "topk(10, node_namespace_pod:vigil_sched_runqueue_latency_seconds:p99_rate1m"
                    f"{{{NODE}}})",
                    "{{node}} {{namespace}}/{{pod}}",
                )
            ],
            SECONDS,
        ),
        timeseries(
            "GPU utilization",
            "Share of time a kernel ran on the GPU, per GPU (NVML utilization.gpu).",
            [target(f"vigil_gpu_utilization_ratio{{{GPU}}}", PER_GPU)],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "GPU memory used",
            "The share of each GPU's device memory in use; the VigilGPUMemoryFull alert "
            "fires above 0.95.",
            [
                target(
                    f"vigil_gpu_memory_used_bytes{{{GPU}}} / vigil_gpu_memory_total_bytes{{{GPU}}}",
                    PER_GPU,
                )
            ],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "GPU memory bandwidth use",
            "Share of time device memory was read or written (NVML utilization.memory).",
            [target(f"vigil_gpu_memory_utilization_ratio{{{GPU}}}", PER_GPU)],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "Temperature",
            "GPU die temperature.",
            [target(f"vigil_gpu_temperature_celsius{{{GPU}}}", PER_GPU)],
            CELSIUS,
        ),
        timeseries(
            "Power",
            "Board power draw.",
            [target(f"vigil_gpu_power_watts{{{GPU}}}", PER_GPU)],
            WATTS,
        ),
        timeseries(
            "SM clock",
            "Current streaming-multiprocessor clock; it drops when the GPU throttles.",
            [target(f'vigil_gpu_clock_hertz{{{GPU}, clock="sm"}}', PER_GPU)],
            HERTZ,
        ),
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
        timeseries(
            "ECC errors",
            "Corrected and uncorrected ECC errors per GPU; uncorrected ones corrupt results. "
            "Empty on GPUs without ECC (most consumer boards).",
            [
                target(
                    "sum by (node, gpu, type) "
                    f"(increase(vigil_gpu_ecc_errors_total{{{GPU}}}[{RATE}]))",
                    "{{node}} GPU {{gpu}} {{type}}",
                )
            ],
            draw="bars",
        ),
        row("Watched processes"),
        table(
            "Watched process list",
            "Every process the agent watches, with its pod attribution. `source` says why: "
            "`watch` (command line matched), `gpu` (holds a GPU).",
            [target(f"vigil_watched_process_info{{{NODE}}}")],
            hide=INFO_HIDDEN_COLUMNS,
            w=HALF,
            h=9,
        ),
        timeseries(
            "GPU memory by process",
            "Device memory each watched process holds, per GPU.",
            [
                target(
                    f"vigil_gpu_process_memory_used_bytes{{{GPU}}}",
                    "{{node}} GPU {{gpu}} {{namespace}}/{{pod}} {{comm}} {{pid}}",
                )
            ],
            BYTES,
            w=HALF,
            h=9,
        ),
        row("Agent"),
        timeseries(
            "Collector success",
            "1 when the collector produced its metrics in the scrape; 0 names the one that "
            "did not (`vigil doctor` on the node says why).",
            [target(f"vigil_scrape_collector_success{{{NODE}}}", "{{node}} {{collector}}")],
            maximum=1,
            w=HALF,
        ),
        timeseries(
            "Agent CPU",
            "CPU the agent itself uses, in cores.",
            [target(f"rate(process_cpu_seconds_total{{{NODE}}}[{RATE}]) {IS_AGENT}", "{{node}}")],
            RATIO,
            w=HALF,
        ),
    ]
    return dashboard(
        "vigil-node-overview",
        "Vigil / Node overview",
        "GPUs, watched processes and agent health of GPU inference nodes.",
        [
            *cluster_node_vars(),
            query_variable("gpu", "GPU", "label_values(vigil_gpu_info{" + NODE + "}, gpu)"),
        ],
        panels,
    )


def quantiles(metric: str, by: str, legend: str, qs: tuple[float, ...]) -> list[Target]:
    """Percentiles of a histogram per ``by``, only where it has buckets: a server with a sum
    and a count only is exported with the +Inf bucket alone, which tells no percentile."""
    buckets = by_process(f'{metric}_bucket{{{POD}, le!="+Inf"}}')
    has_buckets = f"count by ({by}) ({buckets})"
    return [
        target(
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"({by_process(f'rate({metric}_bucket{{{POD}}}[{RATE}])')})) "
            f"and on ({by}) {has_buckets}",
            f"p{round(q * 100)} {legend}",
        )
        for q in qs
    ]


def mean(metric: str, by: str, legend: str) -> Target:
    """A histogram's mean per ``by``: the one number servers without buckets give."""
    return target(
        f"sum by ({by}) ({by_process(f'rate({metric}_sum{{{POD}}}[{RATE}])')}) "
        f"/ sum by ({by}) ({by_process(f'rate({metric}_count{{{POD}}}[{RATE}])')})",
        f"mean {legend}",
    )


def inference_panels() -> list[Panel]:
    """The service as its clients see it: vigil_inference_*, one vocabulary for every
    server kind (docs/inference.md)."""
    requests = f"vigil_inference_requests_total{{{POD}}}"
    errors = f'vigil_inference_requests_total{{{POD}, outcome="error"}}'
    per_target = "{{process}}:{{port}} {{kind}}"
    per_model = "{{process}} {{model}}"
    return [
        row("Does the service answer?"),
        stat(
            "Server up",
            "Per server of the pod: `up` is 1 when its health path answered 2xx within the "
            "probe timeout (0.5 s) at the last probe; `metrics` is 1 when its /metrics was "
            "read and understood. A server can answer /health while its engine is wedged: "
            "see Stalled.",
            [
                target(by_process(f"vigil_inference_up{{{POD}}}"), "up " + per_target),
                target(
                    by_process(f"vigil_inference_scrape_success{{{POD}}}"), "metrics " + per_target
                ),
            ],
            thresholds=[(None, "red"), (1, "green")],
            w=4,
        ),
        stat(
            "Stalled",
            "1 when a model has requests running but finished none and generated no token "
            "for the stall-after setting, whatever its health path says. "
            "VigilInferenceStalled pages on it.",
            [
                target(
                    f"max by (process, model) ({by_process(f'vigil_inference_stalled{{{POD}}}')})",
                    per_model,
                )
            ],
            thresholds=[(None, "green"), (1, "red")],
            w=4,
        ),
        timeseries(
            "Request rate",
            "Requests the server finished per second, by model and outcome (`error`: the "
            "server's failures, or its HTTP 5xx answers where it counts none itself).",
            [
                target(
                    f"sum by (process, model, outcome) ({by_process(f'rate({requests}[{RATE}])')})",
                    per_model + " {{outcome}}",
                )
            ],
            PER_SECOND,
            stack=True,
        ),
        timeseries(
            "Error ratio",
            "Share of finished requests that failed, per model. VigilInferenceErrorRatio "
            "rolls back above 0.1 % over a minute, once the model serves at least 1,000 "
            "requests a minute (below that, one failure is already 0.1 %).",
            [
                target(
                    f"sum by (process, model) ({by_process(f'rate({errors}[{RATE}])')}) "
                    f"/ sum by (process, model) ({by_process(f'rate({requests}[{RATE}])')})",
                    per_model,
                )
            ],
            RATIO,
        ),
        timeseries(
            "Request latency",
            "End-to-end request latency per model: p50, p95 (VigilInferenceLatencyHigh "
            "warns above 1 s for 5 minutes) and p99, and the mean. Servers that export only "
            "a sum and a count (Triton by default, TorchServe) have the mean alone.",
            [
                *quantiles(
                    "vigil_inference_request_duration_seconds",
                    "process, model",
                    per_model,
                    (0.5, 0.95, 0.99),
                ),
                mean("vigil_inference_request_duration_seconds", "process, model", per_model),
            ],
            SECONDS,
        ),
        timeseries(
            "Time to first token",
            "Time from a request's arrival to its first generated token, per model "
            "(generative servers only): queueing plus prefill, what a streaming user waits.",
            quantiles(
                "vigil_inference_time_to_first_token_seconds",
                "process, model",
                per_model,
                (0.5, 0.95),
            ),
            SECONDS,
        ),
        timeseries(
            "Queue and running requests",
            "Requests waiting in the server's queue and requests it is working on, per "
            "model. A queue that grows while running stays flat: the server is at capacity.",
            [
                target(
                    "sum by (process, model) "
                    f"({by_process(f'vigil_inference_queue_requests{{{POD}}}')})",
                    per_model + " waiting",
                ),
                target(
                    "sum by (process, model) "
                    f"({by_process(f'vigil_inference_running_requests{{{POD}}}')})",
                    per_model + " running",
                ),
            ],
        ),
        timeseries(
            "KV cache use",
            "Share of the KV cache in use, per model. Near 1 the server preempts requests "
            "and recomputes their prompts: latency climbs.",
            [
                target(
                    "max by (process, model) "
                    f"({by_process(f'vigil_inference_kv_cache_usage_ratio{{{POD}}}')})",
                    per_model,
                )
            ],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "Health probe latency",
            "Time the server took to answer the agent's health probe (p50, p99); a timed "
            "out probe counts as the timeout (0.5 s).",
            quantiles(
                "vigil_inference_probe_duration_seconds",
                "process, port",
                "{{process}}:{{port}}",
                (0.5, 0.99),
            ),
            SECONDS,
        ),
        timeseries(
            "Health probe failures",
            "Failed probes by reason (timeout, refused, http_status, ...), and the timeouts "
            "in a row: VigilInferenceProbeTimeouts rolls back at 3.",
            [
                target(
                    "sum by (process, port, reason) ("
                    + by_process(f"increase(vigil_inference_probe_failures_total{{{POD}}}[{RATE}])")
                    + ")",
                    "{{process}}:{{port}} {{reason}}",
                ),
                target(
                    "max by (process, port) ("
                    + by_process(f"vigil_inference_probe_consecutive_timeouts{{{POD}}}")
                    + ")",
                    "{{process}}:{{port}} timeouts in a row",
                ),
            ],
            draw="bars",
        ),
    ]


def workload() -> dict[str, Any]:
    hist = f"vigil_sched_runqueue_latency_seconds_bucket{{{POD}}}"
    panels = [
        *inference_panels(),
        row("Is the GPU waiting for the CPU?"),
        timeseries(
            "GPU utilization of the pod's processes",
            "Share of GPU time the pod's processes kept a kernel running. Low here while the "
            "run-queue latency beside it is high: the GPU idles because the CPU side is "
            "starved.",
            [
                target(
                    "sum by (process, container, gpu) ("
                    + by_process(f"vigil_gpu_process_utilization_ratio{{{POD}}}")
                    + ")",
                    "{{process}} {{container}} GPU {{gpu}}",
                )
            ],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "Run-queue latency p99",
            "99th percentile of the time the pod's threads waited for a CPU after waking up "
            "(eBPF, sched_wakeup -> sched_switch). Milliseconds here starve a GPU feeding loop.",
            [
                target(
                    "histogram_quantile(0.99, sum by (le, process, container) "
                    f"({by_process(f'rate({hist}[{RATE}])')}))",
                    "p99 {{process}} {{container}}",
                ),
                target(
                    "histogram_quantile(0.5, sum by (le, process, container) "
                    f"({by_process(f'rate({hist}[{RATE}])')}))",
                    "p50 {{process}} {{container}}",
                ),
            ],
            SECONDS,
        ),
        timeseries(
            "Off-CPU time",
            "Seconds per second the pod's threads spent blocked (off-CPU, not runnable): I/O, "
            "locks, the GIL, waiting on the GPU.",
            [
                target(
                    "sum by (process, container) ("
                    + by_process(f"rate(vigil_sched_offcpu_seconds_sum{{{POD}}}[{RATE}])")
                    + ")",
                    "{{process}} {{container}}",
                )
            ],
            SECONDS,
        ),
        heatmap(
            "Run-queue latency",
            "Distribution of run-queue waits over time (log2 buckets from the kernel).",
            [target(f"sum by (le) (increase({hist}[{RATE}]))", "{{le}}")],
            SECONDS,
        ),
        timeseries(
            "Context switches",
            "Switches per second: involuntary ones mean the threads were preempted (CPU "
            "contention), voluntary ones that they blocked.",
            [
                target(
                    "sum by (process, container, kind) ("
                    + by_process(f"rate(vigil_sched_context_switches_total{{{POD}}}[{RATE}])")
                    + ")",
                    "{{process}} {{container}} {{kind}}",
                )
            ],
            PER_SECOND,
        ),
        timeseries(
            "CPU migrations",
            "Moves of the pod's threads between CPUs per second; many mean cold caches.",
            [
                target(
                    "sum by (process, container) ("
                    + by_process(f"rate(vigil_sched_migrations_total{{{POD}}}[{RATE}])")
                    + ")",
                    "{{process}} {{container}}",
                )
            ],
            PER_SECOND,
        ),
        row("Where does Python spend its time?"),
        with_links(
            timeseries(
                "GIL share",
                "Share of py-spy samples in which the sampled thread held the GIL. Near 1 with "
                "low GPU use: Python code, not the GPU, is the bottleneck. Click a series for "
                "its flame graph.",
                [
                    target(
                        by_process(f"vigil_profile_gil_ratio{{{POD}}}"),
                        "{{process}} {{container}}",
                    )
                ],
                RATIO,
                maximum=1,
            ),
            PROFILE_LINKS,
        ),
        with_links(
            timeseries(
                "Active vs idle samples",
                "py-spy samples per second by state: `idle` threads wait (I/O, locks, the "
                "GPU). Click a series for its flame graph.",
                [
                    target(
                        "sum by (instance, process, comm, pid, state) ("
                        + by_process(f"rate(vigil_profile_samples_total{{{POD}}}[{RATE}])")
                        + ")",
                        "{{process}} {{state}}",
                    )
                ],
                PER_SECOND,
                stack=True,
            ),
            PROFILE_LINKS,
        ),
        table(
            "Top Python functions",
            "Functions with the largest share of samples in the last py-spy window: `self` "
            "is time in the function itself, `total` includes what it calls.",
            [
                target(
                    f"topk(20, max by (pod, container, comm, pid, function, kind) "
                    f'(vigil_profile_function_ratio{{{POD}, kind="self"}}))'
                )
            ],
            RATIO,
            h=10,
        ),
        row("GPU memory"),
        timeseries(
            "GPU memory of the pod's processes",
            "Device memory each of the pod's processes holds.",
            [
                target(
                    "sum by (process, container, gpu) ("
                    + by_process(f"vigil_gpu_process_memory_used_bytes{{{POD}}}")
                    + ")",
                    "{{process}} {{container}} GPU {{gpu}}",
                )
            ],
            BYTES,
            w=FULL,
        ),
    ]
    return dashboard(
        "vigil-inference-workload",
        "Vigil / Inference workload",
        "One inference pod: the service's requests, latency and health next to its GPU use, "
        "CPU scheduling and Python profiles, so that 'slow because CPU-starved' shows at a "
        "glance.",
        [
            *cluster_node_vars(),
            *pod_vars(),
            textbox_variable(
                "pyroscope",
                "Pyroscope URL",
                "Your Pyroscope server's address (e.g. http://pyroscope:4040), for the profile "
                "panels' links; the agent pushes there with --collector.profile.pyroscope-url.",
            ),
        ],
        panels,
    )


ROLLBACKS = 'vigil_rollbacks_total{cluster=~"$cluster"}'


def drift() -> dict[str, Any]:
    panels = [
        row("Drift"),
        stat(
            "Drift detected",
            "Per model version, over all nodes of the cluster: 1 when a node's KS test "
            "rejects 'same distribution as the reference' for a feature (after the "
            "multiple-test correction). Reads model_version:vigil_drift_detected:max.",
            [
                target(
                    "max by (model, version) (model_version:vigil_drift_detected:max"
                    f'{{{CLUSTER}, model=~"$model", version=~"$version"}})',
                    "{{model}} {{version}}",
                )
            ],
            thresholds=[(None, "green"), (1, "red")],
            w=HALF,
            h=6,
        ),
        stat(
            "Rollbacks in range",
            "Rollbacks the controller carried out in the time range, by result.",
            [
                target(
                    f"sum by (result) (increase({ROLLBACKS}[$__range]))"
                    f" or sum by (result) ({ROLLBACKS} unless {ROLLBACKS} offset $__range)",
                    "{{result}}",
                )
            ],
            w=HALF,
            h=6,
        ),
        timeseries(
            "p-value per feature",
            "KS p-value of each feature's current window against the reference; small means "
            "the inputs moved. Log scale.",
            [target(f"vigil_drift_p_value{{{VERSION}}}", "{{model}} {{version}} {{feature}}")],
            log=True,
            w=HALF,
        ),
        timeseries(
            "KS statistic D per feature",
            "Largest gap between the window's and the reference's distribution functions "
            "(0: same, 1: disjoint). VigilInputDriftLarge fires above 0.35.",
            [target(f"vigil_drift_ks_statistic{{{VERSION}}}", "{{model}} {{version}} {{feature}}")],
            maximum=1,
            w=HALF,
        ),
        timeseries(
            "Largest KS statistic per model",
            "The largest KS statistic of any feature on any node of the cluster, per model "
            "version (model_version:vigil_drift_ks_statistic:max).",
            [
                target(
                    "model_version:vigil_drift_ks_statistic:max"
                    f'{{{CLUSTER}, model=~"$model", version=~"$version"}}',
                    "{{model}} {{version}}",
                )
            ],
            maximum=1,
            w=HALF,
        ),
        timeseries(
            "Effect size per feature",
            "How far each feature moved, whatever the sample size: numeric, Wasserstein "
            "distance in reference IQRs (VigilInputDriftLarge above 0.5); categorical, "
            "Jensen-Shannon distance, 0 to 1 (above 0.2). See docs/drift.md.",
            [target(f"vigil_drift_effect_size{{{VERSION}}}", "{{model}} {{version}} {{feature}}")],
            w=HALF,
        ),
        timeseries(
            "Reference vs window quartiles: $feature",
            "Quartiles (0.25, 0.5, 0.75) of the chosen numeric feature in the reference "
            "(flat) and in the live window at each check: which way it moved and how far.",
            [
                target(
                    f'vigil_drift_feature_quantile{{{VERSION}, feature=~"$feature"}}',
                    "{{model}} {{version}} {{feature}} {{sample}} q{{quartile}}",
                )
            ],
            w=HALF,
        ),
        timeseries(
            "Category shares that moved most",
            "Share of each categorical feature's categories whose share moved most, in the "
            "reference and in the window (__unseen__: categories the reference never had).",
            [
                target(
                    f"vigil_drift_category_share_ratio{{{VERSION}}}",
                    "{{model}} {{version}} {{feature}}={{category}} {{sample}}",
                )
            ],
            RATIO,
            w=HALF,
        ),
        timeseries(
            "Prediction confidence",
            "Median and 10th percentile of the confidence scores the model reported "
            "(vigil_prediction_confidence), per model version: a model growing unsure "
            "shows here before its accuracy can be measured.",
            [
                target(
                    f"histogram_quantile({q}, sum by (model, version, feature, le) "
                    f"(rate(vigil_prediction_confidence_bucket{{{VERSION}}}[{RATE}])))",
                    f"{{{{model}}}} {{{{version}}}} {{{{feature}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.1)
            ],
            maximum=1,
            w=HALF,
        ),
        timeseries(
            "Output drift detected",
            "vigil_drift_output_detected per model version: 1 when what the model predicts "
            "(features declared as outputs) drifted from the reference's outputs.",
            [target(f"vigil_drift_output_detected{{{VERSION}}}", "{{model}} {{version}}")],
            maximum=1,
            w=HALF,
        ),
        timeseries(
            "Detections",
            "vigil_drift_detected over time per model version.",
            [target(f"vigil_drift_detected{{{VERSION}}}", "{{model}} {{version}}")],
            maximum=1,
        ),
        timeseries(
            "Samples in window",
            "Samples in each model's current comparison window.",
            [target(f"vigil_drift_window_samples{{{VERSION}}}", "{{model}} {{version}}")],
        ),
        timeseries(
            "Ingest",
            "Samples accepted per second, and rejected ones by reason.",
            [
                target(
                    "sum by (model, version) "
                    f"(rate(vigil_drift_samples_total{{{VERSION}}}[{RATE}]))",
                    "{{model}} {{version}} accepted",
                ),
                target(
                    "sum by (model, reason) "
                    f"(rate(vigil_drift_rejected_samples_total{{{MODEL}}}[{RATE}]))",
                    "{{model}} rejected: {{reason}}",
                ),
            ],
            PER_SECOND,
        ),
        row("Models in service"),
        timeseries(
            "Requests by model",
            "Requests per second each model finished over all its servers in the cluster, "
            "by outcome (model:vigil_inference_requests:rate1m).",
            [
                target(
                    f"model:vigil_inference_requests:rate1m{{{CLUSTER}}}", "{{model}} {{outcome}}"
                )
            ],
            PER_SECOND,
        ),
        timeseries(
            "Error ratio by model",
            "Share of each model's requests that failed over the last minute, over all its "
            "servers (model:vigil_inference_requests:error_ratio_rate1m). The per-pod view "
            "is on the workload dashboard.",
            [
                target(
                    f"model:vigil_inference_requests:error_ratio_rate1m{{{CLUSTER}}}",
                    "{{model}}",
                )
            ],
            RATIO,
        ),
        timeseries(
            "Request latency by model",
            "p50, p95 and p99 of each model's request latency over all its servers "
            "(model:vigil_inference_request_duration_seconds:p*_rate1m); servers that export "
            "a sum and a count only have none.",
            [
                target(
                    f"model:vigil_inference_request_duration_seconds:{p}_rate1m{{{CLUSTER}}}",
                    f"{p} {{{{model}}}}",
                )
                for p in ("p50", "p95", "p99")
            ],
            SECONDS,
        ),
        row("Rollbacks"),
        table(
            "Rollbacks",
            "Rollbacks by target, action and result since the rollback controller "
            "started (its journal keeps the full history).",
            [target(f"sum by (target, action, result) ({ROLLBACKS})")],
            w=HALF,
        ),
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
            PER_SECOND,
            w=HALF,
        ),
    ]
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
            query_variable(
                "version",
                "Version",
                "label_values(vigil_drift_window_samples{" + MODEL + "}, version)",
            ),
            query_variable(
                "feature",
                "Feature",
                "label_values(vigil_drift_feature_quantile{" + VERSION + "}, feature)",
            ),
        ],
        panels,
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
                f"max by (model, version) (vigil_drift_detected{{{VERSION}}}) == 1",
                "orange",
                "Drift: {{model}} {{version}}",
                "KS test rejected the reference distribution",
            ),
        ],
    )


def vigil_itself() -> dict[str, Any]:
    panels = [
        row("Collectors"),
        timeseries(
            "Collector success",
            "1 when a collector produced its metrics in the scrape, 0 when it could not "
            "(not available on the node, or failed): `vigil doctor` says why.",
            [target(f"vigil_scrape_collector_success{{{NODE}}}", "{{node}} {{collector}}")],
            maximum=1,
            w=HALF,
        ),
        timeseries(
            "Collector render time",
            "Time each collector took to render its metrics in the scrape (it reads a "
            "snapshot, so this stays in the milliseconds).",
            [
                target(
                    f"vigil_scrape_collector_duration_seconds{{{NODE}}}", "{{node}} {{collector}}"
                )
            ],
            SECONDS,
            w=HALF,
        ),
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
            PER_SECOND,
            w=HALF,
        ),
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
            w=HALF,
        ),
        row("Scrapes"),
        timeseries(
            "Scrape size",
            "Series per scrape of each agent (Prometheus' scrape_samples_scraped).",
            [target(f"scrape_samples_scraped{{{NODE}}} {IS_AGENT}", "{{node}}")],
            w=HALF,
        ),
        timeseries(
            "Series per collector",
            "Series each collector exported in the last scrape, and those the agent dropped "
            "because the collector was over its --collector.<name>.max-series cap (above 0: "
            "some pods, GPUs or models are missing; docs/scale.md has the budget).",
            [
                target(f"vigil_scrape_collector_series{{{NODE}}}", "{{node}} {{collector}}"),
                target(
                    f"vigil_scrape_collector_series_dropped{{{NODE}}}",
                    "{{node}} {{collector}} dropped",
                ),
            ],
            w=HALF,
        ),
        timeseries(
            "Scrape duration",
            "Time Prometheus took to scrape each agent (scrape_duration_seconds).",
            [target(f"scrape_duration_seconds{{{NODE}}} {IS_AGENT}", "{{node}}")],
            SECONDS,
            w=HALF,
        ),
        row("Resources"),
        timeseries(
            "Agent CPU",
            "CPU the agent uses, in cores (user + system).",
            [target(f"rate(process_cpu_seconds_total{{{NODE}}}[{RATE}]) {IS_AGENT}", "{{node}}")],
            RATIO,
        ),
        timeseries(
            "Agent memory",
            "Resident memory of the agent (the DaemonSet's limit is 512 MiB).",
            [target(f"process_resident_memory_bytes{{{NODE}}} {IS_AGENT}", "{{node}}")],
            BYTES,
        ),
        timeseries(
            "Open file descriptors",
            "File descriptors the agent holds (BPF maps and programs, py-spy pipes, sockets).",
            [target(f"process_open_fds{{{NODE}}} {IS_AGENT}", "{{node}}")],
        ),
        table(
            "Agents",
            "Version and Python of each agent.",
            [target(f"vigil_build_info{{{NODE}}}")],
            hide=("Time", "__name__", "job", "cluster", "Value"),
            w=FULL,
            h=6,
        ),
    ]
    return dashboard(
        "vigil-self",
        "Vigil / Vigil itself",
        "Is Vigil healthy: collectors' success and duration, scrape size, the agent's CPU "
        "and memory.",
        cluster_node_vars(),
        panels,
    )


# Links from a diagnosed pod (or bare process) to the dashboards that show its evidence,
# filtered to it, keeping the time range.
_TO_POD = (
    "var-cluster=${__field.labels.cluster}&var-node=${__field.labels.node}"
    "&var-namespace=${__field.labels.namespace}&var-pod=${__field.labels.pod}"
    "&var-container=${__field.labels.container}&var-comm=${__field.labels.comm}"
    "&var-pid=${__field.labels.pid}&${__url_time_range}"
)
DIAGNOSIS_LINKS = [
    Link(
        "Workload: CPU, GPU use, Python profile of this pod",
        f"/d/vigil-inference-workload?{_TO_POD}",
    ),
    # The node and drift boards have no pod variable (a GPU or a model is what they show),
    # and a row does not name the pod's GPU or model: these links narrow to the pod's node,
    # the most the row can say; the table's description tells the reader.
    Link(
        "Node: the GPUs of this pod's node",
        "/d/vigil-node-overview?var-cluster=${__field.labels.cluster}"
        "&var-node=${__field.labels.node}&${__url_time_range}",
    ),
    Link(
        "Drift: the models of this pod's node, and rollbacks",
        "/d/vigil-drift-rollbacks?var-cluster=${__field.labels.cluster}"
        "&var-node=${__field.labels.node}&${__url_time_range}",
    ),
]


def diagnosis() -> dict[str, Any]:
    cause = f"vigil_diagnosis_cause{{{POD}}}"
    panels = [
        stat(
            "Pods with a warning cause",
            "Pods (or bare processes) for which the diagnosis holds a cause of severity "
            "warning now: act on these first.",
            [
                target(
                    "count(count by (instance, pod, comm, pid) "
                    f'(vigil_diagnosis_cause{{{POD}, severity="warning"}})) or vector(0)'
                )
            ],
        ),
        stat(
            "Pods with any cause",
            "Pods (or bare processes) with at least one cause, info included.",
            [target(f"count(count by (instance, pod, comm, pid) ({cause})) or vector(0)")],
        ),
        stat(
            "Diagnosed",
            "Pods (or bare processes) the diagnosis gave a verdict this round, over all agents.",
            [target(f"sum(vigil_diagnosis_targets{{{NODE}}})")],
        ),
        with_links(
            table(
                "Pods and their causes",
                "One row per pod (or process outside a pod) and cause the diagnosis holds now. "
                "Click a row for the workload dashboard filtered to it, where the evidence "
                "is; docs/diagnosis.md#<cause> says what to do. `vigil explain POD` on the "
                "node prints the whole verdict. The Node and Drift links open the pod's "
                "node only, not the pod: those dashboards are per GPU and per model, and "
                "the row does not say which GPU or model the pod uses (pick it there).",
                [
                    target(
                        "max by (cluster, node, namespace, pod, container, comm, pid, cause, "
                        f"severity) ({cause})"
                    )
                ],
                w=FULL,
                hide=INFO_HIDDEN_COLUMNS,
            ),
            DIAGNOSIS_LINKS,
        ),
        table(
            "Verdicts",
            "Every diagnosed pod or process and its verdict: ok, causes, or "
            "insufficient_evidence (a window shorter than a verdict needs, or no signal yet).",
            [
                target(
                    "max by (namespace, pod, container, comm, pid, status) "
                    f"(vigil_diagnosis_status{{{POD}}} == 1)"
                )
            ],
            w=HALF,
            hide=INFO_HIDDEN_COLUMNS,
        ),
        timeseries(
            "Causes over time",
            "Which causes held when, per pod: a cause that comes and goes points at load "
            "peaks, one that stays at a setting (a CPU limit, a batch size).",
            [target(f"sum by (process, cause) ({by_process(cause)})", "{{process}} {{cause}}")],
            COUNT,
            w=HALF,
        ),
        row("Evidence"),
        timeseries(
            "Evidence over time",
            "The numbers behind each holding cause, over the diagnosis window (ratios 0..1, "
            "seconds, requests per the signal's name); the dashed lines are the thresholds "
            "they were compared with (agent/collectors/diagnosis/thresholds.py).",
            [
                target(
                    by_process(f"vigil_diagnosis_evidence{{{POD}}}"),
                    "{{process}} {{cause}}: {{signal}}",
                ),
                target(
                    by_process(f"vigil_diagnosis_evidence_threshold{{{POD}}}"),
                    "threshold {{cause}}: {{signal}}",
                ),
            ],
            w=FULL,
        ),
        timeseries(
            "CPU quota throttling",
            "Share of CFS periods in which the pod's cgroup used up its CPU quota (cgroup "
            "cpu.stat): the evidence of cpu_throttled. Empty (NaN) where no CPU limit is set.",
            [
                target(
                    "max by (process, container) ("
                    + by_process(
                        f"rate(vigil_cgroup_cpu_throttled_periods_total{{{POD}}}[{RATE}])"
                        f" / rate(vigil_cgroup_cpu_periods_total{{{POD}}}[{RATE}])"
                    )
                    + ")",
                    "{{process}} {{container}}",
                )
            ],
            RATIO,
            maximum=1,
        ),
        timeseries(
            "CPU quota throttled time",
            "Seconds per second the pod's cgroup was held back by its CPU quota.",
            [
                target(
                    "max by (process, container) ("
                    + by_process(f"rate(vigil_cgroup_cpu_throttled_seconds_total{{{POD}}}[{RATE}])")
                    + ")",
                    "{{process}} {{container}}",
                )
            ],
            SECONDS,
        ),
    ]
    return dashboard(
        "vigil-diagnosis",
        "Vigil / Diagnosis",
        "Why is this pod slow or wrong: one verdict per pod from all of Vigil's signals, the "
        "evidence behind it, and links to the dashboards that show it (docs/diagnosis.md).",
        [*cluster_node_vars(), *pod_vars()],
        panels,
    )


DASHBOARDS = {
    "vigil-diagnosis.json": diagnosis,
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
                "labels": {"app.kubernetes.io/part-of": "vigil", "grafana_dashboard": "1"},
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
