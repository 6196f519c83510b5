"""The inference collector against real HTTP servers started by the test: each server
kind's fixture served on a health path and /metrics, and servers that misbehave — one that
never answers, one that hangs up, one that serves garbage, one that serves 100 MB. The
collector must turn each into the documented series and reasons, and keep going."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from agent.collectors.inference.collector import InferenceCollector, metric_names
from agent.collectors.inference.settings import InferenceSettings
from agent.discovery import Discovery

FIXTURES = Path(__file__).parent / "fixtures"
VLLM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"

Route = Callable[[BaseHTTPRequestHandler], None]


def reply(status: int, body: bytes | str, ctype: str = "text/plain") -> Route:
    data = body.encode() if isinstance(body, str) else body

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def hang(seconds: float) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        reply(200, "late")(h)

    return route


def hang_up(h: BaseHTTPRequestHandler) -> None:
    # Close without a status line: what a crashing worker or a proxy reset looks like.
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def endless(total: int) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.end_headers()  # no Content-Length: the cap must stop the read itself
        line = b"# " + b"x" * 1022 + b"\n"
        try:
            for _ in range(total // len(line)):
                h.wfile.write(line)
        except OSError:
            pass  # the reader gave up, as it should

    return route


class Server:
    """A real HTTP server on loopback whose routes the test sets."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                route = outer.routes.get(self.path, reply(404, "not found"))
                route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[[dict[str, Route]], Server]]:
    made: list[Server] = []

    def make(routes: dict[str, Route]) -> Server:
        s = Server(routes)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def collector(
    targets: list[str], clock: Callable[[], float] = time.monotonic, **kw: object
) -> InferenceCollector:
    settings = InferenceSettings(targets=tuple(targets), **kw)  # type: ignore[arg-type]
    c = InferenceCollector(Discovery(procfs="/proc", patterns=[]), settings, "/proc", clock=clock)
    c.open()
    return c


def scrape(c: InferenceCollector) -> list[Metric]:
    c.refresh_now()
    assert c._error is None, c._error
    return list(c.collect())


def value(fams: list[Metric], sample: str, **labels: str) -> float | None:
    for fam in fams:
        for s in fam.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def names(fams: list[Metric]) -> set[str]:
    return {s.name for fam in fams for s in fam.samples}


def fixture(kind: str) -> str:
    return (FIXTURES / f"{kind}.txt").read_text()


def test_vllm_server_in_one_vocabulary(servers: Callable[[dict[str, Route]], Server]) -> None:
    srv = servers({"/health": reply(200, ""), "/metrics": reply(200, fixture("vllm"))})
    c = collector([f"http://127.0.0.1:{srv.port} kind=vllm"])
    fams = scrape(c)
    t = {"port": str(srv.port), "kind": "vllm"}
    mt = {**t, "model": VLLM_MODEL}
    assert value(fams, "vigil_inference_up", **t) == 1
    assert value(fams, "vigil_inference_probe_consecutive_failures", **t) == 0
    assert value(fams, "vigil_inference_probe_duration_seconds_count", **t) == 1
    assert value(fams, "vigil_inference_scrape_success", **t) == 1
    assert value(fams, "vigil_inference_requests_total", **mt, outcome="success") == 1900
    assert value(fams, "vigil_inference_requests_total", **mt, outcome="error") == 4
    assert value(fams, "vigil_inference_request_duration_seconds_bucket", **mt, le="1.0") == 1225
    assert value(fams, "vigil_inference_request_duration_seconds_count", **mt) == 1911
    assert (
        value(fams, "vigil_inference_time_to_first_token_seconds_bucket", **mt, le="+Inf") == 1911
    )
    assert value(fams, "vigil_inference_running_requests", **mt) == 5
    assert value(fams, "vigil_inference_queue_requests", **mt) == 1
    assert value(fams, "vigil_inference_kv_cache_usage_ratio", **mt) == pytest.approx(0.57)
    assert value(fams, "vigil_inference_generated_tokens_total", **mt) == 100000
    assert value(fams, "vigil_inference_stalled", **mt) == 0
    assert value(fams, "vigil_inference_targets", source="config") == 1
    assert value(fams, "vigil_inference_models_dropped", **t) == 0
    # Config targets name no process: the process labels are empty but comm, the host.
    assert value(fams, "vigil_inference_up", pod="", namespace="", pid="", comm="127.0.0.1") == 1


@pytest.mark.parametrize(
    ("kind", "health", "has"),
    [
        ("sglang", "/health", "vigil_inference_kv_cache_usage_ratio"),
        ("tgi", "/health", "vigil_inference_queue_requests"),
        ("triton", "/v2/health/ready", "vigil_inference_request_duration_seconds_sum"),
        ("oip_kserve", "/v2/health/ready", "vigil_inference_request_duration_seconds_bucket"),
        ("oip_mlserver", "/v2/health/ready", "vigil_inference_requests_total"),
        ("torchserve", "/ping", "vigil_inference_requests_total"),
    ],
)
def test_every_kind_is_told_from_its_metrics_and_probed_on_its_health_path(
    servers: Callable[[dict[str, Route]], Server], kind: str, health: str, has: str
) -> None:
    srv = servers({health: reply(200, "{}"), "/metrics": reply(200, fixture(kind))})
    # No kind given: the exposition tells it, then the kind's health path is probed.
    c = collector([f"http://127.0.0.1:{srv.port}"])
    scrape(c)
    fams = scrape(c)
    want = kind.split("_")[0]
    assert value(fams, "vigil_inference_up", kind=want) == 1
    assert srv.hits.get(health, 0) == 1
    assert has in names(fams)


def test_sum_and_count_only_latency_is_a_histogram_with_only_the_inf_bucket(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/v2/health/ready": reply(200, ""), "/metrics": reply(200, fixture("triton"))})
    fams = scrape(collector([f"http://127.0.0.1:{srv.port} kind=triton"]))
    buckets = [
        s
        for f in fams
        for s in f.samples
        if s.name == "vigil_inference_request_duration_seconds_bucket"
        and s.labels["model"] == "resnet50"
    ]
    assert [(s.labels["le"], s.value) for s in buckets] == [("+Inf", 1000.0)]
    assert value(
        fams, "vigil_inference_request_duration_seconds_sum", model="resnet50"
    ) == pytest.approx(14.0)


def small_vllm(running: float, success: float, tokens: float) -> str:
    return (
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="m"}} {running}\n'
        "# TYPE vllm:request_success counter\n"
        f'vllm:request_success_total{{model_name="m",finished_reason="stop"}} {success}\n'
        "# TYPE vllm:generation_tokens counter\n"
        f'vllm:generation_tokens_total{{model_name="m"}} {tokens}\n'
    )


def test_a_server_restart_never_makes_vigil_counters_go_down(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/health": reply(200, ""), "/metrics": reply(200, small_vllm(1, 100, 5000))})
    c = collector([f"http://127.0.0.1:{srv.port} kind=vllm"])
    fams = scrape(c)
    assert value(fams, "vigil_inference_requests_total", outcome="success") == 100
    srv.routes["/metrics"] = reply(200, small_vllm(1, 130, 6000))
    fams = scrape(c)
    assert value(fams, "vigil_inference_requests_total", outcome="success") == 130
    # Restarted: the server's counters start again from 0 and it did 7 requests since.
    srv.routes["/metrics"] = reply(200, small_vllm(1, 7, 300))
    fams = scrape(c)
    assert value(fams, "vigil_inference_requests_total", outcome="success") == 137
    assert value(fams, "vigil_inference_generated_tokens_total") == 6300


def test_running_requests_without_progress_are_a_stall_whatever_health_says(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/health": reply(200, ""), "/metrics": reply(200, small_vllm(3, 50, 900))})
    clock = Clock()
    c = collector([f"http://127.0.0.1:{srv.port} kind=vllm"], clock=clock, stall_after=60.0)
    assert value(scrape(c), "vigil_inference_stalled", model="m") == 0
    clock.t += 59
    assert value(scrape(c), "vigil_inference_stalled", model="m") == 0
    clock.t += 2
    fams = scrape(c)
    assert value(fams, "vigil_inference_stalled", model="m") == 1
    assert value(fams, "vigil_inference_up") == 1  # /health still says 200
    srv.routes["/metrics"] = reply(200, small_vllm(3, 50, 901))  # one token: progress
    clock.t += 5
    assert value(scrape(c), "vigil_inference_stalled", model="m") == 0


def test_a_server_that_never_answers_times_out_and_counts_in_a_row(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    # Accepted by the kernel, never read: connect succeeds and no byte ever comes back.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        port = mute.getsockname()[1]
        c = collector([f"http://127.0.0.1:{port} kind=vllm"], timeout=0.2, scrape_timeout=0.3)
        for n in (1, 2, 3):
            fams = scrape(c)
            assert value(fams, "vigil_inference_up") == 0
            assert value(fams, "vigil_inference_probe_consecutive_failures") == n
            assert value(fams, "vigil_inference_probe_consecutive_timeouts") == n
            assert value(fams, "vigil_inference_probe_failures_total", reason="timeout") == n
            assert value(fams, "vigil_inference_scrape_errors_total", reason="timeout") == n
        assert value(fams, "vigil_inference_probe_duration_seconds_count") == 3
        # A timed-out probe is recorded at the timeout, so it lands above the 0.1 s bucket.
        assert value(fams, "vigil_inference_probe_duration_seconds_bucket", le="0.1") == 0
        assert value(fams, "vigil_inference_scrape_success") == 0


def test_a_slow_health_path_is_a_timeout_and_a_good_probe_resets_the_run(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/health": hang(1.0), "/metrics": reply(200, small_vllm(0, 1, 1))})
    c = collector([f"http://127.0.0.1:{srv.port} kind=vllm"], timeout=0.2)
    scrape(c)
    fams = scrape(c)
    assert value(fams, "vigil_inference_probe_consecutive_timeouts") == 2
    assert value(fams, "vigil_inference_scrape_success") == 1  # /metrics itself is fine
    srv.routes["/health"] = reply(200, "")
    fams = scrape(c)
    assert value(fams, "vigil_inference_up") == 1
    assert value(fams, "vigil_inference_probe_consecutive_failures") == 0
    assert value(fams, "vigil_inference_probe_failures_total", reason="timeout") == 2


def test_refused_reset_and_http_status_each_have_their_reason(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: connection refused
        hangs_up = servers({"/health": hang_up, "/metrics": hang_up})
        unhealthy = servers({"/health": reply(503, "loading"), "/metrics": reply(500, "")})
        c = collector(
            [
                f"http://127.0.0.1:{closed} kind=vllm",
                f"http://127.0.0.1:{hangs_up.port} kind=vllm",
                f"http://127.0.0.1:{unhealthy.port} kind=vllm",
            ]
        )
        fams = scrape(c)
    for port, reason in (
        (closed, "refused"),
        (hangs_up.port, "reset"),
        (unhealthy.port, "http_status"),
    ):
        t = {"port": str(port)}
        assert value(fams, "vigil_inference_up", **t) == 0
        assert value(fams, "vigil_inference_probe_failures_total", **t, reason=reason) == 1
        assert value(fams, "vigil_inference_scrape_errors_total", **t, reason=reason) == 1
    assert value(fams, "vigil_inference_targets", source="config") == 3


def test_garbage_metrics_are_a_parse_error_and_drop_the_last_good_values(
    servers: Callable[[dict[str, Route]], Server], caplog: pytest.LogCaptureFixture
) -> None:
    srv = servers({"/health": reply(200, ""), "/metrics": reply(200, fixture("vllm"))})
    c = collector([f"http://127.0.0.1:{srv.port} kind=vllm"])
    assert value(scrape(c), "vigil_inference_running_requests") == 5
    srv.routes["/metrics"] = reply(200, b"\x00\xff{{{ not an exposition\nvllm:x{ 1 2 3\n")
    fams = scrape(c)
    scrape(c)
    fams = scrape(c)
    assert value(fams, "vigil_inference_scrape_errors_total", reason="parse") == 3
    assert value(fams, "vigil_inference_scrape_success") == 0
    assert value(fams, "vigil_inference_up") == 1
    # Never a stale number shown as live: every per-model series is gone.
    for name in (
        "vigil_inference_running_requests",
        "vigil_inference_requests_total",
        "vigil_inference_stalled",
    ):
        assert name not in names(fams)
    # One log line for the cause, not one per round.
    lines = [r for r in caplog.records if r.getMessage() == "inference server metrics unreadable"]
    assert len(lines) == 1 and getattr(lines[0], "reason", "") == "parse"
    srv.routes["/metrics"] = reply(200, fixture("vllm"))
    assert value(scrape(c), "vigil_inference_running_requests") == 5


def test_a_100_mb_metrics_body_is_refused_at_the_cap(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    big = 100 * 1024 * 1024
    streamed = servers({"/health": reply(200, ""), "/metrics": endless(big)})
    declared = servers(
        {"/health": reply(200, ""), "/metrics": reply(200, b"#" * (2 * 1024 * 1024))}
    )
    c = collector(
        [
            f"http://127.0.0.1:{streamed.port} kind=vllm",
            f"http://127.0.0.1:{declared.port} kind=vllm",
        ],
        max_body_bytes=1024 * 1024,
        scrape_timeout=30.0,
        interval=60.0,
    )
    fams = scrape(c)
    for port in (streamed.port, declared.port):
        assert (
            value(fams, "vigil_inference_scrape_errors_total", port=str(port), reason="too_large")
            == 1
        )
        assert value(fams, "vigil_inference_up", port=str(port)) == 1


def test_models_over_the_cap_are_dropped_and_counted(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/v2/health/ready": reply(200, ""), "/metrics": reply(200, fixture("triton"))})
    fams = scrape(collector([f"http://127.0.0.1:{srv.port} kind=triton"], max_models=1))
    assert value(fams, "vigil_inference_models_dropped") == 2
    assert (
        len(
            {
                s.labels["model"]
                for f in fams
                for s in f.samples
                if s.name == "vigil_inference_queue_requests"
            }
        )
        == 1
    )


def test_targets_over_the_cap_are_dropped_and_counted(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/health": reply(200, ""), "/metrics": reply(200, small_vllm(0, 1, 1))})
    others = [servers({}) for _ in range(2)]
    c = collector([f"http://127.0.0.1:{s.port} kind=vllm" for s in (srv, *others)], max_targets=1)
    fams = scrape(c)
    assert value(fams, "vigil_inference_targets", source="config") == 1
    assert value(fams, "vigil_inference_targets_dropped", reason="max_targets") == 2
    assert {
        s.labels["port"] for f in fams for s in f.samples if s.name == "vigil_inference_up"
    } == {str(srv.port)}


def test_deep_probes_sglang_generate_and_oip_model_ready(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    sglang = servers(
        {
            "/health": reply(200, ""),
            "/health_generate": reply(503, ""),
            "/metrics": reply(200, fixture("sglang")),
        }
    )
    oip = servers(
        {
            "/v2/health/ready": reply(200, ""),
            "/v2/models/sklearn-iris/ready": reply(200, ""),
            "/metrics": reply(200, fixture("oip_kserve")),
        }
    )
    c = collector(
        [f"http://127.0.0.1:{sglang.port} kind=sglang", f"http://127.0.0.1:{oip.port} kind=oip"],
        deep_probe=True,
    )
    fams = scrape(c)
    assert value(fams, "vigil_inference_deep_probe_up", kind="sglang", model="") == 0
    assert value(fams, "vigil_inference_deep_probe_up", kind="oip", model="sklearn-iris") == 1
    assert value(fams, "vigil_inference_deep_probe_up", kind="oip", model="xgb-income") == 0
    assert value(fams, "vigil_inference_up", kind="sglang") == 1


def test_a_configured_model_names_a_server_that_names_none(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    srv = servers({"/health": reply(200, ""), "/metrics": reply(200, fixture("tgi"))})
    fams = scrape(collector([f"http://127.0.0.1:{srv.port} kind=tgi model=bloom-560m"]))
    assert value(fams, "vigil_inference_queue_requests", model="bloom-560m") == 9


def test_metric_names_reads_families_and_samples() -> None:
    text = '# HELP a_total x\n# TYPE a counter\na_total{x="1"} 1\nb 2\n\n#c\n c'
    assert metric_names(text) == {"a_total", "a", "b"}


def test_split_ports_show_only_what_each_serves(
    servers: Callable[[dict[str, Route]], Server],
) -> None:
    # MLServer, Triton and TorchServe serve /metrics on a port of its own: the API port
    # answers 404 on /metrics and the metrics port 404 on the health path.
    api = servers({"/v2/health/ready": reply(200, "")})
    metrics = servers({"/metrics": reply(200, fixture("oip_mlserver"))})
    c = collector([f"http://127.0.0.1:{p.port} kind=oip" for p in (api, metrics)])
    scrape(c)
    fams = scrape(c)
    assert {
        s.labels["port"]: s.value for f in fams for s in f.samples if s.name == "vigil_inference_up"
    } == {str(api.port): 1.0}
    assert value(fams, "vigil_inference_scrape_success", port=str(metrics.port)) == 1
    assert value(fams, "vigil_inference_scrape_success", port=str(api.port)) is None
    assert value(fams, "vigil_inference_scrape_errors_total", port=str(api.port)) is None
    assert (
        value(
            fams,
            "vigil_inference_requests_total",
            port=str(metrics.port),
            model="iris-sklearn",
            outcome="error",
        )
        == 20
    )
    # A health path that is there but failing is a failure, metrics or not.
    metrics.routes["/v2/health/ready"] = reply(503, "")
    fams = scrape(c)
    assert value(fams, "vigil_inference_up", port=str(metrics.port)) == 0
