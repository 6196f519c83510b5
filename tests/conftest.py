from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


# Files whose tests load a CPU on purpose (the diagnosis scenarios pin a busy loop and a
# CPU hog, at nice -10, to one CPU) or measure what they get of one (py-spy's sample
# shares). Run beside each other on two workers, the first starve the second: a sampled
# share that is exact alone came out 0.33 instead of 0.5. They share one xdist group, so
# one worker runs them one after another while the other worker runs everything else.
CPU_CONTENTION = (
    "tests/diagnosis/",
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
    # Kernel and privileged tests need root; say so instead of failing obscurely.
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (run `make test` as root, as CI does)")
        for item in items:
            if "bpf" in item.keywords:
                item.add_marker(skip)
