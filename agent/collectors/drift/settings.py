"""Settings of the drift collector (``--collector.drift.<option>``); the monitor, the
ingest API and the doctor read them from this one dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from agent.collectors.drift.ks import CORRECTIONS
from agent.collectors.drift.store import MAX_FEATURES
from agent.options import SettingError, option

# Largest capture: a capture is held in memory (rows x features x 8 bytes) until it is
# complete, and KS gains little past a million rows (its resolution is ~1/sqrt(n)), so a
# larger N is a typo or a memory hazard rather than a better reference. The drift CLI's
# --bootstrap takes the same bound.
MAX_BOOTSTRAP_ROWS = 1_000_000


@dataclass(frozen=True)
class DriftSettings:
    window: int = option(5000, "samples per model version in the sliding window", minimum=2)
    window_seconds: float = option(
        0.0,
        "also drop samples older than this from the window (0: count only)",
        type="duration",
        minimum=0,
    )
    check_interval: float = option(
        30.0, "how often each window is tested", type="duration", minimum=0.05
    )
    # Bounds checked (and nan/inf refused) by the config layer; exactly 1.0 is refused by
    # __post_init__ below, so a bad alpha stops `vigil run` with exit status 2 either way.
    alpha: float = option(
        0.05,
        "significance level of the drift decision",
        minimum=1e-12,
        maximum=1.0,
    )
    correction: str = option(
        "bonferroni",
        "multiple-testing correction across features",
        choices=CORRECTIONS,
    )
    min_samples: int = option(
        100,
        "no decision (no vigil_drift_detected) while a window holds fewer samples",
        minimum=1,
    )
    bootstrap: int = option(
        0,
        "capture the first N samples of a model version with no reference as its reference "
        "(0: refuse such samples)",
        minimum=0,
        maximum=MAX_BOOTSTRAP_ROWS,  # a capture is held in memory until complete
    )
    # The bounds below cap what senders of samples can make the agent hold; see the
    # "Bounds" section of docs/drift.md. Worst case for bootstrap: bootstrap-max-models x
    # (bootstrap + window) x bootstrap-max-features x 8 bytes (16 x 10,000 x 128 x 8 =
    # 164 MB at bootstrap 5,000), inside the DaemonSet's 512 MiB with the agent's own ~200.
    bootstrap_max_models: int = option(
        16,
        "most model versions that may get a reference captured by bootstrap (stored plus "
        "in progress); samples for further ones are refused (reason bootstrap_limit)",
        minimum=1,
    )
    bootstrap_max_features: int = option(
        128,
        "most features a reference captured by bootstrap may have; wider rows are refused "
        "(reason too_many_features)",
        minimum=1,
        maximum=MAX_FEATURES,
    )
    max_references: int = option(
        64,
        "most references held in memory; further files are not loaded and show in "
        "vigil_drift_reference_load_errors",
        minimum=1,
    )
    # Rendering is per feature (11 series each), so a wide reference would build tens of
    # thousands of series on every scrape only for the collector's max-series cap to trim
    # them; past this many the rest are neither built nor exported. The default covers the
    # maximum node of docs/scale.md (32 features) with room.
    max_exported_features: int = option(
        64,
        "most features per model version whose per-feature series are exported (the first "
        "in the reference's order); the test and the decisions still use every feature, "
        "the rest show in vigil_drift_features_not_exported",
        minimum=1,
        maximum=MAX_FEATURES,
    )
    max_rows: int = option(
        100_000,
        "most rows one ingest request may carry; larger ones are refused whole "
        "(reason too_many_rows)",
        minimum=1,
    )
    tail_file: str = option("", "JSON-lines file of logged requests to follow")

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise SettingError("alpha", f"{self.alpha:g} is not a probability in (0, 1)")
