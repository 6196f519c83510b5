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

from agent.collectors.drift.collector import factory
from agent.collectors.drift.doctor import doctor
from agent.collectors.drift.metrics import METRICS
from agent.collectors.drift.settings import DriftSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="drift",
    help="input-drift detection with two-sample KS tests",
    settings=DriftSettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
