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

from agent.config import default_state_dir
from agent.drift.ingest import Auth, DriftApi
from agent.drift.ks import CORRECTIONS
from agent.drift.monitor import MAX_BOOTSTRAP_ROWS, DriftMonitor, Settings
from agent.drift.store import ReferenceStore, StoreError
from agent.drift.tail import Tailer
from agent.registry import (
    Check,
    CollectorSpec,
    CollectorUnavailable,
    Context,
    Option,
    SnapshotCollector,
)
from agent.server import MAX_BODY_BYTES, is_loopback, parse_listen

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
    Option("tail-file", "str", "", "JSON-lines file of logged requests to follow"),
)

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
        "feature_mismatch...).",
        labels=["model", "reason"],
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
    return [stat, pval, drifted, detected, window, duration, last, samples, rejected]


def settings(options: dict[str, Any]) -> Settings:
    alpha = float(options.get("alpha", 0.05))
    if not 0.0 < alpha < 1.0:
        raise CollectorUnavailable(
            f"alpha {alpha} is not a probability in (0, 1)", "--collector.drift.alpha 0.05"
        )
    return Settings(
        window=int(options.get("window", 5000)),
        window_seconds=float(options.get("window-seconds", 0.0)),
        alpha=alpha,
        correction=str(options.get("correction", "bonferroni")),
        min_samples=int(options.get("min-samples", 100)),
        bootstrap=int(options.get("bootstrap", 0)),
    )


def factory(ctx: Context, options: dict[str, Any]) -> DriftCollector:
    monitor = DriftMonitor(ctx.config.state_dir, settings(options))
    host, _ = parse_listen(ctx.config.listen)
    token_file = str(ctx.config.get("ingest-token-file") or "")
    auth = Auth(token_file, is_loopback(host), ctx.config.listen)
    ctx.routes.extend(DriftApi(monitor, auth, MAX_BODY_BYTES).routes())
    if not token_file and not is_loopback(host):
        log.warning(
            "drift ingest disabled: not listening on loopback and no ingest token",
            extra={"listen": ctx.config.listen, "fix": "--ingest-token-file FILE"},
        )
    interval = float(options.get("check-interval", 30.0))
    return DriftCollector(monitor, interval, str(options.get("tail-file") or ""))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a parent this user may not enter
        return False


def doctor(options: dict[str, Any], config: Any = None) -> list[Check]:
    checks: list[Check] = []
    try:
        settings(options)
    except CollectorUnavailable as exc:
        checks.append(Check("settings", False, exc.reason, exc.fix))
    state = Path(config.state_dir) if config is not None else Path(default_state_dir())
    store = ReferenceStore(state)
    refs, bad = 0, []
    try:
        for _, _, path, _ in store.files():
            try:
                store.read_info(path)
                refs += 1
            except StoreError as exc:
                bad.append(str(exc))
    except OSError as exc:
        bad.append(f"cannot read {store.refs}: {exc.strerror or exc}")
    where = store.refs
    checks.append(
        Check(
            "references",
            not bad,
            f"{refs} under {where}" + (f"; refused: {bad[0]}" if bad else ""),
            "vigil drift reference set --model M --version V FILE",
        )
    )
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
        host, _ = parse_listen(config.listen)
        token = str(config.get("ingest-token-file") or "")
        open_ok = bool(token) or is_loopback(host)
        detail = (
            f"bearer token from {token}"
            if token
            else (
                "no token needed: loopback only"
                if open_ok
                else f"disabled: listening on {config.listen} without --ingest-token-file"
            )
        )
        checks.append(
            Check(
                "ingest", open_ok, detail, "--ingest-token-file FILE (or --listen 127.0.0.1:9475)"
            )
        )
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
