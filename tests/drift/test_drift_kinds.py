"""Categorical features and model outputs, from the reference file to /metrics: kinds
declared and stored, samples read by kind (a wrong kind refused whole, naming the
column), chi-squared and KS in one correction, output drift apart from input drift,
effect sizes, explanations and the confidence histogram."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from agent.cli import main
from agent.collectors.drift.collector import render
from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.monitor import DriftMonitor
from agent.collectors.drift.parse import (
    WRONG_KIND,
    ParseError,
    check_declarations,
    parse_document,
    parse_rows,
    read_typed_reference,
)
from agent.collectors.drift.reference import Reference
from agent.collectors.drift.schema import (
    MAX_CATEGORIES,
    UNSEEN,
    CaptureKinds,
    Schema,
    SchemaError,
)
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.store import ReferenceStore

COUNTRIES = ("DE", "FR", "US")


def reference_rows(rng: np.random.Generator, n: int) -> list[dict[str, object]]:
    """amount (numeric input), country (categorical input), label (categorical output),
    confidence (confidence score)."""
    return [
        {
            "amount": float(rng.normal(100, 10)),
            "country": str(rng.choice(COUNTRIES, p=[0.5, 0.3, 0.2])),
            "label": str(rng.choice(["fraud", "ok"], p=[0.1, 0.9])),
            "confidence": float(rng.beta(8, 2)),
        }
        for _ in range(n)
    ]


def csv_of(rows: list[dict[str, object]]) -> bytes:
    head = list(rows[0])
    lines = [",".join(head)] + [",".join(str(r[h]) for h in head) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def store_reference(state: Path, rows: list[dict[str, object]]) -> Reference:
    names, values, cats = read_typed_reference(csv_of(rows), "csv", ["country", "label"])
    schema = Schema.declare(names, ["country", "label"], ["label"], ["confidence"], cats)
    ref = Reference.from_rows(values, schema)
    ReferenceStore(state).save("fraud", "v1", ref, "test")
    return ref


def series(mon: DriftMonitor, name: str) -> dict[tuple[str, ...], float]:
    out = {}
    for fam in render(mon):
        for s in fam.samples:
            if s.name == name:
                out[tuple(s.labels.values())] = s.value
    return out


@pytest.fixture
def mon(tmp_path: Path) -> DriftMonitor:
    store_reference(tmp_path, reference_rows(np.random.default_rng(0), 3000))
    m = DriftMonitor(tmp_path, DriftSettings(window=2000, min_samples=50))
    m.sync()
    return m


def send(mon: DriftMonitor, rows: list[dict[str, object]]) -> int:
    version, features = mon.resolve("fraud", "v1")
    return mon.accept("fraud", version, parse_rows(rows, features, mon.bounds))


def test_kinds_survive_the_store_and_old_files_read_as_numeric(tmp_path: Path) -> None:
    ref = store_reference(tmp_path, reference_rows(np.random.default_rng(1), 500))
    info, loaded = ReferenceStore(tmp_path).load("fraud", "v1")
    assert loaded.schema == ref.schema
    assert loaded.schema.categories["country"] == COUNTRIES
    assert info.categorical == ("country", "label") and info.outputs == ("label", "confidence")
    # A reference saved without kinds (as every file before them) has no kinds in its
    # header at all, and loads as numeric inputs.
    plain = ReferenceSample(np.arange(20.0).reshape(10, 2), ("a", "b"))
    path = ReferenceStore(tmp_path).save("old", "v1", plain, "test")
    header = json.loads(path.read_bytes().split(b"\n")[1])
    assert "kinds" not in header and "roles" not in header
    _, old = ReferenceStore(tmp_path).load("old", "v1")
    assert old.schema == Schema.numeric(("a", "b"))


def test_declarations_name_the_column_they_cannot_use() -> None:
    with pytest.raises(SchemaError, match="'colour' is not a feature"):
        Schema.declare(("a", "b"), categorical=["colour"])
    with pytest.raises(SchemaError, match="'a' cannot be both"):
        Schema.declare(("a",), categorical=["a"], confidence=["a"], categories={"a": ("x",)})
    many = tuple(str(i) for i in range(MAX_CATEGORIES + 1))
    with pytest.raises(SchemaError, match="'a' has 1,001 categories"):
        Schema.declare(("a",), categorical=["a"], categories={"a": many})
    with pytest.raises(ParseError, match="categorical column 'colour' is not in the file"):
        read_typed_reference(b"a,b\n1,x\n", "csv", ["colour"])
    with pytest.raises(ParseError, match="'x' in numeric column 'b'"):
        read_typed_reference(b"a,b\nu,x\n", "csv", ["a"])
    with pytest.raises(ParseError, match="categorical column 'a' holds 1"):
        read_typed_reference(b'{"a": 1, "b": 2}\n', "jsonl", ["a"])


def test_a_wrong_kind_refuses_the_whole_request_naming_the_column(mon: DriftMonitor) -> None:
    _, schema = mon.resolve("fraud", "v1")
    good = reference_rows(np.random.default_rng(2), 3)
    for bad_row, column in (
        ({**good[0], "country": 49}, "country"),  # a number where a category belongs
        ({**good[0], "amount": "100"}, "amount"),  # a string where a number belongs
    ):
        with pytest.raises(ParseError, match=f"feature '{column}'") as exc:
            parse_document({"rows": [good[1], bad_row]}, schema)
        assert exc.value.reason == WRONG_KIND
        cols = {k: [r[k] for r in (good[1], bad_row)] for k in good[0]}
        with pytest.raises(ParseError, match=f"feature '{column}'"):
            parse_document({"columns": cols}, schema)
    assert len(mon.tracked()[("fraud", "v1")].window) == 0  # nothing reached the window


def test_categorical_check_agrees_with_chi2_contingency_including_unseen(
    mon: DriftMonitor,
) -> None:
    rng = np.random.default_rng(3)
    rows = reference_rows(rng, 1000)
    for r in rows[:60]:
        r["country"] = "BR"  # never in the reference
    assert send(mon, rows) == 1000
    out = mon.check("fraud", "v1", force=True)
    r = out.result
    assert r is not None and r.drifted is not None
    i = r.feature_names.index("country")
    ref = mon.tracked()[("fraud", "v1")].ref
    ref_counts = ref.cat_counts[0]  # DE, FR, US, __unseen__
    win_counts = np.array(
        [sum(x["country"] == c for x in rows) for c in COUNTRIES] + [60], dtype=float
    )
    expected = chi2_contingency(np.vstack([ref_counts, win_counts]))
    assert r.tests[i] == "chi2"
    assert r.statistic[i] == pytest.approx(expected.statistic, rel=1e-9)
    assert r.pvalue[i] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert r.drifted[i] and r.detected
    labels = ("fraud", "v1", "country")
    assert series(mon, "vigil_drift_unseen_category_samples")[labels] == 60
    assert series(mon, "vigil_drift_chi2_statistic")[labels] == pytest.approx(r.statistic[i])
    shares = series(mon, "vigil_drift_category_share_ratio")
    assert shares[(*labels, UNSEEN, "window")] == pytest.approx(0.06)
    assert shares[(*labels, UNSEEN, "reference")] == 0.0
    assert "vigil_drift_ks_statistic" not in {
        f.name for f in render(mon) if any(s.labels.get("feature") == "country" for s in f.samples)
    }


def test_outputs_that_shift_while_inputs_do_not_raise_output_drift_only(
    mon: DriftMonitor,
) -> None:
    rng = np.random.default_rng(4)
    rows = reference_rows(rng, 1500)
    for r in rows:  # same inputs; the model now says "fraud" a third of the time
        r["label"] = "fraud" if rng.random() < 0.33 else "ok"
        r["confidence"] = float(rng.beta(3, 2))  # and is less sure of itself
    send(mon, rows)
    r = mon.check("fraud", "v1", force=True).result
    assert r is not None and r.drifted is not None
    assert r.output_detected and not r.detected
    drifted = {f for f, d in zip(r.feature_names, r.drifted, strict=True) if d}
    assert drifted == {"label", "confidence"}
    assert series(mon, "vigil_drift_output_detected")[("fraud", "v1")] == 1.0
    assert series(mon, "vigil_drift_detected")[("fraud", "v1")] == 0.0
    info = series(mon, "vigil_drift_feature_info")
    assert info[("fraud", "v1", "label", "categorical", "output")] == 1.0
    assert info[("fraud", "v1", "confidence", "numeric", "confidence")] == 1.0
    # The confidence histogram: every accepted score, cumulative by bucket.
    hist = series(mon, "vigil_prediction_confidence_bucket")
    assert hist[("fraud", "v1", "confidence", "+Inf")] == 1500
    below_half = sum(x["confidence"] <= 0.5 for x in rows)
    assert hist[("fraud", "v1", "confidence", "0.5")] == below_half


def test_effect_size_and_explanation_say_which_way_and_how_far(mon: DriftMonitor) -> None:
    rng = np.random.default_rng(5)
    rows = reference_rows(rng, 1500)
    for r in rows:
        r["amount"] = float(r["amount"]) + 13.5  # about one reference IQR up
    send(mon, rows)
    r = mon.check("fraud", "v1", force=True).result
    assert r is not None
    i = r.feature_names.index("amount")
    assert 0.8 < r.effect[i] < 1.2  # W = 13.5, IQR of N(100, 10) = 13.5
    shift = r.shifts[i]
    assert shift.window_quartiles is not None and shift.reference_quartiles is not None
    assert shift.window_quartiles[1] - shift.reference_quartiles[1] == pytest.approx(13.5, abs=1)
    assert r.top()[0] == i
    explained = series(mon, "vigil_drift_explanation")
    key = max(explained, key=lambda k: explained[k])
    assert key[2:5] == ("amount", "numeric", "input")
    assert re.match(r"amount: W/IQR (1|0\.9\d*), median \+1[34] ", key[5])
    q = series(mon, "vigil_drift_feature_quantile")
    assert (
        q[("fraud", "v1", "amount", "window", "0.5")]
        > q[("fraud", "v1", "amount", "reference", "0.5")] + 10
    )


def test_categorical_and_numeric_p_values_share_one_correction() -> None:
    rng = np.random.default_rng(6)
    n = 2000
    ref_rows = np.c_[rng.normal(size=n), rng.integers(0, 4, size=n)]
    schema = Schema.declare(("x", "c"), ["c"], categories={"c": ("a", "b", "c", "d")})
    ref = Reference.from_rows(ref_rows, schema)
    win = np.c_[rng.normal(size=500), rng.integers(0, 4, size=500)]
    r = ref.test(win, alpha=0.05, correction="bonferroni")
    assert r.drifted is not None
    # Bonferroni over two p-values: each is compared with 0.025.
    assert r.drifted.tolist() == (r.pvalue <= 0.025).tolist()


def test_declarations_in_a_body_must_match_the_reference(mon: DriftMonitor) -> None:
    _, schema = mon.resolve("fraud", "v1")
    check_declarations({"categorical": ["country"], "outputs": ["label", "confidence"]}, schema)
    with pytest.raises(ParseError, match="column 'colour', which is not a feature"):
        check_declarations({"categorical": ["colour"]}, schema)
    with pytest.raises(ParseError, match="column 'amount', which the reference declares numeric"):
        check_declarations({"categorical": ["amount"]}, schema)
    with pytest.raises(ParseError, match="column 'country', which the reference declares"):
        check_declarations({"confidence": ["country"]}, schema)
    with pytest.raises(ParseError, match="learns numeric inputs only"):
        check_declarations({"categorical": ["country"]}, None)
    with pytest.raises(ParseError, match="must be a list"):
        check_declarations({"outputs": "label"}, schema)


def test_cli_sets_kinds_and_checks_a_window_file_with_unseen_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(7)
    ref, win = tmp_path / "ref.csv", tmp_path / "win.jsonl"
    ref.write_bytes(csv_of(reference_rows(rng, 2000)))
    moved = reference_rows(rng, 500)
    for r in moved[:100]:
        r["country"] = "BR"
    win.write_text("".join(json.dumps(r) + "\n" for r in moved))
    state = ["--state-dir", str(tmp_path / "state")]
    mv = ["--model", "fraud", "--version", "v1"]
    kinds = ["--categorical", "country,label", "--output", "label", "--confidence", "confidence"]
    assert main(["drift", "reference", "set", *mv, *kinds, *state, str(ref)]) == 0
    capsys.readouterr()
    assert main(["drift", "check", "--model", "fraud", "--window-file", str(win), *state]) == 3
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln}
    assert "chi2" in lines["country"] and "__unseen__ +20 pp" in lines["country"]
    assert lines["amount"].split()[lines["FEATURE"].split().index("DRIFTED")] == "no"
    assert main(["drift", "reference", "set", *mv, "--categorical", "colour", *state,
                 str(ref)]) == 1  # fmt: skip
    assert "categorical column 'colour' is not in the file" in capsys.readouterr().err


def test_reference_set_counts_each_categorical_column_once_and_names_npy_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(9)
    ref = tmp_path / "ref.csv"
    ref.write_bytes(csv_of(reference_rows(rng, 300)))
    state = ["--state-dir", str(tmp_path / "state")]
    mv = ["--model", "fraud", "--version", "v1"]
    twice = ["--categorical", "country,country,label", "--output", "label"]
    assert main(["drift", "reference", "set", *mv, *twice, *state, str(ref)]) == 0
    assert "(2 categorical)" in capsys.readouterr().out
    npy = tmp_path / "ref.npy"
    np.save(npy, rng.normal(size=(50, 2)))
    argv = ["drift", "reference", "set", *mv, "--features", "amount,country"]
    assert main([*argv, "--categorical", "country", *state, str(npy)]) == 2
    err = capsys.readouterr().err
    assert "is npy, which holds numbers only" in err and "(country)" in err
    assert "--features applies only" not in err


def test_a_capture_learns_declared_categories_and_stores_them(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    declared = {"categorical": ["country", "label"], "outputs": ["label"], "confidence": []}
    store.request_bootstrap("shop", "v1", 300, declared)
    mon = DriftMonitor(tmp_path, DriftSettings(window=500, min_samples=50))
    mon.sync()
    rng = np.random.default_rng(8)

    def send_to(rows: list[dict[str, object]]) -> int:
        version, features = mon.resolve("shop", "v1")
        return mon.accept("shop", version, parse_rows(rows, features, mon.bounds))

    # The capture refuses rows that miss a declared column, and a wrong kind, whole.
    with pytest.raises(ParseError, match="categorical column 'label' declared"):
        parse_rows([{"amount": 1.0, "country": "DE"}], mon.resolve("shop", "v1")[1])
    with pytest.raises(ParseError, match="feature 'country'"):
        send_to([{"amount": 1.0, "country": 3, "label": "ok", "confidence": 0.5}])
    rows = reference_rows(rng, 350)  # 300 for the reference, 50 left over for the window
    assert send_to(rows[:200]) == 200 and send_to(rows[200:]) == 150
    info, ref = store.load("shop", "v1")
    assert info.categorical == ("country", "label") and info.outputs == ("label",)
    assert set(ref.schema.categories["country"]) == set(COUNTRIES)
    counts = dict(zip(ref.schema.categories["country"], ref.cat_counts[0], strict=False))
    assert counts == {c: sum(r["country"] == c for r in rows[:300]) for c in COUNTRIES}
    assert len(mon.tracked()[("shop", "v1")].window) == 50


def test_a_capture_learns_at_most_max_categories_per_column(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    store.request_bootstrap("ids", "v1", 5000, {"categorical": ["user"]})
    mon = DriftMonitor(tmp_path, DriftSettings())
    mon.sync()
    _, features = mon.resolve("ids", "v1")
    rows = [{"user": f"u{i}", "x": 1.0} for i in range(MAX_CATEGORIES + 10)]
    parsed = parse_rows(rows, features, mon.bounds)
    assert len(parsed.values) == MAX_CATEGORIES
    assert parsed.rejected == {"too_many_categories": 10}
    assert "feature 'user' already has 1,000 categories" in parsed.errors[0]


def test_confidence_scores_outside_0_1_drop_their_row_in_every_body_form() -> None:
    schema = Schema.declare(("amount", "score"), confidence=["score"])
    good, edge = {"amount": 1.0, "score": 0.5}, [{"amount": 2.0, "score": s} for s in (0, 1)]
    rows = [good, *edge, {"amount": 3.0, "score": 7}, {"amount": 4.0, "score": -0.01}]
    by_rows = parse_rows(rows, schema)
    assert by_rows.values[:, 1].tolist() == [0.5, 0.0, 1.0]  # 0 and 1 are confidences
    assert by_rows.rejected == {"confidence_out_of_range": 2}
    assert "row 3: confidence column 'score' holds 7;" in by_rows.errors[0]
    cols = {"amount": [r["amount"] for r in rows], "score": [r["score"] for r in rows]}
    by_cols = parse_document({"columns": cols}, schema)
    assert by_cols.values.tolist() == by_rows.values.tolist()
    assert by_cols.rejected == by_rows.rejected and by_cols.errors[0] == by_rows.errors[0]
    # A non-finite score is counted once, as non_finite; an input may hold any number.
    cols = {"amount": [500.0, 1.0], "score": [float("nan"), 0.2]}
    mixed = parse_document({"columns": cols}, schema)
    assert mixed.rejected == {"non_finite": 1} and mixed.values.tolist() == [[1.0, 0.2]]


def test_a_capture_refuses_out_of_range_confidence_and_reference_set_names_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = CaptureKinds([], [], ["score"])
    parsed = parse_rows([{"amount": 1.0, "score": 1.5}, {"amount": 1.0, "score": 0.9}], capture)
    assert parsed.rejected == {"confidence_out_of_range": 1} and len(parsed.values) == 1
    ref = tmp_path / "ref.csv"
    ref.write_text("amount,score\n" + "".join(f"{i},{i / 10}\n" for i in range(13)))
    state = ["--state-dir", str(tmp_path / "state")]
    mv = ["--model", "m", "--version", "v1"]
    assert main(["drift", "reference", "set", *mv, "--confidence", "score", *state, str(ref)]) == 1
    err = capsys.readouterr().err
    assert "row 11: confidence column 'score' holds 1.1" in err and "2 of 13 rows outside" in err
    assert not (tmp_path / "state" / "drift").exists() or not any(
        (tmp_path / "state" / "drift").glob("m*")
    )
    assert main(["drift", "reference", "set", *mv, "--output", "score", *state, str(ref)]) == 0
