"""Every metric family Vigil serves, gathered from the modules that declare them.

The declarations live next to the code that renders them (agent/metrics.py says how); this
module only lists where to look, for ``scripts/gen-metrics-doc`` and the tests. Order is
the catalogue's: the agent's own series, discovery, each collector in registration order,
then the rollback controller's.
"""

from __future__ import annotations

from agent.metrics import MetricSpec, by_name


def declarations() -> tuple[MetricSpec, ...]:
    """All declarations; a name declared twice raises DeclarationError."""
    # Imported here: the whole agent (and the controller) loads only for those who ask.
    from agent import app, discovery, registry, server
    from agent.collectors import SPECS
    from agent.rollback import metrics as rollback

    out: list[MetricSpec] = [
        app.BUILD_INFO,
        *registry.METRICS,
        *server.METRICS,
        *app.PROCESS_METRICS,
        *discovery.METRICS,
    ]
    for spec in SPECS:
        out.extend(spec.metrics)
    out.extend(rollback.METRICS)
    by_name(out)
    return tuple(out)
