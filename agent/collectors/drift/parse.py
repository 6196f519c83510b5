"""Pure parsing of drift samples: ingest bodies (JSON rows, JSON columns, NDJSON) and
reference files (CSV with a header, ``.npy``, JSON lines).

Everything here turns bytes or decoded JSON into a float64 matrix whose columns follow a
given feature order, and says precisely what was wrong with what it could not use:

* a whole-body problem (malformed JSON, wrong shape) raises :class:`ParseError`;
* a bad row (unknown or missing feature, non-numeric or non-finite value) is dropped and
  counted under its reason; the other rows are kept.

Booleans and numeric strings are refused: ``true`` or ``"1.5"`` in a feature vector is
nearly always a serialisation bug upstream, and silently coercing it would hide it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.collectors.drift.schema import (
    CATEGORICAL,
    CONFIDENCE,
    CONFIDENCE_MAX,
    CONFIDENCE_MIN,
    INPUT,
    MAX_CATEGORIES,
    MAX_CATEGORY_LEN,
    UNSEEN_CODE,
    CaptureKinds,
    Schema,
    confidence_problem,
)

# Reasons, as they appear in vigil_drift_rejected_samples_total{reason}.
UNKNOWN_FEATURE = "unknown_feature"
MISSING_FEATURE = "missing_feature"
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
MALFORMED = "malformed"
TOO_MANY_ROWS = "too_many_rows"
TOO_MANY_FEATURES = "too_many_features"
# A value of the wrong kind for a reference that declares kinds (a number in a categorical
# column, a string in a numeric one): the sender's schema differs, the request is refused.
WRONG_KIND = "wrong_kind"
CATEGORY_TOO_LONG = "category_too_long"
# A row that would teach a capture one category more than MAX_CATEGORIES in a column.
TOO_MANY_CATEGORIES = "too_many_categories"
# A confidence column's value outside [0, 1] (schema.confidence_problem): the row is
# dropped, the others kept, as for any other bad value.
CONFIDENCE_OUT_OF_RANGE = "confidence_out_of_range"

MAX_ERRORS = 5  # messages returned to the client; the counters have the full tally
# Largest client_dropped one request may report. It feeds a counter whose rate is read as
# "samples lost per second": a bogus 10**29 would make that rate meaningless for good.
# The client's queue holds 10,000 rows, so even a long outage at a high request rate
# reports far less per batch; the client sends any excess with its next batches.
MAX_CLIENT_DROPPED = 1_000_000


@dataclass(frozen=True)
class Bounds:
    """What one request (or one tailed batch) may carry; the values come from settings."""

    max_rows: int
    # Applies only where the features are learnt from the data (a reference being
    # captured): elsewhere the reference fixes them and any other key is refused anyway.
    max_features: int


# Reference files set by an operator: only the store's own limits apply.
NO_BOUNDS = Bounds(max_rows=sys.maxsize, max_features=sys.maxsize)


class ParseError(ValueError):
    """The whole body or file is unusable; ``reason`` is the counter label."""

    def __init__(self, message: str, reason: str = MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Parsed:
    """Rows that passed, in feature order, and a tally of those that did not."""

    features: tuple[str, ...]
    values: np.ndarray  # (accepted rows x features); categorical columns as codes
    rejected: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    schema: Schema | None = None  # the reference's, when its kinds encoded the rows

    def reject(self, reason: str, message: str, count: int = 1) -> None:
        self.rejected[reason] += count
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


class HugeInt:
    """An integer too long for Python's int() (more than ``sys.get_int_max_str_digits()``
    digits): json refuses the whole document over it, so it is decoded as this marker and
    reported with the row it is in."""

    def __init__(self, digits: str) -> None:
        self.digits = len(digits.lstrip("-"))

    def __repr__(self) -> str:
        return f"an integer of {self.digits:,} digits"


def _int_or_huge(text: str) -> int | HugeInt:
    try:
        return int(text)
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return HugeInt(text)


def _huge(where: str, feature: str, value: HugeInt) -> ParseError:
    return ParseError(
        f"{where}: feature {feature!r}: {value!r} cannot be read as a number (JSON "
        "decoders refuse integers this long); nothing was kept: fix that row and resend"
    )


def _number(value: Any) -> float | str:
    """The value as a finite float, or the rejection reason."""
    if type(value) is float:
        return value if math.isfinite(value) else NON_FINITE
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range
            return NON_FINITE
    return NON_NUMERIC


def decode_json(raw: bytes) -> Any:
    """A JSON document; an integer too long for int() comes back as :class:`HugeInt`."""
    try:
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):  # both are ValueErrors too
            raise
        except ValueError:
            # Only a too-long integer raises a plain ValueError inside json. Decoding again
            # with a hook (only on this rare path: the hook costs a call per integer) lets
            # the error name the row instead of the position of a digit.
            return json.loads(raw, parse_int=_int_or_huge)
    except UnicodeDecodeError:
        raise ParseError("body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        # json's decoder recurses per nesting level; a few thousand "[" exhaust the stack.
        raise ParseError("JSON nested too deeply") from None


def client_dropped(doc: Mapping[str, Any]) -> int:
    """The body's ``client_dropped`` (rows the client lost before sending), validated."""
    value = doc.get("client_dropped", 0)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_CLIENT_DROPPED
    ):
        raise ParseError(
            f"client_dropped must be a count from 0 to {MAX_CLIENT_DROPPED:,}, got "
            f"{_short(value)}; nothing was kept"
        )
    return value


def check_rows(n: int, bounds: Bounds) -> None:
    """Refuses a request of more than ``bounds.max_rows`` rows, before any is converted."""
    if n > bounds.max_rows:
        raise ParseError(
            f"{n:,} rows in one request; at most {bounds.max_rows:,} are taken "
            "(--collector.drift.max-rows): nothing was kept, send smaller batches",
            TOO_MANY_ROWS,
        )


def check_learnt_features(names: Sequence[str], bounds: Bounds) -> None:
    """Refuses rows that would teach a capture more features than ``bounds.max_features``."""
    if len(names) > bounds.max_features:
        raise ParseError(
            f"{len(names):,} features; a reference captured from live samples may have at "
            f"most {bounds.max_features:,} (--collector.drift.bootstrap-max-features): "
            "nothing was kept; set this reference with `vigil drift reference set`",
            TOO_MANY_FEATURES,
        )


# Optional body keys that restate what the sender believes the reference declares: checked
# against it, so that a sender and a reference that disagree on a column fail loudly.
DECLARATIONS = ("categorical", "outputs", "confidence")


def check_declarations(doc: Mapping[str, Any], features: Features) -> None:
    """Refuses a body whose ``categorical``/``outputs``/``confidence`` lists name a column
    the reference does not declare so (400, naming it). A capture from live samples (no
    schema yet) learns numeric inputs only, so any declaration is refused there."""
    for key in DECLARATIONS:
        if key not in doc:
            continue
        cols = doc[key]
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise ParseError(f'"{key}" must be a list of column names')
        if not cols:
            continue
        if isinstance(features, CaptureKinds):
            undeclared = [c for c in cols if c not in getattr(features, key)]
            if undeclared:
                raise ParseError(
                    f'"{key}" names column {undeclared[0][:60]!r}, which the reference being '
                    f"captured does not declare {key} (it declares: "
                    f"{', '.join(getattr(features, key)) or 'none'})",
                    WRONG_KIND,
                )
            continue
        if not isinstance(features, Schema):
            raise ParseError(
                f'"{key}" names {cols[0][:60]!r}, but this model version has no stored '
                "reference to declare it: a capture from live samples learns numeric inputs "
                "only; set the reference with `vigil drift reference set --categorical ... "
                "--output ...`",
                WRONG_KIND,
            )
        schema = features
        for c in cols:
            if c not in schema.names:
                raise ParseError(
                    f'"{key}" names column {c[:60]!r}, which is not a feature of the '
                    f"reference (known: {_list(schema.names)})",
                    UNKNOWN_FEATURE,
                )
            i = schema.names.index(c)
            ok = (
                schema.kinds[i] == CATEGORICAL
                if key == "categorical"
                else schema.roles[i] != INPUT
                if key == "outputs"
                else schema.roles[i] == CONFIDENCE
            )
            if not ok:
                raise ParseError(
                    f'"{key}" names column {c!r}, which the reference declares '
                    f"{schema.kinds[i]} {schema.roles[i]}: set the reference again with the "
                    "kinds the sender uses, or fix the sender",
                    WRONG_KIND,
                )


def body_version(doc: Any) -> str | None:
    if not isinstance(doc, Mapping):
        raise ParseError(
            'body must be a JSON object: {"version": ..., "rows": [...]} or {"columns": {...}}'
        )
    version = doc.get("version")
    if version is None:
        return None
    if not isinstance(version, str) or not version:
        raise ParseError(f"version must be a non-empty string, got {version!r}")
    return version


def parse_document(
    doc: Mapping[str, Any], features: Features, bounds: Bounds = NO_BOUNDS
) -> Parsed:
    """A decoded ``{"rows": [...]}`` or ``{"columns": {...}}`` body.

    ``features`` None means "learn them from the first row" (a reference being captured).
    """
    has_rows, has_cols = "rows" in doc, "columns" in doc
    if has_rows == has_cols:
        raise ParseError(
            'body needs exactly one of "rows" (a list of objects) or "columns" (an object of lists)'
        )
    extra = set(doc) - {"rows", "columns", "version", "client_dropped", *DECLARATIONS}
    if extra:
        raise ParseError(f"unknown key(s) in body: {', '.join(sorted(extra))}")
    if has_rows:
        rows = doc["rows"]
        if not isinstance(rows, list):
            raise ParseError('"rows" must be a list of objects {feature: value}')
        check_rows(len(rows), bounds)
        return parse_rows(rows, features, bounds)
    cols = doc["columns"]
    if not isinstance(cols, Mapping) or not all(isinstance(v, list) for v in cols.values()):
        raise ParseError('"columns" must be an object {feature: [values...]}')
    check_rows(max((len(v) for v in cols.values()), default=0), bounds)
    return parse_columns(cols, features, bounds)


Features = Sequence[str] | Schema | CaptureKinds | None


class _Kinds:
    """How to read each column: plain numbers, or (when the reference declares kinds)
    numbers and categories, each checked for its kind."""

    def __init__(self, features: Features) -> None:
        self.schema: Schema | None = None
        self.capture: CaptureKinds | None = None
        self.names: tuple[str, ...] | None = None
        # Categorical column -> {category: code}; empty for references without kinds.
        self.codes: dict[str, dict[str, int]] = {}
        if isinstance(features, Schema):
            self.schema, self.names = features, features.names
            self.codes = features.codes() if not features.plain else {}
        elif isinstance(features, CaptureKinds):
            # A capture with declarations: its categories are learnt (CaptureKinds.code).
            self.capture, self.names = features, features.names
            self.codes = {c: {} for c in features.categorical}
        elif features is not None:
            self.names = tuple(features)
        self.strict = bool(self.codes) or self.capture is not None
        # Columns whose values must lie in [0, 1]: declared confidence scores.
        self.confidence: frozenset[str] = frozenset(
            self.schema.confidence
            if self.schema is not None
            else self.capture.confidence
            if self.capture is not None
            else ()
        )

    def wrong_kind(self, where: str, name: str, value: Any) -> ParseError:
        want = "a category (a string)" if name in self.codes else "a number"
        return ParseError(
            f"{where}: feature {name!r} is {self._kind(name)} in the reference, so each value "
            f"must be {want}; got {_short(value)}. Nothing was kept: fix the sender's "
            "types (or set the reference again with the kinds it sends)",
            WRONG_KIND,
        )

    def _kind(self, name: str) -> str:
        return CATEGORICAL if name in self.codes else "numeric"

    def encode(self, name: str, value: Any) -> float | None:
        """The value as the window holds it; None: a capture's column is full."""
        codes = self.codes.get(name)
        if codes is None:
            return float(value)
        if self.capture is not None:
            return self.capture.code(name, value)
        return float(codes.get(value, UNSEEN_CODE))

    def learnt(self, names: tuple[str, ...], where: str) -> None:
        """Refuses a capture's first rows when they lack a declared column."""
        if self.capture is None:
            return
        for key, cols in self.capture.declared.items():
            missing = [c for c in cols if c not in names]
            if missing:
                raise ParseError(
                    f"{where}: the {key} column {missing[0]!r} declared for this capture is "
                    f"not in the samples (their columns: {_list(names)}); nothing was kept",
                    MISSING_FEATURE,
                )


def _row_label(i: int) -> str:
    return f"row {i}"


def parse_rows(
    rows: Iterable[Any],
    features: Features,
    bounds: Bounds = NO_BOUNDS,
    where: Callable[[int], str] = _row_label,
) -> Parsed:
    """Row objects → matrix; each bad row is dropped under its first problem.

    ``where(i)`` names row ``i`` in messages ("row 3", or "line 7" for NDJSON).
    """
    kinds = _Kinds(features)
    names = kinds.names
    out: list[list[float]] = []
    parsed = Parsed(names or (), np.empty((0, len(names or ()))), schema=kinds.schema)
    for i, row in enumerate(rows):
        if isinstance(row, _BadLine):
            parsed.reject(MALFORMED, f"{where(i)}: {row.why}")
            continue
        if not isinstance(row, Mapping):
            parsed.reject(MALFORMED, f"{where(i)}: not an object {{feature: value}}")
            continue
        if names is None:  # first good row fixes the feature set
            if not row or not all(isinstance(k, str) and k for k in row):
                parsed.reject(MALFORMED, f"{where(i)}: needs at least one named feature")
                continue
            check_learnt_features(tuple(row), bounds)
            names = tuple(row)
            kinds.learnt(names, where(i))
        problem = _row_problem(row, names, kinds, where(i))
        if problem is not None:
            # Looked for only here, off the path of good rows: a HugeInt is never a number.
            huge = next((k for k in names if isinstance(row.get(k), HugeInt)), None)
            if huge is not None:
                raise _huge(where(i), huge, row[huge])
            parsed.reject(problem[0], f"{where(i)}: {problem[1]}")
            continue
        if kinds.codes:
            coded = [kinds.encode(f, row[f]) for f in names]
            if None in coded:
                parsed.reject(TOO_MANY_CATEGORIES, f"{where(i)}: {_too_many(names, coded)}")
                continue
            out.append(coded)  # type: ignore[arg-type]  # no None: checked above
        else:
            out.append([float(row[f]) for f in names])
    names = names or ()
    parsed.features = names
    parsed.values = np.array(out, dtype=np.float64).reshape(len(out), len(names))
    return parsed


def _row_problem(
    row: Mapping[str, Any], names: Sequence[str], kinds: _Kinds, where: str
) -> tuple[str, str] | None:
    if len(row) != len(names) or any(k not in row for k in names):
        unknown = [k for k in row if k not in names]
        if unknown:
            return UNKNOWN_FEATURE, f"unknown feature {unknown[0]!r} (known: {_list(names)})"
        missing = [k for k in names if k not in row]
        return MISSING_FEATURE, f"missing feature {missing[0]!r}"
    for k in names:
        if kinds.strict:
            cell = row[k]
            if k in kinds.codes:
                if not isinstance(cell, str):
                    raise kinds.wrong_kind(where, k, cell)
                if len(cell) > MAX_CATEGORY_LEN:
                    return CATEGORY_TOO_LONG, (
                        f"feature {k!r}: a category of {len(cell):,} characters "
                        f"(at most {MAX_CATEGORY_LEN})"
                    )
                continue
            if isinstance(cell, str):
                raise kinds.wrong_kind(where, k, cell)
        v = _number(row[k])
        if isinstance(v, str):
            what = "not a finite number" if v == NON_FINITE else "not a number"
            return v, f"feature {k!r}: {_short(row[k])} is {what}"
        if k in kinds.confidence:
            problem = confidence_problem(k, v)
            if problem is not None:
                return CONFIDENCE_OUT_OF_RANGE, problem
    return None


def parse_columns(
    cols: Mapping[str, list[Any]], features: Features, bounds: Bounds = NO_BOUNDS
) -> Parsed:
    """Column lists → matrix; a bad cell drops its whole row."""
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ParseError(f"columns have different lengths: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    kinds = _Kinds(features)
    names = kinds.names if kinds.names is not None else tuple(cols)
    parsed = Parsed(names, np.empty((0, len(names))), schema=kinds.schema)
    if not names or not all(isinstance(k, str) and k for k in names):
        raise ParseError("columns need at least one named feature")
    if features is None or (kinds.capture is not None and kinds.names is None):
        check_learnt_features(names, bounds)
        kinds.learnt(names, "columns")
    unknown = [k for k in cols if k not in names]
    if unknown:
        parsed.reject(
            UNKNOWN_FEATURE,
            f"unknown feature {unknown[0]!r} (known: {_list(names)}); all {n} rows dropped",
            n,
        )
        return parsed
    missing = [k for k in names if k not in cols]
    if missing:
        parsed.reject(MISSING_FEATURE, f"missing feature {missing[0]!r}; all {n} rows dropped", n)
        return parsed
    # 0 ok, 1 non-numeric, 2 non-finite, 3 category too long, 4 capture's column full,
    # 5 confidence out of range
    bad = np.zeros(n, dtype=np.int8)
    values = np.empty((n, len(names)))
    for j, name in enumerate(names):
        col = cols[name]
        if kinds.strict and _categorical_column(kinds, name, col, values[:, j], bad, parsed):
            continue
        if all(type(v) is float or type(v) is int for v in col):
            try:
                values[:, j] = col
            except OverflowError:  # an int beyond float range: infinite, refused below
                values[:, j] = [v if isinstance(_number(v), float) else math.inf for v in col]
        else:
            for i, v in enumerate(col):
                if isinstance(v, HugeInt):
                    raise _huge(f"row {i}", name, v)
                num = _number(v)
                if isinstance(num, str):
                    if bad[i] == 0:
                        bad[i] = 1
                        if len(parsed.errors) < MAX_ERRORS:
                            parsed.errors.append(
                                f"row {i}: feature {name!r}: {_short(v)} is not a number"
                            )
                    values[i, j] = 0.0
                else:
                    values[i, j] = num
    with np.errstate(invalid="ignore"):
        nonfinite = ~np.isfinite(values).all(axis=1) & (bad == 0)
    for i in np.nonzero(nonfinite)[0][: max(0, MAX_ERRORS - len(parsed.errors))]:
        parsed.errors.append(f"row {int(i)}: a value is not a finite number")
    bad[nonfinite] = 2
    for j, name in enumerate(names):
        if name in kinds.confidence:
            scores = values[:, j]
            with np.errstate(invalid="ignore"):
                out = (bad == 0) & ((scores < CONFIDENCE_MIN) | (scores > CONFIDENCE_MAX))
            for i in np.nonzero(out)[0][: max(0, MAX_ERRORS - len(parsed.errors))]:
                parsed.errors.append(f"row {int(i)}: {confidence_problem(name, scores[i])}")
            bad[out] = 5
    parsed.rejected[NON_NUMERIC] += int((bad == 1).sum())
    parsed.rejected[NON_FINITE] += int((bad == 2).sum())
    parsed.rejected[CATEGORY_TOO_LONG] += int((bad == 3).sum())
    parsed.rejected[TOO_MANY_CATEGORIES] += int((bad == 4).sum())
    parsed.rejected[CONFIDENCE_OUT_OF_RANGE] += int((bad == 5).sum())
    parsed.rejected = +parsed.rejected  # drop zero counts
    parsed.values = values[bad == 0]
    return parsed


def _too_many(names: Sequence[str], coded: Sequence[float | None]) -> str:
    full = next(n for n, c in zip(names, coded, strict=True) if c is None)
    return (
        f"feature {full!r} already has {MAX_CATEGORIES:,} categories in the reference being "
        "captured; a row with one more is refused"
    )


def _categorical_column(
    kinds: _Kinds, name: str, col: list[Any], out: np.ndarray, bad: np.ndarray, parsed: Parsed
) -> bool:
    """Checks one column of a reference with declared kinds; encodes it when it is
    categorical (True) and leaves a numeric one to the caller (False). A value of the
    wrong kind refuses the request."""
    codes = kinds.codes.get(name)
    if codes is None:
        wrong = next((i for i, v in enumerate(col) if isinstance(v, str)), None)
        if wrong is not None:
            raise kinds.wrong_kind(f"row {wrong}", name, col[wrong])
        return False
    wrong = next((i for i, v in enumerate(col) if not isinstance(v, str)), None)
    if wrong is not None:
        raise kinds.wrong_kind(f"row {wrong}", name, col[wrong])
    for i, v in enumerate(col):
        c = kinds.encode(name, v)
        out[i] = 0.0 if c is None else c
        if c is None and bad[i] == 0:
            bad[i] = 4
            if len(parsed.errors) < MAX_ERRORS:
                parsed.errors.append(f"row {i}: {_too_many([name], [None])}")
        if len(v) > MAX_CATEGORY_LEN and bad[i] == 0:
            bad[i] = 3
            if len(parsed.errors) < MAX_ERRORS:
                parsed.errors.append(
                    f"row {i}: feature {name!r}: a category of {len(v):,} characters "
                    f"(at most {MAX_CATEGORY_LEN})"
                )
    return True


@dataclass(frozen=True)
class _BadLine:
    """An NDJSON line that cannot be decoded; keeps row numbers aligned."""

    why: str


def parse_ndjson(lines: Sequence[bytes], features: Features, bounds: Bounds = NO_BOUNDS) -> Parsed:
    """One row object per line (blank lines skipped); a malformed line is a bad row.

    Messages name the line (1-based, blank lines included), so a client can find it.
    """
    numbered = [(n, text) for n, line in enumerate(lines, start=1) if (text := line.strip())]
    check_rows(len(numbered), bounds)  # before decoding: refusal costs no parse
    rows: list[Any] = []
    for _, text in numbered:
        try:
            rows.append(json.loads(text))
        except (UnicodeDecodeError, json.JSONDecodeError):
            rows.append(_BadLine("not valid JSON"))
        except RecursionError:
            rows.append(_BadLine("JSON nested too deeply"))
        except ValueError:  # only an integer too long for int(): the line alone is refused
            rows.append(_BadLine("an integer too long to read as a number"))
    return parse_rows(rows, features, bounds, where=lambda i: f"line {numbered[i][0]}")


# -- reference files --------------------------------------------------------------------


def read_reference_file(
    data: bytes, fmt: str, feature_names: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """A reference file's bytes → (feature names, n x f matrix); refuses anything unclean."""
    if fmt == "npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ParseError(f"not a readable .npy file: {exc}") from None
        if arr.dtype.kind not in "fiu":
            raise ParseError(f".npy array has dtype {arr.dtype}; expected numbers")
        arr = arr.astype(np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ParseError(f".npy array must be 1-D or 2-D (rows x features), got {arr.ndim}-D")
        names = (
            tuple(feature_names)
            if feature_names
            else tuple(f"feature_{i}" for i in range(arr.shape[1]))
        )
        if len(names) != arr.shape[1]:
            raise ParseError(f"{len(names)} feature names given for {arr.shape[1]} columns")
        return names, _finite(arr)
    if fmt == "csv":
        return _read_csv(data)
    if fmt == "jsonl":
        parsed = parse_ndjson(data.splitlines(), feature_names)
        if parsed.rejected:
            raise ParseError("; ".join(parsed.errors) or "bad rows", next(iter(parsed.rejected)))
        return parsed.features, parsed.values
    raise ParseError(f"unknown reference format {fmt!r} (use csv, npy or jsonl)")


def _read_csv(data: bytes) -> tuple[tuple[str, ...], np.ndarray]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParseError("CSV file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not all(h.strip() for h in header):
        raise ParseError("CSV needs a header line naming every column")
    names = tuple(h.strip() for h in header)
    rows: list[list[float]] = []
    for lineno, rec in enumerate(reader, start=2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(names):
            raise ParseError(f"CSV line {lineno}: {len(rec)} fields, header has {len(names)}")
        try:
            row = [float(c) for c in rec]
        except ValueError:
            bad = next(c for c in rec if not _is_float(c))
            raise ParseError(f"CSV line {lineno}: {bad!r} is not a number", NON_NUMERIC) from None
        if not all(math.isfinite(v) for v in row):
            raise ParseError(f"CSV line {lineno}: a value is not finite", NON_FINITE)
        rows.append(row)
    return names, np.array(rows, dtype=np.float64).reshape(len(rows), len(names))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _finite(arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        row = int(np.nonzero(~np.isfinite(arr).all(axis=1))[0][0])
        raise ParseError(f"row {row} has a non-finite value (NaN or infinity)", NON_FINITE)
    return arr


def _short(value: Any) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, float) else repr(value)
    except (TypeError, ValueError):  # a HugeInt somewhere inside, or too deep
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _list(names: Sequence[str]) -> str:
    return ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")


def read_typed_reference(
    data: bytes, fmt: str, categorical: Sequence[str], feature_names: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray, dict[str, tuple[str, ...]]]:
    """A reference file with ``categorical`` columns (strings) → (names, rows x features
    matrix with categories as codes, each categorical column's categories, sorted).

    CSV and JSON lines only: a .npy array holds numbers alone. A categorical column of
    the wrong kind or a column that is not in the file is refused, naming it.
    """
    if fmt == "csv":
        names, cells = _csv_cells(data)
        records: list[dict[str, Any]] = [dict(zip(names, row, strict=True)) for _, row in cells]
        where = [f"CSV line {n}" for n, _ in cells]
    elif fmt == "jsonl":
        records, where = [], []
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise ParseError(f"line {lineno}: not valid JSON") from None
            if not isinstance(rec, dict):
                raise ParseError(f"line {lineno}: not an object {{feature: value}}")
            records.append(rec)
            where.append(f"line {lineno}")
        names = tuple(feature_names or (records[0] if records else ()))
    else:
        raise ParseError(
            f"categorical columns need a csv or jsonl reference ({fmt} holds numbers only)"
        )
    if not records:
        raise ParseError("the reference file has no rows")
    unknown = [c for c in categorical if c not in names]
    if unknown:
        raise ParseError(
            f"categorical column {unknown[0]!r} is not in the file (its columns: {_list(names)})"
        )
    cat = set(categorical)
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for rec, at in zip(records, where, strict=True):
        if set(rec) != set(names):
            odd = sorted(set(rec) ^ set(names))
            raise ParseError(f"{at}: column {odd[0]!r} is missing or unknown")
        for n in names:
            columns[n].append(_typed_cell(at, n, rec[n], n in cat, fmt == "csv"))
    out = np.empty((len(records), len(names)))
    cats: dict[str, tuple[str, ...]] = {}
    for j, n in enumerate(names):
        if n in cat:
            cats[n] = tuple(sorted(set(columns[n])))
            index = {c: i for i, c in enumerate(cats[n])}
            out[:, j] = [index[v] for v in columns[n]]
        else:
            out[:, j] = columns[n]
    return names, out, cats


def _typed_cell(at: str, name: str, value: Any, categorical: bool, text: bool) -> Any:
    if categorical:
        if not isinstance(value, str):
            raise ParseError(
                f"{at}: categorical column {name!r} holds {_short(value)}; categories are strings",
                WRONG_KIND,
            )
        if len(value) > MAX_CATEGORY_LEN:
            raise ParseError(
                f"{at}: column {name!r}: a category of {len(value):,} characters (at most "
                f"{MAX_CATEGORY_LEN})",
                CATEGORY_TOO_LONG,
            )
        return value
    if text:
        try:
            value = float(value)
        except ValueError:
            raise ParseError(
                f"{at}: {value!r} in numeric column {name!r} is not a number (declare the "
                "column with --categorical if it holds categories)",
                NON_NUMERIC,
            ) from None
    num = _number(value)
    if isinstance(num, str):
        raise ParseError(f"{at}: column {name!r}: {_short(value)} is not a finite number", num)
    return num


def _csv_cells(data: bytes) -> tuple[tuple[str, ...], list[tuple[int, list[str]]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParseError("CSV file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not all(h.strip() for h in header):
        raise ParseError("CSV needs a header line naming every column")
    names = tuple(h.strip() for h in header)
    rows = []
    for lineno, rec in enumerate(reader, start=2):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(names):
            raise ParseError(f"CSV line {lineno}: {len(rec)} fields, header has {len(names)}")
        rows.append((lineno, rec))
    return names, rows
