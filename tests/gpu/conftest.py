"""Fixtures for the GPU collector's tests: the fake libnvidia-ml.so.1, built once by gcc."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakenvml import build


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the freshly compiled fake libnvidia-ml.so.1."""
    return build(tmp_path_factory.mktemp("fake-nvml"))


@pytest.fixture
def nvml(fake_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real pynvml module, bound to the fake library in this process.

    Loading the fake by path first makes it the object the dynamic linker hands out for
    the soname libnvidia-ml.so.1, which is the one name pynvml's CDLL asks for.
    """
    ctypes.CDLL(str(fake_lib), mode=ctypes.RTLD_GLOBAL)
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(tmp_path / "scenario.txt"))
    monkeypatch.setenv("FAKE_NVML_CALLS", str(tmp_path / "calls"))
    import pynvml

    yield pynvml
