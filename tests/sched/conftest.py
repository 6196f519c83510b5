"""Fixtures for the sched tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from schedwork import Workloads


@pytest.fixture
def workloads() -> Iterator[Workloads]:
    w = Workloads()
    try:
        yield w
    finally:
        w.stop_all()
