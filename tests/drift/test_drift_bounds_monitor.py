"""The drift monitor's bounds: what bootstrap may create, how many references are held,
which model names become labels, and a capture that cannot be stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.collectors.drift.collector import render
from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.monitor import DriftMonitor, IngestError
from agent.collectors.drift.parse import parse_rows
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.store import ReferenceStore


def feed(mon: DriftMonitor, model: str, n: int, width: int = 2) -> int:
    version, features = mon.resolve(model, "v1")
    rows = [{f"f{j}": float(i + j) for j in range(width)} for i in range(n)]
    return mon.accept(model, version, parse_rows(rows, features, mon.bounds))


def save(state: Path, model: str, version: str = "v1") -> Path:
    ref = ReferenceSample(np.arange(40.0).reshape(20, 2), ("a", "b"))
    return ReferenceStore(state).save(model, version, ref, "test")


def series(mon: DriftMonitor, name: str) -> dict[tuple[str, ...], float]:
    out = {}
    for fam in render(mon):
        for s in fam.samples:
            if s.name == name:
                out[tuple(s.labels.values())] = s.value
    return out


def test_bootstrap_creates_at_most_max_models_and_refuses_the_rest(tmp_path: Path) -> None:
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=5, bootstrap_max_models=3))
    for i in range(3):
        assert feed(mon, f"m{i}", 5) == 5
    with pytest.raises(IngestError) as exc:
        feed(mon, "m3", 5)
    assert exc.value.status == 403 and exc.value.reason == "bootstrap_limit"
    assert "bootstrap-max-models" in exc.value.message
    assert len(list(ReferenceStore(tmp_path).files())) == 3
    # A fresh agent counts the captured references on disk: the bound survives restarts.
    mon2 = DriftMonitor(tmp_path, DriftSettings(bootstrap=5, bootstrap_max_models=3))
    mon2.sync()
    with pytest.raises(IngestError, match="bootstrap-max-models"):
        mon2.resolve("m9", "v1")
    # References an operator set do not use up bootstrap's allowance.
    mon3 = DriftMonitor(tmp_path / "other", DriftSettings(bootstrap=5, bootstrap_max_models=1))
    save(tmp_path / "other", "set-by-hand")
    mon3.sync()
    assert feed(mon3, "m0", 5) == 5


def test_a_refused_or_empty_batch_holds_no_capture_slot(tmp_path: Path) -> None:
    mon = DriftMonitor(
        tmp_path,
        DriftSettings(bootstrap=5, bootstrap_max_models=1, bootstrap_max_features=4),
    )
    version, features = mon.resolve("wide", "v1")
    with pytest.raises(Exception, match="at most 4"):
        parse_rows([{f"f{j}": 1.0 for j in range(10)}], features, mon.bounds)
    version, features = mon.resolve("junk", "v1")
    assert mon.accept("junk", version, parse_rows([{"a": "x"}], features, mon.bounds)) == 0
    assert not mon._captures
    assert feed(mon, "good", 5) == 5  # the one slot was still free


def test_bootstrap_stops_at_max_references(tmp_path: Path) -> None:
    for m in ("a", "b"):
        save(tmp_path, m)
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=5, max_references=3))
    mon.sync()
    assert feed(mon, "c", 2) == 2  # a capture in progress holds the third place
    with pytest.raises(IngestError) as exc:
        feed(mon, "d", 2)
    assert exc.value.reason == "bootstrap_limit" and "max-references" in exc.value.message


def test_references_beyond_max_references_are_refused_visibly(tmp_path: Path) -> None:
    for m in ("a", "b", "c", "d"):
        save(tmp_path, m)
    mon = DriftMonitor(tmp_path, DriftSettings(max_references=2))
    mon.sync()
    assert sorted(mon.tracked()) == [("a", "v1"), ("b", "v1")]
    assert sorted(mon.refused) == [("c", "v1"), ("d", "v1")]
    assert all(e.over_limit and "max-references" in e.message for e in mon.refused.values())
    assert series(mon, "vigil_drift_reference_load_errors") == {
        ("c", "v1"): 1.0,
        ("d", "v1"): 1.0,
    }
    # Deleting a loaded one makes room: the next file in name order is loaded.
    ReferenceStore(tmp_path).delete("a", "v1")
    mon.sync()
    assert sorted(mon.tracked()) == [("b", "v1"), ("c", "v1")]
    assert list(mon.refused) == [("d", "v1")]
    # A loaded reference keeps its place even when a name earlier in order appears.
    save(tmp_path, "0first")
    mon.sync()
    assert ("0first", "v1") in mon.refused and ("b", "v1") in mon.tracked()


def test_corrupt_reference_shows_per_model_and_clears_when_fixed(tmp_path: Path) -> None:
    save(tmp_path, "good")
    bad = save(tmp_path, "fraud", "v3")
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the values: only the checksum can tell
    bad.write_bytes(bytes(data))
    mon = DriftMonitor(tmp_path, DriftSettings())
    mon.sync()
    assert series(mon, "vigil_drift_reference_load_errors") == {("fraud", "v3"): 1.0}
    assert "checksum mismatch" in mon.load_errors[str(bad)]
    save(tmp_path, "fraud", "v3")
    mon.sync()
    assert series(mon, "vigil_drift_reference_load_errors") == {}
    assert ("fraud", "v3") in mon.tracked()


def test_counter_labels_never_carry_a_name_without_a_loaded_reference(tmp_path: Path) -> None:
    save(tmp_path, "known")
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=3, bootstrap_max_models=2))
    mon.sync()
    for i in range(50):
        try:
            feed(mon, f"attacker-{i}", 2)
        except IngestError as exc:
            mon.count_rejected(f"attacker-{i}", exc.reason)
        mon.count_rejected(f"attacker-{i}", "unauthorized")
    mon.count_rejected("known", "unauthorized")
    models = {labels[0] for labels in series(mon, "vigil_drift_rejected_samples_total")}
    assert models == {"(unknown)", "known"}


def test_a_capture_that_cannot_be_stored_is_a_507_and_nothing_is_lost(tmp_path: Path) -> None:
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=4))
    refs = ReferenceStore(tmp_path).refs
    refs.parent.mkdir(parents=True)
    refs.write_text("")  # a file where the directory must go: every save fails
    assert feed(mon, "m", 3) == 3
    with pytest.raises(IngestError) as exc:
        feed(mon, "m", 2)  # completes the capture: storing it fails
    assert exc.value.status == 507 and exc.value.reason == "store_failed"
    assert str(refs / "m" / "v1.ref") in exc.value.message
    assert "(ENOTDIR)" in exc.value.message or "(EEXIST)" in exc.value.message
    assert ("m", "v1") not in mon.tracked()
    refs.unlink()
    # The same batch, resent, completes the capture with exactly 3 + 1 rows of it.
    assert feed(mon, "m", 2) == 2
    info, _ = ReferenceStore(tmp_path).load("m", "v1")
    assert info.rows == 4
    t = mon.tracked()[("m", "v1")]
    assert len(t.window) == 1  # the one row past the capture went to the window


def test_a_capture_refuses_feature_names_it_could_not_store(tmp_path: Path) -> None:
    mon = DriftMonitor(tmp_path, DriftSettings(bootstrap=3))
    version, features = mon.resolve("m", "v1")
    parsed = parse_rows([{"x" * 300: 1.0}, {"x" * 300: 2.0}], features, mon.bounds)
    assert mon.accept("m", version, parsed) == 0
    assert parsed.rejected == {"malformed": 2} and "printable characters" in parsed.errors[0]
    assert not mon._captures  # no slot taken
