"""LLM length drift from exposition fixtures: vLLM's and SGLang's prompt- and generation-
length histograms (their documented names) read by the inference collector's parser,
tested window against reference, and the reference period set from two saved pages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from agentproc import VIGIL
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from scipy.stats import chi2_contingency

from agent.collectors.drift.lengths import (
    MIN_WINDOW_REQUESTS,
    REFERENCE_REQUESTS,
    WINDOW_S,
    Counts,
    LengthDrift,
    compare_lengths,
    read_reference,
    reference_path,
    write_reference,
)
from agent.collectors.inference import kinds

ROOT = Path(__file__).resolve().parents[2]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# vLLM's request_prompt_tokens / request_generation_tokens buckets (1-2-5 series up to
# max_model_len); SGLang's default prompt_tokens_histogram buckets start the same way.
TOKENS_125 = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
TARGET = ("ns", "pod", "container", "python3", "123", "8000", "vllm")


class Server:
    """A vLLM or SGLang /metrics page, grown by observing requests."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.reg = CollectorRegistry()
        prompt, gen = {
            "vllm": ("vllm:request_prompt_tokens", "vllm:request_generation_tokens"),
            "sglang": ("sglang:prompt_tokens_histogram", "sglang:generation_tokens_histogram"),
        }[kind]
        done = "vllm:request_success" if kind == "vllm" else "sglang:num_requests"
        self.done = Counter(done, "finished", ["model_name"], registry=self.reg)
        self.prompt = Histogram(prompt, "p", ["model_name"], buckets=TOKENS_125, registry=self.reg)
        self.gen = Histogram(gen, "g", ["model_name"], buckets=TOKENS_125, registry=self.reg)
        # A model's series appear with its first request, as on the real servers.
        self.serve(np.array([100.0]), np.array([100.0]))

    def serve(self, prompts: np.ndarray, gens: np.ndarray) -> None:
        for p, g in zip(prompts, gens, strict=True):
            self.prompt.labels(MODEL).observe(float(p))
            self.gen.labels(MODEL).observe(float(g))
            self.done.labels(MODEL).inc()

    def page(self) -> str:
        return generate_latest(self.reg).decode()

    def stats(self) -> kinds.ModelStats:
        stats, _ = kinds.parse(self.kind, self.page(), max_models=8)
        return stats[MODEL]


def feed(drift: LengthDrift, server: Server, now: float) -> None:
    st = server.stats()
    for length, hist in (("prompt", st.prompt_tokens), ("generation", st.generation_tokens)):
        assert hist is not None
        drift.observe(TARGET, MODEL, length, hist.buckets, now)


def samples(drift: LengthDrift, name: str) -> dict[str, float]:
    return {
        s.labels["length"]: s.value
        for fam in drift.render()
        for s in fam.samples
        if s.name == name and s.labels["model"] == MODEL
    }


def chat(rng: np.random.Generator, n: int, long_prompts: bool = False) -> tuple[np.ndarray, ...]:
    """Chat traffic: prompts of a few hundred tokens; or pasted documents (thousands)."""
    prompts = rng.lognormal(np.log(1500 if long_prompts else 250), 0.6, size=n)
    return prompts, rng.lognormal(np.log(150), 0.7, size=n)


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_longer_prompts_show_as_prompt_drift_and_same_traffic_does_not(kind: str) -> None:
    rng = np.random.default_rng(1)
    server, drift = Server(kind), LengthDrift(None)
    t = 0.0
    feed(drift, server, t)  # the server as the agent first finds it
    for _ in range(12):  # the first 1,200 requests: the reference is taken from them
        t += 5
        server.serve(*chat(rng, 100))
        feed(drift, server, t)
    assert samples(drift, "vigil_inference_length_reference_requests")["prompt"] >= 1000
    for _ in range(10):  # same kind of traffic
        t += 5
        server.serve(*chat(rng, 100))
        feed(drift, server, t)
    assert samples(drift, "vigil_inference_length_drift_detected") == {
        "prompt": 0.0,
        "generation": 0.0,
    }
    for _ in range(int(WINDOW_S / 5) + 1):  # users start pasting documents
        t += 5
        server.serve(*chat(rng, 10, long_prompts=True))
        feed(drift, server, t)
    detected = samples(drift, "vigil_inference_length_drift_detected")
    assert detected == {"prompt": 1.0, "generation": 0.0}
    assert samples(drift, "vigil_inference_length_drift_effect_size")["prompt"] > 0.5


def test_the_test_is_chi2_contingency_on_the_bucket_counts() -> None:
    ref = Counts((10.0, 100.0, 1000.0, np.inf), np.array([300.0, 500.0, 180.0, 20.0]))
    win = Counts(ref.bounds, np.array([100.0, 160.0, 120.0, 40.0]))
    got = compare_lengths(ref, win)
    want = chi2_contingency(np.vstack([ref.counts, win.counts]))
    assert got.pvalue == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
    with pytest.raises(ValueError, match="different buckets"):
        compare_lengths(ref, Counts((10.0, np.inf), np.array([1.0, 1.0])))


def test_a_server_restart_starts_the_window_over_and_keeps_the_reference() -> None:
    rng = np.random.default_rng(2)
    server, drift = Server("vllm"), LengthDrift(None)
    feed(drift, server, 0.0)
    server.serve(*chat(rng, REFERENCE_REQUESTS))
    feed(drift, server, 5.0)
    server.serve(*chat(rng, MIN_WINDOW_REQUESTS))
    feed(drift, server, 10.0)
    assert "prompt" in samples(drift, "vigil_inference_length_drift_p_value")
    restarted = Server("vllm")  # counters back at zero
    restarted.serve(*chat(rng, 5))
    feed(drift, restarted, 15.0)
    assert samples(drift, "vigil_inference_length_drift_p_value") == {}  # no window yet
    assert samples(drift, "vigil_inference_length_reference_requests")["prompt"] >= 1000


def test_reference_period_set_from_two_saved_pages_by_the_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    server = Server("vllm")
    server.serve(*chat(rng, 49, long_prompts=True))  # before the period: not in it
    before = tmp_path / "before.txt"
    before.write_text(server.page())
    server.serve(*chat(rng, 399))
    after = tmp_path / "after.txt"
    after.write_text(server.page())
    state = tmp_path / "state"
    done = subprocess.run(
        [*VIGIL, "drift", "lengths", "set", "--model", MODEL,
         "--kind", "vllm", "--before", str(before), str(after), "--state-dir", str(state)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "prompt 399 requests" in done.stdout
    (path,) = (state / "drift" / "lengths").iterdir()
    refs = read_reference(path.read_bytes())
    assert refs["prompt"].total == 399 and refs["prompt"].bounds[-1] == np.inf
    # The agent serves it at once, with no capture: the window is tested against it.
    drift = LengthDrift(state)
    feed(drift, server, 0.0)
    assert samples(drift, "vigil_inference_length_reference_requests")["prompt"] == 399
    server.serve(*chat(rng, 200, long_prompts=True))
    feed(drift, server, 5.0)
    assert samples(drift, "vigil_inference_length_drift_detected")["prompt"] == 1.0
    # A page without the model names it and stores nothing.
    bad = subprocess.run(
        [*VIGIL, "drift", "lengths", "set", "--model", "other",
         "--kind", "vllm", str(after), "--state-dir", str(tmp_path / "s2")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "no series of model 'other'" in bad.stderr
    assert not (tmp_path / "s2").exists()


def test_each_model_name_has_its_own_stored_reference(tmp_path: Path) -> None:
    """ "org/name" and "org_name" are two models: the reference set for one never serves
    the other (the file name is the model name percent-encoded, not flattened)."""
    names = [
        MODEL, MODEL.replace("/", "_"), MODEL.replace("/", "%2F"), "a~b", "", ".", "..",
        "x" * 300, "x" * 299 + "y", "x" * 183 + "~" + "0" * 16,
    ]  # fmt: skip
    paths = [reference_path(tmp_path, n) for n in names]
    assert len(set(paths)) == len(names)
    for path in paths:
        assert path.parent == tmp_path / "drift" / "lengths" and len(path.name.encode()) <= 255
    rng = np.random.default_rng(4)
    server = Server("vllm")
    server.serve(*chat(rng, 299))
    st = server.stats()
    assert st.prompt_tokens is not None and st.generation_tokens is not None
    refs = {
        "prompt": Counts.from_cumulative(st.prompt_tokens.buckets),
        "generation": Counts.from_cumulative(st.generation_tokens.buckets),
    }
    twin = reference_path(tmp_path, MODEL.replace("/", "_"))
    twin.parent.mkdir(parents=True)
    twin.write_bytes(write_reference(refs, "the other model's"))
    drift = LengthDrift(tmp_path)
    feed(drift, server, 0.0)
    assert samples(drift, "vigil_inference_length_reference_requests")["prompt"] == 0
    reference_path(tmp_path, MODEL).write_bytes(write_reference(refs, "this model's"))
    feed(drift, server, 1.0)
    assert samples(drift, "vigil_inference_length_reference_requests")["prompt"] == 300
