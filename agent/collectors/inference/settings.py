"""Settings of the inference collector (``--collector.inference.<option>``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.options import SettingError, option

# The pod annotations that name a target discovery cannot guess, under one prefix:
# ``<prefix>-port`` (required), ``<prefix>-path`` (the /metrics path), ``<prefix>-kind``.
DEFAULT_ANNOTATION_PREFIX = "vigil.dev/inference"


@dataclass(frozen=True)
class InferenceSettings:
    interval: float = option(
        5.0,
        "how often every target's health path is probed and its /metrics read.",
        type="duration",
        minimum=0.5,
    )
    timeout: float = option(
        0.5,
        "health probe timeout; a probe slower than this counts as a failure (reason timeout).",
        type="duration",
        minimum=0.01,
    )
    scrape_timeout: float = option(
        2.0,
        "timeout for reading a server's /metrics (connect, headers and body together).",
        type="duration",
        minimum=0.05,
    )
    max_body_bytes: int = option(
        8 * 1024 * 1024,
        "largest /metrics body read from a server; a bigger one is refused (reason too_large). "
        "A 2,000-line vLLM exposition is about 300 KB.",
        minimum=1024,
    )
    max_targets: int = option(
        64,
        "most targets probed per node; more are dropped and counted in "
        "vigil_inference_targets_dropped.",
        minimum=1,
    )
    max_models: int = option(
        32,
        "most models exported per target; more are dropped and counted in "
        "vigil_inference_models_dropped.",
        minimum=1,
    )
    workers: int = option(
        4,
        "threads that probe targets in parallel, so a few hung servers cannot delay the rest "
        "past one interval.",
        minimum=1,
        maximum=32,
    )
    stall_after: float = option(
        60.0,
        "a model with running requests and no finished request or generated token for this "
        "long is reported stalled, whatever its health path says.",
        type="duration",
        minimum=1,
    )
    deep_probe: bool = option(
        False,
        "also run each kind's deep check (SGLang /health_generate runs a one-token "
        "generation; OIP v2 asks /v2/models/<model>/ready) every interval.",
    )
    targets: tuple[str, ...] = option(
        (),
        "targets discovery cannot find, one per entry: 'URL kind=KIND [model=MODEL]', e.g. "
        "'http://10.0.0.5:8000 kind=vllm'; KIND is one of vllm, sglang, tgi, triton, oip, "
        "torchserve.",
        metavar="TARGET",
    )
    annotation_prefix: str = option(
        DEFAULT_ANNOTATION_PREFIX,
        "pod annotation prefix: <prefix>-port (required), <prefix>-path (metrics path, "
        "default the kind's), <prefix>-kind; empty disables annotations.",
    )
    node_address: str = option(
        "",
        "address at which processes in the host's network namespace are reached when the "
        "agent runs in its own (a pod without hostNetwork): the node IP, e.g. from the "
        "downward API's status.hostIP. Empty: such processes are skipped.",
    )

    def __post_init__(self) -> None:
        if self.timeout >= self.interval:
            raise SettingError(
                "timeout",
                f"{self.timeout:g}s is not shorter than the interval ({self.interval:g}s)",
            )
        # Imported here: targets imports this module for the defaults.
        from agent.collectors.inference.targets import parse_static_target

        for entry in self.targets:
            try:
                parse_static_target(entry)
            except ValueError as exc:
                raise SettingError("targets", str(exc)) from None
