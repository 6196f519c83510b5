"""Inference-service signals: health, request outcomes, latency, queue and KV cache.

Measures, per inference server (vLLM, SGLang, TGI, Triton, OIP v2 servers such as KServe
ModelServer and MLServer, TorchServe): whether its health path answers within the probe
timeout, and from its own /metrics, per model, requests by outcome, latency and time to
first token, queue, running requests, KV cache use and generated tokens, in one
vocabulary (``vigil_inference_*``; the mapping per kind is in docs/inference.md); and
whether a model is stalled (requests running, no progress), whatever its health says.

Source: the TCP ports watched processes listen on (``/proc/<pid>/fd`` socket inodes
against ``/proc/<pid>/net/tcp{,6}``), reached at loopback in the agent's own network
namespace and at the pod IP in a pod's (see ``targets``); pods annotated
``vigil.dev/inference-port`` (``-path``, ``-kind``); and configured URLs. Cost: per target
and interval (5 s) one health GET and one /metrics GET and parse, in a small thread pool;
each request has a deadline (0.5 s probe, 2 s scrape) and the body a size cap. Privilege:
root (or CAP_SYS_PTRACE) to read other users' ``/proc/<pid>/fd``; network reach to the
pods.

Modules: ``targets`` finds the endpoints; ``probe`` does the bounded HTTP GETs; ``kinds``
knows each server's words (pure); ``totals`` keeps restart-safe counters, ``stall`` the
progress memory (both pure); ``state`` holds each target between rounds; ``render`` turns
a snapshot into families; ``collector`` runs the rounds.
"""

from __future__ import annotations

from agent.collectors.drift import lengths
from agent.collectors.inference.collector import factory
from agent.collectors.inference.doctor import doctor
from agent.collectors.inference.metrics import METRICS
from agent.collectors.inference.settings import InferenceSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="inference",
    help="inference server health, request outcomes, latency, queue and KV cache",
    settings=InferenceSettings,
    factory=factory,
    doctor=doctor,
    metrics=(*METRICS, *lengths.METRICS),
)
