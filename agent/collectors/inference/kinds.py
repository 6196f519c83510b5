"""What each inference server kind exposes, and how to read it in one vocabulary.

Pure: no I/O. Given a command line, a set of metric names or a Prometheus text exposition,
tell the server kind and turn the server's own series into per-model :class:`ModelStats`
in base units (seconds, ratios). The mapping per kind, and what a kind cannot give, is in
docs/inference.md; the source names below were checked against each server's code.

Cost: a vLLM page is ~2,000 lines, most of them buckets of histograms Vigil never reads,
and prometheus_client's parser takes ~15 µs a line (30-40 ms a page, far over the 2 ms per
target the collector may spend). So :func:`parse` picks the lines of the few families a
kind needs in one regular-expression pass over line starts, and reads only those, strictly,
with the small reader below (label sets cached per series); the tests check it against
prometheus_client's parser on every fixture, and bench/inference/run.py has the numbers. A
page that is not an exposition at all (HTML, JSON, a cut-off body) is refused from its
first and last lines.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

KINDS: tuple[str, ...] = ("vllm", "sglang", "tgi", "triton", "oip", "torchserve")
"""Server kinds. "oip": Open Inference Protocol v2 servers (KServe ModelServer, MLServer)."""


@dataclass(frozen=True)
class Histogram:
    """A latency distribution in seconds.

    ``buckets``: (upper bound in seconds, cumulative count), ascending, ending with +Inf;
    ``()`` when the server exports only a sum and a count (no quantile can be derived).
    """

    buckets: tuple[tuple[float, float], ...]
    sum_seconds: float
    count: float


@dataclass(frozen=True)
class ModelStats:
    """One model's signals as the server exported them (counters are not reset-corrected).

    A field is None when the server does not export that signal (see docs/inference.md).
    """

    model: str  # "" when the server names no model
    success_total: float | None = None
    error_total: float | None = None
    duration: Histogram | None = None  # end-to-end request latency
    ttft: Histogram | None = None  # time to first token
    queue_requests: float | None = None
    running_requests: float | None = None
    kv_cache_usage_ratio: float | None = None  # 0..1
    generated_tokens_total: float | None = None
    finished_total: float | None = None  # any finished request: progress for stall detection
    # Token counts per request (bounds in tokens, not seconds), vLLM and SGLang: what the
    # drift of prompt and generation lengths is tested on (agent/collectors/drift/lengths.py).
    prompt_tokens: Histogram | None = None
    generation_tokens: Histogram | None = None


@dataclass(frozen=True)
class KindInfo:
    """Where a kind answers: health, metrics and the optional deep probe.

    ``model_ready_path``: a per-model readiness path with a ``{model}`` placeholder, for
    servers that have one (OIP v2); ``metrics_note`` says where /metrics lives when it is
    not on the port that answers ``health_path``.
    """

    kind: str
    health_path: str
    metrics_path: str
    deep_path: str | None
    has_latency_histogram: bool
    model_ready_path: str | None = None
    metrics_note: str = ""


INFO: dict[str, KindInfo] = {
    "vllm": KindInfo("vllm", "/health", "/metrics", None, True),
    "sglang": KindInfo("sglang", "/health", "/metrics", "/health_generate", True),
    "tgi": KindInfo(
        "tgi", "/health", "/metrics", None, True,
        metrics_note="also on --prometheus-port (default 9000)",
    ),
    "triton": KindInfo(
        "triton", "/v2/health/ready", "/metrics", None, False,
        model_ready_path="/v2/models/{model}/ready",
        metrics_note="metrics on their own port (--metrics-port, default 8002; HTTP 8000)",
    ),
    "oip": KindInfo(
        "oip", "/v2/health/ready", "/metrics", None, False,
        model_ready_path="/v2/models/{model}/ready",
        metrics_note="MLServer: metrics on their own port (metrics_port, default 8082)",
    ),
    "torchserve": KindInfo(
        "torchserve", "/ping", "/metrics", None, False,
        metrics_note="metrics API on its own port (metrics_address, default 8082)",
    ),
}  # fmt: skip


class ParseError(Exception):
    """The exposition is not valid Prometheus text; the message names the line."""


# --- detection -------------------------------------------------------------------------

# Command-line shapes of each server's long-running process, most specific first. The
# OIP entry covers MLServer and KServe's own runtimes; a custom KServe ModelServer script
# cannot be told from its command line, so it is recognised by its metric names instead.
_CMDLINE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("vllm", re.compile(
        r"(?:^|[\s/])vllm\s+serve\b|\bvllm\.entrypoints\.(?:openai\.)?api_server\b"
    )),
    ("sglang", re.compile(r"\bsglang\.launch_server\b|(?:^|[\s/])sglang\s+serve\b")),
    ("tgi", re.compile(r"(?:^|[\s/])text-generation-(?:launcher|router)(?:\s|$)")),
    ("triton", re.compile(r"(?:^|[\s/])tritonserver(?:\s|$)")),
    ("torchserve", re.compile(
        r"(?:^|[\s/])torchserve(?:\s|$)|\borg\.pytorch\.serve\.ModelServer\b"
    )),
    ("oip", re.compile(
        r"(?:^|[\s/])mlserver\s+start\b"
        r"|-m\s+(?:kserve|sklearnserver|xgbserver|lgbserver|pmmlserver|paddleserver|huggingfaceserver)\b"
    )),
)  # fmt: skip


def kind_from_cmdline(cmdline: str) -> str | None:
    """The server kind a process command line names, or None.

    ``cmdline`` may be /proc/<pid>/cmdline as read (NUL-separated) or joined with spaces.
    """
    text = cmdline.replace("\0", " ")
    for kind, pattern in _CMDLINE:
        if pattern.search(text):
            return kind
    return None


# Names only one kind exports, checked in order (vLLM's and SGLang's prefixes first: an
# LLM server may also carry generic HTTP series such as http_requests_total).
_NAME_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vllm", ("vllm:",)),
    ("sglang", ("sglang:",)),
    ("tgi", ("tgi_",)),
    ("triton", ("nv_inference_",)),
    ("torchserve", ("ts_inference_", "ts_queue_latency_", "Requests2XX", "Requests5XX")),
    ("oip", ("model_infer_request_", "request_predict_seconds")),
)


def kind_from_metric_names(names: set[str]) -> str | None:
    """The server kind a set of exposition family or sample names reveals, or None."""
    for kind, prefixes in _NAME_PREFIXES:
        if any(name.startswith(prefixes) for name in names):
            return kind
    return None


_NAME_AT_LINE_START = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)", re.MULTILINE)


def metric_names(text: str) -> set[str]:
    """Sample names in an exposition (cheap: no value is parsed), for detection."""
    return set(_NAME_AT_LINE_START.findall(text))


# --- parsing ---------------------------------------------------------------------------

Labels = dict[str, str]
Samples = dict[str, list[tuple[Labels, float]]]

# A label set, strictly: name="value" pairs (escapes \\ \" \n), comma-separated. The
# unrolled [^"\\]*(?:\\.[^"\\]*)* form is ~3x faster in `re` than an alternation per char.
_VALUE = r'"([^"\\\n]*(?:\\.[^"\\\n]*)*)"'
_PAIR = r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*" + _VALUE + r"[ \t]*"
_LABEL = re.compile(_PAIR + r"(?:,|$)")
_LABELS_STRICT = re.compile(rf"(?:{_PAIR},)*(?:{_PAIR})?[ \t]*")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SUFFIXES = ("", "_bucket", "_sum", "_count", "_total")
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

_US = 1e-6
_MS = 1e-3


@functools.lru_cache(maxsize=4096)
def _label_set(raw: str) -> Labels:
    """The labels of ``raw`` (between the braces). Cached: the same series come back every
    scrape; 4,096 series of ~100 bytes each at most. The dict is shared: never mutate it."""
    pairs = _LABEL.findall(raw)
    # findall skips what it cannot read. When the pairs found, written back compactly
    # (name="value" joined by commas), do not account for every character, the strict
    # pattern decides (blanks are allowed, junk is not): the usual path is one findall.
    compact = sum(len(k) + len(v) for k, v in pairs) + 4 * len(pairs) - 1
    if len(raw) not in (compact, compact + 1) and _LABELS_STRICT.fullmatch(raw) is None:
        raise ParseError(f"malformed labels {{{raw[:100]}}}")
    labels = dict(pairs)
    for key, value in labels.items():
        if "\\" in value:
            labels[key] = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], value)
    return labels


def _labels(raw: str) -> Labels:
    """Labels of one sample. A histogram's bucket lines differ only in ``le``: the rest is
    read once per series (and cached across scrapes), ``le`` is cut out by hand."""
    start = raw.find('le="')
    end = raw.find('"', start + 4)
    if start == -1 or end == -1 or "\\" in raw[start:end]:
        return _label_set(raw)
    before, after = raw[:start].rstrip(" \t"), raw[end + 1 :]
    if before and not before.endswith(","):
        return _label_set(raw)  # "le" inside another label's value, or junk: read it all
    if after.strip(" \t") and not after.lstrip(" \t").startswith(","):
        return _label_set(raw)  # junk after le="…": the strict reading refuses it
    rest = (before[:-1] + after) if before else after.lstrip(" \t").removeprefix(",")
    labels = dict(_label_set(rest))
    labels["le"] = raw[start + 4 : end]
    return labels


def _sample(line: str) -> tuple[str, Labels, float]:
    """name, labels, value of one sample line (text format 0.0.4; an OpenMetrics exemplar
    after " # " and a timestamp are accepted and ignored)."""
    exemplar = line.find(" # {")
    head = line if exemplar == -1 else line[:exemplar]
    brace = head.find("{")
    if brace != -1:
        close = head.rfind("}")
        if close < brace:
            raise ParseError(f"unclosed label set: {line[:120]!r}")
        name, labels = head[:brace].rstrip(), _labels(head[brace + 1 : close])
        rest = head[close + 1 :].split()
    else:
        parts = head.split()
        name, labels, rest = (parts[0] if parts else ""), {}, parts[1:]
    if _NAME.fullmatch(name) is None or not 1 <= len(rest) <= 2:
        raise ParseError(f"not a Prometheus sample: {line[:120]!r}")
    try:
        return name, labels, float(rest[0])
    except ValueError:
        raise ParseError(f"{name}: value {rest[0][:40]!r} is not a number") from None


def _check_shape(text: str) -> None:
    """Refuse what is not an exposition at all (HTML, JSON, a stack trace, a cut-off
    body). Only the first two and the last sample lines are read in full here: the lines
    Vigil uses are all read strictly by :func:`_samples`; the rest it never looks at."""
    head = [ln for ln in text[:8192].splitlines() if ln.strip() and ln.lstrip()[:1] != "#"]
    checks = [(f"sample line {n + 1}", ln) for n, ln in enumerate(head[:2])]
    tail = text[-8192:].rstrip().rsplit("\n", 1)[-1]
    if tail.strip() and tail.lstrip()[:1] != "#":
        checks.append(("last line", tail))
    for where, line in checks:
        try:
            _sample(line)
        except ParseError as exc:
            raise ParseError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class _Reader:
    """Which lines a kind needs, and how it turns their samples into fields."""

    selector: re.Pattern[str]
    wanted: frozenset[str]
    read: Callable[[Samples], _Fields]


def _reader(bases: list[str], read: Callable[[Samples], _Fields]) -> _Reader:
    """``bases``: family base names; a family's samples are the base plus "", _bucket,
    _sum, _count or _total. The selector starts with a literal newline, so `re` jumps from
    line start to line start in C instead of trying every character (4x faster)."""
    alternatives = "|".join(re.escape(b) for b in sorted(bases, key=len, reverse=True))
    return _Reader(
        re.compile(rf"\n((?:{alternatives})[^\n]*)"),
        frozenset(b + suffix for b in bases for suffix in _SUFFIXES),
        read,
    )


def _samples(text: str, reader: _Reader) -> Samples:
    """The samples of the families ``reader`` wants, indexed by sample name."""
    out: Samples = {}
    for line in reader.selector.findall("\n" + text):
        try:
            name, labels, value = _sample(line)
        except ParseError as exc:
            number = text.count("\n", 0, max(text.find(line), 0)) + 1
            raise ParseError(f"line {number}: {exc}") from None
        # A NaN or infinite counter or gauge says nothing usable: treat it as absent.
        if name in reader.wanted and math.isfinite(value):
            out.setdefault(name, []).append((labels, value))
    return out


def _sum(samples: Samples, name: str, label: str | None,
         keep: Callable[[Labels], bool] | None = None) -> dict[str, float]:  # fmt: skip
    """Per model (value of ``label``; "" when None), the sum over the other labels."""
    out: dict[str, float] = {}
    for labels, value in samples.get(name, ()):
        if keep is None or keep(labels):
            model = labels.get(label, "") if label else ""
            out[model] = out.get(model, 0.0) + value
    return out


def _max(samples: Samples, name: str, label: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples.get(name, ()):
        model = labels.get(label, "") if label else ""
        out[model] = max(out.get(model, value), value)
    return out


def _histograms(samples: Samples, base: str, label: str | None, scale: float = 1.0
                ) -> dict[str, Histogram]:  # fmt: skip
    """Per model, the histogram ``base`` summed over the other labels (engines, ranks:
    cumulative counts over the same bounds add up), bounds and sum scaled to seconds."""
    sums = _sum(samples, base + "_sum", label)
    counts = _sum(samples, base + "_count", label)
    buckets: dict[str, dict[float, float]] = {}
    for labels, value in samples.get(base + "_bucket", ()):
        model = labels.get(label, "") if label else ""
        try:
            bound = float(labels["le"])
        except (KeyError, ValueError):
            raise ParseError(f"{base}_bucket: bad or missing le label in {labels}") from None
        per = buckets.setdefault(model, {})
        per[bound] = per.get(bound, 0.0) + value
    out: dict[str, Histogram] = {}
    for model in sums.keys() | counts.keys() | buckets.keys():
        count = counts.get(model, 0.0)
        per = buckets.get(model, {})
        if per and math.inf not in per:
            per[math.inf] = count
        ordered = tuple((b * scale if math.isfinite(b) else b, c) for b, c in sorted(per.items()))
        out[model] = Histogram(ordered, sums.get(model, 0.0) * scale, count)
    return out


def _counter_histogram(total_scaled: dict[str, float], counts: dict[str, float]
                       ) -> dict[str, Histogram]:  # fmt: skip
    """A sum/count-only latency from a cumulative-duration counter and a request counter."""
    return {
        m: Histogram((), total_scaled.get(m, 0.0), counts.get(m, 0.0))
        for m in total_scaled.keys() | counts.keys()
    }


def _add(*parts: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for model, value in part.items():
            out[model] = out.get(model, 0.0) + value
    return out


def _scaled(values: dict[str, float], scale: float) -> dict[str, float]:
    return {m: v * scale for m, v in values.items()}


def _attribute(server_wide: float | None, models: set[str]) -> dict[str, float]:
    """A counter the server keeps without a model label goes to its one model, or to
    model "" (the server as a whole) when it serves several or names none."""
    if server_wide is None:
        return {}
    if len(models) == 1:
        return {next(iter(models)): server_wide}
    return {"": server_wide}


def _has(samples: Samples, *names: str) -> bool:
    return any(n in samples for n in names)


class _Fields(dict[str, dict[str, object]]):
    """field name -> model -> value, assembled into ModelStats at the end."""

    def put(self, field: str, per_model: dict[str, float] | dict[str, Histogram]) -> None:
        if per_model:
            self[field] = dict(per_model)


# vLLM: vllm/v1/metrics/loggers.py (and v0 vllm/engine/metrics.py). Labels model_name and,
# in v1, engine (one series per data-parallel engine). finished_reason is one of stop,
# length, abort, error, repetition; "abort" is the client going away, "error" is always
# answered 500. http_requests_total{method,status,handler} comes from
# prometheus-fastapi-instrumentator, status grouped as "2xx".."5xx", no model label.
_VLLM_NAMES = [
    "vllm:request_success_total", "vllm:num_requests_running", "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:generation_tokens_total",
    "http_requests_total",
    "vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds",
    "vllm:request_prompt_tokens", "vllm:request_generation_tokens",
]  # fmt: skip
_VLLM_NOT_SUCCESS = frozenset({"abort", "error"})


def _vllm(s: Samples) -> _Fields:
    f = _Fields()
    label = "model_name"
    reason = "finished_reason"
    f.put("success_total", _sum(s, "vllm:request_success_total", label,
                                lambda lb: lb.get(reason) not in _VLLM_NOT_SUCCESS))  # fmt: skip
    f.put("finished_total", _sum(s, "vllm:request_success_total", label))
    f.put("duration", _histograms(s, "vllm:e2e_request_latency_seconds", label))
    f.put("ttft", _histograms(s, "vllm:time_to_first_token_seconds", label))
    f.put("queue_requests", _sum(s, "vllm:num_requests_waiting", label))
    f.put("running_requests", _sum(s, "vllm:num_requests_running", label))
    # Despite "_perc", both gauges are fractions: "1 means 100 percent usage".
    kv = _max(s, "vllm:kv_cache_usage_perc", label) or _max(s, "vllm:gpu_cache_usage_perc", label)
    f.put("kv_cache_usage_ratio", kv)
    f.put("generated_tokens_total", _sum(s, "vllm:generation_tokens_total", label))
    f.put("prompt_tokens", _histograms(s, "vllm:request_prompt_tokens", label))
    f.put("generation_tokens", _histograms(s, "vllm:request_generation_tokens", label))
    models = {lb.get(label, "") for name, rows in s.items() if name.startswith("vllm:")
              for lb, _ in rows}  # fmt: skip
    if _has(s, "http_requests_total"):
        # The engine counts no failures; the HTTP layer's 5xx answers are the error count
        # (they include finished_reason="error", which is always answered 500).
        http5 = _sum(s, "http_requests_total", None, lambda lb: lb.get("status", "")[:1] == "5")
        f.put("error_total", _attribute(http5.get("", 0.0), models))
    else:
        f.put("error_total", _sum(s, "vllm:request_success_total", label,
                                  lambda lb: lb.get(reason) == "error"))  # fmt: skip
    return f


# SGLang: python/sglang/srt/metrics/collector.py. TokenizerMetricsCollector labels
# model_name (plus any custom labels); scheduler gauges add engine_type, tp_rank, pp_rank.
# By default one scheduler reports (--enable-metrics-for-all-schedulers is off), so adding
# the series up is right; with that flag under plain tensor parallelism it overcounts.
_SGLANG_NAMES = [
    "sglang:num_requests_total", "sglang:num_aborted_requests_total",
    "sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
    "sglang:generation_tokens_total",
    "sglang:e2e_request_latency_seconds", "sglang:time_to_first_token_seconds",
    "sglang:prompt_tokens_histogram", "sglang:generation_tokens_histogram",
]  # fmt: skip


def _sglang(s: Samples) -> _Fields:
    f = _Fields()
    label = "model_name"
    done = _sum(s, "sglang:num_requests_total", label)
    aborted = _sum(s, "sglang:num_aborted_requests_total", label)
    f.put("success_total", done)
    # SGLang has no failure counter: aborts (server-side and client disconnects alike) are
    # the only non-success outcome it counts.
    f.put("error_total", aborted)
    f.put("finished_total", _add(done, aborted))
    f.put("duration", _histograms(s, "sglang:e2e_request_latency_seconds", label))
    f.put("ttft", _histograms(s, "sglang:time_to_first_token_seconds", label))
    f.put("queue_requests", _sum(s, "sglang:num_queue_reqs", label))
    f.put("running_requests", _sum(s, "sglang:num_running_reqs", label))
    f.put("kv_cache_usage_ratio", _max(s, "sglang:token_usage", label))
    f.put("generated_tokens_total", _sum(s, "sglang:generation_tokens_total", label))
    f.put("prompt_tokens", _histograms(s, "sglang:prompt_tokens_histogram", label))
    f.put("generation_tokens", _histograms(s, "sglang:generation_tokens_histogram", label))
    return f


# TGI: router/src/server.rs, router/src/infer/mod.rs, backends/v3/src/{backend,queue}.rs.
# metrics-exporter-prometheus: counters keep their name (no _total), no model label (one
# model per router); durations in seconds, 35 geometric buckets from 0.00015 s.
# tgi_request_failure{err} is created at the first failure; err is one of validation,
# overloaded, template, incomplete, generation, dropped.
_TGI_NAMES = [
    "tgi_request_count", "tgi_request_success", "tgi_request_failure", "tgi_queue_size",
    "tgi_batch_current_size", "tgi_request_generated_tokens_sum",
    "tgi_request_duration",
]  # fmt: skip
_TGI_CLIENT_ERRORS = frozenset({"validation"})


def _tgi(s: Samples) -> _Fields:
    f = _Fields()
    if not s:
        return f
    success = _sum(s, "tgi_request_success", None)
    failures = _sum(s, "tgi_request_failure", None)
    server_failures = _sum(s, "tgi_request_failure", None,
                           lambda lb: lb.get("err") not in _TGI_CLIENT_ERRORS)  # fmt: skip
    if _has(s, "tgi_request_count", "tgi_request_success"):
        # The failure series appear only at the first failure: none yet means zero.
        success = success or {"": 0.0}
        server_failures = server_failures or {"": 0.0}
        failures = failures or {"": 0.0}
    f.put("success_total", success)
    f.put("error_total", server_failures)
    f.put("finished_total", _add(success, failures) if success else {})
    f.put("duration", _histograms(s, "tgi_request_duration", None))
    f.put("queue_requests", _sum(s, "tgi_queue_size", None))
    f.put("running_requests", _sum(s, "tgi_batch_current_size", None))
    f.put("generated_tokens_total", _sum(s, "tgi_request_generated_tokens_sum", None))
    return f


# Triton: core src/metrics.cc, src/metric_model_reporter.cc, src/infer_stats.cc
# (prometheus-cpp: counters keep their name). Labels model, version (+ gpu_uuid);
# failure adds reason: REJECTED, CANCELED, BACKEND, OTHER. Durations are cumulative
# microsecond counters added only on success; the first-response histogram (ms) exists
# only with --metrics-config histogram_latencies=true.
_TRITON_NAMES = [
    "nv_inference_request_success", "nv_inference_request_failure",
    "nv_inference_request_duration_us", "nv_inference_pending_request_count",
    "nv_inference_first_response_histogram_ms",
]  # fmt: skip


def _triton(s: Samples) -> _Fields:
    f = _Fields()
    label = "model"
    success = _sum(s, "nv_inference_request_success", label)
    failures = _sum(s, "nv_inference_request_failure", label)
    f.put("success_total", success)
    # A cancelled request is the client's choice, as vLLM's abort; not a server error.
    f.put("error_total", _sum(s, "nv_inference_request_failure", label,
                              lambda lb: lb.get("reason") != "CANCELED"))  # fmt: skip
    f.put("finished_total", _add(success, failures))
    duration_s = _scaled(_sum(s, "nv_inference_request_duration_us", label), _US)
    if duration_s:
        f.put("duration", _counter_histogram(duration_s, success))
    f.put("ttft", _histograms(s, "nv_inference_first_response_histogram_ms", label, _MS))
    f.put("queue_requests", _sum(s, "nv_inference_pending_request_count", label))
    return f


# OIP v2. MLServer: mlserver/handlers/dataplane.py: model_infer_request_success /
# _failure counters and the model_infer_request_duration summary (seconds), labels model,
# version. KServe: kserve/metrics.py: request_predict_seconds histogram (label model_name,
# prometheus_client's default buckets), observed on failure too; no outcome counter.
_OIP_NAMES = [
    "model_infer_request_success_total", "model_infer_request_failure_total",
    "model_infer_request_duration", "request_predict_seconds",
]  # fmt: skip


def _oip(s: Samples) -> _Fields:
    f = _Fields()
    if _has(s, "model_infer_request_success_total", "model_infer_request_failure_total",
            "model_infer_request_duration_count"):  # fmt: skip
        label = "model"
        success = _sum(s, "model_infer_request_success_total", label)
        failures = _sum(s, "model_infer_request_failure_total", label)
        f.put("success_total", success)
        f.put("error_total", failures)
        f.put("finished_total", _add(success, failures))
        f.put("duration", _histograms(s, "model_infer_request_duration", label))
        return f
    predict = _histograms(s, "request_predict_seconds", "model_name")
    f.put("duration", predict)
    f.put("finished_total", {m: h.count for m, h in predict.items()})
    return f


# TorchServe: ts/configs/metrics.yaml, Java simpleclient 0.9 (counters keep their name).
# ts_inference_* carry model_name, model_version, hostname; Requests2XX/4XX/5XX carry only
# Level and Hostname. Needs metrics_mode: prometheus for the Requests*XX series.
_TORCHSERVE_NAMES = [
    "ts_inference_requests_total", "ts_inference_latency_microseconds",
    "Requests2XX", "Requests5XX",
]  # fmt: skip


def _torchserve(s: Samples) -> _Fields:
    f = _Fields()
    label = "model_name"
    requests = _sum(s, "ts_inference_requests_total", label)
    latency_s = _scaled(_sum(s, "ts_inference_latency_microseconds", label), _US)
    f.put("finished_total", requests)
    if latency_s:
        f.put("duration", _counter_histogram(latency_s, requests))
    models = set(requests) | set(latency_s)
    ok = _sum(s, "Requests2XX", None).get("")
    failed = _sum(s, "Requests5XX", None).get("")
    if ok is not None or failed is not None:
        f.put("success_total", _attribute(ok or 0.0, models))
        f.put("error_total", _attribute(failed or 0.0, models))
    return f


_READERS: dict[str, _Reader] = {
    "vllm": _reader(_VLLM_NAMES, _vllm),
    "sglang": _reader(_SGLANG_NAMES, _sglang),
    "tgi": _reader(_TGI_NAMES, _tgi),
    "triton": _reader(_TRITON_NAMES, _triton),
    "oip": _reader(_OIP_NAMES, _oip),
    "torchserve": _reader(_TORCHSERVE_NAMES, _torchserve),
}


def parse(kind: str, text: str, max_models: int) -> tuple[dict[str, ModelStats], int]:
    """Per-model stats of ``kind`` from exposition ``text``, and how many models were
    dropped beyond ``max_models``: the first ``max_models`` in name order are kept, so the
    same models stay across scrapes (model "", the server as a whole, sorts first).
    Raises :class:`ParseError` on garbage, ValueError on an unknown kind or a negative cap."""
    if kind not in _READERS:
        raise ValueError(f"unknown inference server kind {kind!r}; known: {', '.join(KINDS)}")
    if max_models < 0:
        raise ValueError(f"max_models must be >= 0, got {max_models}")
    _check_shape(text)
    reader = _READERS[kind]
    fields = reader.read(_samples(text, reader))
    models = sorted({m for per_model in fields.values() for m in per_model})
    kept, dropped = models[:max_models], len(models) - min(len(models), max_models)
    stats = {
        m: ModelStats(m, **{f: per[m] for f, per in fields.items() if m in per})  # type: ignore[arg-type]
        for m in kept
    }
    return stats, dropped
