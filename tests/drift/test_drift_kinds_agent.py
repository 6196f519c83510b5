"""End to end with kinds: a reference set with `vigil drift reference set --categorical
--output --confidence`, a real `vigil run`, samples over HTTP, the table of `vigil drift
check`. A wrong kind is refused whole (400 naming the column, nothing kept); no token, no
entry."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from agentproc import VIGIL, AgentProcess
from prometheus_client.parser import text_string_to_metric_families
from test_drift_agent import post, sample_value, wait_for

from agent.drift.client import DriftClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
COUNTRIES = ["DE", "FR", "US"]


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, object]]:
    return [
        {
            "amount": float(rng.normal(100 + shift, 10)),
            "country": str(rng.choice(COUNTRIES, p=[0.5, 0.3, 0.2])),
            "label": str(rng.choice(["fraud", "ok"], p=[0.1, 0.9])),
            "confidence": float(rng.beta(8, 2)),
        }
        for _ in range(n)
    ]


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIGIL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    state = tmp_path_factory.mktemp("state")
    ref = state / "reference.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows(np.random.default_rng(0), 3000)))
    done = vigil(
        "drift", "reference", "set", "--model", "fraud", "--version", "v1",
        "--categorical", "country,label", "--output", "label", "--confidence", "confidence",
        "--state-dir", str(state), str(ref),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(2 categorical)" in done.stdout
    args = [
        "--no-collector.sched", "--no-collector.profile", "--no-collector.gpu",
        "--state-dir", str(state), "--collector.drift.check-interval", "0.5s",
        "--collector.drift.window", "1000", "--collector.drift.min-samples", "100",
    ]  # fmt: skip
    with AgentProcess(args) as a:
        a.state = state  # type: ignore[attr-defined]
        yield a


def window(agent: AgentProcess) -> float | None:
    return sample_value(agent, "vigil_drift_window_samples", model="fraud", version="v1")


def test_no_token_no_entry_and_a_wrong_kind_keeps_nothing(agent: AgentProcess) -> None:
    good = rows(np.random.default_rng(1), 5)
    status, _ = post(agent, "/v1/drift/fraud/samples", {"version": "v1", "rows": good}, auth=False)
    assert status == 401
    bad = [*good[:3], {**good[3], "country": 7}, good[4]]
    status, body = post(agent, "/v1/drift/fraud/samples", {"version": "v1", "rows": bad})
    assert status == 400
    assert "row 3: feature 'country' is categorical" in body["error"]
    cols = {k: [r[k] for r in good] for k in good[0]}
    cols["amount"][2] = "100.5"
    status, body = post(agent, "/v1/drift/fraud/samples", {"version": "v1", "columns": cols})
    assert status == 400 and "feature 'amount' is numeric" in body["error"]
    status, body = post(
        agent,
        "/v1/drift/fraud/samples",
        {"version": "v1", "categorical": ["country", "colour"], "rows": good},
    )
    assert status == 400 and "column 'colour'" in body["error"]
    assert window(agent) == 0  # none of the three requests left a row behind
    assert (
        sample_value(
            agent, "vigil_drift_rejected_samples_total", model="fraud", reason="wrong_kind"
        )
        == 2
    )


def test_output_drift_and_the_check_table(agent: AgentProcess) -> None:
    rng = np.random.default_rng(2)
    batch = rows(rng, 1000)
    for r in batch:  # the inputs as in the reference; the model now flags a third as fraud
        r["label"] = "fraud" if rng.random() < 0.33 else "ok"
    for r in batch[:100]:
        r["country"] = "BR"  # and a tenth of the traffic comes from a new country
    status, body = post(agent, "/v1/drift/fraud/samples", {"version": "v1", "rows": batch})
    assert (status, body["accepted"]) == (200, 1000)
    wait_for(
        lambda: (
            sample_value(agent, "vigil_drift_output_detected", model="fraud", version="v1") == 1.0
        ),
        10,
    )
    unseen = sample_value(
        agent, "vigil_drift_unseen_category_samples", model="fraud", version="v1",
        feature="country",
    )  # fmt: skip
    assert unseen == 100
    time.sleep(0.2)
    done = vigil("drift", "check", "--model", "fraud", "--agent", agent.url,
                 "--state-dir", str(agent.state))  # type: ignore[attr-defined]  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr  # drift detected
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("FEATURE"))
    assert header.split() == [
        "FEATURE", "ROLE", "TEST", "STATISTIC", "P", "EFFECT", "DRIFTED", "SHIFT",
    ]  # fmt: skip
    label = next(line for line in lines if line.startswith("label "))
    assert "output" in label and "chi2" in label and "fraud +" in label
    country = next(line for line in lines if line.startswith("country "))
    assert "__unseen__ +10 pp" in country
    assert "output drift detected" in done.stdout
    assert sample_value(
        agent, "vigil_prediction_confidence_count", model="fraud", version="v1",
        feature="confidence",
    ) == 1000  # fmt: skip


def test_the_client_sends_outputs_next_to_their_inputs(agent: AgentProcess) -> None:
    before = sample_value(agent, "vigil_drift_samples_total", model="fraud", version="v1") or 0
    client = DriftClient(
        agent.url, "fraud", "v1", token_file=str(agent.token_path()), flush_interval=0.1
    )
    for r in rows(np.random.default_rng(3), 20):
        inputs = {k: r[k] for k in ("amount", "country")}
        assert client.record(inputs, outputs={"label": r["label"], "confidence": r["confidence"]})
    client.close()
    assert client.stats()["sent"] == 20 and client.stats()["rejected_by_agent"] == 0
    after = sample_value(agent, "vigil_drift_samples_total", model="fraud", version="v1")
    assert after == before + 20


def test_each_alert_is_explained_by_its_own_role(agent: AgentProcess) -> None:
    """Inputs and outputs all drift, on scales as far apart as IQRs and JS distances: the
    input explanation names inputs only, the output one outputs only."""
    state = agent.state  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)

    def shop(n: int, moved: bool) -> list[dict[str, object]]:
        return [
            {
                "amount": float(rng.normal(100 + (60 if moved else 0), 10)),
                "country": str(
                    rng.choice(COUNTRIES, p=[0.2, 0.3, 0.5] if moved else [0.5, 0.3, 0.2])
                ),
                "label": str(rng.choice(["fraud", "ok"], p=[0.5, 0.5] if moved else [0.1, 0.9])),
                "score": float(rng.normal(5 if moved else 0, 1)),
            }
            for _ in range(n)
        ]

    ref = state / "shop.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in shop(2000, moved=False)))
    done = vigil(
        "drift", "reference", "set", "--model", "shop", "--version", "v1",
        "--categorical", "country,label", "--output", "label,score",
        "--state-dir", str(state), str(ref),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for(lambda: window_of(agent, "shop") is not None, 10)
    status, body = post(
        agent, "/v1/drift/shop/samples", {"version": "v1", "rows": shop(1000, True)}
    )
    assert (status, body["accepted"]) == (200, 1000)
    wait_for(lambda: len(explained(agent, "shop")) == 4, 10)
    got = explained(agent, "shop")
    assert {f for f, role in got if role == "input"} == {"amount", "country"}
    assert {f for f, role in got if role != "input"} == {"label", "score"}
    assert ("score", "output") in got and ("country", "input") in got


def window_of(agent: AgentProcess, model: str) -> float | None:
    return sample_value(agent, "vigil_drift_window_samples", model=model, version="v1")


def explained(agent: AgentProcess, model: str) -> set[tuple[str, str]]:
    """(feature, role) of each vigil_drift_explanation series of the model."""
    return {
        (s.labels["feature"], s.labels["role"])
        for fam in text_string_to_metric_families(agent.metrics())
        for s in fam.samples
        if s.name == "vigil_drift_explanation" and s.labels["model"] == model
    }


def test_confidence_scores_outside_0_1_are_refused(agent: AgentProcess) -> None:
    state = agent.state  # type: ignore[attr-defined]
    ref = state / "amount-as-confidence.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows(np.random.default_rng(3), 200)))
    done = vigil(
        "drift", "reference", "set", "--model", "wrong", "--version", "v1",
        "--categorical", "country,label", "--confidence", "amount",
        "--state-dir", str(state), str(ref),
    )  # fmt: skip
    assert done.returncode == 1
    assert "confidence column 'amount' holds" in done.stderr and "[0, 1]" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((state / "drift").glob("wrong*")), "nothing stored"

    def count() -> float | None:
        return sample_value(
            agent, "vigil_prediction_confidence_count", model="fraud", version="v1",
            feature="confidence",
        )  # fmt: skip

    def refused() -> float:
        return sample_value(
            agent, "vigil_drift_rejected_samples_total", model="fraud",
            reason="confidence_out_of_range",
        ) or 0.0  # fmt: skip

    before, refused_before = count() or 0.0, refused()
    batch = rows(np.random.default_rng(4), 3)
    batch[1]["confidence"] = 7
    status, body = post(agent, "/v1/drift/fraud/samples", {"version": "v1", "rows": batch})
    assert (status, body["accepted"]) == (422, 2)  # the good rows kept
    assert "confidence column 'confidence' holds 7" in json.dumps(body)
    cols = {k: [r[k] for r in batch] for k in batch[0]}
    cols["confidence"] = [0.5, -0.1, 1.0]
    status, body = post(agent, "/v1/drift/fraud/samples", {"version": "v1", "columns": cols})
    assert (status, body["accepted"]) == (422, 2)  # the good rows kept
    assert refused() == refused_before + 2
    assert count() == before + 4
    assert sample_value(
        agent, "vigil_prediction_confidence_bucket", model="fraud", version="v1",
        feature="confidence", le="1.0",
    ) == count()  # fmt: skip  # nothing above 1: every accepted score is in a finite bucket
