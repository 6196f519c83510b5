"""Workloads the diagnosis scenarios watch: real Python processes under real conditions.

``python workloads.py MODE MARKER [CPU]``: MARKER is only there for the agent's --watch
pattern; CPU pins the process to one CPU. Modes:

- ``light``: 2 ms of work every 100 ms (a healthy, mostly idle server);
- ``busy``: one thread computing without pause;
- ``gil``: three Python threads computing at once, taking turns on the GIL;
- ``blocked``: the main thread waits on a pipe nobody writes to, while requests wait;
- ``queue``: the main thread sleeps (as a server does while its GPU computes) while the
  queue of waiting requests grows;
- ``hog``: a CPU hog for a starved workload to share its CPU with (run without a MARKER,
  so that the agent does not watch it).

``blocked`` and ``queue`` answer on the port in $WORKLOAD_PORT as a vLLM server does
(``/health``, and ``/metrics`` in vLLM's names): that is how the agent learns that requests
wait, as it would from a real vLLM, which needs a GPU this test machine does not have.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def light() -> None:
    while True:
        spin(0.002)
        time.sleep(0.098)


def busy() -> None:
    x = 0
    while True:
        for i in range(100_000):
            x += i


def gil() -> None:
    threads = [threading.Thread(target=busy, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def serve_vllm(waiting: Callable[[float], int]) -> None:
    """A vLLM-shaped /health and /metrics on $WORKLOAD_PORT, in a daemon thread."""
    started = time.monotonic()
    finished = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                body = b""
            elif self.path == "/metrics":
                finished[0] += 1  # progress: a server finishing requests is not stalled
                label = 'model_name="diag-model"'
                body = (
                    f"# TYPE vllm:num_requests_waiting gauge\n"
                    f"vllm:num_requests_waiting{{{label}}} {waiting(time.monotonic() - started)}\n"
                    f"# TYPE vllm:num_requests_running gauge\n"
                    f"vllm:num_requests_running{{{label}}} 1\n"
                    f"# TYPE vllm:request_success_total counter\n"
                    f'vllm:request_success_total{{{label},finished_reason="stop"}} {finished[0]}\n'
                ).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["WORKLOAD_PORT"])), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def blocked() -> None:
    serve_vllm(lambda _elapsed: 3)
    r, _w = os.pipe()
    os.read(r, 1)  # nobody writes: the thread sleeps off-CPU for good


def queue() -> None:
    serve_vllm(lambda elapsed: 2 + int(elapsed / 2))  # one more waiting every 2 s
    while True:
        time.sleep(1)


def hog() -> None:
    while True:
        pass


MODES = {
    "light": light,
    "busy": busy,
    "gil": gil,
    "blocked": blocked,
    "queue": queue,
    "hog": hog,
}

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with(parent: int) -> None:
    """SIGKILL when the test process that started this one exits, however it exits: a
    worker killed on a timeout runs no cleanup, and a leftover hog at nice -10 would slow
    every later test on the machine."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it exited before the prctl: nobody would signal us
        os._exit(1)


if __name__ == "__main__":
    if os.environ.get("WORKLOAD_PARENT"):
        die_with(int(os.environ["WORKLOAD_PARENT"]))
    # Above every other process on a shared machine, so that a condition is the one the
    # scenario sets up, not the neighbours' load.
    os.setpriority(os.PRIO_PROCESS, 0, int(os.environ.get("WORKLOAD_NICE", "0")))
    if os.environ.get("WORKLOAD_CGROUP"):
        # Into the scenario's cgroup before any work, so the agent never sees it elsewhere.
        with open(os.path.join(os.environ["WORKLOAD_CGROUP"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if len(sys.argv) > 3:
        os.sched_setaffinity(0, {int(sys.argv[3])})
    MODES[sys.argv[1]]()
