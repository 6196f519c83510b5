"""Workloads for the sched tests, run as real interpreters: ``workload.py MODE MARKER [N]``.

MARKER only makes the command line unique, so that discovery matches exactly this process.
Modes:
  mixed    busy ~5 ms, sleep 1 ms, forever (waits on the run queue when CPUs are contended;
           5 ms is longer than a scheduler slice, so contention also preempts it)
  sleep10  sleep 10 ms in a loop, forever
  spin     a CPU-bound loop, forever
  hop      moves itself between CPU 0 and CPU 1 every 5 ms, forever (CPU migrations)
  forker   waits for a byte on stdin, then forks N children that exit at once, then prints "done"
"""

from __future__ import annotations

import ctypes
import os
import sys
import time


def main() -> None:
    mode = sys.argv[1]
    if mode == "mixed":
        while True:
            end = time.perf_counter() + 0.005
            while time.perf_counter() < end:
                pass
            time.sleep(0.001)
    elif mode == "sleep10":
        while True:
            time.sleep(0.010)
    elif mode == "spin":
        while True:
            pass
    elif mode == "hop":
        while True:
            for cpu in (0, 1):
                os.sched_setaffinity(0, {cpu})
                time.sleep(0.005)
    elif mode == "forker":
        n = int(sys.argv[3])
        go = os.read(0, 1)  # the test writes one byte to stdin to start the churn
        assert go
        # libc's fork and _exit directly: without CPython's at-fork hooks a child costs
        # about 0.8 ms instead of 2.5 ms here, which keeps 10,000 of them within seconds.
        libc = ctypes.CDLL(None, use_errno=True)
        for _ in range(n):
            pid = libc.fork()
            if pid == 0:
                libc._exit(0)
            if pid < 0:
                raise OSError(ctypes.get_errno(), "fork failed")
            os.waitpid(pid, 0)
        print("done", flush=True)
        while True:
            time.sleep(1)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
