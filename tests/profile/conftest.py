"""Real Python workloads with a known profile, for the profile collector's tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# One script, several shapes. Its file name is what the agent's --watch matches.
WORKLOAD = """
import hashlib, sys, threading, time

def hot():  # 70 % of the loop's work: same body as warm(), 7/3 of its iterations
    x = 0
    for i in range(7000):
        x += i
    return x

def warm():
    x = 0
    for i in range(3000):
        x += i
    return x

def sleeper():
    while True:
        time.sleep(0.5)

def spin():  # pure Python: holds the GIL whenever it runs
    while True:
        hot()

def hashing():  # hashlib releases the GIL for buffers over 2 KiB
    data = b"x" * (8 << 20)
    while True:
        hashlib.sha256(data).digest()

kind = sys.argv[1]
if kind == "mix":
    threading.Thread(target=sleeper, daemon=True).start()
    print("ready", flush=True)
    while True:
        hot()
        warm()
elif kind == "sleep":
    print("ready", flush=True)
    sleeper()
elif kind == "gil":
    threading.Thread(target=spin, daemon=True).start()
    print("ready", flush=True)
    sleeper()
elif kind == "nogil":
    print("ready", flush=True)
    hashing()
"""

WATCH = r"vigil_test_workload\.py"


class Workloads:
    def __init__(self, directory: Path) -> None:
        self.script = directory / "vigil_test_workload.py"
        self.script.write_text(WORKLOAD)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, kind: str) -> subprocess.Popen[str]:
        """Starts a real interpreter running ``kind`` and waits until its loop runs."""
        proc = subprocess.Popen(
            [sys.executable, str(self.script), kind], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        self.procs.append(proc)
        return proc

    def start_native(self) -> subprocess.Popen[str]:
        """A process that is not Python (the collector must mark it and back off)."""
        proc = subprocess.Popen(["sleep", "86399"], text=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def workloads(tmp_path: Path) -> Iterator[Workloads]:
    w = Workloads(tmp_path)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def module_workloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workloads]:
    w = Workloads(tmp_path_factory.mktemp("workloads"))
    yield w
    w.stop()
