"""A stand-in inference server: a Python process that does what one does to a CPU.

A "feeder" thread prepares batches in pure Python (holds the GIL, shows up in py-spy as
`prepare_batch`), the main thread "waits on the GPU" (sleeps: off-CPU time, voluntary
context switches) and scores the batch in Python (`score`). Runs until killed.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time


def prepare_batch(n: int) -> list[float]:
    return [math.sin(i) * math.cos(i / 3.0) for i in range(n)]


def score(batch: list[float]) -> float:
    total = 0.0
    for x in batch:
        total += x * x
    return total


def feeder(q: queue.Queue[list[float]]) -> None:
    while True:
        q.put(prepare_batch(20_000))


def main() -> None:
    q: queue.Queue[list[float]] = queue.Queue(maxsize=4)
    threading.Thread(target=feeder, args=(q,), daemon=True, name="feeder").start()
    print("ready", flush=True)
    while True:
        batch = q.get()
        time.sleep(0.005)  # the GPU's turn
        score(batch)


if __name__ == "__main__":
    sys.exit(main())
