"""`vigil top`, the real program in a real terminal (tmux, 80 x 24 as over a plain SSH
session): rows, sort and filter keys, quitting, and an agent that is down then comes up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import free_port
from fakeagent import OWN_FIXTURE, TOKEN, FakeAgent, load
from tmuxscreen import header, rows, top

pytestmark = pytest.mark.slow

ORDER_BY_CAUSE = [
    "serving/embedder-0",
    "serving/llama-7b-5f9c",
    "pid 777 (batchjob)",
    "serving/ranker-7d4b",
]


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with FakeAgent(load(OWN_FIXTURE)) as a:
        yield a


def test_rows_sort_filter_and_quit_in_80_columns(agent: FakeAgent, tmp_path: Path) -> None:
    with top(agent.url, tmp_path) as screen:
        shown = screen.wait_for("every watched process", lambda s: len(rows(s)) == 4)
        assert rows(shown) == ORDER_BY_CAUSE  # worst first
        assert all(len(ln) <= 80 for ln in shown.splitlines())
        cols = header(shown).split()
        assert cols[:3] == ["POD", "CAUSE", "^"] and {"GPU", "WAIT", "GIL"} <= set(cols)
        assert "4 watched  sort CAUSE" in shown
        line = next(ln for ln in shown.splitlines() if "llama" in ln)
        assert line.split()[1:8] == ["cpu_starved", "+1", "29%", "52%", "41ms", "38%", "12%"]

        screen.keys("s")  # next column: GPU busy, largest first; unknown last
        by_gpu = screen.wait_for("the GPU sort", lambda s: "sort GPU" in s)
        assert rows(by_gpu) == [
            "serving/ranker-7d4b",
            "serving/embedder-0",
            "serving/llama-7b-5f9c",
            "pid 777 (batchjob)",
        ]
        assert "GPU v" in header(by_gpu)
        screen.keys("r")
        back = screen.wait_for("the reversed sort", lambda s: "GPU ^" in header(s))
        reversed_gpu = ["serving/llama-7b-5f9c", "serving/embedder-0", "serving/ranker-7d4b"]
        assert rows(back)[:3] == reversed_gpu

        screen.keys("/")
        screen.wait_for("the filter box", lambda s: "filter: part of a pod" in s)
        screen.type("llama")
        # The filter applies as it is typed ("ll" already leaves one row): wait for all of it.
        one = screen.wait_for(
            "the filtered rows",
            lambda s: "filter 'llama'" in s and rows(s) == ["serving/llama-7b-5f9c"],
        )
        assert "1 of 4 watched" in one
        screen.keys("Enter")
        # Back on the table: the filter stays, and keys are keys again.
        screen.keys("Escape")
        screen.wait_for("all rows again", lambda s: len(rows(s)) == 4)

        screen.keys("q")
        assert screen.exit_status() == 0


def test_enter_opens_the_whole_report_of_a_row(agent: FakeAgent, tmp_path: Path) -> None:
    with top(agent.url, tmp_path) as screen:
        screen.wait_for("the rows", lambda s: rows(s) == ORDER_BY_CAUSE)
        screen.keys("Down")  # the second row: llama
        screen.keys("Enter")
        report = screen.wait_for("the report", lambda s: "what to do:" in s)
        assert "serving/llama-7b-5f9c  (container server, pid 4242, python3)" in report
        assert "verdict: cpu_starved (warning)" in report
        assert "sort" not in report.splitlines()[-1]  # the list's keys are not offered
        # Refreshes go on underneath and leave the report where it is.
        asked = agent.requests
        screen.wait_for("two refreshes", lambda s: agent.requests >= asked + 2)
        assert "what to do:" in screen.text()
        screen.keys("End")  # the rest of the report, below the fold
        end = screen.wait_for("its end", lambda s: "latency p95" in s)
        assert "tokenize [native] (serve.py:31)" in end  # text, never markup
        screen.keys("Escape")
        back = screen.wait_for("the list again", lambda s: rows(s) == ORDER_BY_CAUSE)
        assert "what to do:" not in back
        screen.keys("q")
        assert screen.exit_status() == 0


def test_a_narrow_screen_and_a_plain_term(agent: FakeAgent, tmp_path: Path) -> None:
    with top(agent.url, tmp_path, term="screen", width=60) as screen:
        shown = screen.wait_for("the rows", lambda s: len(rows(s)) == 4)
        assert all(len(ln) <= 60 for ln in shown.splitlines())
        assert header(shown).split()[:2] == ["POD", "CAUSE"]
        screen.keys("q")
        assert screen.exit_status() == 0


def test_an_agent_that_is_down_is_shown_and_asked_again(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with top(url, tmp_path) as screen:
        screen.wait_for("that the agent is down", lambda s: "cannot reach the agent" in s)
        with FakeAgent(load(OWN_FIXTURE), port=port):
            up = screen.wait_for("the rows once it is up", lambda s: len(rows(s)) == 4)
            assert "cannot reach" not in up
            screen.keys("q")
            assert screen.exit_status() == 0


def test_a_refused_token_is_shown_with_where_to_find_one(agent: FakeAgent, tmp_path: Path) -> None:
    with top(agent.url, tmp_path, token=None, width=100) as screen:
        shown = screen.wait_for("the refusal", lambda s: "refused the token" in s)
        assert "retrying every 1 s" in shown or "ingest-token" in shown
        screen.keys("q")
        assert screen.exit_status() == 0


def test_a_rotated_token_file_is_read_again(agent: FakeAgent, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("an-old-token\n")
    args = ("--token-file", str(token))
    with top(agent.url, tmp_path, token=None, width=100, args=args) as screen:
        screen.wait_for("the refusal", lambda s: "wrong bearer token" in s)
        token.write_text(TOKEN + "\n")  # as the agent's operator rotates it
        screen.wait_for("the rows with the new token", lambda s: len(rows(s)) == 4)
        screen.keys("q")
        assert screen.exit_status() == 0
