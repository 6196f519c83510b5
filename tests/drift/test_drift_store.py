"""Reference files: durable, checksummed, refused whole when damaged; the CLI around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from agentproc import run_vigil

from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.store import CorruptReference, ReferenceStore, StoreError


def sample(n: int = 300, f: int = 3, seed: int = 0) -> ReferenceSample:
    rng = np.random.default_rng(seed)
    return ReferenceSample(rng.normal(size=(n, f)), [f"f{i}" for i in range(f)])


def test_round_trip_keeps_values_and_leaves_no_temporary(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    ref = sample()
    path = store.save("m", "v1", ref, "test")
    info, loaded = store.load("m", "v1")
    assert info.rows == 300 and info.features == ("f0", "f1", "f2") and info.source == "test"
    np.testing.assert_array_equal(loaded.sorted_values, ref.sorted_values)
    assert [p.name for p in path.parent.iterdir()] == ["v1.ref"]
    assert [(m, v) for m, v, _, _ in store.files()] == [("m", "v1")]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-9], "data bytes"),  # truncated
        (lambda b: b[:-3] + bytes([b[-3] ^ 1]) + b[-2:], "checksum mismatch"),  # one bit
        (lambda b: b"garbage" + b[7:], "bad magic"),
        (lambda b: b.replace(b'"rows": 300', b'"rows": 30x'), "unreadable header"),
    ],
)
def test_damaged_file_is_refused_whole_with_the_fix(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    store = ReferenceStore(tmp_path)
    path = store.save("m", "v1", sample(), "test")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptReference, match=message) as exc:
        store.load("m", "v1")
    assert "vigil drift reference" in str(exc.value)


def test_names_that_could_escape_the_directory_are_refused(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    for bad in ("../x", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(StoreError, match="not a valid name"):
            store.save(bad, "v1", sample(), "test")
    assert not (tmp_path / "drift" / "references").exists()


def test_cli_set_list_show_check_delete(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    csv = tmp_path / "ref.csv"
    np.savetxt(
        csv, rng.normal(size=(400, 3)), delimiter=",", header="age,income,score", comments=""
    )
    shifted = tmp_path / "win.csv"
    np.savetxt(
        shifted,
        rng.normal(size=(300, 3)) + np.array([0, 0.8, 0]),
        delimiter=",",
        header="age,income,score",
        comments="",
    )
    env = {"VIGIL_STATE_DIR": str(tmp_path / "state")}
    r = run_vigil(
        ["drift", "reference", "set", "--model", "ranker", "--version", "v2", str(csv)], env=env
    )
    assert r.returncode == 0, r.stderr
    assert "400 rows x 3 features" in r.stdout
    r = run_vigil(["drift", "reference", "list"], env=env)
    assert r.returncode == 0 and "ranker" in r.stdout and "v2" in r.stdout
    r = run_vigil(["drift", "reference", "show", "--model", "ranker", "--version", "v2"], env=env)
    assert r.returncode == 0 and "checksum ok" in r.stdout and "income" in r.stdout
    r = run_vigil(["drift", "check", "--model", "ranker", "--window-file", str(shifted)], env=env)
    assert r.returncode == 3, r.stdout + r.stderr  # drift detected
    lines = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line}
    drifted = lines["FEATURE"].index("DRIFTED")
    assert lines["income"][drifted] == "yes" and lines["age"][drifted] == "no"
    r = run_vigil(["drift", "reference", "delete", "--model", "ranker", "--version", "v2"], env=env)
    assert r.returncode == 0
    r = run_vigil(["drift", "reference", "list"], env=env)
    assert "no references" in r.stdout


def test_cli_refuses_bad_input_without_touching_the_stored_reference(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = ReferenceStore(state)
    path = store.save("m", "v1", sample(), "test")
    before = path.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("f0,f1,f2\n1,2,3\n4,five,6\n")
    r = run_vigil(
        [
            "drift",
            "reference",
            "set",
            "--model",
            "m",
            "--version",
            "v1",
            str(bad),
            "--state-dir",
            str(state),
        ]
    )
    assert r.returncode == 1
    assert "line 3: 'five' is not a number" in r.stderr and "Traceback" not in r.stderr
    assert path.read_bytes() == before
    path.write_bytes(before[:-8])
    r = run_vigil(
        ["drift", "reference", "show", "--model", "m", "--version", "v1", "--state-dir", str(state)]
    )
    assert r.returncode == 1 and "is corrupt" in r.stderr and "Traceback" not in r.stderr
