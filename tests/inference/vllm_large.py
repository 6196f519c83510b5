"""A full-size vLLM /metrics page, for the parse benchmark and its test.

Every family vLLM v1 registers (vllm/v1/metrics/loggers.py), with its own buckets, one
series set per data-parallel engine, plus the HTTP series of
prometheus-fastapi-instrumentator and the Python process collector: what a scrape of a
real multi-engine vLLM returns. Engines are added until the page has ``min_lines``.
"""

from __future__ import annotations

import random

MODEL = "meta-llama/Llama-3.1-70B-Instruct"

_E2E = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
        120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
         7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
_TPOT = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
         10.0, 20.0, 40.0, 80.0]  # fmt: skip
_PREFILL_TOKEN = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
_TOKENS_125 = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]  # max_model_len 8192
_ITERATION = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
_N = [1, 2, 5, 10, 20]

_HISTOGRAMS = [
    ("vllm:time_to_first_token_seconds", _TTFT),
    ("vllm:time_per_output_token_seconds", _TPOT),
    ("vllm:time_per_prefill_token_request_seconds", _PREFILL_TOKEN),
    ("vllm:e2e_request_latency_seconds", _E2E),
    ("vllm:request_queue_time_seconds", _E2E),
    ("vllm:request_inference_time_seconds", _E2E),
    ("vllm:request_prefill_time_seconds", _E2E),
    ("vllm:request_decode_time_seconds", _E2E),
    ("vllm:request_prompt_tokens", _TOKENS_125),
    ("vllm:request_generation_tokens", _TOKENS_125),
    ("vllm:iteration_tokens_total", _ITERATION),
    ("vllm:request_max_num_generation_tokens", _TOKENS_125),
    ("vllm:request_params_n", _N),
    ("vllm:request_params_max_tokens", _TOKENS_125),
]
_GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting",
           "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"]  # fmt: skip
_COUNTERS = ["vllm:gpu_prefix_cache_queries", "vllm:gpu_prefix_cache_hits",
             "vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:num_preemptions",
             "vllm:prompt_tokens", "vllm:generation_tokens"]  # fmt: skip
_REASONS = ["stop", "length", "abort", "error", "repetition"]
_HANDLERS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
             "/tokenize", "/detokenize"]  # fmt: skip


def _engine_block(rng: random.Random, engine: int) -> list[str]:
    labels = f'model_name="{MODEL}",engine="{engine}"'
    out: list[str] = []
    for name in _GAUGES:
        out.append(f"{name}{{{labels}}} {rng.random():.4f}")
    for name in _COUNTERS:
        out.append(f"{name}_total{{{labels}}} {float(rng.randrange(10**4, 10**7))}")
        out.append(f"{name}_created{{{labels}}} 1.7640123456e+09")
    for reason in _REASONS:
        value = float(rng.randrange(0, 10**5))
        out.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {value}')
    for name, bounds in _HISTOGRAMS:
        cumulative = 0
        for bound in [*bounds, "+Inf"]:
            cumulative += rng.randrange(0, 5000)
            out.append(f'{name}_bucket{{{labels},le="{float(bound) if bound != "+Inf" else bound}"}} {float(cumulative)}')  # noqa: E501
        out.append(f"{name}_count{{{labels}}} {float(cumulative)}")
        out.append(f"{name}_sum{{{labels}}} {cumulative * rng.uniform(0.1, 3):.6f}")
        out.append(f"{name}_created{{{labels}}} 1.7640123456e+09")
    return out


def _header() -> list[str]:
    out = [
        "# HELP python_gc_objects_collected_total Objects collected during gc",
        "# TYPE python_gc_objects_collected_total counter",
        *(f'python_gc_objects_collected_total{{generation="{g}"}} {1000.0 * (g + 1)}'
          for g in range(3)),
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 3.221225472e+09",
        "# HELP http_requests_total Total number of requests by method, status and handler.",
        "# TYPE http_requests_total counter",
    ]  # fmt: skip
    for handler in _HANDLERS:
        for status in ("2xx", "4xx", "5xx"):
            out.append(f'http_requests_total{{handler="{handler}",method="POST",status="{status}"}} 17.0')  # noqa: E501
    out.append("# HELP http_request_duration_highr_seconds Latency with many buckets.")
    out.append("# TYPE http_request_duration_highr_seconds histogram")
    cumulative = 0
    for bound in [0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4,
                  4.5, 5, 7.5, 10, 30, 60, "+Inf"]:  # fmt: skip
        cumulative += 11
        le = float(bound) if bound != "+Inf" else bound
        out.append(f'http_request_duration_highr_seconds_bucket{{le="{le}"}} {float(cumulative)}')
    out.append(f"http_request_duration_highr_seconds_count {float(cumulative)}")
    out.append("http_request_duration_highr_seconds_sum 812.5")
    return out


def vllm_exposition(min_lines: int = 2000, seed: int = 7) -> str:
    """A vLLM /metrics page of at least ``min_lines`` lines (HELP/TYPE included)."""
    rng = random.Random(seed)
    lines = _header()
    engines: list[list[str]] = []
    while len(lines) + sum(map(len, engines)) + 2 * 30 < min_lines:
        engines.append(_engine_block(rng, len(engines)))
    # Group by family as prometheus_client renders: HELP/TYPE once, then every engine.
    by_family: dict[str, list[str]] = {}
    for block in engines:
        for line in block:
            family = line.split("{", 1)[0]
            for suffix in ("_bucket", "_count", "_sum", "_created", "_total"):
                if family.endswith(suffix):
                    family = family[: -len(suffix)]
                    break
            by_family.setdefault(family, []).append(line)
    for family, samples in by_family.items():
        kind = "histogram" if any("_bucket{" in s for s in samples) else (
            "counter" if any("_total{" in s for s in samples) else "gauge")  # fmt: skip
        lines.append(f"# HELP {family} {family} as vLLM documents it.")
        lines.append(f"# TYPE {family} {kind}")
        lines.extend(samples)
    while len(lines) < min_lines:
        lines.append(f'http_requests_total{{handler="/pad{len(lines)}",method="GET",status="2xx"}} 1.0')  # noqa: E501
    return "\n".join(lines) + "\n"
