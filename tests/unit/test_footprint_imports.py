"""What `vigil run` imports at start: the heavy libraries only on the paths that use them.

Each of these is memory and start-up time every agent pays for good once imported
(bench/footprint, python -X importtime): the OpenTelemetry SDK (~2 MiB, 70 ms) only with
an OTLP endpoint, the Kubernetes client only with kubernetes.mode on or in a cluster,
scipy (+64 MiB with scipy.stats) never at start.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("kubernetes", "opentelemetry", "scipy")


def imported_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return list(ast.literal_eval(out.stdout.strip()))


def test_importing_the_agent_and_the_cli_pulls_in_none_of_the_heavy_libraries() -> None:
    assert imported_after("import agent.app, agent.cli, agent.collectors") == []


def test_building_an_agent_outside_a_cluster_pulls_in_none_of_them(tmp_path: Path) -> None:
    """The CLI's own route to an Agent, with kubernetes.mode at its default (auto)."""
    code = (
        "from agent import cli\n"
        "from agent.app import Agent\n"
        "from agent.collectors import SPECS\n"
        f"ns = cli.build_parser(SPECS).parse_args(['run', '--state-dir', {str(tmp_path)!r}])\n"
        "Agent(cli.build_config(ns, SPECS, env={}), SPECS)\n"
    )
    assert imported_after(code) == []
