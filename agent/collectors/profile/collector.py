"""The profile collector: schedules py-spy windows over the watched processes within the
CPU budget, keeps each process's last window, and serves it as metrics and /v1/profiles."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from agent.collectors.profile import api, pyroscope
from agent.collectors.profile import metrics as m
from agent.collectors.profile.doctor import PYSPY_FIX
from agent.collectors.profile.pyspy import MODES, Runner, WindowRun, find_pyspy, make_workdir
from agent.collectors.profile.schedule import CpuBudget, backoff_delay
from agent.collectors.profile.settings import ProfileSettings
from agent.collectors.profile.stacks import (
    WindowSummary,
    format_collapsed,
    parse_collapsed,
    summarize_window,
)
from agent.collectors.profile.targets import Target, listing_entry, process_families, profile_view
from agent.discovery import LABEL_NAMES, Discovery, series_labels
from agent.log import log_limited
from agent.loop import Loop
from agent.registry import CollectorUnavailable, Context

log = logging.getLogger("vigil.profile")

POLL_S = 0.5  # how soon a new process or a freed slot starts a window; a dict walk each
MODES_ORDER = tuple(MODES)
RESULTS = ("ok", "exited", "unsupported", "denied", "timeout", "failed")


class ProfileCollector:
    name = "profile"

    def __init__(
        self,
        discovery: Discovery,
        pyspy: str,
        settings: ProfileSettings,
        clock: Callable[[], float] = time.monotonic,
        push: Callable[[str, str], None] = pyroscope.push,
    ) -> None:
        self.discovery = discovery
        self.pyspy = pyspy
        self.rate = settings.rate
        self.window = int(settings.window)  # whole seconds: ProfileSettings checks it
        self.max_children = settings.max_concurrent
        self.top_k = settings.top_k
        self.backoff = settings.backoff
        self.pyroscope_url = settings.pyroscope_url
        self._clock = clock
        self._push = push
        # One window's worth of budget may be spent at once; more would let a burst of
        # new processes exceed the average for a whole window.
        self.node_budget = settings.cpu_budget
        self.process_budget = settings.cpu_budget_per_process
        self.budget = CpuBudget(self.process_budget, self.window, clock)
        # What a window is expected to cost, reserved when it starts: a moving average of
        # the windows measured so far, starting at one window's worth of the per-process
        # budget, so the first windows on a node start one after another until costs are
        # known rather than all at once.
        self.window_cost = self.process_budget * self.window
        self.budget_skips = 0
        self.targets: dict[int, Target] = {}
        self.windows = dict.fromkeys(RESULTS, 0)
        self.pushes = {"ok": 0, "failed": 0}
        self.cpu_seconds = 0.0
        self._lock = threading.Lock()
        # A bug in scheduling is logged and counted and must not end profiling for good;
        # a window that ends wakes the loop so its slot is reused at once.
        self._loop = Loop(
            "profile",
            self._step,
            POLL_S,
            logger=log,
            message="profile scheduling failed",
            fields={"collector": self.name},
        )
        self._ready = threading.Event()
        self._workers: set[threading.Thread] = set()
        self._workdir: Path | None = None
        self._runner: Runner | None = None
        self._denied_logged = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._workdir = make_workdir()
        self._runner = Runner(self.pyspy, self._workdir)
        self._loop.start()

    def ready(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        self._loop.stop(timeout=0.0)  # no window starts from here on
        if self._runner is not None:
            self._runner.close()
        with self._lock:
            workers = list(self._workers)
        self._loop.stop(timeout=2.0)
        for t in workers:
            t.join(timeout=2.0)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # -- scheduling ------------------------------------------------------------------
    def _step(self) -> float:
        """One scheduling pass; returns the pause before the next (sooner when the CPU
        budget refills sooner)."""
        try:
            self.schedule()
        finally:
            self._ready.set()
        with self._lock:
            budget_wait = self.budget.wait()
        return min(POLL_S, max(0.05, budget_wait))

    def schedule(self) -> None:
        """Syncs targets with discovery and starts windows while slots and budget allow."""
        snap = self.discovery.snapshot()
        now = self._clock()
        with self._lock:
            for pid, t in list(self.targets.items()):
                info = snap.get(pid)
                if info is None or info.start_time != t.info.start_time:
                    t.gone = True
                    if not t.running:
                        del self.targets[pid]
                else:
                    t.info = info
            for pid, info in snap.items():
                if pid not in self.targets:
                    self.targets[pid] = Target(info)
            watched = sum(not t.gone for t in self.targets.values())
            self.budget.resize(min(self.node_budget, self.process_budget * max(1, watched)))
            running = sum(t.running for t in self.targets.values())
            due = [
                t
                for t in self.targets.values()
                if not t.running and not t.gone and t.retry_at <= now
            ]
            # Least recently sampled first: with more processes than slots, windows rotate.
            order = sorted(due, key=lambda t: t.last_end)
            for i, t in enumerate(order):
                if self._loop.stopping or running + 1 > self.max_children:
                    break
                if not self.budget.available():
                    # Each process held back is counted once per window it waits for.
                    for held in order[i:]:
                        if not held.held_back:
                            held.held_back = True
                            self.budget_skips += 1
                    break
                t.running = True
                t.held_back = False
                t.reserved = self.budget.reserve(self.window_cost)
                if t.state == "pending":
                    t.state = "sampling"
                running += 1
                worker = threading.Thread(
                    target=self._window, args=(t,), daemon=True, name=f"vigil-profile-{t.info.pid}"
                )
                self._workers.add(worker)
                worker.start()

    def _window(self, t: Target) -> None:
        assert self._runner is not None
        pid = t.info.pid
        try:
            mode = MODES_ORDER[t.next_mode % len(MODES_ORDER)]
            run = self._runner.record_window(pid, self.rate, self.window, (mode,))
            self._finish(t, run)
        except Exception as exc:
            log.error(
                "profile window failed",
                exc_info=True,
                extra={"collector": self.name, "pid": pid, "error": str(exc)},
            )
            with self._lock:
                t.running = False
                self.budget.charge(0.0, t.reserved)
                t.reserved = 0.0
                self.windows["failed"] += 1
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())
            self._loop.wake()

    def _finish(self, t: Target, run: WindowRun) -> None:
        outcome = run.outcome()
        mode = run.children[0].mode if run.children else ""
        summary = None
        if outcome == "ok" and mode:
            # The modes rotate, one per window: the profile combines the latest recording
            # of each, so every output is at most three windows old.
            texts = {**t.texts, mode: run.text(mode)}
            if all(m_ in texts for m_ in MODES_ORDER):
                summary = summarize_window(
                    texts["cpu"],
                    texts["wall"],
                    texts["gil"],
                    self.rate * self.window,
                    self.top_k,
                )
        # A cpu window's samples are the active count; a wall window's, every thread's.
        counted = parse_collapsed(run.text(mode)).total if outcome == "ok" and mode else 0
        with self._lock:
            self.budget.charge(run.cpu_seconds, t.reserved)
            t.reserved = 0.0
            if run.cpu_seconds > 0:
                self.window_cost += 0.3 * (run.cpu_seconds - self.window_cost)
            self.cpu_seconds += run.cpu_seconds
            t.running = False
            t.last_end = self._clock()
            if outcome == "stopped":
                return
            self.windows[outcome] += 1
            if t.gone:
                self.targets.pop(t.info.pid, None)
                return
            if outcome == "ok":
                if mode == "cpu":
                    t.last_active = counted
                elif mode == "wall" and "cpu" in t.texts:
                    # Both counters move together, once per wall window: its samples split
                    # into the latest cpu window's active count and the rest, idle. Adding
                    # the active ones at each cpu window instead made the ratio depend on
                    # where the rotation stood when scraped (1/3 for a half-idle process
                    # just after a cpu window, 1/2 just after a wall window).
                    active = min(counted, t.last_active)
                    t.active_total += active
                    t.idle_total += counted - active
                t.texts[mode] = run.text(mode)
                t.runs[mode] = run
                t.next_mode += 1
                t.reason, t.failures = "", 0
            else:
                # A process that failed starts over: its next profile is recorded afresh.
                t.texts.clear()
                t.runs.clear()
                t.next_mode = 0
            if summary is not None:
                t.state = "ok"
                t.last, t.last_run = summary, t.runs["cpu"]
            elif outcome == "ok":
                t.state = "sampling"  # the first windows: not every mode recorded yet
            elif outcome == "exited":
                # Dropped; discovery forgets the pid within its interval. Until then, try
                # again after a window in case py-spy only lost a race at start-up.
                t.state, t.reason, t.last = "exited", run.reason(), None
                t.retry_at = self._clock() + self.window
            else:
                t.failures += 1
                t.state, t.reason, t.last = outcome, run.reason(), None
                t.retry_at = self._clock() + backoff_delay(self.backoff, t.failures)
        self._log_outcome(t, outcome)
        if summary is not None and mode == "cpu" and self.pyroscope_url:
            self._push_window(t, run, summary)

    def _log_outcome(self, t: Target, outcome: str) -> None:
        fields = {
            "collector": self.name,
            "pid": t.info.pid,
            "comm": t.info.comm,
            "reason": t.reason,
        }
        if outcome == "denied":
            if not self._denied_logged:  # the same cause for every process: say it once
                self._denied_logged = True
                log.warning(
                    "py-spy may not read processes: needs CAP_SYS_PTRACE",
                    extra={**fields, "fix": "run as root with CAP_SYS_PTRACE"},
                )
        elif outcome == "unsupported" and t.failures == 1:
            log.info(
                "not a Python process py-spy can read; retrying with backoff",
                extra={**fields, "retry_s": backoff_delay(self.backoff, 1)},
            )
        elif outcome in ("failed", "timeout"):
            log_limited(
                log,
                logging.WARNING,
                f"profile:{outcome}",
                "profile window dropped",
                every=300.0,
                **fields,
                result=outcome,
            )

    def _push_window(self, t: Target, run: WindowRun, summary: WindowSummary) -> None:
        labels = dict(zip(LABEL_NAMES, series_labels(t.info, t.info.pid), strict=True))
        app = t.info.container_label or t.info.comm
        url = pyroscope.ingest_url(
            self.pyroscope_url, pyroscope.app_name(app, labels), run.started, run.ended, self.rate
        )
        try:
            self._push(url, format_collapsed(summary.cpu))
            result = "ok"
        except (OSError, ValueError) as exc:
            result = "failed"
            log_limited(
                log,
                logging.WARNING,
                "pyroscope",
                "pyroscope push failed",
                every=300.0,
                collector=self.name,
                url=self.pyroscope_url,
                error=str(exc),
            )
        with self._lock:
            self.pushes[result] += 1

    # -- metrics ---------------------------------------------------------------------
    def _visible(self) -> list[Target]:
        snap = self.discovery.snapshot()
        with self._lock:
            return [
                replace(t)
                for t in self.targets.values()
                if not t.gone
                and t.state != "exited"
                and (i := snap.get(t.info.pid)) is not None
                and i.start_time == t.info.start_time
            ]

    def collect(self) -> Iterable[Metric]:
        families = process_families(self._visible())
        windows = m.WINDOWS.counter()
        pushes = m.PYROSCOPE_PUSHES.counter()
        with self._lock:
            for r in RESULTS:
                windows.add_metric([r], float(self.windows[r]))
            for r, n in self.pushes.items():
                pushes.add_metric([r], float(n))
            cpu_s = self.cpu_seconds
            skips = self.budget_skips
            cores = self.budget.cores
        cpu = m.PYSPY_CPU.counter()
        cpu.add_metric([], cpu_s)
        skipped = m.BUDGET_SKIPS.counter()
        skipped.add_metric([], float(skips))
        budget = m.BUDGET_CORES.gauge()
        budget.add_metric([], cores)
        return [*families, windows, pushes, cpu, skipped, budget]

    # -- /v1/profiles ----------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [listing_entry(t, self.rate, now) for t in self._visible()]

    def profile(self, pid: int) -> api.Profile | None:
        t = next((t for t in self._visible() if t.info.pid == pid), None)
        return None if t is None else profile_view(t, self.rate, self.window)


def factory(ctx: Context, settings: ProfileSettings) -> ProfileCollector:
    pyspy = find_pyspy(settings.pyspy_path)
    if pyspy is None:
        where = settings.pyspy_path or "next to vigil's Python or on PATH"
        raise CollectorUnavailable(f"py-spy not found ({where})", PYSPY_FIX)
    collector = ProfileCollector(ctx.discovery, pyspy, settings)
    ctx.routes.extend(api.routes(collector))
    return collector
