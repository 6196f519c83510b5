"""Collapsed-stack parsing and window summaries (pure)."""

from __future__ import annotations

from collections import Counter

import pytest

from agent.collectors.profile.stacks import (
    format_collapsed,
    function_key,
    merge_threads,
    parse_collapsed,
    per_thread_totals,
    split_frame,
    summarize_window,
    top_functions,
    trunk,
)

RAW = """\
<module> (w.py:1);hot (w.py:2) 70
<module> (w.py:1);warm (w.py:7) 30
"""


def test_parse_collapsed() -> None:
    p = parse_collapsed(RAW)
    assert p.stacks == {
        ("<module> (w.py:1)", "hot (w.py:2)"): 70,
        ("<module> (w.py:1)", "warm (w.py:7)"): 30,
    }
    assert p.total == 100 and p.bad_lines == 0


def test_parse_sums_repeated_stacks_and_skips_blank_lines() -> None:
    assert parse_collapsed("a;b 1\n\n  \na;b 2\n").stacks == {("a", "b"): 3}


@pytest.mark.parametrize("line", ["a;b", "a;b x", "a;b -3", " 5", ";;; 4", "a;b 1.5"])
def test_malformed_lines_are_counted_not_fatal(line: str) -> None:
    p = parse_collapsed(f"{line}\nok 2\n")
    assert p.stacks == {("ok",): 2}
    assert p.bad_lines == 1


def test_frames_may_contain_spaces() -> None:
    p = parse_collapsed("thread (12): Thread-1 (worker);run (my app/x.py:3) 4\n")
    assert p.stacks == {("thread (12): Thread-1 (worker)", "run (my app/x.py:3)"): 4}


def test_format_round_trips_heaviest_first() -> None:
    stacks = parse_collapsed(RAW).stacks
    text = format_collapsed(stacks)
    assert text.splitlines()[0].endswith(" 70")
    assert parse_collapsed(text).stacks == stacks
    assert format_collapsed({("a",): 0}) == ""


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("hot (w.py:2)", ("hot", "w.py", 2)),
        (
            "Model.forward (torch/nn/modules/module.py:1501)",
            ("Model.forward", "torch/nn/modules/module.py", 1501),
        ),
        ("hot (w.py)", ("hot", "w.py", None)),
        ("<lambda> (a (b).py:3)", ("<lambda> (a (b).py:3)", "", None)),
        ("native_frame", ("native_frame", "", None)),
    ],
)
def test_split_frame(frame: str, expected: tuple[str, str, int | None]) -> None:
    assert split_frame(frame) == expected


def test_function_key_drops_the_line() -> None:
    assert function_key("hot (w.py:2)") == "hot (w.py)"
    assert function_key("bare") == "bare"


def test_per_thread_totals() -> None:
    stacks = {
        ("thread (10): MainThread", "a"): 5,
        ("thread (10): MainThread", "b"): 4,
        ("thread (0x7f3a): worker", "c"): 9,
        ("no thread root",): 1,
    }
    assert per_thread_totals(stacks) == {"10": 9, "0x7f3a": 9, "": 1}


def test_top_functions_self_and_total() -> None:
    stacks = {("main", "f", "g"): 6, ("main", "f"): 3, ("main", "h"): 1}
    got = {(s.function, s.kind): s.ratio for s in top_functions(stacks, 10)}
    assert got == {
        ("g", "self"): 0.6,
        ("f", "self"): 0.3,
        ("h", "self"): 0.1,
        ("f", "total"): 0.9,
        ("g", "total"): 0.6,
        ("h", "total"): 0.1,
    }


# A thread-per-request server: every worker starts in the threading bootstrap and the
# server's dispatch; the handler is where the time goes.
BOOT = (
    "_bootstrap (threading.py)",
    "_bootstrap_inner (threading.py)",
    "run (threading.py)",
    "process_request_thread (socketserver.py)",
    "finish_request (socketserver.py)",
    "handle_one_request (http/server.py)",
)


def test_total_leaves_out_frames_on_every_stack() -> None:
    stacks = {
        (*BOOT, "do_POST (app.py)", "predict (app.py)", "dot (model.py)"): 7,
        (*BOOT, "do_GET (app.py)", "parse (app.py)"): 3,
        ("<module> (serve.py)", "serve_forever (socketserver.py)", "select (selectors.py)"): 5,
    }
    total = {s.function: s.ratio for s in top_functions(stacks, 3) if s.kind == "total"}
    # Without the trunk rule the top 3 would be the bootstrap frames at 10/15 each.
    assert total == {
        "do_POST (app.py)": 7 / 15,
        "dot (model.py)": 7 / 15,
        "predict (app.py)": 7 / 15,
    }


def test_trunk() -> None:
    assert trunk({("m", "loop", "a"): 1, ("m", "loop", "b"): 1}) == ("m", "loop")
    assert trunk({("m", "a"): 1, ("m", "a", "b"): 1}) == ("m",)  # "a" is a leaf half the time
    assert trunk({("m", "a"): 1}) == ("m",)
    assert trunk({("x",): 1, ("y",): 1}) == ()
    assert trunk({}) == ()
    # Nearly every: one sample in 100 with <module> as its leaf does not end the trunk.
    assert trunk({("<module>", "loop", "hot"): 99, ("<module>",): 1}) == ("<module>", "loop")
    assert trunk({("<module>", "loop", "hot"): 90, ("<module>",): 10}) == ()


def test_merge_threads_joins_threads_running_the_same_code() -> None:
    wall = {
        ("thread (0x1): Thread-1", "wait (threading.py)"): 9,
        ("thread (0x2): Thread-2", "wait (threading.py)"): 9,
        ("thread (0x3): MainThread", "<module> (serve.py)"): 9,
        ("no thread root",): 1,
    }
    assert merge_threads(wall) == {
        ("wait (threading.py)",): 18,
        ("<module> (serve.py)",): 9,
        ("no thread root",): 1,
    }


def test_top_functions_counts_recursion_once() -> None:
    got = top_functions({("fib (f.py:1)", "fib (f.py:1)", "fib (f.py:1)"): 10}, 5)
    assert [(s.function, s.kind, s.ratio) for s in got] == [
        ("fib (f.py)", "self", 1.0),
        ("fib (f.py)", "total", 1.0),
    ]


def test_top_functions_bounds_cardinality_with_stable_ties() -> None:
    stacks = {(f"f{i}",): 1 for i in range(50)}
    got = top_functions(stacks, 3)
    assert [s.function for s in got if s.kind == "self"] == ["f0", "f1", "f10"]
    assert len(got) == 6


def test_top_functions_of_nothing() -> None:
    assert top_functions({}, 10) == []
    assert top_functions({("a",): 3}, 0) == []


def test_summarize_window() -> None:
    cpu = RAW
    wall = (
        "thread (1): MainThread;<module> (w.py:1);hot (w.py:2) 69\n"
        "thread (1): MainThread;<module> (w.py:1);warm (w.py:7) 29\n"
        "thread (2): sleeper;sleep (w.py:12) 98\n"
    )
    gil = "<module> (w.py:1);hot (w.py:2) 90\n"
    s = summarize_window(cpu, wall, gil, nominal_ticks=100, top_k=1)
    assert (s.active, s.idle, s.ticks, s.gil_samples) == (100, 96, 98, 90)
    assert s.gil_ratio == pytest.approx(90 / 98)
    assert [(f.function, f.kind) for f in s.functions] == [
        ("hot (w.py)", "self"),
        ("hot (w.py)", "total"),  # <module> is on every stack: left out of total
    ]
    assert isinstance(s.cpu, Counter) and s.cpu[("<module> (w.py:1)", "hot (w.py:2)")] == 70


def test_summarize_clamps_noise_and_falls_back_to_nominal_ticks() -> None:
    # The active recording caught one more sample than the all-threads one: idle is 0, not -1.
    s = summarize_window("a 11\n", "thread (1): x;a 10\n", "a 12\n", 10, 5)
    assert s.idle == 0 and s.gil_ratio == 1.0
    empty = summarize_window("", "", "", nominal_ticks=190, top_k=5)
    assert (empty.active, empty.idle, empty.ticks, empty.gil_ratio) == (0, 0, 190, 0.0)
    assert empty.functions == []
    assert summarize_window("junk\n", "", "", 1, 1).bad_lines == 1
