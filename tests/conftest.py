from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


# Files whose tests load a CPU on purpose: the diagnosis scenarios pin a busy loop and a
# CPU hog, at nice -10, to one CPU. They share one xdist group, so one worker runs them one
# after another instead of two at once.
CPU_CONTENTION = ("tests/diagnosis/",)
# Files that measure what share of a CPU a process gets, from py-spy's samples, within
# +-10 points: beside a busy test the sampler can fall behind in one window and not the
# next, which moves the shares they compare. They are marked `alone`: scripts/run-tests.sh
# runs them after the parallel run, with nothing beside them (about 40 s).
ALONE = (
    "tests/profile/test_agent_profiles.py",
    "tests/profile/test_collector.py",
)


def xdist_group(item: pytest.Item) -> str:
    """The worker unit of ``item`` under ``--dist loadgroup``: its file (as loadfile does,
    so module-scoped servers and order-dependent tests stay together), or the shared
    group of the CPU-contention files."""
    path = item.nodeid.split("::", 1)[0]
    if path.startswith(CPU_CONTENTION):
        return "cpu-contention"
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
        if item.nodeid.startswith(ALONE):
            item.add_marker(pytest.mark.alone)
    # Kernel and privileged tests need root; say so instead of failing obscurely.
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (run `make test` as root, as CI does)")
        for item in items:
            if "bpf" in item.keywords:
                item.add_marker(skip)
