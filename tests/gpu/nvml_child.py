"""Child process for tests/gpu/test_gpu_drivers.py: polls the fake NVML with whichever
pynvml PYTHONPATH gives it, and prints what it saw as one JSON line.

argv[1]: the test's tmp dir (the scenario file is FAKE_NVML_SCENARIO). A separate process,
because a process loads one pynvml and one libnvidia-ml.so.1 for good.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pynvml
from fakenvml import Scenario, two_gpus

from agent.collectors.gpu.poll import Poller


def poll(s: Scenario) -> dict[int, dict[int, float | None]]:
    s.write()
    p = Poller(pynvml)
    p.open()
    try:
        snap = p.poll()
    finally:
        p.close()
    return {g.index: {pid: u.memory_bytes for pid, u in g.processes.items()} for g in snap.gpus}


def main() -> None:
    tmp = Path(sys.argv[1])
    out: dict[str, object] = {"processes": {}}
    dist = Path(pynvml.__file__).parent
    versions = [
        d.version
        for d in metadata.distributions(path=[str(dist)])
        if d.metadata["Name"] == "nvidia-ml-py"
    ]
    out["version"] = versions[0] if versions else "?"
    for driver in ("535.43.02", "535.98", "535.104.05", "550.54.15"):
        s = two_gpus(tmp / "scenario.txt")
        s.driver = driver
        s.procs = [{"gpu": 0, "pid": 1000 + i, "mem": (i + 1) * 1_048_576} for i in range(4)]
        out["processes"][driver] = {str(k): v for k, v in poll(s)[0].items()}  # type: ignore[index]
    s = two_gpus(tmp / "scenario.txt")
    s.driver = "535.104.05"
    s.procs = [{"gpu": 1, "pid": 900, "mem": 1000}, {"gpu": 1, "pid": 5001, "mem": 2000, "mps": 1}]
    out["mps"] = {str(k): v for k, v in poll(s)[1].items()}

    def boom() -> None:
        raise RuntimeError("the real cause")

    p = Poller(pynvml)
    try:
        p._call("probe", boom)
        out["foreign_error"] = "none"
    except Exception as exc:  # what reaches the caller, whatever it is
        out["foreign_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
