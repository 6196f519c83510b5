"""When the next py-spy window may start: a CPU budget shared by all children, and backoff.

Both are pure state machines over an injected clock, so tests drive time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Retry delays double per consecutive failure up to 32x the base: at the 60 s default a
# process that becomes readable (py-spy upgraded, capability granted) is retried within
# about half an hour, while a node full of non-Python processes costs one py-spy start
# per process per half hour.
BACKOFF_MAX_DOUBLINGS = 5


def backoff_delay(base: float, failures: int) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
    if failures <= 0:
        return 0.0
    return base * (2 ** min(failures - 1, BACKOFF_MAX_DOUBLINGS))


class CpuBudget:
    """A token bucket of CPU seconds: ``cores`` seconds accrue per wall second.

    A window's cost is only known when its children exit (from their rusage). Charging
    only afterwards would let every free slot start while the bucket is still positive
    (with eight slots, a node full of new processes spent seven windows beyond its
    budget at once), so a window *reserves* its expected cost when it starts and settles
    the difference when it ends; while the bucket is in debt no new window starts. Over
    any long stretch the children therefore use at most ``cores`` of one core on average,
    whatever the rate, the number of processes or the cost of each py-spy, and a burst of
    new processes cannot overdraw it by more than one window's misestimate.
    """

    def __init__(
        self, cores: float, burst_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cores = cores
        self.capacity = cores * burst_seconds
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()
        self.spent = 0.0

    def resize(self, cores: float) -> None:
        """Sets a new rate (the watched processes changed); the burst scales with it."""
        if cores == self.cores:
            return
        self._refill()
        burst = self.capacity / self.cores
        self.cores = cores
        self.capacity = cores * burst
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.cores)
        self._last = now

    def reserve(self, cpu_seconds: float) -> float:
        """Takes a window's expected cost now; returns it for :meth:`charge` to settle."""
        self._refill()
        self.tokens -= cpu_seconds
        return cpu_seconds

    def charge(self, cpu_seconds: float, reserved: float = 0.0) -> None:
        """Charges what a window cost, giving back what it reserved when it started."""
        self._refill()
        self.tokens += reserved - cpu_seconds
        self.spent += cpu_seconds

    def available(self) -> bool:
        self._refill()
        return self.tokens > 0

    def wait(self) -> float:
        """Seconds until the bucket is out of debt (0 when a window may start now)."""
        self._refill()
        return 0.0 if self.tokens > 0 else (-self.tokens / self.cores) + 1e-3
