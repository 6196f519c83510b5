"""Bad input to the drift CLI, ingest, capture and tail: one clear line, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.collectors.drift import monitor as monitor_mod
from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.monitor import (
    MAX_BOOTSTRAP_ROWS,
    MAX_PENDING_BOOTSTRAPS,
    DriftMonitor,
    IngestError,
)
from agent.collectors.drift.parse import ParseError, decode_json, parse_ndjson, parse_rows
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.store import ReferenceStore, StoreError
from agent.collectors.drift.tail import Tailer


def vigil(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["drift", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_unwritable_state_dir_is_a_one_line_store_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the state directory should be
    bad = str(blocker / "state")
    mv = ("--model", "m", "--version", "v1", "--state-dir", bad)
    csv = tmp_path / "r.csv"
    csv.write_text("a\n1\n2\n3\n")
    for args in (
        ("reference", "set", *mv, "--bootstrap", "5"),
        ("reference", "set", *mv, str(csv)),
    ):
        rc, _, err = vigil(capsys, *args)
        assert rc == 1 and "cannot write" in err and "unexpected" not in err, err
        assert str(blocker) in err
    with pytest.raises(StoreError, match=r"cannot write .*Not a directory"):
        ReferenceStore(blocker).request_bootstrap("m", "v1", 5)
    rc, _, err = vigil(capsys, "reference", "delete", *mv)
    assert rc == 1 and "no reference" in err and "unexpected" not in err


def test_check_validates_names_and_agent_url(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["drift", "check", "--model", "a b"])
    assert exc.value.code == 2 and "not a valid name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["drift", "check", "--model", "a", "--version", "../x"])
    assert exc.value.code == 2
    capsys.readouterr()
    for agent in ("foo", "file:///etc/passwd", "http://"):
        rc, _, err = vigil(capsys, "check", "--model", "a", "--agent", agent)
        assert rc == 2 and "http:// or https:// URL" in err, err


@pytest.mark.parametrize("alpha", ["5", "nan", "inf", "0", "1", "x"])
def test_check_alpha_must_be_a_probability(alpha: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["drift", "check", "--model", "a", "--window-file", "w.csv", "--alpha", alpha])
    assert exc.value.code == 2 and "--alpha" in capsys.readouterr().err


@pytest.mark.parametrize("alpha", ["5", "nan"])
def test_run_alpha_out_of_range_is_a_usage_error(
    alpha: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--collector.drift.alpha", alpha]) == 2
    assert "collector.drift.alpha" in capsys.readouterr().err


def test_show_median_and_list_of_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ReferenceStore(tmp_path)
    store.save("m", "v1", ReferenceSample(np.array([[1.0], [2.0], [3.0], [10.0]]), ["a"]), "t")
    store.request_bootstrap("m", "v2", 500)
    mv = ("--model", "m", "--version", "v1", "--state-dir", str(tmp_path))
    rc, out, _ = vigil(capsys, "reference", "show", *mv)
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("a "))
    assert line.split() == ["a", "numeric", "input", "1", "2.5", "10"]
    rc, out, _ = vigil(capsys, "reference", "list", "--state-dir", str(tmp_path))
    assert rc == 0 and "target 500" in out and "0/500" not in out


def test_bootstrap_n_is_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        n = str(MAX_BOOTSTRAP_ROWS + 1)
        main(["drift", "reference", "set", "--model", "m", "--version", "v", "--bootstrap", n])
    assert exc.value.code == 2 and "1,000,000" in capsys.readouterr().err


def test_file_requested_captures_are_capped_and_count(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    for i in range(MAX_PENDING_BOOTSTRAPS + 3):
        store.request_bootstrap("m", f"v{i:02d}", 10)
    store.request_bootstrap("big", "v1", MAX_BOOTSTRAP_ROWS + 1)  # hand-written, too large
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=10))
    mon.sync()
    assert len(mon._captures) == MAX_PENDING_BOOTSTRAPS
    assert ("big", "v1") not in mon._captures
    with pytest.raises(IngestError) as exc:
        mon.resolve("other", "v1")
    assert exc.value.status == 429


def test_racing_capture_batches_with_other_features_are_refused(tmp_path: Path) -> None:
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=4))
    # Both batches resolve before either fixes the capture's features.
    v1, f1 = mon.resolve("m", "v1")
    v2, f2 = mon.resolve("m", "v1")
    assert f1 is None and f2 is None
    a = parse_rows([{"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.5}], f1)
    b = parse_rows([{"x": 1.0}, {"x": 2.0}], f2)
    assert mon.accept("m", v1, a) == 2
    assert mon.accept("m", v2, b) == 0
    assert b.rejected == {"feature_mismatch": 2} and "different ones" in b.errors[0]
    # "m" has no loaded reference yet: its counts go under the one bounded label.
    assert mon.rejected[("(unknown)", "feature_mismatch")] == 2
    c = parse_rows([{"a": 3.0, "b": 4.0}, {"a": 5.0, "b": 6.0}], ("a", "b"))
    assert mon.accept("m", "v1", c) == 2  # the capture survived and completes
    assert ("m", "v1") in mon.tracked()


def test_invalid_version_is_400_and_idle_captures_expire(tmp_path: Path) -> None:
    now = [1000.0]
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=10), clock=lambda: now[0])
    for bad in ("../x", "a b", "x" * 200, ".hidden"):
        with pytest.raises(IngestError) as exc:
            mon.resolve("m", bad)
        assert exc.value.status == 400 and "not a valid name" in exc.value.message
    assert not mon._captures
    for i in range(MAX_PENDING_BOOTSTRAPS):
        version, features = mon.resolve("m", f"v{i}")
        mon.accept("m", version, parse_rows([{"a": 1.0}], features))
    with pytest.raises(IngestError):
        mon.resolve("m", "late")
    now[0] += monitor_mod.CAPTURE_IDLE_S + 1
    assert mon.resolve("m", "late") == ("late", None)  # the idle ones made room
    assert not mon._captures
    mon.accept("m", "late", parse_rows([{"a": 1.0}], None))
    mon.sync()
    assert list(mon._captures) == [("m", "late")]


def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ParseError, match="nested too deeply"):
        decode_json(deep)
    parsed = parse_ndjson([deep, b'{"a": 1}'], ("a",))
    assert parsed.rejected == {"malformed": 1} and len(parsed.values) == 1


def test_tail_drops_a_line_without_newline_past_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.collectors.drift.tail.MAX_READ", 64)
    store = ReferenceStore(tmp_path / "state")
    store.save("m", "v1", ReferenceSample(np.arange(20.0).reshape(-1, 1), ["a"]), "t")
    mon = DriftMonitor(tmp_path / "state", DriftSettings())
    mon.sync()
    log = tmp_path / "req.jsonl"
    log.write_bytes(b"")
    tail = Tailer(str(log), mon)
    tail.poll()
    good = json.dumps({"model": "m", "features": {"a": 1.0}}).encode() + b"\n"
    with open(log, "ab") as fh:
        fh.write(b"x" * 200)
    for _ in range(4):
        tail.poll()
    assert len(tail._partial) <= 64 and mon.rejected[("(unknown)", "malformed")] == 1
    with open(log, "ab") as fh:
        fh.write(b"x" * 30 + b"\n" + good)
    for _ in range(4):
        tail.poll()
    assert mon.tracked()[("m", "v1")].samples_total == 1
    assert mon.rejected[("(unknown)", "malformed")] == 1  # the long line counted once


def test_features_only_for_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("a\n1\n2\n")
    mv = ("--model", "m", "--version", "v", "--state-dir", str(tmp_path))
    rc, _, err = vigil(capsys, "reference", "set", *mv, str(csv), "--features", "x")
    assert rc == 2 and "--features applies only to .npy" in err
    assert not (tmp_path / "drift").exists()
