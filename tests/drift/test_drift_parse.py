"""The ingest and reference-file parsers: every row is either kept or counted, never lost."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collectors.drift.parse import (
    ParseError,
    body_version,
    decode_json,
    parse_columns,
    parse_document,
    parse_ndjson,
    parse_rows,
    read_reference_file,
)

F = ("a", "b")


def test_rows_in_feature_order_and_bad_rows_counted_by_reason() -> None:
    rows = [
        {"b": 2, "a": 1.5},
        {"a": 1},
        {"a": 1, "b": 2, "c": 3},
        {"a": "1", "b": 2},
        {"a": True, "b": 2},
        {"a": math.inf, "b": 2},
        {"a": 10**400, "b": 1},
        [1, 2],
    ]
    p = parse_rows(rows, F)
    assert p.values.tolist() == [[1.5, 2.0]]
    assert dict(p.rejected) == {
        "missing_feature": 1,
        "unknown_feature": 1,
        "non_numeric": 2,
        "non_finite": 2,
        "malformed": 1,
    }
    assert "row 1: missing feature 'b'" in p.errors
    assert any("unknown feature 'c'" in e for e in p.errors)


def test_columns_drop_only_the_rows_with_a_bad_cell() -> None:
    p = parse_columns({"a": [1, 2, None, 4], "b": [1.0, float("nan"), 3, 4]}, F)
    assert p.values.tolist() == [[1.0, 1.0], [4.0, 4.0]]
    assert dict(p.rejected) == {"non_numeric": 1, "non_finite": 1}
    p = parse_columns({"a": [1, 2], "b": [1, 2], "z": [0, 0]}, F)
    assert len(p.values) == 0 and p.rejected == {"unknown_feature": 2}
    p = parse_columns({"a": [1, 2]}, F)
    assert p.rejected == {"missing_feature": 2}
    with pytest.raises(ParseError, match="different lengths"):
        parse_columns({"a": [1, 2], "b": [1]}, F)


def test_whole_body_problems_are_parse_errors() -> None:
    with pytest.raises(ParseError, match="not valid JSON"):
        decode_json(b'{"rows": [')
    with pytest.raises(ParseError, match="JSON object"):
        body_version([1, 2])
    with pytest.raises(ParseError, match="non-empty string"):
        body_version({"version": 3})
    with pytest.raises(ParseError, match="exactly one of"):
        parse_document({"rows": [], "columns": {}}, F)
    with pytest.raises(ParseError, match="unknown key"):
        parse_document({"rows": [], "extra": 1}, F)


def test_ndjson_malformed_lines_are_bad_rows() -> None:
    p = parse_ndjson([b'{"a": 1, "b": 2}', b"", b"{oops", b'{"a": 3, "b": 4}'], F)
    assert p.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert p.rejected == {"malformed": 1}


def test_features_learnt_from_the_first_row_when_capturing() -> None:
    p = parse_rows([{"x": 1, "y": 2}, {"x": 3}], None)
    assert p.features == ("x", "y") and p.values.tolist() == [[1.0, 2.0]]


def test_reference_files() -> None:
    names, v = read_reference_file(b"a,b\n1,2\n3,4.5\n", "csv")
    assert names == ("a", "b") and v.tolist() == [[1, 2], [3, 4.5]]
    with pytest.raises(ParseError, match="line 3: 'x' is not a number"):
        read_reference_file(b"a,b\n1,2\n3,x\n", "csv")
    with pytest.raises(ParseError, match="line 2: 1 fields"):
        read_reference_file(b"a,b\n1\n", "csv")
    with pytest.raises(ParseError, match="not finite"):
        read_reference_file(b"a\nnan\n", "csv")
    buf = io.BytesIO()
    np.save(buf, np.arange(6.0).reshape(3, 2))
    names, v = read_reference_file(buf.getvalue(), "npy")
    assert names == ("feature_0", "feature_1") and v.shape == (3, 2)
    with pytest.raises(ParseError, match=r"\.npy"):
        read_reference_file(b"not npy", "npy")
    names, v = read_reference_file(b'{"a": 1, "b": 2}\n{"a": 3, "b": 4}\n', "jsonl")
    assert names == ("a", "b") and v.shape == (2, 2)
    with pytest.raises(ParseError, match="missing feature"):
        read_reference_file(b'{"a": 1, "b": 2}\n{"a": 3}\n', "jsonl")


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
row = st.dictionaries(st.sampled_from(["a", "b", "c", ""]), json_scalar, max_size=4)
rows_or_junk = st.lists(st.one_of(row, json_scalar, st.lists(json_scalar, max_size=2)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(rows_or_junk)
def test_property_rows_every_row_is_kept_or_counted(rows: list[object]) -> None:
    p = parse_rows(rows, F)
    assert len(p.values) + sum(p.rejected.values()) == len(rows)
    assert p.values.shape[1] == 2 and np.isfinite(p.values).all()


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(json_scalar, min_size=3, max_size=3))
)
def test_property_columns_every_row_is_kept_or_counted(cols: dict[str, list[object]]) -> None:
    if not cols:
        return
    p = parse_columns(cols, F)
    assert len(p.values) + sum(p.rejected.values()) == 3
    assert np.isfinite(p.values).all()


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.builds(
        lambda d: json.dumps(d).encode(),
        st.recursive(
            json_scalar,
            lambda c: (
                st.lists(c, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["rows", "columns", "version", "a", "b"]), c, max_size=3
                )
            ),
            max_leaves=10,
        ),
    )
)
def test_property_any_body_is_parsed_or_refused_with_a_parse_error(raw: bytes) -> None:
    try:
        doc = decode_json(raw)
        body_version(doc)
        p = parse_document(doc, F)
    except ParseError as exc:
        assert str(exc)
        return
    assert np.isfinite(p.values).all()
