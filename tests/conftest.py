from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Kernel and privileged tests need root; say so instead of failing obscurely.
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (run `make test` as root, as CI does)")
        for item in items:
            if "bpf" in item.keywords:
                item.add_marker(skip)
