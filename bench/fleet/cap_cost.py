"""What the per-collector series cap costs a scrape, against the same scrape without it.

The node is the documented maximum (docs/scale.md: 8 GPUs, 64 watched processes, 8 models
x 32 drift features; ~13,600 series), from the real agent's exposition (bench/fleet/
node.prom), served by the agent's CollectorSet and rendered by prometheus_client as
/metrics renders it. Three scrapes interleaved, CPU time of this thread (time.thread_time):

- anchor: the cap switched off (the wrapper as it was before the cap);
- within the caps (every node that runs as documented): the cap only counts samples;
- over the caps (every collector capped at half its series): the cap sorts and drops.

Usage: .venv/bin/python bench/fleet/cap_cost.py [--scrapes 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from prometheus_client import generate_latest  # noqa: E402
from test_cardinality_budget import MAX_NODE, count, render_by_collector, serve  # noqa: E402

import agent.registry as registry  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    fams = render_by_collector(MAX_NODE)
    fams.pop("agent")
    series = sum(count(f) for f in fams.values())
    within = serve(fams)
    over = serve(fams, {name: count(f) // 2 for name, f in fams.items()})
    capped = registry.cap_series

    def uncapped(families: Any, limit: int) -> tuple[list[Any], int, int]:
        return list(families), sum(len(f.samples) for f in families), 0

    times: dict[str, list[float]] = {"anchor": [], "within": [], "over": []}
    sizes = {}
    for _ in range(args.scrapes):
        for name, reg, cap in (
            ("anchor", within, uncapped),
            ("within", within, capped),
            ("over", over, capped),
        ):
            registry.cap_series = cap  # type: ignore[assignment]
            t0 = time.thread_time()
            body = generate_latest(reg)
            times[name].append(time.thread_time() - t0)
            sizes[name] = body.count(b"\n") - body.count(b"\n#")
    registry.cap_series = capped
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    r_within, r_over = med["within"] / med["anchor"], med["over"] / med["anchor"]
    print(f"node: {series:,} series from {len(fams)} collectors; {args.scrapes} scrapes each")
    print(f"  anchor, no cap:        {med['anchor']:7.2f} ms CPU  ({sizes['anchor']:,} lines)")
    print(f"  within the caps:       {med['within']:7.2f} ms CPU  ratio {r_within:.3f}x")
    print(
        f"  over the caps (half):  {med['over']:7.2f} ms CPU  ratio {r_over:.3f}x"
        f"  ({sizes['over']:,} lines)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
