"""Families → signals (pure), the collector's ring and rendering, the JSON document and
the /v1/diagnosis route, all over families built as the collectors build them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentproc import run_vigil
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from agent.collectors.diagnosis.api import routes
from agent.collectors.diagnosis.causes import CAUSES, FAMILY_OF
from agent.collectors.diagnosis.collector import DiagnosisCollector
from agent.collectors.diagnosis.settings import DiagnosisSettings
from agent.collectors.diagnosis.signals import (
    SIGNALS,
    compute,
    counter_delta,
    frame_of,
    histogram_quantile,
    targets_of,
)
from agent.collectors.diagnosis.thresholds import GPU_THROTTLE_REASONS, as_table
from agent.options import SettingError

ROOT = Path(__file__).resolve().parents[2]
PROC = ["pod", "namespace", "container", "comm", "pid"]
BARE = ["", "", "", "python3", "4242"]
POD = ["llama-7b-5f9c", "serving", "server", "python3", ""]
GPU0 = ["0", "GPU-0"]


def watched(*label_sets: tuple[list[str], int]) -> Metric:
    f = GaugeMetricFamily("vigil_watched_process_info", "", labels=["pid", *PROC[:4]])
    for labels, pid in label_sets:
        f.add_metric([str(pid), *labels[:4]], 1.0)
    return f


def sched(
    labels: list[str], runq_s: float, off_s: float, voluntary: float, slots: list[float]
) -> list[Metric]:
    runq = HistogramMetricFamily("vigil_sched_runqueue_latency_seconds", "", labels=PROC)
    bounds = ["0.001", "0.004", "0.016", "0.064", "+Inf"]
    cum, buckets = 0.0, []
    for le, n in zip(bounds, slots, strict=True):
        cum += n
        buckets.append((le, cum))
    runq.add_metric(labels, buckets, runq_s)
    off = HistogramMetricFamily("vigil_sched_offcpu_seconds", "", labels=PROC)
    off.add_metric(labels, [("+Inf", 1.0)], off_s)
    sw = CounterMetricFamily("vigil_sched_context_switches", "", labels=[*PROC, "kind"])
    sw.add_metric([*labels, "voluntary"], voluntary)
    sw.add_metric([*labels, "involuntary"], 0.0)
    return [runq, off, sw]


def cgroup(labels: list[str], periods: float, throttled: float, secs: float) -> list[Metric]:
    out = []
    for name, v in (
        ("vigil_cgroup_cpu_periods", periods),
        ("vigil_cgroup_cpu_throttled_periods", throttled),
        ("vigil_cgroup_cpu_throttled_seconds", secs),
    ):
        f = CounterMetricFamily(name, "", labels=PROC)
        f.add_metric(labels, v)
        out.append(f)
    return out


def gpu(labels: list[str], util: float, used: float, total: float, thermal: float) -> list[Metric]:
    proc = GaugeMetricFamily(
        "vigil_gpu_process_memory_used_bytes", "", labels=["gpu", "uuid", *PROC]
    )
    proc.add_metric([*GPU0, *labels], 1e9)
    u = GaugeMetricFamily("vigil_gpu_utilization_ratio", "", labels=["gpu", "uuid"])
    u.add_metric(GPU0, util)
    # another GPU the process does not use: never counted
    u.add_metric(["1", "GPU-1"], 1.0)
    mu = GaugeMetricFamily("vigil_gpu_memory_used_bytes", "", labels=["gpu", "uuid"])
    mu.add_metric(GPU0, used)
    mt = GaugeMetricFamily("vigil_gpu_memory_total_bytes", "", labels=["gpu", "uuid"])
    mt.add_metric(GPU0, total)
    ev = GaugeMetricFamily("vigil_gpu_clock_event_active", "", labels=["gpu", "uuid", "reason"])
    ev.add_metric([*GPU0, "hw_thermal_slowdown"], thermal)
    ev.add_metric([*GPU0, "gpu_idle"], 1.0)  # not throttling
    return [proc, u, mu, mt, ev]


def profile(labels: list[str], gil: float, active: float, idle: float) -> list[Metric]:
    g = GaugeMetricFamily("vigil_profile_gil_ratio", "", labels=PROC)
    g.add_metric(labels, gil)
    s = CounterMetricFamily("vigil_profile_samples", "", labels=[*PROC, "state"])
    s.add_metric([*labels, "active"], active)
    s.add_metric([*labels, "idle"], idle)
    f = GaugeMetricFamily("vigil_profile_function_ratio", "", labels=[*PROC, "function", "kind"])
    for fn, self_, total in (
        ("a (x.py:1)", 0.5, 0.6),
        ("b (x.py:2)", 0.7, 0.7),
        ("c (x.py:3)", 0.1, 0.9),
    ):
        f.add_metric([*labels, fn, "self"], self_)
        f.add_metric([*labels, fn, "total"], total)
    return [g, s, f]


def inference(labels: list[str], queue: float, ok: float, err: float, up: float) -> list[Metric]:
    t = [*PROC, "port", "kind"]
    q = GaugeMetricFamily("vigil_inference_queue_requests", "", labels=[*t, "model"])
    q.add_metric([*labels, "8000", "vllm", "llama"], queue)
    r = CounterMetricFamily("vigil_inference_requests", "", labels=[*t, "model", "outcome"])
    r.add_metric([*labels, "8000", "vllm", "llama", "success"], ok)
    r.add_metric([*labels, "8000", "vllm", "llama", "error"], err)
    u = GaugeMetricFamily("vigil_inference_up", "", labels=t)
    u.add_metric([*labels, "8000", "vllm"], up)
    return [q, r, u]


def drift(model: str, detected: float) -> Metric:
    d = GaugeMetricFamily("vigil_drift_detected", "", labels=["model", "version"])
    d.add_metric([model, "v1"], detected)
    return d


def moment(i: int) -> list[Metric]:
    """Family state at second 10*i: a starved bare process, a throttled pod on a hot GPU."""
    return [
        watched((BARE, 4242), (POD, 100), (POD, 101)),
        *sched(BARE, runq_s=5.0 * i, off_s=1.0 * i, voluntary=10.0 * i, slots=[0, 0, 10 * i, 0, 0]),
        *cgroup(POD, periods=100.0 * i, throttled=80.0 * i, secs=7.0 * i),
        *gpu(POD, util=0.1 * (i % 2), used=79.0, total=80.0, thermal=float(i % 2)),
        *profile(BARE, gil=0.9, active=20.0 * i, idle=60.0 * i),
        *inference(POD, queue=2.0 + i, ok=1000.0 * i, err=10.0 * i, up=1.0 if i < 3 else 0.0),
        drift("llama", 1.0),
    ]


def ring(n: int = 4) -> list[tuple[float, Any]]:
    return [(10.0 * i, frame_of(moment(i))) for i in range(n)]


def test_targets_are_the_per_process_label_sets_with_their_pids() -> None:
    got = targets_of(frame_of([watched((BARE, 4242), (POD, 100), (POD, 101))]))
    assert got == {tuple(BARE): [4242], tuple(POD): [100, 101]}


def test_signals_over_a_window() -> None:
    sig = compute(ring(), throttle_reasons=GPU_THROTTLE_REASONS)
    bare, pod = sig[tuple(BARE)], sig[tuple(POD)]
    assert bare.window_seconds == 30.0 and bare.frames == 4
    assert bare.values["runqueue_wait_ratio"] == pytest.approx(0.5)
    assert bare.values["runqueue_p99_seconds"] == 0.016
    assert bare.values["offcpu_ratio"] == pytest.approx(0.1)
    assert bare.extra["voluntary_switches_per_second"] == pytest.approx(1.0)
    assert bare.values["gil_ratio"] == 0.9
    assert bare.values["idle_ratio"] == pytest.approx(0.75)
    assert [f["function"] for f in bare.hot_functions] == ["b (x.py:2)", "a (x.py:1)", "c (x.py:3)"]
    assert bare.hot_functions[1] == {
        "function": "a (x.py:1)",
        "self_ratio": 0.5,
        "total_ratio": 0.6,
    }
    assert bare.values["gpu_utilization_ratio"] is None
    assert "holds no GPU" in bare.missing["gpu_utilization_ratio"]
    assert bare.values["drift_detected"] is None  # no model attributed to it
    assert pod.values["cpu_throttled_ratio"] == pytest.approx(0.8)
    assert pod.extra["throttled_seconds_per_second"] == pytest.approx(0.7)
    assert pod.values["gpu_utilization_ratio"] == pytest.approx(0.05)  # mean of 0, .1, 0, .1
    assert pod.values["gpu_memory_used_ratio"] == pytest.approx(79 / 80)
    assert pod.values["gpu_throttled_ratio"] == pytest.approx(0.5)
    assert pod.values["queue_requests"] == pytest.approx(3.5)
    assert pod.extra["queue_growth"] == 3.0
    assert pod.values["requests_per_second"] == pytest.approx(1010 / 10)
    assert pod.values["error_ratio"] == pytest.approx(10 / 1010)
    assert pod.extra["unreachable_ratio"] == pytest.approx(0.25)
    assert pod.values["drift_detected"] is True and pod.drifted_models == ["llama"]
    assert pod.values["runqueue_wait_ratio"] is None
    assert set(pod.values) == set(SIGNALS)


def test_a_counter_that_reset_is_left_out_not_read_as_negative() -> None:
    first = frame_of(cgroup(BARE, 100.0, 50.0, 1.0))
    last = frame_of(cgroup(BARE, 10.0, 5.0, 0.1))
    assert counter_delta(first, last, "vigil_cgroup_cpu_periods_total", tuple(BARE)) is None
    assert counter_delta(last, first, "vigil_cgroup_cpu_periods_total", tuple(BARE)) == 90.0


def test_model_owners_attribute_drift_by_pid_or_name() -> None:
    frames = [(0.0, frame_of([watched((BARE, 4242)), drift("fraud", 1.0)]))]
    assert compute(frames, {"fraud": ["4242"]})[tuple(BARE)].values["drift_detected"] is True
    assert compute(frames, {"fraud": ["python3"]})[tuple(BARE)].values["drift_detected"] is True
    assert compute(frames, {"fraud": ["other"]})[tuple(BARE)].values["drift_detected"] is None


@pytest.mark.parametrize(
    ("buckets", "q", "want"),
    [
        ([(0.1, 0.0), (1.0, 0.0), (float("inf"), 0.0)], 0.99, None),
        ([], 0.5, None),
        ([(0.1, 50.0), (1.0, 99.0), (float("inf"), 100.0)], 0.99, 1.0),
        ([(0.1, 50.0), (1.0, 98.0), (float("inf"), 100.0)], 0.99, float("inf")),
        ([(1.0, 10.0), (0.1, 10.0), (float("inf"), 10.0)], 0.5, 0.1),  # order of input
    ],
)
def test_histogram_quantile(
    buckets: list[tuple[float, float]], q: float, want: float | None
) -> None:
    assert histogram_quantile(buckets, q) == want


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def collector(max_targets: int = 256) -> tuple[DiagnosisCollector, Clock]:
    state = {"i": 0}
    clock = Clock()

    def families() -> list[Metric]:
        return moment(state["i"])

    settings = DiagnosisSettings(interval=10.0, window=30.0, max_targets=max_targets)
    c = DiagnosisCollector(families, settings, clock=clock, wall=lambda: 1_796_040_000.0)

    def step() -> None:
        c.refresh_now()
        state["i"] += 1
        clock.t += 10.0

    c.step = step  # type: ignore[attr-defined]
    return c, clock


def rendered(c: DiagnosisCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value for fam in c.collect() for s in fam.samples
    }


def test_every_cause_is_described_once_whether_it_holds_or_not() -> None:
    # The alert annotations join this series for the cause's explanation: it must be there
    # before any verdict, and stay one series per cause however many targets there are.
    c, _ = collector()
    c.step()  # type: ignore[attr-defined]
    info = {
        dict(labels)["cause"]: dict(labels)
        for (name, labels), value in rendered(c).items()
        if name == "vigil_diagnosis_cause_info" and value == 1.0
    }
    assert set(info) == set(CAUSES)
    assert info["cpu_starved"] == {
        "cause": "cpu_starved",
        "family": "cpu",
        "severity": "warning",
        "explanation": CAUSES["cpu_starved"].why,
    }
    assert {c: i["family"] for c, i in info.items()} == FAMILY_OF


def test_collector_needs_a_full_window_then_renders_causes_with_evidence() -> None:
    c, _ = collector()
    c.step()  # type: ignore[attr-defined]
    doc = c.report()
    assert doc is not None
    assert {t["status"] for t in doc["targets"]} == {"insufficient_evidence"}
    for _ in range(3):
        c.step()  # type: ignore[attr-defined]
    doc = c.report()
    assert doc is not None and doc["window_seconds"] == 30.0
    pod = next(t for t in doc["targets"] if t["pod"])
    assert pod["pid"] is None and pod["pids"] == [100, 101]
    assert [x["cause"] for x in pod["causes"]] == [
        "cpu_throttled", "gpu_memory_pressure", "gpu_starved", "gpu_throttled", "input_drift",
        "service_errors",
    ]  # fmt: skip
    bare = next(t for t in doc["targets"] if not t["pod"])
    assert bare["pid"] == 4242 and [x["cause"] for x in bare["causes"]] == ["cpu_starved"]
    got = rendered(c)
    key = frozenset(
        {
            **dict(zip(PROC, BARE, strict=True)),
            "cause": "cpu_starved",
            "severity": "warning",
        }.items()
    )
    assert got[("vigil_diagnosis_cause", key)] == 1.0
    ev = frozenset(
        {
            **dict(zip(PROC, BARE, strict=True)),
            "cause": "cpu_starved",
            "signal": "runqueue_wait_ratio",
        }.items()
    )
    assert got[("vigil_diagnosis_evidence", ev)] == pytest.approx(0.5)
    assert got[("vigil_diagnosis_evidence_threshold", ev)] == 0.2
    # A cause that does not hold has no series at all.
    assert not any(
        n == "vigil_diagnosis_cause" and dict(lab).get("cause") == "gil_bound" for n, lab in got
    )
    assert got[("vigil_diagnosis_targets", frozenset())] == 2


def test_targets_over_the_cap_are_refused_and_counted() -> None:
    c, _ = collector(max_targets=1)
    c.step()  # type: ignore[attr-defined]
    c.step()  # type: ignore[attr-defined]
    doc = c.report()
    assert doc is not None and len(doc["targets"]) == 1
    assert rendered(c)[("vigil_diagnosis_targets_refused_total", frozenset())] == 2


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(SettingError, match="two intervals"):
        DiagnosisSettings(interval=10.0, window=15.0)
    with pytest.raises(SettingError, match="MODEL=NAME"):
        DiagnosisSettings(model_owners=("fraud",))
    assert DiagnosisSettings(model_owners=("a=1", "a=x", "b=y")).owners() == {
        "a": ["1", "x"], "b": ["y"],
    }  # fmt: skip


def test_a_window_shorter_than_a_verdict_needs_is_refused() -> None:
    # Ten one-second rounds make enough snapshots, but never the minimum window: every
    # verdict would read insufficient_evidence for as long as the agent runs.
    with pytest.raises(SettingError, match="window: 10s is shorter than the 20s") as err:
        DiagnosisSettings(window=10.0, interval=1.0)
    assert err.value.option == "window"
    assert DiagnosisSettings(window=20.0, interval=1.0).window == 20.0


@pytest.mark.parametrize("window", ["10s", "19.5s"])
def test_vigil_run_refuses_a_short_diagnosis_window_before_starting(window: str) -> None:
    res = run_vigil(
        ["run", "--collector.diagnosis.window", window, "--collector.diagnosis.interval", "1s"]
    )
    assert res.returncode == 2, res.stderr
    assert "collector.diagnosis.window" in res.stderr and "minimum 20" in res.stderr
    assert "Traceback" not in res.stderr


async def _get(c: DiagnosisCollector | None, path: str) -> tuple[int, Any]:
    class Empty:
        def report(self, pod: str | None = None, pid: int | None = None) -> None:
            return None

    app = web.Application()
    app.add_routes(routes(c if c is not None else Empty()))
    async with TestClient(TestServer(app)) as client:
        r = await client.get(path)
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/v1/diagnosis?pid=abc", 400, "not a process id"),
        ("/v1/diagnosis?pid=%C2%B2", 400, "not a process id"),
        ("/v1/diagnosis?pod=", 400, "pod is empty"),
        ("/v1/diagnosis?verbose=1", 400, "unknown parameter 'verbose'"),
        ("/v1/diagnosis?pod=nosuch", 404, "pod 'nosuch' is not a watched"),
        ("/v1/diagnosis?pid=999", 404, "pid 999 is not a watched"),
    ],
)
def test_bad_queries_get_a_clear_4xx(path: str, status: int, text: str) -> None:
    c, _ = collector()
    c.step()  # type: ignore[attr-defined]
    got, body = asyncio.run(_get(c, path))
    assert got == status and text in body["error"]


def test_filters_and_the_answer_before_the_first_round() -> None:
    c, _ = collector()
    c.step()  # type: ignore[attr-defined]
    status, body = asyncio.run(_get(c, "/v1/diagnosis?pod=llama-7b-5f9c"))
    assert status == 200 and [t["pod"] for t in body["targets"]] == ["llama-7b-5f9c"]
    status, body = asyncio.run(_get(c, "/v1/diagnosis?pid=101"))
    assert status == 200 and body["targets"][0]["pids"] == [100, 101]
    status, body = asyncio.run(_get(c, "/v1/diagnosis?pid=4242"))
    assert status == 200 and body["targets"][0]["pid"] == 4242
    status, body = asyncio.run(_get(None, "/v1/diagnosis"))
    assert status == 503 and "first round" in body["error"]


def test_the_fixture_follows_the_contract_the_agent_writes() -> None:
    c, _ = collector()
    for _ in range(4):
        c.step()  # type: ignore[attr-defined]
    real = c.report()
    fixture = json.loads((ROOT / "tests/diagnosis/fixtures/diagnosis.json").read_text())
    assert real is not None
    assert set(fixture) == set(real)
    for t in [*fixture["targets"], *real["targets"]]:
        assert set(t) == set(real["targets"][0])
        assert set(t["signals"]) == set(SIGNALS)
        assert t["status"] in ("ok", "causes", "insufficient_evidence")
        for cause in t["causes"]:
            assert set(cause) == {
                "cause", "severity", "summary", "why", "advice", "runbook", "evidence",
            }  # fmt: skip
            for e in cause["evidence"]:
                assert set(e) == {"signal", "value", "unit", "threshold", "window_seconds"}


def test_docs_quote_every_threshold_with_its_value() -> None:
    text = (ROOT / "docs/diagnosis.md").read_text()
    table = dict(re.findall(r"^\| `(\w+)` \| ([0-9.]+) \|$", text, re.M))
    want = {name: value for name, value in as_table()}
    assert set(table) == set(want)
    for name, value in want.items():
        assert float(table[name]) == pytest.approx(value, rel=1e-4), name


def test_every_cause_has_its_runbook_section() -> None:
    from agent.collectors.diagnosis.diagnose import CAUSES

    text = (ROOT / "docs/diagnosis.md").read_text()
    for cause in CAUSES:
        assert f"\n### {cause}\n" in text, cause


def test_throttle_reasons_are_the_alert_rules_reasons() -> None:
    values = yaml.safe_load((ROOT / "alerts/thresholds.yml").read_text())
    pattern = f"^(?:{values['gpu_thermal_reasons']}|{values['gpu_power_reasons']})$"
    for reason in GPU_THROTTLE_REASONS:
        assert re.match(pattern, reason), reason
    assert not re.match(pattern, "gpu_idle")
