"""A reference set with `vigil drift reference set` serves the very next sample of a running
agent, and a reference on disk that the agent did not load is explained, not re-prescribed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agentproc import AgentProcess, run_vigil

from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.monitor import DriftMonitor
from agent.collectors.drift.settings import DriftSettings
from agent.collectors.drift.store import ReferenceStore

pytestmark = pytest.mark.slow

QUICK = ["--no-collector.sched", "--no-collector.profile", "--no-collector.gpu"]


def post(agent: AgentProcess, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{agent.url}/v1/drift/{model}/samples",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **agent.auth()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def reference_csv(path: Path) -> Path:
    rng = np.random.default_rng(1)
    lines = ["amount,age"] + [f"{a:.4f},{b:.4f}" for a, b in rng.normal(size=(500, 2))]
    path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [{"amount": 0.1, "age": -0.3}, {"amount": 1.2, "age": 0.4}]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("state")
    rng = np.random.default_rng(0)
    ReferenceStore(d).save(
        "ranker", "v1", ReferenceSample(rng.normal(size=(300, 2)), ("amount", "age")), "test"
    )
    return d


@pytest.fixture(scope="module")
def agent(state: Path):  # type: ignore[no-untyped-def]
    # A check interval far beyond the test: only the on-demand rescan can load references.
    args = [*QUICK, "--state-dir", str(state), "--collector.drift.check-interval", "600s"]
    with AgentProcess(args) as a:
        yield a
        assert a.proc is not None and a.proc.poll() is None, a.logs()


def set_reference(state: Path, model: str, version: str, csv: Path) -> None:
    done = run_vigil(
        ["drift", "reference", "set", "--state-dir", str(state), "--model", model,
         "--version", version, str(csv)]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_new_model_serves_the_next_sample_after_set(
    agent: AgentProcess, state: Path, tmp_path: Path
) -> None:
    status, body = post(agent, "fraud", {"version": "v1", "rows": ROWS})
    assert status == 404, body
    set_reference(state, "fraud", "v1", reference_csv(tmp_path / "ref.csv"))
    status, body = post(agent, "fraud", {"version": "v1", "rows": ROWS})
    assert (status, body.get("accepted")) == (200, 2), body


def test_new_version_of_a_loaded_model_serves_at_once(
    agent: AgentProcess, state: Path, tmp_path: Path
) -> None:
    set_reference(state, "ranker", "v2", reference_csv(tmp_path / "ref.csv"))
    status, body = post(agent, "ranker", {"version": "v2", "rows": ROWS})
    assert (status, body.get("accepted")) == (200, 2), body


def test_a_reference_on_disk_but_refused_says_why_not_set_it_again(
    agent: AgentProcess, state: Path
) -> None:
    bad = ReferenceStore(state).path("broken", "v1")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"VIGIL-DRIFT-REFERENCE 1\n{not json\n")
    status, body = post(agent, "broken", {"version": "v1", "rows": ROWS})
    assert status == 404, body
    assert "on disk but not loaded" in body["error"], body
    assert str(bad) in body["error"], body


def test_made_up_names_get_the_plain_404(agent: AgentProcess) -> None:
    status, body = post(agent, "nosuchmodel", {"version": "v1", "rows": ROWS})
    assert status == 404, body
    assert "no reference for model 'nosuchmodel'" in body["error"], body


def test_check_right_after_set_finds_the_reference(
    agent: AgentProcess, state: Path, tmp_path: Path
) -> None:
    set_reference(state, "scorer", "v1", reference_csv(tmp_path / "ref.csv"))
    done = run_vigil(
        ["drift", "check", "--model", "scorer", "--agent", agent.url,
         "--token-file", str(agent.token_path()), "--json"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "scorer"


def test_a_capture_requested_with_bootstrap_starts_with_the_next_sample(
    agent: AgentProcess, state: Path
) -> None:
    done = run_vigil(
        ["drift", "reference", "set", "--state-dir", str(state), "--model", "churn",
         "--version", "v1", "--bootstrap", "2"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status, body = post(agent, "churn", {"version": "v1", "rows": ROWS})
    assert (status, body.get("accepted")) == (200, 2), body
    assert ReferenceStore(state).path("churn", "v1").exists()  # captured and stored


def test_unknown_names_cannot_make_the_agent_rescan_every_request(tmp_path: Path) -> None:
    now = [100.0]
    mon = DriftMonitor(tmp_path, DriftSettings(), clock=lambda: now[0])
    mon.sync()
    # No directory for the name: never a rescan, however many requests.
    assert not any(mon.refresh_for(f"made-up-{i}") for i in range(1000))
    # A directory whose file was refused: at most one rescan a second while unchanged.
    bad = ReferenceStore(tmp_path).path("broken", "v1")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a reference")
    assert mon.refresh_for("broken")  # changed since the last scan
    assert not any(mon.refresh_for("broken") for _ in range(1000))
    now[0] += 1.5
    assert mon.refresh_for("broken")
    assert not mon.refresh_for("broken")
    # A change is picked up at once, without waiting out the second.
    rng = np.random.default_rng(0)
    ReferenceStore(tmp_path).save(
        "broken", "v2", ReferenceSample(rng.normal(size=(50, 1)), ("x",)), "test"
    )
    assert mon.refresh_for("broken")
    assert ("broken", "v2") in mon.tracked()
