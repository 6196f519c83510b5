"""Server kinds: detection, and each server's /metrics read into one vocabulary.

The fixtures under fixtures/ follow each server's source (names, label sets, types,
buckets; see docs/inference.md); mlserver-real.txt is a page captured from a real MLServer.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.collectors.inference import kinds
from agent.collectors.inference.kinds import (
    INFO,
    KINDS,
    Histogram,
    ParseError,
    kind_from_cmdline,
    kind_from_metric_names,
    metric_names,
    parse,
)

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))
from vllm_large import vllm_exposition  # noqa: E402

VLLM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SGLANG_MODEL = "Qwen/Qwen2.5-7B-Instruct"
VLLM_E2E_BOUNDS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                   50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def one(kind: str, name: str, max_models: int = 16) -> dict[str, kinds.ModelStats]:
    stats, dropped = parse(kind, fixture(name), max_models)
    assert dropped == 0
    return stats


def raw_bucket_sum(text: str, family: str, le: str) -> float:
    """The fixture's own bucket lines for one bound, added up: an oracle independent of
    the reader under test."""
    pattern = re.compile(rf'^{re.escape(family)}_bucket\{{.*le="{re.escape(le)}".*\}} (\S+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def assert_well_formed(h: Histogram) -> None:
    bounds = [b for b, _ in h.buckets]
    counts = [c for _, c in h.buckets]
    if h.buckets:
        assert bounds == sorted(bounds) and bounds[-1] == math.inf
        assert counts == sorted(counts), "cumulative counts never decrease"
        assert counts[-1] == h.count


# --- vLLM ------------------------------------------------------------------------------


def test_vllm_sums_engines_and_reads_outcomes() -> None:
    stats = one("vllm", "vllm.txt")
    assert list(stats) == [VLLM_MODEL]
    m = stats[VLLM_MODEL]
    # stop + length + repetition over both engines; abort (client gone) and error are not.
    assert m.success_total == 900 + 80 + 850 + 70
    # Every finished request, whatever its reason: the progress the stall detector needs.
    assert m.finished_total == 900 + 80 + 5 + 2 + 850 + 70 + 3 + 1
    # The engine counts no failures: the HTTP layer's 5xx answers are the errors.
    assert m.error_total == 3 + 1
    assert m.running_requests == 3 + 2
    assert m.queue_requests == 1 + 0
    assert m.kv_cache_usage_ratio == 0.57  # the fuller engine; already a 0..1 fraction
    assert m.generated_tokens_total == 51234 + 48766


def test_vllm_latency_histograms_keep_the_servers_buckets() -> None:
    text = fixture("vllm.txt")
    m = one("vllm", "vllm.txt")[VLLM_MODEL]
    assert m.duration is not None and m.ttft is not None
    assert [b for b, _ in m.duration.buckets] == [*VLLM_E2E_BOUNDS, math.inf]
    assert m.duration.count == 987 + 924
    assert m.duration.sum_seconds == pytest.approx(1500.5 + 1400.25)
    one_second = dict(m.duration.buckets)[1.0]
    assert one_second == raw_bucket_sum(text, "vllm:e2e_request_latency_seconds", "1.0")
    assert m.ttft.sum_seconds == pytest.approx(123.25 + 110.5)
    assert dict(m.ttft.buckets)[0.1] == raw_bucket_sum(text, "vllm:time_to_first_token_seconds", "0.1")  # noqa: E501
    assert_well_formed(m.duration)
    assert_well_formed(m.ttft)


def test_vllm_without_http_series_counts_engine_errors() -> None:
    text = "\n".join(
        line for line in fixture("vllm.txt").splitlines() if not line.startswith("http_")
    )
    m = parse("vllm", text, 4)[0][VLLM_MODEL]
    assert m.error_total == 2 + 1  # finished_reason="error", answered 500 by vLLM


def test_vllm_http_errors_with_no_model_named_go_to_the_server() -> None:
    text = '# TYPE http_requests_total counter\nhttp_requests_total{handler="/v1/completions",method="POST",status="5xx"} 7.0\n'  # noqa: E501
    stats, dropped = parse("vllm", text, 4)
    assert dropped == 0
    assert stats[""].error_total == 7
    assert stats[""].success_total is None


def test_vllm_older_gauge_name_is_read_when_the_new_one_is_absent() -> None:
    text = f'vllm:gpu_cache_usage_perc{{model_name="{VLLM_MODEL}"}} 0.25\n'
    assert parse("vllm", text, 4)[0][VLLM_MODEL].kv_cache_usage_ratio == 0.25


def test_counters_the_page_lacks_are_none_not_zero() -> None:
    text = f'vllm:num_requests_running{{model_name="{VLLM_MODEL}",engine="0"}} 2.0\n'
    m = parse("vllm", text, 4)[0][VLLM_MODEL]
    assert m.running_requests == 2
    for field in ("success_total", "error_total", "finished_total", "duration", "ttft",
                  "generated_tokens_total", "kv_cache_usage_ratio", "queue_requests"):  # fmt: skip
        assert getattr(m, field) is None, field


def test_the_two_thousand_line_page_is_read() -> None:
    text = vllm_exposition()
    assert len(text.splitlines()) >= 2000
    stats, dropped = parse("vllm", text, 4)
    assert dropped == 0
    (m,) = stats.values()
    assert m.duration is not None and len(m.duration.buckets) == len(VLLM_E2E_BOUNDS) + 1
    assert m.success_total is not None and m.finished_total is not None
    assert m.finished_total >= m.success_total > 0
    assert_well_formed(m.duration)


# --- SGLang, TGI ---------------------------------------------------------------------


def test_sglang() -> None:
    text = fixture("sglang.txt")
    m = one("sglang", "sglang.txt")[SGLANG_MODEL]
    assert m.success_total == 4200
    assert m.error_total == 21  # aborted: SGLang's only non-success outcome
    assert m.finished_total == 4221
    assert m.running_requests == 7 + 5  # summed over data-parallel ranks
    assert m.queue_requests == 2 + 4
    assert m.kv_cache_usage_ratio == 0.66
    assert m.generated_tokens_total == 612345
    assert m.duration is not None and m.ttft is not None
    assert m.duration.count == 4200 and m.duration.sum_seconds == 9870.0
    assert dict(m.duration.buckets)[1.0] == raw_bucket_sum(text, "sglang:e2e_request_latency_seconds", "1.0")  # noqa: E501
    assert len(m.ttft.buckets) == 19
    assert_well_formed(m.duration)


def test_tgi_names_no_model_and_leaves_client_errors_out() -> None:
    stats = one("tgi", "tgi.txt")
    assert list(stats) == [""]
    m = stats[""]
    assert m.success_total == 5012
    assert m.error_total == 15 + 6  # overloaded + generation; validation is the client's
    assert m.finished_total == 5012 + 97 + 15 + 6
    assert m.queue_requests == 9
    assert m.running_requests == 24
    assert m.generated_tokens_total == 1203456
    assert m.ttft is None and m.kv_cache_usage_ratio is None
    assert m.duration is not None
    assert len(m.duration.buckets) == 36  # 35 geometric bounds from 0.00015 s, then +Inf
    assert m.duration.buckets[0][0] == pytest.approx(0.00015)
    assert m.duration.sum_seconds == 10523.75 and m.duration.count == 5012
    assert_well_formed(m.duration)


def test_tgi_before_its_first_failure_has_zero_errors() -> None:
    text = "# TYPE tgi_request_count counter\ntgi_request_count 10\n# TYPE tgi_request_success counter\ntgi_request_success 10\n"  # noqa: E501
    m = parse("tgi", text, 4)[0][""]
    assert m.error_total == 0 and m.success_total == 10 and m.finished_total == 10


# --- Triton ----------------------------------------------------------------------------


def test_triton_models_versions_and_microseconds() -> None:
    stats = one("triton", "triton.txt")
    assert sorted(stats) == ["bert", "densenet_onnx", "resnet50"]
    dense, resnet = stats["densenet_onnx"], stats["resnet50"]
    assert dense.success_total == 1200
    assert dense.error_total == 2 + 3  # REJECTED + BACKEND; CANCELED is the client's choice
    assert dense.finished_total == 1200 + 2 + 5 + 3
    assert dense.queue_requests == 4
    # Only sums and counts: cumulative microseconds over successful requests.
    assert dense.duration == Histogram((), 30.0, 1200.0)
    assert resnet.success_total == 300 + 700  # versions 1 and 2 added up
    assert resnet.error_total == 1 + 4 + 1
    assert resnet.duration == Histogram((), 14.0, 1000.0)
    assert resnet.queue_requests == 2
    assert dense.ttft is None and dense.running_requests is None
    assert stats["bert"].success_total == 0


def test_triton_first_response_histogram_in_milliseconds() -> None:
    m = one("triton", "triton_histograms.txt")["llama3_trtllm"]
    assert m.ttft is not None
    assert m.ttft.buckets == ((0.1, 5.0), (0.5, 25.0), (2.0, 45.0), (5.0, 50.0), (math.inf, 50.0))
    assert m.ttft.sum_seconds == pytest.approx(9.5)
    assert m.error_total is None  # no failure family on this page


# --- OIP: MLServer, KServe ---------------------------------------------------------


def test_mlserver_outcomes_and_summary_latency() -> None:
    stats = one("oip", "oip_mlserver.txt")
    assert sorted(stats) == ["income-xgb", "iris-sklearn"]
    iris = stats["iris-sklearn"]
    assert (iris.success_total, iris.error_total, iris.finished_total) == (980, 20, 1000)
    assert iris.duration == Histogram((), 2.5, 1000.0)
    assert stats["income-xgb"].error_total == 0


def test_a_real_mlserver_page() -> None:
    stats = one("oip", "mlserver-real.txt")
    assert list(stats) == ["iris"]
    iris = stats["iris"]
    assert (iris.success_total, iris.error_total) == (272, 31)
    assert iris.duration is not None and iris.duration.buckets == ()
    assert iris.duration.count == 303


def test_kserve_predict_histogram() -> None:
    stats = one("oip", "oip_kserve.txt")
    assert sorted(stats) == ["sklearn-iris", "xgb-income"]
    iris = stats["sklearn-iris"]
    assert iris.success_total is None and iris.error_total is None  # KServe counts none
    assert iris.duration is not None
    assert iris.duration.count == 600 and iris.duration.sum_seconds == 12.5
    assert dict(iris.duration.buckets)[0.005] == 100
    assert iris.finished_total == 600
    assert_well_formed(iris.duration)


# --- TorchServe ------------------------------------------------------------------------


def test_torchserve_per_model_latency_and_host_outcomes() -> None:
    stats = one("torchserve", "torchserve.txt")
    assert sorted(stats) == ["", "bert-seq", "resnet-18"]
    resnet = stats["resnet-18"]
    assert resnet.duration == Histogram((), 45.0, 1500.0)  # microseconds to seconds
    assert resnet.finished_total == 1500
    assert resnet.success_total is None
    # Requests2XX/5XX carry no model: with two models they belong to the server as a whole.
    assert (stats[""].success_total, stats[""].error_total) == (1960, 10)


def test_torchserve_single_model_gets_the_host_outcomes() -> None:
    text = "\n".join(
        ln for ln in fixture("torchserve.txt").splitlines() if "bert-seq" not in ln
    )
    stats, _ = parse("torchserve", text, 4)
    assert sorted(stats) == ["resnet-18"]
    assert (stats["resnet-18"].success_total, stats["resnet-18"].error_total) == (1960, 10)


# --- bounds, garbage -------------------------------------------------------------------


def test_max_models_keeps_the_first_by_name_and_counts_the_rest() -> None:
    text = fixture("triton.txt")
    stats, dropped = parse("triton", text, 2)
    assert sorted(stats) == ["bert", "densenet_onnx"] and dropped == 1
    stats, dropped = parse("triton", text, 0)
    assert stats == {} and dropped == 3


@pytest.mark.parametrize(
    "text",
    [
        "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
        '{"object": "error", "message": "Not Found"}\n',
        "\x00\x01\x02binary\xff",
        "Traceback (most recent call last):\n  File \"x.py\"\n",
        # cut off mid-line
        fixture("vllm.txt") + 'vllm:num_requests_running{model_name="m",engi',
        # a family Vigil reads, with a value that is no number
        fixture("vllm.txt").replace(
            f'vllm:num_requests_waiting{{model_name="{VLLM_MODEL}",engine="1"}} 0.0',
            f'vllm:num_requests_waiting{{model_name="{VLLM_MODEL}",engine="1"}} zero',
        ),
        # labels that are not name="value"
        fixture("vllm.txt").replace('engine="0",finished_reason="stop"', "engine=0,stop"),
    ],
    ids=["html", "json", "binary", "traceback", "truncated", "bad-value", "bad-labels"],
)
def test_garbage_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse("vllm", text, 4)
    assert str(err.value)


def test_a_bad_line_is_named() -> None:
    text = fixture("vllm.txt").replace(
        f'vllm:num_requests_waiting{{model_name="{VLLM_MODEL}",engine="1"}} 0.0',
        f'vllm:num_requests_waiting{{model_name="{VLLM_MODEL}",engine="1"}} zero',
    )
    line = next(
        n for n, ln in enumerate(text.splitlines(), 1) if ln.endswith(" zero")
    )  # fmt: skip
    with pytest.raises(ParseError, match=rf"line {line}: vllm:num_requests_waiting: value 'zero'"):
        parse("vllm", text, 4)


def test_empty_page_and_nan_values_give_nothing() -> None:
    assert parse("vllm", "", 4) == ({}, 0)
    text = f'vllm:num_requests_running{{model_name="{VLLM_MODEL}",engine="0"}} NaN\n'
    assert parse("vllm", text, 4) == ({}, 0)


def test_label_escapes_and_exemplars() -> None:
    text = (
        '# TYPE model_infer_request_success counter\n'
        'model_infer_request_success_total{model="a\\"b\\\\c",version="1"} 3.0 # {trace_id="x"} 1.0\n'  # noqa: E501
        'model_infer_request_success_total{version="1",model="{braces}"} 2.0 1764000000000\n'
    )
    stats, _ = parse("oip", text, 4)
    assert stats['a"b\\c'].success_total == 3 and stats["{braces}"].success_total == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown inference server kind"):
        parse("ollama", "", 4)
    with pytest.raises(ValueError, match="max_models"):
        parse("vllm", "", -1)


# --- the reader agrees with prometheus_client ------------------------------------------

PAGES = [
    ("vllm", "vllm.txt"), ("sglang", "sglang.txt"), ("tgi", "tgi.txt"),
    ("triton", "triton.txt"), ("triton", "triton_histograms.txt"),
    ("oip", "oip_mlserver.txt"), ("oip", "mlserver-real.txt"), ("oip", "oip_kserve.txt"),
    ("torchserve", "torchserve.txt"),
]  # fmt: skip


def bare(name: str) -> str:
    """prometheus_client names a counter's sample ..._total even where the page (TGI,
    Triton, TorchServe) has no such suffix; compare names without it."""
    return name.removesuffix("_total")


def reference(text: str, names: set[str]) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if bare(s.name) in names and math.isfinite(s.value):
                out.append((bare(s.name), tuple(sorted(s.labels.items())), s.value))
    return sorted(out)


@pytest.mark.parametrize(("kind", "name"), [*PAGES, ("vllm", "large")])
def test_reader_matches_prometheus_client(kind: str, name: str) -> None:
    text = vllm_exposition() if name == "large" else fixture(name)
    ours = kinds._samples(text, kinds._READERS[kind])
    got = sorted(
        (bare(n), tuple(sorted(labels.items())), v)
        for n, rows in ours.items()
        for labels, v in rows
    )
    assert got, "the page has samples of the kind's families"
    assert got == reference(text, {bare(n) for n in ours})


# --- detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "kind"),
    [
        ("/usr/bin/python3 /usr/local/bin/vllm serve meta-llama/Llama-3.1-8B --port 8000", "vllm"),
        ("vllm serve Qwen/Qwen2.5-7B", "vllm"),
        ("python3 -m vllm.entrypoints.openai.api_server --model m", "vllm"),
        ("python\0-m\0vllm.entrypoints.openai.api_server\0--model\0m\0", "vllm"),
        ("python3 -m sglang.launch_server --model-path m --port 30000", "sglang"),
        ("text-generation-launcher --model-id bigscience/bloom-560m", "tgi"),
        ("/usr/local/bin/text-generation-router --port 80 --master-shard-uds-path /tmp/x", "tgi"),
        ("/opt/tritonserver/bin/tritonserver --model-repository=/models", "triton"),
        ("tritonserver\0--model-repository=/models\0", "triton"),
        ("/opt/venv/bin/python /opt/venv/bin/mlserver start /mnt/models", "oip"),
        ("python -m sklearnserver --model_name iris --model_dir /mnt/models", "oip"),
        ("python3 -m kserve.model_server", "oip"),
        ("torchserve --start --model-store model_store --models all", "torchserve"),
        ("java -Dmodel_server_home=/home/ts -cp .:/ts/frontend/* org.pytorch.serve.ModelServer", "torchserve"),  # noqa: E501
        ("python train.py --epochs 3", None),
        ("vim vllm_notes.txt", None),
        ("python -m pytest tests/inference", None),
        ("", None),
    ],
)
def test_kind_from_cmdline(cmdline: str, kind: str | None) -> None:
    assert kind_from_cmdline(cmdline) == kind


@pytest.mark.parametrize(("kind", "name"), PAGES)
def test_kind_from_metric_names(kind: str, name: str) -> None:
    assert kind_from_metric_names(metric_names(fixture(name))) == kind


def test_unknown_metric_names() -> None:
    assert kind_from_metric_names({"python_gc_objects_collected_total", "up"}) is None
    assert kind_from_metric_names(set()) is None
    # An LLM server carries generic HTTP series too; its own prefix decides.
    assert kind_from_metric_names({"http_requests_total", "vllm:num_requests_running"}) == "vllm"


def test_every_kind_has_its_paths() -> None:
    assert set(INFO) == set(KINDS)
    for kind, info in INFO.items():
        assert info.kind == kind
        assert info.health_path.startswith("/") and info.metrics_path.startswith("/")
    assert INFO["sglang"].deep_path == "/health_generate"
    assert INFO["triton"].has_latency_histogram is False  # sums and counts only by default
    assert INFO["torchserve"].health_path == "/ping"
