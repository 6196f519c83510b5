"""End to end: a real `vigil run`, samples over HTTP, decisions on /metrics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agentproc import AgentProcess, run_vigil
from prometheus_client.parser import text_string_to_metric_families

from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.store import ReferenceStore
from agent.drift.client import DriftClient

pytestmark = pytest.mark.slow

FEATURES = ("age", "income", "score")
QUICK = ["--no-collector.sched", "--no-collector.profile", "--no-collector.gpu"]
INTERVAL = 1.0


def post(
    agent: AgentProcess,
    path: str,
    body: Any,
    ctype: str = "application/json",
    token: str | None = None,
    auth: bool = True,
) -> tuple[int, dict[str, Any]]:
    """POSTs with the agent's own token unless ``token`` is given or ``auth`` is False."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": ctype}
    if token is None and auth:
        token = agent.token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(agent.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rows(x: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, r), strict=True)) for r in x]


def sample_value(agent: AgentProcess, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(agent.metrics()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def wait_for(pred: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("state")
    rng = np.random.default_rng(0)
    ReferenceStore(d).save(
        "ranker", "v1", ReferenceSample(rng.normal(size=(3000, 3)), FEATURES), "test"
    )
    return d


@pytest.fixture(scope="module")
def agent(state: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tail = tmp_path_factory.mktemp("tail") / "requests.jsonl"
    tail.write_text("")
    args = [
        *QUICK,
        "--state-dir",
        str(state),
        "--collector.drift.check-interval",
        f"{INTERVAL}s",
        "--collector.drift.window",
        "600",
        "--collector.drift.tail-file",
        str(tail),
    ]
    with AgentProcess(args) as a:
        a.tail = tail  # type: ignore[attr-defined]
        yield a
        assert a.proc is not None and a.proc.poll() is None, a.logs()


def test_shifted_data_flips_detected_within_one_interval_unshifted_keeps_0(
    agent: AgentProcess,
) -> None:
    # Fixed seed: at alpha 0.05 up to one unshifted window in twenty is flagged by design
    # (the rate is measured in test_drift_ks.py); this seed is one of the others.
    rng = np.random.default_rng(3)
    status, body = post(
        agent,
        "/v1/drift/ranker/samples",
        {"version": "v1", "rows": rows(rng.normal(size=(600, 3)))},
    )
    assert (status, body["accepted"]) == (200, 600)
    time.sleep(2.5 * INTERVAL)  # a couple of checks over unshifted data
    assert sample_value(agent, "vigil_drift_detected", model="ranker", version="v1") == 0.0
    assert sample_value(agent, "vigil_drift_window_samples", model="ranker", version="v1") == 600
    # Shift one feature; columns form this time. The window (600) fills with shifted data.
    shifted = rng.normal(size=(600, 3)) + np.array([0.0, 0.6, 0.0])
    cols = {f: shifted[:, i].tolist() for i, f in enumerate(FEATURES)}
    status, _ = post(agent, "/v1/drift/ranker/samples", {"version": "v1", "columns": cols})
    assert status == 200
    took = wait_for(
        lambda: sample_value(agent, "vigil_drift_detected", model="ranker", version="v1") == 1.0,
        3 * INTERVAL,
    )
    assert took <= INTERVAL + 0.5, took  # within one check interval (plus scrape slack)
    d = sample_value(
        agent, "vigil_drift_ks_statistic", model="ranker", version="v1", feature="income"
    )
    assert d is not None and d > 0.2
    assert (
        sample_value(
            agent, "vigil_drift_feature_drifted", model="ranker", version="v1", feature="age"
        )
        == 0.0
    )


def test_bad_input_gets_a_4xx_that_says_why_and_is_counted(
    agent: AgentProcess, state: Path
) -> None:
    ref_file = state / "drift" / "references" / "ranker" / "v1.ref"
    before = ref_file.read_bytes()
    cases = [
        (
            "/v1/drift/nosuch/samples",
            {"rows": [{"age": 1}]},
            404,
            "no reference for model 'nosuch'",
        ),
        ("/v1/drift/ranker/samples", b'{"rows": [', 400, "not valid JSON"),
        (
            "/v1/drift/ranker/samples",
            {"version": "v9", "rows": []},
            404,
            "no reference for version 'v9'",
        ),
        ("/v1/drift/ranker/samples", b"x" * (9 * 1024 * 1024), 413, "over the 8 MiB limit"),
    ]
    for path, body, code, message in cases:
        status, doc = post(agent, path, body)
        assert status == code and message in doc["error"], (status, doc)
    status, doc = post(
        agent,
        "/v1/drift/ranker/samples",
        {
            "rows": [
                {"age": 1, "income": 2, "score": 3},
                {"age": "x", "income": 2, "score": 3},
                {"age": 1, "income": 2},
                {"age": 1, "income": 2, "score": 3, "zip": 9},
                {"age": 1e999, "income": 1, "score": 1},
            ]
        },
    )
    assert status == 422 and doc["accepted"] == 1
    assert doc["rejected"] == {
        "non_numeric": 1,
        "missing_feature": 1,
        "unknown_feature": 1,
        "non_finite": 1,
    }
    status, doc = post(
        agent,
        "/v1/drift/ranker/samples",
        b'{"age":1,"income":2,"score":3}\nnope\n',
        "application/x-ndjson",
    )
    assert status == 422 and doc["accepted"] == 1 and doc["rejected"] == {"malformed": 1}

    def rejected(model: str, reason: str) -> float | None:
        return sample_value(agent, "vigil_drift_rejected_samples_total", model=model, reason=reason)

    assert rejected("(unknown)", "unknown_model") == 1
    assert rejected("ranker", "too_large") == 1
    assert rejected("ranker", "non_numeric") == 1
    assert rejected("ranker", "malformed") == 2  # the bad JSON body and the bad NDJSON line
    assert ref_file.read_bytes() == before
    assert agent.get("/healthz")[0] == 200


def test_reference_set_while_running_is_picked_up_and_corrupt_one_refused(
    agent: AgentProcess, state: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "ref.csv"
    np.savetxt(
        csv,
        np.random.default_rng(5).normal(size=(500, 2)),
        delimiter=",",
        header="x,y",
        comments="",
    )
    r = run_vigil(
        [
            "drift",
            "reference",
            "set",
            "--model",
            "fresh",
            "--version",
            "v1",
            str(csv),
            "--state-dir",
            str(state),
        ]
    )
    assert r.returncode == 0, r.stderr
    wait_for(
        lambda: post(agent, "/v1/drift/fresh/samples", {"rows": [{"x": 1.0, "y": 2.0}]})[0] == 200,
        3 * INTERVAL,
    )
    bad = state / "drift" / "references" / "broken" / "v1.ref"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'VIGIL-DRIFT-REFERENCE 1\n{"half": ')
    time.sleep(1.5 * INTERVAL)
    status, body = agent.get("/v1/drift", auth=True)
    doc = json.loads(body)
    assert status == 200 and str(bad) in doc["load_errors"]
    assert "broken" not in {r["model"] for r in doc["references"]}
    status, _ = post(agent, "/v1/drift/broken/samples", {"rows": [{"x": 1.0}]})
    assert status == 404


def test_bootstrap_captures_the_first_n_samples(agent: AgentProcess, state: Path) -> None:
    r = run_vigil(
        [
            "drift",
            "reference",
            "set",
            "--model",
            "boot",
            "--version",
            "v3",
            "--bootstrap",
            "200",
            "--state-dir",
            str(state),
        ]
    )
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(9).normal(size=(250, 2))
    body = {"version": "v3", "rows": [{"p": float(a), "q": float(b)} for a, b in x]}
    wait_for(lambda: post(agent, "/v1/drift/boot/samples", body)[0] == 200, 3 * INTERVAL)
    info, ref = ReferenceStore(state).load("boot", "v3")
    assert info.rows == 200 and info.features == ("p", "q") and "bootstrap" in info.source
    np.testing.assert_array_equal(ref.sorted_values[0], np.sort(x[:200, 0]))
    assert sample_value(agent, "vigil_drift_window_samples", model="boot", version="v3") == 50


def test_cli_check_asks_the_running_agent(agent: AgentProcess) -> None:
    # No token on the command line: the CLI reads the one the agent generated.
    state = ["--state-dir", str(agent.token_path().parent)]
    r = run_vigil(["drift", "check", "--model", "ranker", "--agent", agent.url, *state])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "income" in r.stdout and "drift detected" in r.stdout
    r = run_vigil(["drift", "check", "--model", "nosuch", "--agent", agent.url, *state])
    assert r.returncode == 1 and "no reference for model 'nosuch'" in r.stderr


def test_client_and_tail_file_feed_the_window(agent: AgentProcess) -> None:
    before = sample_value(agent, "vigil_drift_samples_total", model="ranker", version="v1") or 0.0
    client = DriftClient(
        agent.url, "ranker", "v1", token=agent.token(), batch_size=100, flush_interval=0.2
    )
    rng = np.random.default_rng(4)
    for row in rows(rng.normal(size=(300, 3))):
        assert client.record(row)
    client.close()
    assert client.stats()["sent"] == 300, client.stats()
    tail: Path = agent.tail  # type: ignore[attr-defined]
    with tail.open("a") as fh:
        for row in rows(rng.normal(size=(20, 3))):
            fh.write(json.dumps({"model": "ranker", "version": "v1", "features": row}) + "\n")
        fh.write("not json\n")
    wait_for(
        lambda: (
            sample_value(agent, "vigil_drift_samples_total", model="ranker", version="v1")
            == before + 320
        ),
        5,
    )


def test_client_counts_drops_and_reports_them(agent: AgentProcess) -> None:
    client = DriftClient(
        agent.url,
        "ranker",
        "v1",
        token_file=str(agent.token_path()),
        batch_size=10,
        flush_interval=5.0,
        max_queue=5,
    )
    kept = sum(client.record({"age": 1.0, "income": 1.0, "score": 1.0}) for _ in range(50))
    assert kept < 50 and client.stats()["dropped_queue_full"] == 50 - kept
    client.record({"age": 1.0, "income": 1.0, "score": 1.0})
    client.close()
    wait_for(
        lambda: (
            (
                sample_value(
                    agent,
                    "vigil_drift_rejected_samples_total",
                    model="ranker",
                    reason="client_dropped",
                )
                or 0
            )
            >= 50 - kept
        ),
        5,
    )


def test_given_token_file_is_required_and_reread_on_rotation(state: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)  # a token others can read is refused
    a = AgentProcess([*QUICK, "--state-dir", str(state), "--ingest-token-file", str(token)])
    body = {"version": "v1", "rows": [{"age": 1.0, "income": 2.0, "score": 3.0}]}
    with a:
        assert post(a, "/v1/drift/ranker/samples", body, auth=False)[0] == 401
        status, doc = post(a, "/v1/drift/ranker/samples", body, token="wrong")
        assert status == 401 and "wrong bearer token" in doc["error"]
        assert post(a, "/v1/drift/ranker/samples", body, token="s3cret")[0] == 200
        assert (
            sample_value(
                a,
                "vigil_http_requests_refused_total",
                route="/v1/drift/{model}/samples",
                reason="unauthorized",
            )
            == 2
        )
        rotated = tmp_path / "token.new"
        rotated.write_text("n3w-s3cret\n")
        rotated.chmod(0o600)
        rotated.replace(token)
        assert post(a, "/v1/drift/ranker/samples", body, token="s3cret")[0] == 401
        assert post(a, "/v1/drift/ranker/samples", body, token="n3w-s3cret")[0] == 200
