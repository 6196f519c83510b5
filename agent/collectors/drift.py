"""Input drift: per model version, a two-sample KS test of the live window against the
stored reference, every feature at once.

Measured: for each model version with a reference under ``--state-dir``, the last
``window`` samples received on ``POST /v1/drift/<model>/samples`` (or tailed from
``tail-file``) are compared, every ``check-interval``, with the reference; per feature the
KS statistic D and its p-value, per model version the decision after a multiple-testing
correction (Bonferroni or Benjamini-Hochberg at ``alpha``).

Cost: a check sorts the window and locates it in the presorted reference: about 15 ms
for 5,000 x 50 against 100,000 x 50 on one core, in a background thread; a scrape only
reads the latest results. Memory: the references plus window x features x 8 bytes per
model version. Privilege: none; the state directory must be writable for bootstrapped
references.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.auth import INGEST_TOKEN_NAME
from agent.config import default_state_dir
from agent.drift.ingest import DriftApi
from agent.drift.ks import CORRECTIONS
from agent.drift.monitor import (
    MAX_BOOTSTRAP_ROWS,
    UNKNOWN_MODEL_LABEL,
    DriftMonitor,
    Settings,
)
from agent.drift.store import MAX_FEATURES
from agent.drift.tail import Tailer
from agent.registry import (
    Check,
    CollectorSpec,
    CollectorUnavailable,
    Context,
    Option,
    SnapshotCollector,
)
from agent.server import MAX_BODY_BYTES

log = logging.getLogger("vigil.drift")

OPTIONS = (
    Option("window", "int", 5000, "samples per model version in the sliding window", minimum=2),
    Option(
        "window-seconds",
        "duration",
        0.0,
        "also drop samples older than this from the window (0: count only)",
        minimum=0,
    ),
    Option("check-interval", "duration", 30.0, "how often each window is tested", minimum=0.05),
    # Bounds enforced (and nan/inf refused) by the config layer, so `vigil run` exits 2 on
    # a bad alpha; exactly 1.0 is still refused by _settings below.
    Option(
        "alpha",
        "float",
        0.05,
        "significance level of the drift decision",
        minimum=1e-12,
        maximum=1.0,
    ),
    Option(
        "correction",
        "str",
        "bonferroni",
        "multiple-testing correction across features",
        choices=CORRECTIONS,
    ),
    Option(
        "min-samples",
        "int",
        100,
        "no decision (no vigil_drift_detected) while a window holds fewer samples",
        minimum=1,
    ),
    Option(
        "bootstrap",
        "int",
        0,
        "capture the first N samples of a model version with no reference as its reference "
        "(0: refuse such samples)",
        minimum=0,
        maximum=MAX_BOOTSTRAP_ROWS,  # a capture is held in memory until complete
    ),
    # The bounds below cap what senders of samples can make the agent hold; see the
    # "Bounds" section of docs/drift.md. Worst case for bootstrap: bootstrap-max-models x
    # (bootstrap + window) x bootstrap-max-features x 8 bytes (16 x 10,000 x 128 x 8 =
    # 164 MB at bootstrap 5,000), inside the DaemonSet's 512 MiB with the agent's own ~200.
    Option(
        "bootstrap-max-models",
        "int",
        16,
        "most model versions that may get a reference captured by bootstrap (stored plus "
        "in progress); samples for further ones are refused (reason bootstrap_limit)",
        minimum=1,
    ),
    Option(
        "bootstrap-max-features",
        "int",
        128,
        "most features a reference captured by bootstrap may have; wider rows are refused "
        "(reason too_many_features)",
        minimum=1,
        maximum=MAX_FEATURES,
    ),
    Option(
        "max-references",
        "int",
        64,
        "most references held in memory; further files are not loaded and show in "
        "vigil_drift_reference_load_errors",
        minimum=1,
    ),
    Option(
        "max-rows",
        "int",
        100_000,
        "most rows one ingest request may carry; larger ones are refused whole "
        "(reason too_many_rows)",
        minimum=1,
    ),
    Option("tail-file", "str", "", "JSON-lines file of logged requests to follow"),
)
DEFAULTS = {o.name: o.default for o in OPTIONS}

_MV = ["model", "version"]
_MVF = ["model", "version", "feature"]


class DriftCollector(SnapshotCollector):
    name = "drift"

    def __init__(self, monitor: DriftMonitor, interval: float, tail_file: str = "") -> None:
        super().__init__(interval)
        self.monitor = monitor
        self.tailer = Tailer(tail_file, monitor) if tail_file else None

    def open(self) -> None:
        self.monitor.sync()  # references are there for the very first ingest
        if self.tailer is not None:
            self.tailer.start()

    def refresh(self) -> bool:
        self.monitor.sync()
        self.monitor.check_all()
        return True

    def shutdown(self) -> None:
        if self.tailer is not None:
            self.tailer.close()

    def render(self, snapshot: Any) -> Iterable[Metric]:
        return render(self.monitor)


def render(monitor: DriftMonitor) -> list[Metric]:
    """Families from the monitor's latest checks and live counters; all always present."""
    stat = GaugeMetricFamily(
        "vigil_drift_ks_statistic",
        "Two-sample KS statistic D of the live window against the reference, per feature.",
        labels=_MVF,
    )
    pval = GaugeMetricFamily(
        "vigil_drift_p_value", "p-value of the KS test per feature (uncorrected).", labels=_MVF
    )
    drifted = GaugeMetricFamily(
        "vigil_drift_feature_drifted",
        "Whether the feature counts as drifted after the multiple-testing correction.",
        labels=_MVF,
    )
    detected = GaugeMetricFamily(
        "vigil_drift_detected",
        "Whether any feature of the model version drifted at the configured alpha (1) or not.",
        labels=_MV,
    )
    window = GaugeMetricFamily(
        "vigil_drift_window_samples", "Samples in the live window.", labels=_MV
    )
    duration = GaugeMetricFamily(
        "vigil_drift_check_duration_seconds", "Time the latest check took.", labels=_MV
    )
    last = GaugeMetricFamily(
        "vigil_drift_last_check_timestamp_seconds",
        "When the latest check ran, seconds since the Unix epoch.",
        labels=_MV,
    )
    samples = CounterMetricFamily(
        "vigil_drift_samples", "Samples accepted into the window.", labels=_MV
    )
    rejected = CounterMetricFamily(
        "vigil_drift_rejected_samples",
        "Samples refused, by reason (unknown_model, unknown_feature, missing_feature, "
        "non_numeric, non_finite, malformed, too_large, unauthorized, client_dropped, "
        "feature_mismatch, too_many_rows, too_many_features, bootstrap_limit, "
        "store_failed...); model is (unknown) for models with no loaded reference.",
        labels=["model", "reason"],
    )
    load_errors = GaugeMetricFamily(
        "vigil_drift_reference_load_errors",
        "Reference files on disk that are not loaded (corrupt, unreadable or over "
        "max-references): that model version's drift cannot be detected.",
        labels=_MV,
    )
    for (model, version), t in sorted(monitor.tracked().items()):
        mv = [model, version]
        window.add_metric(mv, float(len(t.window)))
        samples.add_metric(mv, float(t.samples_total))
        out = t.last
        if out is None:
            continue
        duration.add_metric(mv, out.duration_s)
        last.add_metric(mv, out.at)
        r = out.result
        if r is None or r.drifted is None:
            continue
        detected.add_metric(mv, 1.0 if r.detected else 0.0)
        for i, feature in enumerate(r.feature_names):
            stat.add_metric([*mv, feature], float(r.statistic[i]))
            pval.add_metric([*mv, feature], float(r.pvalue[i]))
            drifted.add_metric([*mv, feature], 1.0 if r.drifted[i] else 0.0)
    for (model, reason), count in sorted(monitor.rejected.copy().items()):
        rejected.add_metric([model, reason], float(count))
    for labels, count in load_error_series(
        sorted(monitor.refused), monitor.settings.max_references
    ):
        load_errors.add_metric(list(labels), float(count))
    return [stat, pval, drifted, detected, window, duration, last, samples, rejected, load_errors]


def load_error_series(keys: list[tuple[str, str]], limit: int) -> list[tuple[tuple[str, str], int]]:
    """One series per refused (model, version), at most ``limit`` of them; the rest are
    summed under (unknown, unknown), so that a directory of junk files cannot grow
    /metrics without bound."""
    out = [(key, 1) for key in keys[:limit]]
    if len(keys) > limit:
        out.append(((UNKNOWN_MODEL_LABEL, UNKNOWN_MODEL_LABEL), len(keys) - limit))
    return out


def settings(options: dict[str, Any]) -> Settings:
    """The options (missing ones at their OPTIONS default) as the monitor's Settings."""
    o = {**DEFAULTS, **options}
    alpha = float(o["alpha"])
    if not 0.0 < alpha < 1.0:
        raise CollectorUnavailable(
            f"alpha {alpha} is not a probability in (0, 1)",
            f"--collector.drift.alpha {DEFAULTS['alpha']}",
        )
    return Settings(
        window=int(o["window"]),
        window_seconds=float(o["window-seconds"]),
        alpha=alpha,
        correction=str(o["correction"]),
        min_samples=int(o["min-samples"]),
        bootstrap=int(o["bootstrap"]),
        bootstrap_max_models=int(o["bootstrap-max-models"]),
        bootstrap_max_features=int(o["bootstrap-max-features"]),
        max_references=int(o["max-references"]),
        max_rows=int(o["max-rows"]),
    )


def factory(ctx: Context, options: dict[str, Any]) -> DriftCollector:
    monitor = DriftMonitor(ctx.config.state_dir, settings(options))
    # The routes need the API token whatever the listen address (agent/app.py sets it up).
    ctx.routes.extend(DriftApi(monitor, MAX_BODY_BYTES).routes())
    interval = float(options.get("check-interval", 30.0))
    return DriftCollector(monitor, interval, str(options.get("tail-file") or ""))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a parent this user may not enter
        return False


def ingest_check(config: Any) -> Check:
    """Where the API token comes from, and whether the agent can read (or make) it."""
    given = str(config.get("ingest-token-file") or "")
    path = Path(given) if given else Path(config.state_dir) / INGEST_TOKEN_NAME
    fix = f"--ingest-token-file FILE, or a writable --state-dir (the token goes to {path})"
    if path.exists():
        ok = os.access(path, os.R_OK)
        detail = f"bearer token from {path}" if ok else f"{path} is not readable"
        return Check("ingest", ok, detail, fix)
    if given:
        return Check("ingest", False, f"token file {given} does not exist", fix)
    parent = next((p for p in path.parents if _exists(p)), Path("/"))
    ok = parent.is_dir() and os.access(parent, os.W_OK)
    detail = (
        f"bearer token generated at {path} on first start (mode 0600)"
        if ok
        else f"cannot generate a token at {path}: {parent} is not writable"
    )
    return Check("ingest", ok, detail, fix)


def references_check(state: Path, options: dict[str, Any]) -> Check:
    """Loads the references exactly as the agent would (checksums, max-references) and
    names every file it would refuse, with the command that repairs the first."""
    try:
        s = settings(options)
    except CollectorUnavailable:  # reported by the settings check; judge with defaults
        s = settings({})
    monitor = DriftMonitor(state, s)
    level = log.level
    log.setLevel(logging.CRITICAL)  # the check's line says it all; no log line per file
    try:
        monitor.sync()
    except OSError as exc:
        return Check(
            "references",
            False,
            f"cannot read {monitor.store.refs}: {exc.strerror or exc}",
            f"check the permissions of {monitor.store.refs}",
        )
    finally:
        log.setLevel(level)
    where = monitor.store.refs
    loaded = len(monitor.tracked())
    if not monitor.refused:
        return Check("references", True, f"{loaded} loaded from {where}")
    refused = sorted(monitor.refused.values(), key=lambda e: str(e.path))
    first = refused[0]
    m, v = first.model, first.version
    names = ", ".join(str(e.path) for e in refused[:3]) + (" ..." if len(refused) > 3 else "")
    return Check(
        "references",
        False,
        f"{loaded} loaded from {where}; {len(refused)} refused, so drift of those model "
        f"versions cannot be detected: {names}. First: {first.message}",
        f"vigil drift reference set --model {m} --version {v} FILE (replace it), or "
        f"vigil drift reference delete --model {m} --version {v} (remove it)"
        + ("; or raise --collector.drift.max-references" if first.over_limit else ""),
    )


def doctor(options: dict[str, Any], config: Any = None) -> list[Check]:
    checks: list[Check] = []
    try:
        settings(options)
    except CollectorUnavailable as exc:
        checks.append(Check("settings", False, exc.reason, exc.fix))
    state = Path(config.state_dir) if config is not None else Path(default_state_dir())
    checks.append(references_check(state, options))
    parent = next((p for p in [state, *state.parents] if _exists(p)), Path("/"))
    writable = os.access(parent, os.W_OK)
    checks.append(
        Check(
            "state directory",
            writable,
            f"{state} {'is' if state.exists() else 'can be'} written"
            if writable
            else f"{parent} is not writable",
            f"--state-dir DIR (a writable directory), or chown {parent}",
        )
    )
    if config is not None:
        checks.append(ingest_check(config))
    tail = str(options.get("tail-file") or "")
    if tail:
        ok = os.access(tail, os.R_OK)
        checks.append(
            Check(
                "tail file",
                ok,
                tail + (" is readable" if ok else " is not readable"),
                f"check the path and permissions of {tail}",
            )
        )
    return checks


SPEC = CollectorSpec(
    name="drift",
    help="input-drift detection with two-sample KS tests",
    options=OPTIONS,
    factory=factory,
    doctor=doctor,
)
