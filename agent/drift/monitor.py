"""Live drift state: references loaded from the store, one sliding window per model
version, bootstrap captures, counters, and the checks that compare them.

Shared by the ingest routes (event loop, via a worker thread) and the drift collector's
background checker; every public method is thread-safe. A check copies the window under
its lock and runs the KS engine outside it, so ingest never waits on a check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.drift.ks import KsResult, ReferenceSample
from agent.drift.parse import MALFORMED, Parsed
from agent.drift.store import NAME_RE, ReferenceInfo, ReferenceStore, StoreError
from agent.log import log_limited

log = logging.getLogger("vigil.drift")

UNKNOWN_MODEL_LABEL = "(unknown)"  # rejected samples of a model with no reference
# Captures of not-yet-referenced models held in memory at once: bounds what a stream of
# made-up model names can cost while --collector.drift.bootstrap is on.
MAX_PENDING_BOOTSTRAPS = 16
# Largest capture: a capture is held in memory (rows x features x 8 bytes) until it is
# complete, and KS gains little past a million rows (its resolution is ~1/sqrt(n)), so a
# larger N is a typo or a memory hazard rather than a better reference.
MAX_BOOTSTRAP_ROWS = 1_000_000
# A capture that has received no sample for this long is dropped: it holds one of the
# MAX_PENDING_BOOTSTRAPS slots, and a slot taken by a version that never sends again (a
# typo, a one-off test call) would otherwise block real captures until a restart.
# Requested captures (a request file) come back at the next sync.
CAPTURE_IDLE_S = 3600.0


class IngestError(Exception):
    """A request that cannot be served; ``status`` is the HTTP code, ``reason`` the label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


FEATURE_MISMATCH = "feature_mismatch"


class _FeatureMismatch(Exception):
    """A batch for a capture whose features another batch has already fixed."""


class Window:
    """The last ``capacity`` rows (and, with ``max_age``, only those younger than it)."""

    def __init__(self, n_features: int, capacity: int, max_age: float, clock: Callable[[], float]):
        self.capacity, self.max_age, self._clock = capacity, max_age, clock
        self._values = np.empty((capacity, n_features))
        self._times = np.zeros(capacity)
        self._next = 0  # ring position of the next row
        self._count = 0
        self.generation = 0  # bumps on every append: "changed since the last check?"
        self._lock = threading.Lock()

    def append(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        rows = rows[-self.capacity :]
        k = len(rows)
        now = self._clock()
        with self._lock:
            idx = (self._next + np.arange(k)) % self.capacity
            self._values[idx] = rows
            self._times[idx] = now
            self._next = (self._next + k) % self.capacity
            self._count = min(self.capacity, self._count + k)
            self.generation += 1

    def snapshot(self) -> tuple[np.ndarray, int]:
        """A copy of the rows in the window, and the generation it reflects."""
        with self._lock:
            if self._count < self.capacity:
                rows, times = self._values[: self._count], self._times[: self._count]
            else:
                rows, times = self._values, self._times
            if self.max_age > 0:
                keep = times >= self._clock() - self.max_age
                return rows[keep].copy(), self.generation
            return rows.copy(), self.generation

    def __len__(self) -> int:
        with self._lock:
            if self.max_age <= 0:
                return self._count
            cutoff = self._clock() - self.max_age
            return int(np.count_nonzero(self._times[: self._count] >= cutoff))


@dataclass(frozen=True)
class Outcome:
    """The latest check of one model version; ``result`` None while the window is small."""

    model: str
    version: str
    window_samples: int
    result: KsResult | None
    duration_s: float
    at: float  # wall-clock time of the check


@dataclass
class Tracked:
    info: ReferenceInfo
    ref: ReferenceSample
    window: Window
    samples_total: int = 0
    last: Outcome | None = None
    checked_generation: int = -1


@dataclass
class Capture:
    """A reference being captured from the first ``rows`` live samples."""

    rows: int
    features: tuple[str, ...] | None = None
    chunks: list[np.ndarray] = field(default_factory=list)
    have: int = 0
    last_sample: float = 0.0  # monotonic clock; for expiring idle captures


@dataclass(frozen=True)
class Settings:
    window: int = 5000
    window_seconds: float = 0.0
    alpha: float = 0.05
    correction: str = "bonferroni"
    min_samples: int = 100
    bootstrap: int = 0


class DriftMonitor:
    def __init__(
        self, state_dir: Path, settings: Settings, clock: Callable[[], float] = time.monotonic
    ):
        self.store = ReferenceStore(state_dir)
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._tracked: dict[tuple[str, str], Tracked] = {}
        self._captures: dict[tuple[str, str], Capture] = {}
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.load_errors: dict[str, str] = {}  # path → why it was refused

    # -- references ------------------------------------------------------------------
    def sync(self) -> None:
        """Loads new and changed reference files, forgets deleted ones, reads requests."""
        seen: set[tuple[str, str]] = set()
        errors: dict[str, str] = {}
        for model, version, path, stamp in self.store.files():
            key = (model, version)
            seen.add(key)
            current = self._tracked.get(key)
            if current is not None and current.info.stamp == stamp:
                continue
            try:
                info, ref = self.store.load_path(path)
            except StoreError as exc:
                errors[str(path)] = str(exc)
                log_limited(
                    log,
                    logging.ERROR,
                    f"load:{path}",
                    "drift reference refused",
                    every=300.0,
                    path=str(path),
                    error=str(exc),
                )
                if current is None:
                    seen.discard(key)
                continue
            self._install(key, info, ref)
        with self._lock:
            for key in [k for k in self._tracked if k not in seen]:
                del self._tracked[key]
                log.info("drift reference removed", extra={"model": key[0], "version": key[1]})
        self.load_errors = errors
        self.expire_captures()
        for req in self.store.bootstrap_requests():
            key = (req.model, req.version)
            if not 1 <= req.rows <= MAX_BOOTSTRAP_ROWS:
                log_limited(
                    log,
                    logging.ERROR,
                    f"bootstrap-rows:{req.path}",
                    "drift bootstrap request ignored: rows out of range",
                    every=300.0,
                    path=str(req.path),
                    rows=req.rows,
                    maximum=MAX_BOOTSTRAP_ROWS,
                )
                continue
            with self._lock:
                if key in self._tracked or key in self._captures:
                    continue
                # Requested captures share the in-memory bound with ingest-started ones;
                # a skipped request stays on disk and is retried at the next sync.
                if len(self._captures) >= MAX_PENDING_BOOTSTRAPS:
                    full = True
                else:
                    full = False
                    self._captures[key] = Capture(rows=req.rows, last_sample=self._clock())
            if full:
                log_limited(
                    log,
                    logging.WARNING,
                    "bootstrap-full",
                    "drift bootstrap request deferred: too many captures in progress",
                    every=300.0,
                    path=str(req.path),
                    limit=MAX_PENDING_BOOTSTRAPS,
                )

    def expire_captures(self) -> None:
        """Drops captures that received no sample for CAPTURE_IDLE_S."""
        with self._lock:
            idle = self._expire_locked()
        for model, version in idle:
            log.info("drift capture expired", extra={"model": model, "version": version})

    def _install(self, key: tuple[str, str], info: ReferenceInfo, ref: ReferenceSample) -> None:
        with self._lock:
            old = self._tracked.get(key)
            if old is not None and old.ref.feature_names == ref.feature_names:
                old.info, old.ref, old.checked_generation = info, ref, -1
                return
            s = self.settings
            window = Window(ref.n_features, s.window, s.window_seconds, self._clock)
            self._tracked[key] = Tracked(
                info, ref, window, samples_total=old.samples_total if old else 0
            )
            self._captures.pop(key, None)
        log.info(
            "drift reference loaded",
            extra={"model": key[0], "version": key[1], "rows": ref.n, "features": ref.n_features},
        )

    def tracked(self) -> dict[tuple[str, str], Tracked]:
        with self._lock:
            return dict(self._tracked)

    # -- ingest ----------------------------------------------------------------------
    def resolve(self, model: str, version: str | None) -> tuple[str, tuple[str, ...] | None]:
        """The version samples go to and its feature names (None: learnt from the data)."""
        if version is not None and not NAME_RE.match(version):
            # Checked before a capture slot can be taken: junk versions must not fill them.
            raise IngestError(
                400,
                MALFORMED,
                f"version {version[:60]!r} is not a valid name: use letters, digits and "
                ". _ : + - (starting with a letter or digit, at most 128 characters)",
            )
        with self._lock:
            versions = sorted(v for (m, v) in self._tracked if m == model)
            capturing = sorted(v for (m, v) in self._captures if m == model)
            if version is None:
                choices = versions or capturing
                if len(choices) == 1:
                    version = choices[0]
                elif choices:
                    raise IngestError(
                        400,
                        "missing_version",
                        f"model {model!r} has references for versions "
                        f'{", ".join(choices)}; say which with "version"',
                    )
                else:
                    raise self._unknown(model, None)
            t = self._tracked.get((model, version))
            if t is not None:
                return version, t.ref.feature_names
            cap = self._captures.get((model, version))
            if cap is None and self.settings.bootstrap > 0:
                if len(self._captures) >= MAX_PENDING_BOOTSTRAPS:
                    self._expire_locked()
                if len(self._captures) >= MAX_PENDING_BOOTSTRAPS:
                    raise IngestError(
                        429,
                        "bootstrap_limit",
                        f"{MAX_PENDING_BOOTSTRAPS} references are already being captured; "
                        f"set one for {model!r} with `vigil drift reference set`",
                    )
                cap = self._captures[(model, version)] = Capture(
                    rows=self.settings.bootstrap, last_sample=self._clock()
                )
            if cap is None:
                raise self._unknown(model, version, versions)
            return version, cap.features

    def _expire_locked(self) -> list[tuple[str, str]]:
        """Drops idle captures (the caller holds the lock); returns their keys."""
        cutoff = self._clock() - CAPTURE_IDLE_S
        idle = [k for k, c in self._captures.items() if c.last_sample < cutoff]
        for key in idle:
            del self._captures[key]
        return idle

    def _unknown(
        self, model: str, version: str | None, versions: list[str] | None = None
    ) -> IngestError:
        if versions:
            return IngestError(
                404,
                "unknown_version",
                f"model {model!r} has no reference for version {version!r} (known: "
                f"{', '.join(versions)}); set one with `vigil drift reference set --model "
                f"{model} --version {version} FILE`",
            )
        return IngestError(
            404,
            "unknown_model",
            f"no reference for model {model!r}; set one with `vigil drift reference set "
            f"--model {model} --version V FILE` (or --bootstrap N)",
        )

    def accept(self, model: str, version: str, parsed: Parsed, client_dropped: int = 0) -> int:
        """Adds parsed rows to the window (or the capture); counts the rejected ones."""
        label = self.label(model)
        with self._lock:
            for reason, count in parsed.rejected.items():
                self.rejected[(label, reason)] += count
            if client_dropped > 0:
                self.rejected[(label, "client_dropped")] += client_dropped
            t = self._tracked.get((model, version))
            cap = self._captures.get((model, version)) if t is None else None
        values = parsed.values
        if t is None and cap is not None:
            try:
                values = self._capture(model, version, cap, parsed)
            except _FeatureMismatch as exc:
                # Answered like other dropped rows: a 422 naming the reason, and counted.
                parsed.reject(FEATURE_MISMATCH, str(exc), len(parsed.values))
                with self._lock:
                    self.rejected[(label, FEATURE_MISMATCH)] += len(parsed.values)
                return 0
            t = self.tracked().get((model, version))
        if t is None or len(values) == 0:
            return len(parsed.values)
        if values.shape[1] != t.ref.n_features:  # the reference was replaced meanwhile
            self.count_rejected(model, "reference_changed", len(values))
            return 0
        t.window.append(values)
        with self._lock:
            t.samples_total += len(values)
        return len(parsed.values)

    def _capture(self, model: str, version: str, cap: Capture, parsed: Parsed) -> np.ndarray:
        """Feeds a capture; once full, stores the reference. Returns rows left over."""
        with self._lock:
            if cap.features is None:
                cap.features = parsed.features
            elif cap.features != parsed.features:
                # Two batches resolved before either fixed the capture's features and
                # brought different ones; mixing them cannot make one reference, and
                # raising here would lose the capture. The later batch is refused.
                raise _FeatureMismatch(
                    f"the reference being captured for {model!r} {version!r} has features "
                    f"{', '.join(cap.features[:5])}{' ...' if len(cap.features) > 5 else ''}; "
                    "these rows have different ones"
                )
            cap.last_sample = self._clock()
            take = parsed.values[: max(0, cap.rows - cap.have)]
            cap.chunks.append(take)
            cap.have += len(take)
            if cap.have < cap.rows or self._captures.get((model, version)) is not cap:
                return parsed.values[:0]
            del self._captures[(model, version)]
        ref = ReferenceSample(np.concatenate(cap.chunks), cap.features)
        try:
            self.store.save(model, version, ref, f"bootstrap: first {cap.rows} live samples")
            info, ref = self.store.load(model, version)
        except StoreError as exc:
            log.error(
                "drift bootstrap could not be stored",
                extra={"model": model, "version": version, "error": str(exc)},
            )
            return parsed.values[:0]
        self._install((model, version), info, ref)
        log.info(
            "drift reference captured", extra={"model": model, "version": version, "rows": cap.rows}
        )
        return parsed.values[len(take) :]

    def label(self, model: str) -> str:
        """The model label for counters: only names with a reference or capture, bounded."""
        with self._lock:
            known = any(m == model for (m, _) in self._tracked) or any(
                m == model for (m, _) in self._captures
            )
        return model if known else UNKNOWN_MODEL_LABEL

    def count_rejected(self, model: str, reason: str, count: int = 1) -> None:
        label = self.label(model)
        with self._lock:
            self.rejected[(label, reason)] += count

    # -- checks ----------------------------------------------------------------------
    def check(self, model: str, version: str, force: bool = False) -> Outcome:
        t = self.tracked().get((model, version))
        if t is None:
            raise IngestError(
                404, "unknown_model", f"no reference for model {model!r} version {version!r}"
            )
        rows, generation = t.window.snapshot()
        if not force and t.last is not None and generation == t.checked_generation:
            return t.last  # nothing new since the last check: same answer
        s = self.settings
        started = time.perf_counter()
        result = None
        if len(rows) >= max(1, s.min_samples):
            result = t.ref.test(rows, alpha=s.alpha, correction=s.correction)
        outcome = Outcome(
            model, version, len(rows), result, time.perf_counter() - started, time.time()
        )
        t.last, t.checked_generation = outcome, generation
        return outcome

    def check_all(self) -> list[Outcome]:
        out = []
        for (model, version), _ in sorted(self.tracked().items()):
            try:
                out.append(self.check(model, version))
            except Exception as exc:  # one bad model must not stop the others' checks
                log_limited(
                    log,
                    logging.ERROR,
                    f"check:{model}:{version}:{type(exc).__name__}",
                    "drift check failed",
                    every=60.0,
                    model=model,
                    version=version,
                    error=f"{type(exc).__name__}: {exc}",
                )
        return out
