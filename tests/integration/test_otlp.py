"""--otlp-endpoint pushes the same metrics over OTLP/HTTP, received and decoded here."""

from __future__ import annotations

import time

from agentproc import AgentProcess
from opentelemetry.sdk.resources import Resource
from otlp_receiver import OtlpReceiver
from prometheus_client import CollectorRegistry, Histogram

from agent.telemetry import families_to_metrics_data


def _attrs(point) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def test_agent_metrics_arrive_over_otlp() -> None:
    with OtlpReceiver() as rx:
        args = ["--otlp-endpoint", rx.url + "/v1/metrics", "--otlp-interval", "200ms"]
        with AgentProcess(args) as agent:
            deadline = time.monotonic() + 15
            while "vigil_scrape_collector_success" not in rx.metric_points():
                assert time.monotonic() < deadline, agent.logs()
                time.sleep(0.1)
        points = rx.metric_points()
    assert {"vigil_build_info", "vigil_collector_errors_total", "process_cpu_seconds_total"} <= set(
        points
    )
    success = {
        _attrs(p)["collector"]: p.as_double for p in points["vigil_scrape_collector_success"]
    }
    assert set(success) >= {"discovery", "sched", "gpu", "profile", "drift"}
    assert success["discovery"] == 1.0
    info = points["vigil_build_info"][0]
    assert _attrs(info)["version"] and info.as_double == 1.0
    with rx.lock:
        resource = {
            kv.key: kv.value.string_value
            for kv in rx.metrics[0].resource_metrics[0].resource.attributes
        }
    assert resource["service.name"] == "vigil-agent"


def test_histograms_convert_to_per_bucket_counts() -> None:
    reg = CollectorRegistry()
    h = Histogram("demo_seconds", "d", ["pod"], buckets=(0.1, 1.0), registry=reg)
    for v in (0.05, 0.5, 0.5, 5.0):
        h.labels("p").observe(v)
    data = families_to_metrics_data(reg.collect(), Resource.create({}), 1, 2)
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    (point,) = metric.data.data_points
    assert metric.name == "demo_seconds"
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert list(point.bucket_counts) == [1, 2, 1]
    assert (point.count, point.sum, point.attributes) == (4, 6.05, {"pod": "p"})
    # And it encodes: Prometheus keeps no min/max, which OTLP allows to be absent.
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    encoded = encode_metrics(data).resource_metrics[0].scope_metrics[0].metrics[0]
    assert not encoded.histogram.data_points[0].HasField("min")
    assert list(encoded.histogram.data_points[0].bucket_counts) == [1, 2, 1]
