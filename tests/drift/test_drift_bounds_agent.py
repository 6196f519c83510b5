"""A real `vigil run` under the drift attacks of the threat model: bootstrap flooding,
integers too long for int(), a full state directory, corrupt references."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agentproc import AgentProcess, run_vigil
from prometheus_client.parser import text_string_to_metric_families

from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.parse import MAX_CLIENT_DROPPED
from agent.collectors.drift.store import ReferenceStore
from agent.drift.client import DriftClient

pytestmark = pytest.mark.slow

QUICK = ["--no-collector.sched", "--no-collector.profile", "--no-collector.gpu"]
HUGE = "9" * 5000  # past Python's 4,300-digit int-string limit


def post(
    agent: AgentProcess, path: str, data: bytes, ctype: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": ctype, **agent.auth()}
    req = urllib.request.Request(agent.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post_rows(agent: AgentProcess, model: str, rows: list[dict[str, float]]) -> tuple[int, Any]:
    return post(
        agent, f"/v1/drift/{model}/samples", json.dumps({"version": "v1", "rows": rows}).encode()
    )


def samples(agent: AgentProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(agent.metrics()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def rejected(agent: AgentProcess, model: str, reason: str) -> float:
    key = (("model", model), ("reason", reason))
    return samples(agent, "vigil_drift_rejected_samples_total").get(key, 0.0)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ref_files(state: Path) -> list[Path]:
    return sorted((state / "drift" / "references").glob("*/*.ref"))


def test_bootstrap_flood_is_bounded_in_files_series_and_memory(tmp_path: Path) -> None:
    """100 made-up model names and one of 10,000 features, with bootstrap on."""
    args = [*QUICK, "--state-dir", str(tmp_path), "--collector.drift.bootstrap", "50"]
    args += ["--collector.drift.check-interval", "1s"]
    with AgentProcess(args) as agent:
        assert agent.proc is not None
        lines_before = len(agent.metrics().splitlines())
        wide = [{f"f{j}": float(i + j) for j in range(10_000)} for i in range(20)]
        status, body = post_rows(agent, "wide", wide)
        assert status == 400 and "bootstrap-max-features" in body["error"]
        answers = []
        for i in range(100):
            rows = [{"a": float(r), "b": float(r * i)} for r in range(50)]
            answers.append(post_rows(agent, f"model-{i:03d}", rows))
        assert [s for s, _ in answers[:16]] == [200] * 16  # captured and stored
        assert {s for s, _ in answers[16:]} == {403}
        assert "bootstrap-max-models" in answers[16][1]["error"]
        # Samples for the captured ones go to their windows; checks run on them.
        assert post_rows(agent, "model-000", [{"a": 1.0, "b": 2.0}] * 200)[0] == 200

        assert len(ref_files(tmp_path)) == 16
        text = agent.metrics()
        # 16 models x 2 features x 3 per-feature families, plus per-model ones: hundreds
        # of lines, not the 60,000 of one series per made-up name and feature.
        assert len(text.splitlines()) < lines_before + 600, len(text.splitlines())
        models = {
            dict(k)["model"]
            for name in ("vigil_drift_rejected_samples_total", "vigil_drift_window_samples")
            for k in samples(agent, name)
        }
        assert len(models) <= 17 and "model-099" not in models and "wide" not in models
        assert rejected(agent, "(unknown)", "bootstrap_limit") == 84
        assert rejected(agent, "(unknown)", "too_many_features") == 1
        assert rss_bytes(agent.proc.pid) < 400 * 1024 * 1024


@pytest.fixture
def ranker_state(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    ReferenceStore(tmp_path).save(
        "ranker", "v1", ReferenceSample(rng.normal(size=(500, 2)), ("a", "b")), "test"
    )
    return tmp_path


def test_integers_too_long_and_client_drops_too_large_are_4xx(ranker_state: Path) -> None:
    args = [*QUICK, "--state-dir", str(ranker_state), "--collector.drift.max-rows", "100"]
    with AgentProcess(args) as agent:
        url = "/v1/drift/ranker/samples"

        def window() -> float:
            key = (("model", "ranker"), ("version", "v1"))
            return samples(agent, "vigil_drift_window_samples").get(key, 0.0)

        doc = '{"rows": [{"a": 1, "b": 2}, {"a": ' + HUGE + ', "b": 1}, {"a": 3, "b": 4}]}'
        status, body = post(agent, url, doc.encode())
        assert status == 400 and "row 1: feature 'a'" in body["error"], body
        assert window() == 0  # the document was refused whole, as the answer says

        lines = b'{"a": 1, "b": 2}\n{"a": ' + HUGE.encode() + b', "b": 1}\n{"a": 3, "b": 4}\n'
        status, body = post(agent, url, lines, ctype="application/x-ndjson")
        assert status == 422 and body["accepted"] == 2, body
        assert body["rejected"] == {"malformed": 1} and body["errors"][0].startswith("line 2:")
        assert window() == 2  # the good rows were kept
        # One for the refused document (a whole-body refusal counts one), one for the line.
        assert rejected(agent, "ranker", "malformed") == 2

        status, body = post(
            agent, url, b'{"rows": [], "client_dropped": ' + str(10**29).encode() + b"}"
        )
        assert status == 400 and "client_dropped" in body["error"]
        assert rejected(agent, "ranker", "client_dropped") == 0

        status, body = post_rows(agent, "ranker", [{"a": 1.0, "b": 2.0}] * 101)
        assert status == 400 and "at most 100" in body["error"]
        assert window() == 2 and rejected(agent, "ranker", "too_many_rows") == 1
        assert post_rows(agent, "ranker", [{"a": 1.0, "b": 2.0}] * 100)[0] == 200


@pytest.fixture
def tiny_state(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as the state directory, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (run `make test` as root, as CI does)")
    mnt = tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "vigil-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> Path:
    """Writes a file until the filesystem is full (ENOSPC); returns its path."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_bootstrap_on_a_full_disk_is_a_507_and_the_resend_completes_it(tiny_state: Path) -> None:
    args = [*QUICK, "--state-dir", str(tiny_state), "--collector.drift.bootstrap", "300"]
    with AgentProcess(args) as agent:
        token = agent.auth()  # read before the disk fills (the agent wrote it at start)
        agent.auth = lambda: token  # type: ignore[method-assign]
        first = [{"a": float(i), "b": float(-i)} for i in range(200)]
        assert post_rows(agent, "cap", first)[0] == 200  # held in memory: no disk yet
        filler = fill(tiny_state)
        last = [{"a": float(i), "b": float(-i)} for i in range(200, 400)]
        status, body = post_rows(agent, "cap", last)
        target = tiny_state / "drift" / "references" / "cap" / "v1.ref"
        assert status == 507, body
        assert str(target) in body["error"] and "ENOSPC" in body["error"]
        assert "accepted" not in body
        assert rejected(agent, "(unknown)", "store_failed") == 1
        assert not target.exists()
        assert not [p for p in tiny_state.rglob("*.tmp")]  # no half-written file left
        filler.unlink()
        status, body = post_rows(agent, "cap", last)  # the same batch, once there is room
        assert status == 200 and body["accepted"] == 200, body
        info, ref = ReferenceStore(tiny_state).load("cap", "v1")
        assert info.rows == 300  # 200 + the first 100 of the resent batch, none twice
        assert ref.sorted_values[0].tolist() == [float(i) for i in range(300)]


def test_corrupt_and_surplus_references_show_in_metrics_and_doctor(tmp_path: Path) -> None:
    store = ReferenceStore(tmp_path)
    rng = np.random.default_rng(1)
    for model in ("x1", "x2", "x3"):  # after the broken ones in name order
        store.save(model, "v1", ReferenceSample(rng.normal(size=(50, 2)), ("a", "b")), "test")
    flipped = store.save("credit", "v2", ReferenceSample(rng.normal(size=(50, 2)), ("a", "b")), "t")
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0x01
    flipped.write_bytes(bytes(data))
    junk = store.refs / "fraud" / "v3.ref"
    junk.parent.mkdir()
    junk.write_bytes(b"not a reference")
    limit = ["--collector.drift.max-references", "2"]
    args = [*QUICK, "--state-dir", str(tmp_path), "--collector.drift.check-interval", "1s", *limit]
    with AgentProcess(args) as agent:
        errors = samples(agent, "vigil_drift_reference_load_errors")
        assert errors == {
            (("model", "credit"), ("version", "v2")): 1.0,
            (("model", "fraud"), ("version", "v3")): 1.0,
            # x3/v1 is refused too (over max-references), but named series stop at
            # max-references (2 here): the rest are counted under one series.
            (("model", "(unknown)"), ("version", "(unknown)")): 1.0,
        }
        status, text = agent.get("/v1/drift", headers=agent.auth())
        assert status == 200 and str(junk) in json.loads(text)["load_errors"]

        doctor = run_vigil(["doctor", "--state-dir", str(tmp_path), "--collector.drift", *limit])
        out = doctor.stdout
        assert doctor.returncode == 1, out
        line = next(x for x in out.splitlines() if "references:" in x)
        assert "FAIL" in line and "3 refused" in line
        assert str(flipped) in out and str(junk) in out and "checksum mismatch" in out
        assert "vigil drift reference delete --model credit --version v2" in out
        assert "drift reference refused" not in doctor.stderr  # the check says it once

        junk.unlink()
        store.save("credit", "v2", ReferenceSample(rng.normal(size=(50, 2)), ("a", "b")), "t")
        store.delete("x1", "v1")  # room for credit and x3
        store.delete("x2", "v1")

        def cleared() -> bool:
            return not samples(agent, "vigil_drift_reference_load_errors")

        for _ in range(300):  # the next check picks the changes up (every second)
            if cleared():
                break
            time.sleep(0.1)
        assert cleared(), agent.logs()


def test_client_reports_a_huge_drop_count_over_several_batches(ranker_state: Path) -> None:
    with AgentProcess([*QUICK, "--state-dir", str(ranker_state)]) as agent:
        client = DriftClient(agent.url, "ranker", "v1", token=agent.token(), batch_size=1)
        client._unreported = 2 * MAX_CLIENT_DROPPED + 5  # as after a long outage
        for i in range(3):
            client.record({"a": float(i), "b": 0.0})
        client.close()
        assert client.stats()["sent"] == 3, client.last_error
        assert rejected(agent, "ranker", "client_dropped") == 2 * MAX_CLIENT_DROPPED + 5
