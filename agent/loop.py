"""Background loops: a daemon thread that runs one step, waits, and runs it again.

Every background job of the agent (snapshot refreshes, process discovery, the drift
tailer, the profile scheduler, the XID watcher, lease renewal, the OTLP exporter) needs
the same five things, and each used to write them by hand: start a daemon thread; stop it
by a deadline without sitting out a sleep, and say when the thread would not end; run the
next step now when asked (:meth:`Loop.wake`); survive a step that raises (counted, logged
once a minute per cause with the owner's name, never the end of the loop); and back off
when a source keeps failing (:class:`Backoff`).

The wait is injectable so tests drive a loop without sleeping, and :meth:`Loop.run_once`
runs one step with the loop's error accounting in the caller's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.log import log_limited

# One line per loop and cause a minute: a step that fails every 0.5 s (the tailer's poll)
# would otherwise be 120 lines a minute saying the same thing.
ERROR_LOG_EVERY_S = 60.0
# An API error's text can carry a whole response body; a log line needs its first words.
ERROR_TEXT_MAX = 300

Wait = Callable[[threading.Event, float], object]


def _event_wait(event: threading.Event, timeout: float) -> object:
    return event.wait(timeout)


class Backoff:
    """Capped exponential delays: ``first``, ``first * factor``, … up to ``ceiling``.

    :meth:`next` hands out the current delay and grows the one after it; :meth:`reset`
    goes back to ``first`` once the source answers again.
    """

    def __init__(self, first: float, ceiling: float, factor: float = 2.0) -> None:
        if not 0 < first <= ceiling or factor < 1:
            raise ValueError("backoff needs 0 < first <= ceiling and factor >= 1")
        self.first, self.ceiling, self.factor = first, ceiling, factor
        self.current = first

    def next(self) -> float:
        delay = self.current
        self.current = min(delay * self.factor, self.ceiling)
        return delay

    def reset(self) -> None:
        self.current = self.first


class Loop:
    """Runs ``step`` in a daemon thread until :meth:`stop`.

    ``step`` returns the delay before the next step, or None for ``interval``. With
    ``fixed_rate`` the interval counts from the start of a step (a refresh that took 0.3 s
    of a 1 s interval waits 0.7 s), as a scrape source's refresh wants. With ``wait_first``
    the first step runs after one interval, not at once (the owner ran one itself).

    A step that raises is counted in :attr:`errors`, logged (rate-limited, at ``level``,
    with ``message``, the loop's name, ``fields`` and, unless the owner expects such
    failures (an API that is down), the traceback) and followed by the next one after
    ``backoff.next()`` when a :class:`Backoff` is given, else after ``interval``; a good
    step resets the backoff. ``BaseException`` (KeyboardInterrupt, SystemExit) is not
    caught.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        interval: float,
        *,
        logger: logging.Logger,
        message: str = "background step failed",
        fields: Mapping[str, Any] | None = None,
        level: int = logging.ERROR,
        traceback: bool = True,
        backoff: Backoff | None = None,
        fixed_rate: bool = False,
        wait_first: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wait: Wait = _event_wait,
    ) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.logger = logger
        self.message = message
        self.fields = dict(fields or {})
        self.level, self.traceback = level, traceback
        self.backoff = backoff
        self.fixed_rate = fixed_rate
        self.wait_first = wait_first
        self._clock = clock
        self._wait = wait
        self._stopping = threading.Event()
        # Set by wake() and stop(): ends the current wait; a wake that arrives during a
        # step makes the wait after it return at once, so no wake is lost.
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.errors = 0
        self.last_error = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"loop {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"vigil-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Asks the loop to end and waits up to ``timeout`` s; True when the thread has ended
        (or never started). A step in progress is not interrupted: False says it is still
        running, so the owner must not release what that step uses. Safe to call again."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def wake(self) -> None:
        """Runs the next step now (or right after the one in progress)."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- one step -------------------------------------------------------------------------
    def run_once(self) -> float:
        """Runs one step with the loop's error accounting; returns the delay before the
        next one."""
        started = self._clock()
        try:
            delay = self.step()
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_MAX]
            log_limited(
                self.logger,
                self.level,
                f"loop:{self.name}:{type(exc).__name__}",
                self.message,
                every=ERROR_LOG_EVERY_S,
                exc_info=self.traceback,
                loop=self.name,
                error=self.last_error,
                **self.fields,
            )
            return self.backoff.next() if self.backoff is not None else self.interval
        finally:
            self.steps += 1
        if self.backoff is not None:
            self.backoff.reset()
        if delay is not None:
            return max(0.0, delay)
        if self.fixed_rate:
            return max(0.0, self.interval - (self._clock() - started))
        return self.interval

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        if self.wait_first:
            self._sleep(self.interval)
        while not self._stopping.is_set():
            delay = self.run_once()
            if self._stopping.is_set():
                return
            self._sleep(delay)

    def _sleep(self, delay: float) -> None:
        self._wait(self._wake, delay)
        self._wake.clear()
        if self._stopping.is_set():
            self._wake.set()  # keep a stop visible to any later wait
