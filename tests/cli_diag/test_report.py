"""The pure parts of `vigil explain` and `vigil top`: values, target choice, the report's
order and content, the rows, the columns that fit a terminal, sort and filter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from agentproc import ROOT
from fakeagent import ENGINE_FIXTURE, OWN_FIXTURE, load

from agent.explain.client import (
    DiagnosisError,
    build_version,
    default_agent_url,
    error_text,
    parse_answer,
)
from agent.explain.report import (
    SIGNAL_LABELS,
    fmt_age,
    fmt_value,
    group_missing,
    render_report,
    render_target,
    select_targets,
    severity_key,
    target_name,
)
from agent.explain.top import COLUMNS, fit_columns, flex_widths, matches, row_cells, sort_rows

FIXTURES = [p for p in (ENGINE_FIXTURE, OWN_FIXTURE) if p.exists()]


def own() -> dict[str, Any]:
    return load(OWN_FIXTURE)


def cells(text: str) -> list[list[str]]:
    """Each line of a report as its table cells (columns are two or more spaces apart)."""
    return [re.split(r"\s{2,}", ln.strip()) for ln in text.splitlines()]


def by_pod(doc: dict[str, Any], pod: str) -> dict[str, Any]:
    return next(t for t in doc["targets"] if t.get("pod") == pod)


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.38, "ratio", "38 %"),
        (0.05, "ratio", "5.0 %"),
        (0.001, "ratio", "0.10 %"),
        (0, "ratio", "0 %"),
        (1.0, "ratio", "100 %"),
        (0.041, "seconds", "41 ms"),
        (0.000512, "seconds", "512 us"),
        (2.7, "seconds", "2.70 s"),
        (14.2, "per_second", "14.2/s"),
        (True, "bool", "yes"),
        (False, None, "no"),
        (None, "ratio", "-"),
        (12.0, "requests", "12 requests"),
        (3, None, "3"),
        ("degraded", "state", "degraded"),
        (float("nan"), "ratio", "nan"),
    ],
)
def test_values_read_as_a_person_says_them(value: Any, unit: str | None, text: str) -> None:
    assert fmt_value(value, unit) == text


def test_ages() -> None:
    assert fmt_age(5) == "5 s ago"
    assert fmt_age(-3) == "0 s ago"  # a clock a little ahead of ours
    assert fmt_age(600) == "10 min ago"
    assert fmt_age(3 * 3600) == "3 h ago"
    assert fmt_age(10 * 86400) == "10 days ago"


def test_default_agent_is_the_local_one_vigil_run_would_listen_on() -> None:
    assert default_agent_url({}) == "http://127.0.0.1:9475"
    assert default_agent_url({"VIGIL_LISTEN": "0.0.0.0:9500"}) == "http://127.0.0.1:9500"
    assert default_agent_url({"VIGIL_LISTEN": "[::]:9500"}) == "http://127.0.0.1:9500"
    assert default_agent_url({"VIGIL_LISTEN": "[::1]:9500"}) == "http://[::1]:9500"
    assert default_agent_url({"VIGIL_LISTEN": "10.0.0.7:9475"}) == "http://10.0.0.7:9475"


def test_target_names() -> None:
    assert target_name({"namespace": "serving", "pod": "a"}) == "serving/a"
    assert target_name({"pod": "a"}) == "a"
    # The engine says "" (and may say null) for a process outside any pod, with its pid
    # either in pid or only in pids.
    assert target_name({"pod": "", "namespace": "", "pid": 5120, "comm": "python3"}) == (
        "pid 5120 (python3)"
    )
    assert target_name({"pod": None, "pid": None, "pids": [77]}) == "pid 77"


def test_choosing_a_target_by_name_prefix_namespace_or_pid() -> None:
    targets = own()["targets"]
    assert [t["pod"] for t in select_targets(targets, "llama-7b-5f9c")] == ["llama-7b-5f9c"]
    assert [t["pod"] for t in select_targets(targets, "serving/ranker-7d4b")] == ["ranker-7d4b"]
    assert [t["pod"] for t in select_targets(targets, "llama")] == ["llama-7b-5f9c"]
    assert [t["pod"] for t in select_targets(targets, "5152")] == ["ranker-7d4b"]  # any pid
    assert [t["comm"] for t in select_targets(targets, "777")] == ["batchjob"]
    assert select_targets(targets, None) == targets


def test_an_unknown_target_names_the_known_ones() -> None:
    targets = own()["targets"]
    with pytest.raises(DiagnosisError) as err:
        select_targets(targets, "nope")
    assert "no watched pod 'nope'" in str(err.value)
    assert "serving/llama-7b-5f9c" in str(err.value) and "pid 777 (batchjob)" in str(err.value)
    with pytest.raises(DiagnosisError, match="no watched process '99999'"):
        select_targets(targets, "99999")
    with pytest.raises(DiagnosisError, match="no watched pod '²'"):  # a digit int() refuses
        select_targets(targets, "²")
    with pytest.raises(DiagnosisError, match="watches: none"):
        select_targets([], "x")


def test_an_ambiguous_prefix_is_refused_not_guessed() -> None:
    targets = [{"namespace": "a", "pod": "web-1"}, {"namespace": "a", "pod": "web-2"}]
    with pytest.raises(DiagnosisError, match="start of several pods: a/web-1, a/web-2"):
        select_targets(targets, "web")


def test_the_report_puts_the_verdict_first_then_evidence_advice_functions_signals() -> None:
    t = by_pod(own(), "llama-7b-5f9c")
    text = "\n".join(render_target(t, 60.0, width=200))
    lines = text.splitlines()
    assert lines[0] == "serving/llama-7b-5f9c  (container server, pid 4242, python3)"
    assert lines[1].startswith("  verdict: cpu_starved (warning): waited 38 % of its time")
    order = ["verdict:", "evidence:", "what to do:", "hottest Python functions:", "signals"]
    assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)
    # Evidence with its numbers, threshold and window, in the signal's unit.
    assert "    cause        signal                  value  threshold  window" in lines
    row = "cpu_starved time waiting for a CPU 38 % 20 % 60 s"
    assert any(ln.split() == row.split() for ln in lines), text
    assert "                 run-queue wait p99      41 ms  10 ms      60 s" in lines
    assert "runbook: docs/diagnosis.md#cpu_starved" in text
    assert "41 %  77 %   forward (model.py:88)" in text
    assert ["latency p95", "840 ms"] in cells(text)


def test_the_heading_names_the_models_served() -> None:
    t = by_pod(own(), "llama-7b-5f9c")
    t["models"] = ["llama-7b"]
    assert render_target(t, 60.0)[0].endswith(
        "(container server, pid 4242, python3, model llama-7b)"
    )
    t["models"] = ["a", "b"]
    assert render_target(t, 60.0)[0].endswith("python3, models a, b)")
    assert fmt_value(True, "boolean") == "yes"


def test_warnings_come_before_infos_whatever_the_engine_order() -> None:
    t = by_pod(own(), "llama-7b-5f9c")
    t["causes"].reverse()  # info first in the answer
    lines = render_target(t, 60.0, width=200)
    assert "cpu_starved (warning)" in lines[1] and "gpu_starved (info)" in lines[2]


def test_healthy_and_not_enough_evidence_are_verdicts_too() -> None:
    doc = own()
    ok = render_target(by_pod(doc, "ranker-7d4b"), 60.0)
    assert ok[1] == "  verdict: healthy: no cause holds over the last 60 s"
    assert "    cpu_throttled_ratio: cgroup cpu.stat not readable" in ok
    waiting = render_target(next(t for t in doc["targets"] if t["pid"] == 777), 60.0)
    assert waiting[0] == "pid 777 (batchjob)"
    assert waiting[1].startswith("  verdict: not enough evidence yet (runqueue: fewer than 100")
    assert "evidence:" not in "\n".join(waiting)


def test_unknown_causes_signals_and_keys_render_by_name() -> None:
    t = by_pod(own(), "embedder-0")
    t["signals"]["kv_cache_usage_ratio"] = 0.97  # a signal this version has no label for
    text = "\n".join(render_target(t, 60.0, width=200))
    assert "verdict: quantum_flux (warning)\n" in text + "\n"
    assert "    quantum_flux  flux_level   3 flux  -          60 s" in text
    assert ["kv_cache_usage_ratio", "97 %"] in cells(text)
    # The evidence's own window, not the report's.
    assert "    input_drift   input drift  yes     -          5 min" in text


def test_long_lines_wrap_under_their_heading() -> None:
    t = by_pod(own(), "llama-7b-5f9c")
    lines = render_target(t, 60.0, width=60)
    prose = [ln for ln in lines if not ln.startswith("    ") or ": " in ln]
    assert all(len(ln) <= 60 for ln in prose if " " in ln.strip()), lines
    advice = lines.index(next(ln for ln in lines if ln.startswith("    cpu_starved: give")))
    assert lines[advice + 1].startswith("      ") and lines[advice + 1].strip()


def test_signals_missing_for_one_reason_are_one_line() -> None:
    missing = [
        "gpu_utilization_ratio: the process holds no GPU",
        "drift_detected: no drift model is attributed to this process",
        "gpu_memory_used_ratio: the process holds no GPU",
        "window: 2 snapshots over 10 s so far",
        "a sentence without a signal name",
    ]
    assert group_missing(missing) == [
        "gpu_utilization_ratio, gpu_memory_used_ratio: the process holds no GPU",
        "drift_detected: no drift model is attributed to this process",
        "window: 2 snapshots over 10 s so far",
        "a sentence without a signal name",
    ]


def test_the_whole_report_orders_worst_first() -> None:
    doc = own()
    ordered = sorted(doc["targets"], key=severity_key)
    assert [target_name(t) for t in ordered] == [
        "serving/embedder-0",  # a warning (unknown cause, still a warning)
        "serving/llama-7b-5f9c",
        "pid 777 (batchjob)",  # not enough evidence
        "serving/ranker-7d4b",  # healthy
    ]
    text = render_report(
        doc, ordered, "http://127.0.0.1:9475", now=doc["generated_at"] + 30, width=200
    )
    assert text.splitlines()[0] == (
        "vigil explain: 4 watched processes at http://127.0.0.1:9475, "
        "diagnosed 2025-11-30T12:40:00Z (30 s ago)"
    )
    empty = render_report({"targets": []}, [], "http://x")
    assert "the agent watches no process yet" in empty


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.parent.name)
def test_every_target_of_the_fixtures_renders(path: Any) -> None:
    doc = load(path)
    for t in doc["targets"]:
        lines = render_target(t, doc["window_seconds"])
        assert lines[1].startswith("  verdict: ")
        cells = row_cells(t)
        assert {c.key for c in COLUMNS} <= set(cells)


def test_nulls_and_garbage_in_a_target_do_not_break_it() -> None:
    t = {
        "pod": None,
        "pid": 1,
        "causes": [None, {"cause": "x", "evidence": [None, {"value": None}]}, {"no": 1}],
        "signals": None,
        "hot_functions": [None, {"function": None}],
        "missing": None,
    }
    text = "\n".join(render_target(t, None))
    assert "verdict: x (unrated)" in text
    assert row_cells(t)["cause"][0] == "x"
    assert row_cells(t)["gpu"] == ("-", None)


def test_answers_that_are_not_a_diagnosis_are_refused_clearly() -> None:
    with pytest.raises(DiagnosisError, match="not JSON"):
        parse_answer(b"<html>")
    with pytest.raises(DiagnosisError, match="no list of targets"):
        parse_answer(b'{"targets": {}}')
    doc = parse_answer(json.dumps({"targets": [1, {"pod": "a"}], "new": True}).encode())
    assert doc["targets"] == [{"pod": "a"}] and doc["new"] is True
    assert error_text(b'{"error": "wrong bearer token"}', "x") == "wrong bearer token"
    assert error_text(b"oops", "Unauthorized") == "Unauthorized"


def test_the_version_comes_from_build_info() -> None:
    page = '# HELP x\nvigil_up 1\nvigil_build_info{version="1.2.3",python="3.11"} 1.0\n'
    assert build_version(page) == "1.2.3"
    assert build_version("vigil_up 1\n") is None


# -- vigil top --------------------------------------------------------------------------


def test_an_80_column_terminal_keeps_pod_cause_gpu_run_queue_and_gil() -> None:
    keys = [c.key for c in fit_columns(80)]
    assert keys[:2] == ["target", "cause"]
    assert {"gpu", "rq_p99", "rq_wait", "gil"} <= set(keys)
    assert sum(c.cells for c in fit_columns(80)) <= 80
    assert [c.key for c in fit_columns(400)] == [c.key for c in COLUMNS]
    assert [c.key for c in fit_columns(10)] == ["target", "cause"]  # never fewer


def test_columns_drop_least_telling_first_as_the_terminal_narrows() -> None:
    previous = [c.key for c in COLUMNS]
    for width in range(200, 30, -1):
        now = [c.key for c in fit_columns(width)]
        assert set(now) <= set(previous), width  # narrowing never brings a column back
        assert now == [k for k in previous if k in now]  # order kept
        previous = now


def test_spare_width_goes_to_the_pod_then_the_function() -> None:
    kept = fit_columns(200)
    widths = flex_widths(200, kept)
    assert widths["target"] == 40
    assert widths["top_fn"] > 20
    assert sum(widths[c.key] + 2 for c in kept) <= 200


def test_sort_by_a_number_puts_the_largest_first_and_unknowns_last() -> None:
    rows = [row_cells(t) for t in own()["targets"]]
    gpu = [r["target"][0] for r in sort_rows(rows, "gpu", reverse=False)]
    assert gpu == [
        "serving/ranker-7d4b",
        "serving/embedder-0",
        "serving/llama-7b-5f9c",
        "pid 777 (batchjob)",
    ]
    back = [r["target"][0] for r in sort_rows(rows, "gpu", reverse=True)]
    assert back[:3] == gpu[:3][::-1] and back[3] == "pid 777 (batchjob)"
    by_cause = [r["cause"][0] for r in sort_rows(rows, "cause", reverse=False)]
    assert by_cause == ["quantum_flux +1", "cpu_starved +1", "no evidence", "ok"]
    names = [r["target"][0] for r in sort_rows(rows, "target", reverse=False)]
    assert names == sorted(names)


def test_filter_matches_pod_namespace_process_and_cause() -> None:
    targets = own()["targets"]

    def hits(needle: str) -> list[str]:
        return [target_name(t) for t in targets if matches(t, needle)]

    assert hits("") == [target_name(t) for t in targets]
    assert hits("LLAMA") == ["serving/llama-7b-5f9c"]
    assert hits("batch") == ["pid 777 (batchjob)"]
    assert hits("drift") == ["serving/embedder-0"]
    assert hits("cpu_starved") == ["serving/llama-7b-5f9c"]
    assert len(hits("serving/")) == 3


def test_the_row_of_a_target() -> None:
    cells = row_cells(by_pod(own(), "llama-7b-5f9c"))
    shown = {k: v[0] for k, v in cells.items()}
    assert shown == {
        "target": "serving/llama-7b-5f9c",
        "cause": "cpu_starved +1",
        "gpu": "29%",
        "mem": "52%",
        "rq_p99": "41ms",
        "rq_wait": "38%",
        "offcpu": "5.0%",
        "gil": "12%",
        "top_fn": "forward (model.py:88)",
        "drift": "no",
        "rps": "12.5",
        "errors": "0%",
        "p95": "840ms",
    }


def test_the_cli_does_not_load_the_ui_library() -> None:
    """Only `vigil top` pays for Textual: not the agent, not any other command."""
    code = (
        "import agent.cli, agent.explain, sys\n"
        "print(any(m.split('.')[0] in ('textual', 'rich') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_readme_opens_with_output_of_this_version() -> None:
    """The README's opening `vigil explain` output is a capture: when the report's shape or
    words change, it must be captured again (sudo examples/explain-demo.sh)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```console\n\$ vigil explain\n(.*?)```", readme, re.S)
    assert block, "README.md does not open with a `vigil explain` output"
    text = block.group(1)
    assert readme.index(block.group(0)) < readme.index("\n## "), "not at the top"
    headings = [ln.strip() for ln in text.splitlines() if re.match(r"^  \S.*:$", ln)]
    assert headings == [
        "evidence:",
        "what to do:",
        "hottest Python functions:",
        "signals (last 60 s):",
        "not measured:",
    ]
    rows = cells(text)
    assert ["cause", "signal", "value", "threshold", "window"] in rows
    lines = text.splitlines()
    at = lines.index("  signals (last 60 s):") + 1
    shown = [cells(ln)[0][0] for ln in lines[at : lines.index("", at)]]
    assert shown and set(shown) <= set(SIGNAL_LABELS.values()), shown
    assert re.search(r"^  verdict: cpu_starved \(warning\): waited \d+ %", text, re.M)
