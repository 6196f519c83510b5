"""Cost of one GPU poll and of one /metrics render, for 8 fake GPUs x 64 processes each.

Runs the real collector through real pynvml over the fake libnvidia-ml.so.1 (built here with
gcc), with a real Discovery over a generated procfs (512 processes in 64 pods), and prints:

Times are CPU time of the calling thread (time.thread_time), so that other work on a
shared machine does not count; wall times are printed beside them.

- CPU time of one poll in the polling thread (time.thread_time; includes the fake library's
  own work, which a real driver's ioctls would replace) and NVML calls per poll (counted by
  the fake), against the anchor: a bare loop making the same NVML calls and keeping nothing.
- the same poll with --collector.gpu.pcie-throughput on (wall time): why it is off.
- the CPU time to build the GPU families from a snapshot (once per poll, then cached).
- /metrics render time for the node (the agent's CollectorSet on a private registry, as the
  server renders it), against the anchor: prometheus_client rendering prebuilt families with
  the same series; and NVML calls made during all the scrapes (must be 0).

Targets: poll ≤ 5 ms CPU, scrape ≤ 20 ms, 0 NVML calls per scrape.
Usage: .venv/bin/python bench/gpu_poll/run.py [--polls 200] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "gpu"))

from fakenvml import Gpu, Scenario, build, read_calls  # noqa: E402

GPUS, PROCS_PER_GPU, PROCS_PER_POD = 8, 64, 8
TARGET_POLL_CPU_MS, TARGET_SCRAPE_MS = 5.0, 20.0


def make_node(tmp: Path) -> Scenario:
    procfs = tmp / "proc"
    s = Scenario(tmp / "scenario.txt")
    for g in range(GPUS):
        s.gpus.append(
            Gpu(f"GPU-{g:08x}-0000-0000-0000-000000000000", bus=f"00000000:{g + 16:02X}:00.0")
        )
        for p in range(PROCS_PER_GPU):
            pid = 10_000 + g * PROCS_PER_GPU + p
            pod = f"{(pid // PROCS_PER_POD):08x}-0000-4000-8000-000000000000"
            container = f"{pid // PROCS_PER_POD:064x}"
            d = procfs / str(pid)
            d.mkdir(parents=True)
            (d / "cmdline").write_bytes(b"python3\0-m\0vllm.entrypoints\0")
            (d / "comm").write_text(f"worker{p % PROCS_PER_POD}\n")
            (d / "stat").write_text(f"{pid} (python3) S " + "0 " * 18 + "777 0\n")
            (d / "cgroup").write_text(
                f"0::/kubepods.slice/kubepods-pod{pod.replace('-', '_')}.slice/"
                f"cri-containerd-{container}.scope\n"
            )
            s.procs.append({"gpu": g, "pid": pid, "mem": 1 << 28, "sm": p % 100})
    s.write()
    return s


def bare_poll(n: Any, handles: list[Any]) -> None:
    """The same NVML calls as one poll, keeping nothing: the floor for the poller."""
    n.nvmlDeviceGetCount()
    for h in handles:
        n.nvmlDeviceGetUtilizationRates(h)
        n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2)
        n.nvmlDeviceGetTemperature(h, 0)
        n.nvmlDeviceGetPowerUsage(h)
        n.nvmlDeviceGetTotalEnergyConsumption(h)
        n.nvmlDeviceGetPcieReplayCounter(h)
        n.nvmlDeviceGetPerformanceState(h)
        n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)
        n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)
        n.nvmlDeviceGetCurrentClocksEventReasons(h)
        n.nvmlDeviceGetTotalEccErrors(h, 0, 0)
        n.nvmlDeviceGetTotalEccErrors(h, 1, 0)
        n.nvmlDeviceGetMigMode(h)
        n.nvmlDeviceGetComputeRunningProcesses(h)
        n.nvmlDeviceGetMPSComputeRunningProcesses(h)
        n.nvmlDeviceGetProcessUtilization(h, 0)


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=200)
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-gpu-"))
    lib = build(tmp / "lib")
    scenario = make_node(tmp)
    calls_file = tmp / "calls"
    os.environ["FAKE_NVML_SCENARIO"] = str(scenario.path)
    os.environ["FAKE_NVML_CALLS"] = str(calls_file)
    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)  # pynvml's CDLL("libnvidia-ml.so.1") finds it
    import pynvml
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.collectors.gpu.collector import GpuCollector, render
    from agent.discovery import Discovery
    from agent.registry import CollectorSet, Entry

    discovery = Discovery(procfs=str(tmp / "proc"), patterns=[])
    ctx: Any = type("Ctx", (), {"discovery": discovery})()
    collector = GpuCollector(ctx, pynvml, interval=3600.0, xid_events=True)
    collector.open()
    collector.refresh_now()
    discovery.refresh()  # the GPU pids are now watched, with their pod labels
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(GPUS)]

    poll_cpu, poll_wall, bare_cpu = [], [], []
    before = read_calls(calls_file)
    for _ in range(args.polls):  # interleaved: poller, anchor, poller, anchor...
        c0, w0 = time.thread_time(), time.perf_counter()
        collector.refresh_now()
        poll_cpu.append(time.thread_time() - c0)
        poll_wall.append(time.perf_counter() - w0)
        c0 = time.thread_time()
        bare_poll(pynvml, handles)
        bare_cpu.append(time.thread_time() - c0)
    after = read_calls(calls_file)
    waits = after.get("nvmlEventSetWait_v2", 0) - before.get("nvmlEventSetWait_v2", 0)
    calls_per_poll = (after["total"] - before["total"] - waits) / (2 * args.polls)

    pcie = GpuCollector(ctx, pynvml, interval=3600.0, pcie_throughput=True, xid_events=False)
    pcie.open()
    w0 = time.perf_counter()
    pcie.refresh_now()
    pcie_wall = time.perf_counter() - w0
    pcie.close()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        CollectorSet([Entry("discovery", discovery, "running"), Entry("gpu", collector, "running")])
    )
    families = list(collector.collect()) + list(discovery.collect())

    class Prebuilt:
        def collect(self) -> list[Any]:
            return families

    anchor = CollectorRegistry(auto_describe=False)
    anchor.register(Prebuilt())  # type: ignore[arg-type]
    scrape, scrape_wall, floor = [], [], []
    before = read_calls(calls_file)
    for _ in range(args.scrapes):  # interleaved with the anchor
        c0, w0 = time.thread_time(), time.perf_counter()
        body = generate_latest(registry)
        scrape.append(time.thread_time() - c0)
        scrape_wall.append(time.perf_counter() - w0)
        c0 = time.thread_time()
        generate_latest(anchor)
        floor.append(time.thread_time() - c0)
    after = read_calls(calls_file)
    scrape_calls = {
        k: after[k] - before.get(k, 0)
        for k in after
        if k not in ("total", "nvmlEventSetWait_v2") and after[k] != before.get(k, 0)
    }
    series = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    build_cpu = []  # the families are built once per poll (then cached): cost of that build
    for _ in range(max(1, args.scrapes // 4)):
        c0 = time.thread_time()
        render(collector._snapshot, {}, discovery.get)
        build_cpu.append(time.thread_time() - c0)
    collector.close()

    pc, pb, sc, sf = median_ms(poll_cpu), median_ms(bare_cpu), median_ms(scrape), median_ms(floor)
    print(
        f"node: {GPUS} fake GPUs x {PROCS_PER_GPU} processes ({GPUS * PROCS_PER_GPU} in "
        f"{GPUS * PROCS_PER_GPU // PROCS_PER_POD} pods), {series} series on /metrics"
    )
    print(
        f"poll CPU (median of {args.polls}):     {pc:7.3f} ms   target ≤ {TARGET_POLL_CPU_MS} ms"
        f"   ({'ok' if pc <= TARGET_POLL_CPU_MS else 'MISSED'})"
    )
    print(f"  anchor, bare pynvml same calls:  {pb:7.3f} ms   ratio {pc / pb:.2f}x")
    print(f"  poll wall (median):              {median_ms(poll_wall):7.3f} ms")
    print(f"  NVML calls per poll:             {calls_per_poll:7.1f}")
    print(
        f"  poll wall with pcie-throughput:  {pcie_wall * 1e3:7.1f} ms   "
        f"ratio {pcie_wall / statistics.median(poll_wall):.0f}x (why it is off by default)"
    )
    print(
        f"scrape render CPU (median of {args.scrapes}): {sc:6.3f} ms   target ≤ {TARGET_SCRAPE_MS}"
        f" ms   ({'ok' if sc <= TARGET_SCRAPE_MS else 'MISSED'})"
    )
    print(f"  anchor, prebuilt families (CPU): {sf:7.3f} ms   ratio {sc / sf:.2f}x")
    print(f"  GPU families built once per poll: {median_ms(build_cpu):6.3f} ms CPU")
    print(
        f"  scrape wall (median):            {median_ms(scrape_wall):7.3f} ms   "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"  NVML calls during {args.scrapes} scrapes:  {sum(scrape_calls.values())}"
        f"   target 0   ({'ok' if not scrape_calls else 'MISSED: ' + str(scrape_calls)})"
    )
    ok = pc <= TARGET_POLL_CPU_MS and sc <= TARGET_SCRAPE_MS and not scrape_calls
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
