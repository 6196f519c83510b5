"""The drift parsers' bounds, pure: rows and learnt features per request, integers too long
for int(), and the client-reported drop count."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collectors.drift.collector import load_error_series
from agent.collectors.drift.parse import (
    MAX_CLIENT_DROPPED,
    NO_BOUNDS,
    Bounds,
    ParseError,
    check_rows,
    client_dropped,
    decode_json,
    parse_document,
    parse_ndjson,
    parse_rows,
    read_reference_file,
)

F = ("a", "b")
HUGE = "9" * 5000  # past Python's 4,300-digit int-string limit: json.loads raises ValueError


def doc_bytes(rows_json: list[str], **extra: object) -> bytes:
    head = "".join(f"{json.dumps(k)}: {json.dumps(v)}, " for k, v in extra.items())
    return ("{" + head + '"rows": [' + ", ".join(rows_json) + "]}").encode()


def test_a_json_document_with_a_5000_digit_integer_is_a_400_naming_the_row() -> None:
    raw = doc_bytes(['{"a": 1, "b": 2}', '{"a": 3, "b": 4}', '{"a": ' + HUGE + ', "b": 1}'])
    doc = decode_json(raw)  # decodes: the long integer is held as a marker, not a crash
    with pytest.raises(ParseError) as exc:
        parse_document(doc, F)
    assert "row 2" in str(exc.value) and "'a'" in str(exc.value)
    assert "5,000 digits" in str(exc.value) and "nothing was kept" in str(exc.value)
    assert exc.value.reason == "malformed"


def test_a_5000_digit_integer_in_columns_names_its_row() -> None:
    raw = ('{"columns": {"a": [1, 2, 3], "b": [4, ' + HUGE + ", 6]}}").encode()
    with pytest.raises(ParseError, match="row 1: feature 'b'"):
        parse_document(decode_json(raw), F)


def test_a_5000_digit_integer_elsewhere_is_a_clear_400() -> None:
    with pytest.raises(ParseError, match="client_dropped must be a count"):
        client_dropped(decode_json(('{"rows": [], "client_dropped": ' + HUGE + "}").encode()))
    with pytest.raises(ParseError, match="5,000 digits"):
        client_dropped(decode_json(('{"client_dropped": -' + HUGE + "}").encode()))


def test_ndjson_line_with_a_5000_digit_integer_is_dropped_and_the_good_rows_kept() -> None:
    lines = [
        b'{"a": 1, "b": 2}',
        b"",
        b'{"a": ' + HUGE.encode() + b', "b": 1}',
        b'{"a": 3, "b": 4}',
    ]
    p = parse_ndjson(lines, F)
    assert p.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert dict(p.rejected) == {"malformed": 1}
    # The line number counts blank lines, so a client can find the line in what it sent.
    assert p.errors == ["line 3: an integer too long to read as a number"]


def test_ndjson_messages_name_lines_one_based() -> None:
    p = parse_ndjson([b"", b'{"a": 1}', b"{oops", b'{"a": "x", "b": 1}'], F)
    assert p.errors == [
        "line 2: missing feature 'b'",
        "line 3: not valid JSON",
        "line 4: feature 'a': \"x\" is not a number",
    ]


@pytest.mark.parametrize(
    "value",
    [10**29, MAX_CLIENT_DROPPED + 1, -1, True, 1.5, "7", None, [1]],
)
def test_client_dropped_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ParseError, match=f"from 0 to {MAX_CLIENT_DROPPED:,}"):
        client_dropped({"client_dropped": value})


def test_client_dropped_in_range_is_taken() -> None:
    assert client_dropped({}) == 0
    assert client_dropped({"client_dropped": 0}) == 0
    assert client_dropped({"client_dropped": MAX_CLIENT_DROPPED}) == MAX_CLIENT_DROPPED


def test_too_many_rows_are_refused_whole_before_any_is_converted() -> None:
    b = Bounds(max_rows=3, max_features=8)
    rows = [{"a": i, "b": i} for i in range(4)]
    with pytest.raises(ParseError) as exc:
        parse_document({"rows": rows}, F, b)
    assert exc.value.reason == "too_many_rows" and "at most 3" in str(exc.value)
    with pytest.raises(ParseError, match="at most 3"):
        parse_document({"columns": {"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]}}, F, b)
    # Blank lines are not rows; a bad line is (it would be counted as one).
    lines = [b'{"a": 1, "b": 2}', b"", b"  ", b"{oops", b'{"a": 3, "b": 4}']
    assert len(parse_ndjson(lines, F, b).values) == 2
    with pytest.raises(ParseError) as exc:
        parse_ndjson([*lines, b'{"a": 5, "b": 6}'], F, b)
    assert exc.value.reason == "too_many_rows"
    assert len(parse_document({"rows": rows[:3]}, F, b).values) == 3


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 50), limit=st.integers(1, 50))
def test_check_rows_refuses_exactly_above_the_bound(n: int, limit: int) -> None:
    b = Bounds(max_rows=limit, max_features=1)
    if n > limit:
        with pytest.raises(ParseError):
            check_rows(n, b)
    else:
        check_rows(n, b)


def test_learnt_features_are_bounded_known_ones_are_not() -> None:
    b = Bounds(max_rows=100, max_features=4)
    wide = {f"f{i}": 1.0 for i in range(5)}
    with pytest.raises(ParseError) as exc:
        parse_rows([wide], None, b)  # a capture would learn 5 features
    assert exc.value.reason == "too_many_features" and "at most 4" in str(exc.value)
    with pytest.raises(ParseError) as exc:
        parse_document({"columns": {k: [1.0] for k in wide}}, None, b)
    assert exc.value.reason == "too_many_features"
    assert len(parse_rows([{"a": 1.0, "b": 2.0}], None, b).values) == 1
    # With a reference, its features rule: extra keys are unknown features, not a bound.
    wide_ref = tuple(wide)
    assert len(parse_rows([wide], wide_ref, b).values) == 1


def test_reference_files_are_not_bound_by_ingest_limits() -> None:
    data = b"\n".join(
        json.dumps({f"f{i}": float(r) for i in range(300)}).encode() for r in range(3)
    )
    names, values = read_reference_file(data, "jsonl")
    assert len(names) == 300 and values.shape == (3, 300)
    assert NO_BOUNDS.max_features >= 10_000


def test_load_error_series_are_bounded() -> None:
    keys = [(f"m{i}", "v1") for i in range(5)]
    assert load_error_series(keys[:2], 3) == [(("m0", "v1"), 1), (("m1", "v1"), 1)]
    out = load_error_series(keys, 3)
    assert len(out) == 4 and out[-1] == (("(unknown)", "(unknown)"), 2)
    assert sum(n for _, n in out) == 5  # every refused file is still counted


def test_the_client_library_keeps_the_same_client_dropped_bound() -> None:
    from agent.drift import client

    assert client.MAX_CLIENT_DROPPED == MAX_CLIENT_DROPPED
