"""Runs the sched collector's set-up as the agent does (preflight, header choice, probe
load) and prints the outcome as one JSON line: ``setup_probe.py MODE HOST_ROOT [PROC]``.

The emulation tests run it inside private mount namespaces and under reduced privilege,
so that what is measured is a fresh process seeing only what a node would show it.
"""

from __future__ import annotations

import json
import sys

from agent.collectors.sched.doctor import Setup
from agent.collectors.sched.preflight import HostPaths
from agent.collectors.sched.probe import SchedProbe
from agent.registry import CollectorUnavailable


def main() -> None:
    mode, host_root = sys.argv[1], sys.argv[2]
    # An optional third argument: where /proc is read (a node's mounts as a fixture).
    paths = HostPaths(proc=sys.argv[3], host_root=host_root) if len(sys.argv) > 3 else None
    setup = Setup(mode, host_root, paths=paths)
    checks = setup.checks()
    out: dict[str, object] = {
        "checks": [[c.what, c.ok, c.detail, c.fix] for c in checks],
        "source": setup.verdict.header_source if setup.verdict else None,
        "loaded": False,
    }
    if all(c.ok for c in checks):
        out["used"] = setup.apply_headers()
        try:
            SchedProbe(mode, 1024).close()
            out["loaded"] = True
        except CollectorUnavailable as exc:
            out["error"] = exc.reason
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
