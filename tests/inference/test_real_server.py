"""A real agent watching a real MLServer (Open Inference Protocol v2, scikit-learn runtime):
found by its listening ports, probed, its own /metrics read and normalised. Faults are
real: the model raises on some inputs, sleeps in its handler, the server is stopped with
SIGSTOP and killed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agentproc import AgentProcess
from prometheus_client.parser import text_string_to_metric_families
from servers import BAD, GOOD, MLServerProcess

pytestmark = [pytest.mark.slow]

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def agent_args(server: MLServerProcess, state: Path) -> list[str]:
    return [
        "--watch",
        server.watch,
        "--state-dir",
        str(state),
        "--discovery.interval",
        "1s",
        "--collector.inference.interval",
        "1s",
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.profile",
    ]


def series(agent: AgentProcess) -> Series:
    out: Series = {}
    for fam in text_string_to_metric_families(agent.metrics()):
        for s in fam.samples:
            if s.name.startswith("vigil_inference_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def pick(got: Series, name: str, **labels: str) -> list[float]:
    return [
        v
        for (n, lbls), v in got.items()
        if n == name and all(dict(lbls).get(k) == w for k, w in labels.items())
    ]


def one(got: Series, name: str, **labels: str) -> float | None:
    """The one value of ``name`` with ``labels``; None while absent."""
    values = pick(got, name, **labels)
    assert len(values) <= 1, f"{name} {labels}: {len(values)} series"
    return values[0] if values else None


def by_label(got: Series, name: str, label: str, **labels: str) -> dict[str, float]:
    """Values of ``name`` with ``labels``, by the value of ``label``."""
    return {
        dict(lbls)[label]: v
        for (n, lbls), v in got.items()
        if n == name and all(dict(lbls).get(k) == w for k, w in labels.items())
    }


def wait_metrics(
    agent: AgentProcess, what: str, cond: Callable[[Series], bool], timeout: float = 30.0
) -> Series:
    deadline = time.monotonic() + timeout
    while True:
        got = series(agent)
        if cond(got):
            return got
        if time.monotonic() > deadline:
            shown = "\n".join(f"{n}{dict(lbls)} {v}" for (n, lbls), v in sorted(got.items()))
            raise AssertionError(f"{what}: not within {timeout}s\n{shown}\n{agent.logs()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[MLServerProcess, AgentProcess]]:
    with MLServerProcess(tmp_path / "server") as server:
        # One request of each outcome before the agent starts: the server's per-model
        # series exist from the agent's first read, so every later request is a change
        # the agent must count.
        assert server.infer(GOOD)[0] == 200
        assert server.infer(BAD)[0] == 500
        with AgentProcess(agent_args(server, tmp_path / "agent")) as agent:
            yield server, agent


def test_found_by_its_ports_and_requests_counted_by_outcome(
    served: tuple[MLServerProcess, AgentProcess],
) -> None:
    server, agent = served
    proc = {"pid": str(server.pid), "comm": "mlserver", "kind": "oip"}
    model = {**proc, "model": "iris"}
    before = wait_metrics(
        agent,
        "the server's HTTP port found and up, its model's counts read",
        lambda g: (
            one(g, "vigil_inference_up", port=str(server.http_port), **proc) == 1
            and one(g, "vigil_inference_requests_total", outcome="error", **model) is not None
        ),
    )
    success0 = one(before, "vigil_inference_requests_total", outcome="success", **model) or 0.0
    error0 = one(before, "vigil_inference_requests_total", outcome="error", **model) or 0.0
    count0 = one(before, "vigil_inference_request_duration_seconds_count", **model) or 0.0
    sum0 = one(before, "vigil_inference_request_duration_seconds_sum", **model) or 0.0

    for i in range(40):
        status, _ = server.infer(BAD if i % 8 == 0 else GOOD)
        assert status == (500 if i % 8 == 0 else 200)
    # A slow model: three requests that each wait 0.4 s in the handler.
    server.set_faults(sleep_seconds=0.4)
    for _ in range(3):
        assert server.infer(GOOD)[0] == 200
    server.set_faults(sleep_seconds=0)

    got = wait_metrics(
        agent,
        "35 + 3 successes and 5 errors counted",
        lambda g: (
            one(g, "vigil_inference_requests_total", outcome="success", **model) == success0 + 38
            and one(g, "vigil_inference_requests_total", outcome="error", **model) == error0 + 5
            and one(g, "vigil_inference_request_duration_seconds_count", **model) == count0 + 43
        ),
    )
    # MLServer exports a sum and a count of request time, no buckets: the histogram has
    # only +Inf, and its sum holds the slow requests' time.
    slow = one(got, "vigil_inference_request_duration_seconds_sum", **model)
    assert slow is not None and slow - sum0 >= 3 * 0.4
    buckets = by_label(got, "vigil_inference_request_duration_seconds_bucket", "le", **model)
    assert set(buckets) == {"+Inf"}
    # The probes of the HTTP port: timed, none failing.
    http = {**proc, "port": str(server.http_port)}
    assert (one(got, "vigil_inference_probe_duration_seconds_count", **http) or 0) >= 1
    assert one(got, "vigil_inference_probe_consecutive_failures", **http) == 0
    assert pick(got, "vigil_inference_probe_failures_total", **http) in ([], [0.0])


def test_a_healthy_server_is_not_reported_down_on_any_port(
    served: tuple[MLServerProcess, AgentProcess],
) -> None:
    server, agent = served
    proc = {"pid": str(server.pid), "kind": "oip"}
    got = wait_metrics(
        agent,
        "the server found",
        lambda g: one(g, "vigil_inference_up", port=str(server.http_port), **proc) == 1,
    )
    time.sleep(3)  # a few more probe intervals
    got = series(agent)
    assert pick(got, "vigil_inference_up", **proc), "no target for the server"
    down = {p: v for p, v in by_label(got, "vigil_inference_up", "port", **proc).items() if v != 1}
    assert down == {}, f"healthy MLServer shown down on ports {down} (HTTP {server.http_port})"


def test_stopped_server_times_out_then_recovers(
    served: tuple[MLServerProcess, AgentProcess],
) -> None:
    server, agent = served
    http = {"pid": str(server.pid), "kind": "oip", "port": str(server.http_port)}
    wait_metrics(agent, "up", lambda g: one(g, "vigil_inference_up", **http) == 1)

    server.pause()  # SIGSTOP: connections are accepted by the kernel, never answered
    try:
        got = wait_metrics(
            agent,
            "three timeouts in a row",
            lambda g: (
                one(g, "vigil_inference_up", **http) == 0
                and (one(g, "vigil_inference_probe_consecutive_failures", **http) or 0) >= 3
            ),
            timeout=60,
        )
        assert (
            one(got, "vigil_inference_probe_failures_total", reason="timeout", **http) or 0
        ) >= 3
        # Still rising while the server stays stopped.
        seen = one(got, "vigil_inference_probe_consecutive_failures", **http) or 0
        wait_metrics(
            agent,
            "the count rising",
            lambda g: (one(g, "vigil_inference_probe_consecutive_failures", **http) or 0) > seen,
        )
    finally:
        server.resume()
    wait_metrics(
        agent,
        "up again after SIGCONT",
        lambda g: (
            one(g, "vigil_inference_up", **http) == 1
            and one(g, "vigil_inference_probe_consecutive_failures", **http) == 0
        ),
    )
    # Requests work again and are counted again.
    assert server.infer(GOOD)[0] == 200


def test_killed_server_is_shown_down(
    served: tuple[MLServerProcess, AgentProcess],
) -> None:
    server, agent = served
    http = {"pid": str(server.pid), "kind": "oip", "port": str(server.http_port)}
    wait_metrics(agent, "up", lambda g: one(g, "vigil_inference_up", **http) == 1)
    server.kill()
    # The port is gone: the target stays a while (so that alerts and a slow scrape see it
    # down, not vanished), its probes refused; the agent keeps serving.
    wait_metrics(
        agent,
        "the killed server shown down, probes refused",
        lambda g: (
            one(g, "vigil_inference_up", **http) == 0
            and (one(g, "vigil_inference_probe_failures_total", reason="refused", **http) or 0) >= 1
            and (one(g, "vigil_inference_probe_consecutive_failures", **http) or 0) >= 1
        ),
    )
    assert agent.proc is not None and agent.proc.poll() is None
