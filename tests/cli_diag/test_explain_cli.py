"""`vigil explain`, the real program, against an HTTP server that answers /v1/diagnosis
from the fixture behind the agent's own bearer check: what a person sees, the exit status,
and that no failure shows a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import free_port, run_vigil
from fakeagent import OWN_FIXTURE, TOKEN, FakeAgent, load


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with FakeAgent(load(OWN_FIXTURE)) as a:
        yield a


def explain(
    agent_url: str, *args: str, env: dict[str, str] | None = None, token: bool = True
) -> subprocess.CompletedProcess[str]:
    full = {"VIGIL_INGEST_TOKEN": TOKEN} if token else {}
    # A state directory with no token in it: the lookup must not find a real agent's.
    full |= {"VIGIL_STATE_DIR": "/nonexistent/vigil-state"}
    full |= env or {}
    out = run_vigil(["explain", "--agent", agent_url, *args], env=full)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    return out


def test_every_watched_process_worst_first(agent: FakeAgent) -> None:
    out = explain(agent.url)
    assert out.returncode == 0, out.stderr
    heads = [ln for ln in out.stdout.splitlines() if ln and not ln.startswith(" ")]
    assert heads[0].startswith(f"vigil explain: 4 watched processes at {agent.url}")
    assert [h.split("  ")[0] for h in heads[1:]] == [
        "serving/embedder-0",
        "serving/llama-7b-5f9c",
        "pid 777 (batchjob)",
        "serving/ranker-7d4b",
    ]


def test_one_pod_with_its_numbers_advice_and_functions(agent: FakeAgent) -> None:
    out = explain(agent.url, "llama-7b")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "serving/llama-7b-5f9c  (container server, pid 4242, python3)" in text
    assert "verdict: cpu_starved (warning): waited 38 % of its time for a CPU" in text
    assert "run-queue wait p99      41 ms  10 ms      60 s" in text
    assert "runbook: docs/diagnosis.md#cpu_starved" in text
    assert "forward (model.py:88)" in text
    assert "ranker" not in text


def test_one_process_by_pid(agent: FakeAgent) -> None:
    out = explain(agent.url, "777")
    assert out.returncode == 0
    assert "pid 777 (batchjob)\n  verdict: not enough evidence yet" in out.stdout


def test_json_is_the_agents_answer(agent: FakeAgent) -> None:
    out = explain(agent.url, "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == agent.doc
    one = json.loads(explain(agent.url, "--json", "serving/ranker-7d4b").stdout)
    assert [t["pod"] for t in one["targets"]] == ["ranker-7d4b"]


def test_an_unknown_pod_fails_and_lists_the_known_ones(agent: FakeAgent) -> None:
    out = explain(agent.url, "mistral")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.strip() == (
        "vigil explain: no watched pod 'mistral'; the agent watches: serving/llama-7b-5f9c, "
        "serving/ranker-7d4b, pid 777 (batchjob), serving/embedder-0"
    )


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_target_is_a_usage_error_not_every_pod(agent: FakeAgent, name: str) -> None:
    # `vigil explain "$POD"` with POD unset must not answer about every pod.
    out = explain(agent.url, name)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "argument POD|PID: empty; leave it out to see every pod or process" in out.stderr
    assert agent.requests == 0


def test_without_a_token_it_says_where_it_looked(agent: FakeAgent, tmp_path: Path) -> None:
    out = explain(agent.url, "--state-dir", str(tmp_path), token=False)
    assert out.returncode == 1
    err = out.stderr
    assert f"the agent at {agent.url} refused the token" in err
    assert "bearer token required" in err
    assert f"{tmp_path}/ingest-token" in err and "$VIGIL_INGEST_TOKEN (not set)" in err
    assert "--token-file FILE" in err
    assert err.count("\n") == 1  # one line


def test_a_wrong_token_names_its_source(agent: FakeAgent, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-token\n")
    out = explain(agent.url, "--token-file", str(token), token=False)
    assert out.returncode == 1
    assert "wrong bearer token" in out.stderr and str(token) in out.stderr


def test_the_token_is_found_in_the_state_directory(agent: FakeAgent, tmp_path: Path) -> None:
    (tmp_path / "ingest-token").write_text(TOKEN)
    os.chmod(tmp_path / "ingest-token", stat.S_IRUSR | stat.S_IWUSR)
    out = explain(agent.url, env={"VIGIL_STATE_DIR": str(tmp_path)}, token=False)
    assert out.returncode == 0, out.stderr
    out = explain(agent.url, "--state-dir", str(tmp_path), token=False)
    assert out.returncode == 0, out.stderr


def test_a_missing_token_file_is_a_usage_error(agent: FakeAgent, tmp_path: Path) -> None:
    out = explain(agent.url, "--token-file", str(tmp_path / "none"), token=False)
    assert out.returncode == 2
    assert "--token-file" in out.stderr and "No such file" in out.stderr
    assert agent.requests == 0


def test_an_agent_without_diagnosis_says_so_with_its_version() -> None:
    with FakeAgent(load(OWN_FIXTURE), diagnosis=False, version="0.3.1") as old:
        out = explain(old.url)
    assert out.returncode == 1
    assert "this agent has no diagnosis (version 0.3.1)" in out.stderr


def test_an_agent_that_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = explain(url)
    assert out.returncode == 1
    assert f"cannot reach the agent at {url}" in out.stderr
    assert "is `vigil run` running?" in out.stderr


def test_not_a_vigil_agent(agent: FakeAgent) -> None:
    agent.doc = {"hello": "world"}
    out = explain(agent.url)
    assert out.returncode == 1
    assert "no list of targets; is --agent a Vigil agent?" in out.stderr


def test_a_bad_agent_url_is_a_usage_error() -> None:
    out = explain("ftp://example")
    assert out.returncode == 2
    assert "--agent 'ftp://example' must be an http:// or https:// URL" in out.stderr


def test_top_without_a_terminal_points_to_explain(agent: FakeAgent) -> None:
    out = run_vigil(["top", "--agent", agent.url], env={"VIGIL_INGEST_TOKEN": TOKEN})
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "vigil top: error: vigil top needs a terminal; in scripts use `vigil explain` or "
        "`vigil explain --json`"
    )


@pytest.mark.parametrize("interval", ["0.1", "nan", "soon", "7200"])
def test_top_refuses_an_interval_no_one_would_mean(interval: str) -> None:
    out = run_vigil(["top", "--interval", interval])
    assert out.returncode == 2
    assert "--interval" in out.stderr and "Traceback" not in out.stderr


def test_help_teaches_with_examples() -> None:
    out = run_vigil(["explain", "--help"])
    assert out.returncode == 0
    for line in ("vigil explain llama-7b-5f9c", "vigil explain 4242", "--json", "exit status"):
        assert line in out.stdout
    top = run_vigil(["top", "--help"])
    assert top.returncode == 0
    assert "/         filter" in top.stdout and "--interval" in top.stdout
    listed = run_vigil(["--help"]).stdout
    assert "explain" in listed and "top" in listed
