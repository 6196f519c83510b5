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

from agent.collectors.drift.parse import MALFORMED, Bounds, Parsed
from agent.collectors.drift.reference import DriftResult, Reference
from agent.collectors.drift.schema import CONFIDENCE, CaptureKinds, Schema, SchemaError
from agent.collectors.drift.settings import MAX_BOOTSTRAP_ROWS, DriftSettings
from agent.collectors.drift.store import (
    NAME_RE,
    ReferenceInfo,
    ReferenceStore,
    StoreError,
    check_features,
)
from agent.log import log_limited

log = logging.getLogger("vigil.drift")

# The model label of every count that is not about a loaded reference: the model name in a
# request is the sender's to choose, and one series per made-up name would grow /metrics
# without bound. Names become labels only once a reference is loaded, which the store
# bounds (--collector.drift.max-references).
UNKNOWN_MODEL_LABEL = "(unknown)"
# Reasons of whole-request refusals decided here (parse.py has the per-row ones).
BOOTSTRAP_LIMIT = "bootstrap_limit"
STORE_FAILED = "store_failed"
# Source recorded in references captured from live samples; how captured ones are counted.
BOOTSTRAP_SOURCE = "bootstrap:"  # hand-set ones say "file: PATH"
# Captures of not-yet-referenced models held in memory at once: bounds what a stream of
# made-up model names can cost while --collector.drift.bootstrap is on.
MAX_PENDING_BOOTSTRAPS = 16
# A capture that has received no sample for this long is dropped: it holds one of the
# MAX_PENDING_BOOTSTRAPS slots, and a slot taken by a version that never sends again (a
# typo, a one-off test call) would otherwise block real captures until a restart.
# Requested captures (a request file) come back at the next sync.
CAPTURE_IDLE_S = 3600.0
# A sample for a model version that is not loaded looks at the model's directories in the
# store (two stats: references and capture requests) and rescans the store when they
# changed since the last scan, so a reference set with `vigil drift reference set` (or a
# capture it requested) serves the very next sample instead of waiting for the periodic
# check. Unchanged directories are rescanned at most this often (it closes the gap of a
# change within one mtime tick); names without a directory never rescan, so a stream of
# made-up model names costs two stats each.
RESCAN_MIN_S = 1.0


class IngestError(Exception):
    """A request that cannot be served; ``status`` is the HTTP code, ``reason`` the label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


FEATURE_MISMATCH = "feature_mismatch"
# Upper bounds of vigil_prediction_confidence's buckets: finer towards 1, where the
# confidence of a served model mostly lives and where a slide (0.97 -> 0.9) matters.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


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
    result: DriftResult | None
    duration_s: float
    at: float  # wall-clock time of the check


@dataclass
class Tracked:
    info: ReferenceInfo
    ref: Reference
    window: Window
    samples_total: int = 0
    last: Outcome | None = None
    checked_generation: int = -1
    # Per confidence feature, cumulative counts of accepted values per CONFIDENCE_BUCKETS
    # upper bound (+Inf last), and their sum: vigil_prediction_confidence.
    confidence: np.ndarray | None = None
    confidence_sum: np.ndarray | None = None


@dataclass
class Capture:
    """A reference being captured from the first ``rows`` live samples."""

    rows: int
    features: tuple[str, ...] | None = None
    chunks: list[np.ndarray] = field(default_factory=list)
    kinds: CaptureKinds | None = None  # declared with the request; None: numeric inputs
    have: int = 0
    last_sample: float = 0.0  # monotonic clock; for expiring idle captures


@dataclass(frozen=True)
class LoadError:
    """A reference file on disk that is not being used, and why."""

    model: str
    version: str
    path: Path
    message: str
    over_limit: bool = False  # not loaded for want of room (max-references), not damage


class DriftMonitor:
    def __init__(
        self, state_dir: Path, settings: DriftSettings, clock: Callable[[], float] = time.monotonic
    ):
        self.store = ReferenceStore(state_dir)
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._tracked: dict[tuple[str, str], Tracked] = {}
        self._captures: dict[tuple[str, str], Capture] = {}
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.refused: dict[tuple[str, str], LoadError] = {}  # files not loaded, by key
        self.bounds = Bounds(settings.max_rows, settings.bootstrap_max_features)
        self._sync_lock = threading.Lock()  # one scan at a time: periodic or on demand
        self._last_sync = -RESCAN_MIN_S  # monotonic time the last scan started
        self._dir_stamps: dict[str, tuple[tuple[int, int], ...]] = {}  # model → its dirs' stamps

    @property
    def load_errors(self) -> dict[str, str]:
        """path → why it was refused (for GET /v1/drift)."""
        return {str(e.path): e.message for e in self.refused.values()}

    # -- references ------------------------------------------------------------------
    def sync(self) -> None:
        """Loads new and changed reference files, forgets deleted ones, reads requests.

        At most ``max_references`` are held: those already loaded keep their place, new
        files take the room left in name order, and the rest are refused like corrupt ones.
        """
        with self._sync_lock:
            # Stamps are taken before the files are listed: a change during the scan
            # leaves a stale stamp, so the next miss scans again rather than never.
            self._last_sync = self._clock()
            self._dir_stamps = self.store.model_dir_stamps()
            self._sync_locked()

    def refresh_for(self, model: str) -> bool:
        """Rescans the store when ``model``'s directories changed since the last scan (or,
        unchanged, when the last scan is RESCAN_MIN_S old); True when it rescanned."""
        stamp = self.store.model_dir_stamp(model)
        if stamp is None:
            return False
        if stamp == self._dir_stamps.get(model) and self._clock() - self._last_sync < RESCAN_MIN_S:
            return False
        self.sync()
        return True

    def _sync_locked(self) -> None:
        seen: set[tuple[str, str]] = set()
        errors: dict[tuple[str, str], LoadError] = {}
        files = list(self.store.files())
        on_disk = {(model, version) for model, version, _, _ in files}
        with self._lock:
            room = self.settings.max_references - sum(1 for k in self._tracked if k in on_disk)
        for model, version, path, stamp in files:
            key = (model, version)
            current = self._tracked.get(key)
            if current is not None and current.info.stamp == stamp:
                seen.add(key)
                continue
            over_limit = current is None and room <= 0
            if over_limit:
                why = (
                    f"{path} was not loaded: the agent already holds "
                    f"{self.settings.max_references} references, the most "
                    "--collector.drift.max-references allows; delete unused ones with "
                    "`vigil drift reference delete` or raise the limit"
                )
            else:
                try:
                    info, ref = self.store.load_path(path)
                except StoreError as exc:
                    why = str(exc)
                else:
                    seen.add(key)
                    if current is None:
                        room -= 1
                    self._install(key, info, ref)
                    continue
                if current is not None:
                    seen.add(key)  # the last good copy keeps serving
            errors[key] = LoadError(model, version, path, why, over_limit)
            log_limited(
                log,
                logging.ERROR,
                f"load:{path}",
                "drift reference refused",
                every=300.0,
                path=str(path),
                error=why,
            )
        with self._lock:
            for key in [k for k in self._tracked if k not in seen]:
                del self._tracked[key]
                log.info("drift reference removed", extra={"model": key[0], "version": key[1]})
        self.refused = errors
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
                    self._captures[key] = Capture(
                        rows=req.rows,
                        last_sample=self._clock(),
                        kinds=CaptureKinds(**req.declared) if any(req.declared.values()) else None,
                    )
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

    def _install(self, key: tuple[str, str], info: ReferenceInfo, ref: Reference) -> None:
        with self._lock:
            old = self._tracked.get(key)
            # Same features of the same kinds and categories: the window's rows (and their
            # category codes) still mean the same, so it is kept.
            if old is not None and old.ref.schema == ref.schema:
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
    def resolve(
        self, model: str, version: str | None
    ) -> tuple[str, Schema | CaptureKinds | tuple[str, ...] | None]:
        """The version samples go to and what its rows hold: the reference's schema, a
        capture's feature names, or None (learnt from the data)."""
        if version is not None and not NAME_RE.match(version):
            # Checked before a capture slot can be taken: junk versions must not fill them.
            raise IngestError(
                400,
                MALFORMED,
                f"version {version[:60]!r} is not a valid name: use letters, digits and "
                ". _ : + - (starting with a letter or digit, at most 128 characters)",
            )
        with self._lock:
            # A capture in progress is served too: its samples need no rescan.
            loaded = (
                (model, version) in self._tracked or (model, version) in self._captures
                if version
                else any(m == model for (m, _) in [*self._tracked, *self._captures])
            )
        if not loaded:
            self.refresh_for(model)  # a reference set a moment ago serves this sample
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
                return version, t.ref.schema
            cap = self._captures.get((model, version))
            if cap is not None:
                return version, cap.kinds if cap.kinds is not None else cap.features
            if self.settings.bootstrap <= 0:
                raise self._unknown(model, version, versions)
            # Refused here, before the body is parsed; the capture itself starts in
            # accept(), only once a batch brought good rows, so that a refused or
            # unparseable request never holds a capture slot.
            refusal = self._bootstrap_refusal_locked(model, version)
            if refusal is not None:
                raise refusal
            return version, None

    def _bootstrap_refusal_locked(self, model: str, version: str) -> IngestError | None:
        """Why no new capture may start now (the caller holds the lock), or None."""
        if len(self._captures) >= MAX_PENDING_BOOTSTRAPS:
            self._expire_locked()
        if len(self._captures) >= MAX_PENDING_BOOTSTRAPS:
            return IngestError(
                429,
                BOOTSTRAP_LIMIT,
                f"{MAX_PENDING_BOOTSTRAPS} references are already being captured; "
                f"set one for {model!r} with `vigil drift reference set`",
            )
        s = self.settings
        fix = f"set one with `vigil drift reference set --model {model} --version {version} FILE`"
        captured = len(self._captures) + sum(
            1 for t in self._tracked.values() if t.info.source.startswith(BOOTSTRAP_SOURCE)
        )
        if captured >= s.bootstrap_max_models:
            return IngestError(
                403,
                BOOTSTRAP_LIMIT,
                f"no reference is captured for {model!r} {version!r}: {captured} model versions "
                "already have one captured from live samples, the most "
                f"--collector.drift.bootstrap-max-models allows; {fix}",
            )
        held = len(self._tracked) + len(self._captures)
        if held >= s.max_references:
            return IngestError(
                403,
                BOOTSTRAP_LIMIT,
                f"no reference is captured for {model!r} {version!r}: the agent holds {held} "
                "references, the most --collector.drift.max-references allows; delete unused "
                f"ones with `vigil drift reference delete`, or {fix}",
            )
        return None

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
        refused = [
            e for e in self.refused.values() if e.model == model and version in (None, e.version)
        ]
        if refused:
            # The file is there but was not loaded: telling the user to set it again would
            # send them round in circles; the reason says what to fix instead.
            return IngestError(
                404,
                "unknown_version" if versions else "unknown_model",
                f"the reference for model {model!r} version {refused[0].version!r} is on disk "
                f"but not loaded: {refused[0].message}",
            )
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
        """Adds parsed rows to the window (or the capture); counts the rejected ones.

        Raises IngestError when the whole batch is refused (nothing kept): no reference and
        no capture may start, or a completed capture could not be stored.
        """
        key = (model, version)
        with self._lock:
            t = self._tracked.get(key)
            cap = self._captures.get(key) if t is None else None
        if len(parsed.values) and t is None and (cap is None or cap.features is None):
            # These rows would fix a capture's features, which become file content and
            # metric labels: a bad name drops the batch (422) before any capture starts.
            try:
                check_features(parsed.features)
            except StoreError as exc:
                parsed.reject(MALFORMED, str(exc), len(parsed.values))
                parsed.values = parsed.values[:0]
        with self._lock:
            t = self._tracked.get(key)
            cap = self._captures.get(key) if t is None else None
            if t is None and cap is None:
                if self.settings.bootstrap <= 0:  # the reference went away since resolve()
                    raise self._unknown(model, version)
                if len(parsed.values):  # checked and started at once: no race past a bound
                    refusal = self._bootstrap_refusal_locked(model, version)
                    if refusal is not None:
                        raise refusal
                    cap = self._captures[key] = Capture(
                        rows=self.settings.bootstrap, last_sample=self._clock()
                    )
            label = self._label_locked(model)
            for reason, count in parsed.rejected.items():
                self.rejected[(label, reason)] += count
            if client_dropped > 0:
                self.rejected[(label, "client_dropped")] += client_dropped
        values = parsed.values
        if t is None and cap is not None:
            try:
                values = self._capture(model, version, cap, parsed)
            except _FeatureMismatch as exc:
                # Answered like other dropped rows: a 422 naming the reason, and counted.
                return self._refuse_batch(label, parsed, FEATURE_MISMATCH, str(exc))
            t = self.tracked().get(key)
        if t is None or len(values) == 0:
            return len(parsed.values)
        if values.shape[1] != t.ref.n_features or (
            parsed.schema is not None and parsed.schema != t.ref.schema
        ):  # the reference was replaced meanwhile: these codes or columns mean other things
            self.count_rejected(model, "reference_changed", len(values))
            return 0
        t.window.append(values)
        with self._lock:
            t.samples_total += len(values)
            self._count_confidence(t, values)
        return len(parsed.values)

    def _count_confidence(self, t: Tracked, values: np.ndarray) -> None:
        """Adds accepted confidence scores to their histogram (the caller holds the lock)."""
        cols = [i for i, r in enumerate(t.ref.schema.roles) if r == CONFIDENCE]
        if not cols:
            return
        if t.confidence is None or t.confidence_sum is None:
            t.confidence = np.zeros((len(cols), len(CONFIDENCE_BUCKETS) + 1), dtype=np.int64)
            t.confidence_sum = np.zeros(len(cols))
        v = values[:, cols].T
        # Bucket k counts values <= CONFIDENCE_BUCKETS[k] (cumulative, as Prometheus reads).
        for k, le in enumerate(CONFIDENCE_BUCKETS):
            t.confidence[:, k] += (v <= le).sum(axis=1)
        t.confidence[:, -1] += v.shape[1]
        t.confidence_sum += v.sum(axis=1)

    def _refuse_batch(self, label: str, parsed: Parsed, reason: str, message: str) -> int:
        """Drops every row of the batch under ``reason`` (a 422 naming it); returns 0."""
        parsed.reject(reason, message, len(parsed.values))
        with self._lock:
            self.rejected[(label, reason)] += len(parsed.values)
        return 0

    def _capture(self, model: str, version: str, cap: Capture, parsed: Parsed) -> np.ndarray:
        """Feeds a capture; once full, stores the reference. Returns rows left over."""
        with self._lock:
            if cap.features is None:
                cap.features = parsed.features
                if cap.kinds is not None:
                    cap.kinds.names = parsed.features
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
        try:
            schema = (
                cap.kinds.schema(cap.features)
                if cap.kinds is not None
                else Schema.numeric(cap.features)
            )
            ref = Reference.from_rows(np.concatenate(cap.chunks), schema)
            self.store.save(
                model, version, ref, f"{BOOTSTRAP_SOURCE} first {cap.rows} live samples"
            )
            info, ref = self.store.load(model, version)
        except (StoreError, SchemaError) as exc:
            # This batch's rows go back out of the capture and the capture stays: the
            # client is told nothing of this batch was taken, and resending it once the
            # state directory has room completes the same reference, with no row twice.
            with self._lock:
                cap.chunks.pop()
                cap.have -= len(take)
                self._captures.setdefault((model, version), cap)
            log.error(
                "drift bootstrap could not be stored",
                extra={"model": model, "version": version, "error": str(exc)},
            )
            raise IngestError(
                507,
                STORE_FAILED,
                f"the reference captured for {model!r} {version!r} could not be stored: {exc}. "
                f"None of these {len(parsed.values)} samples was accepted: resend them once "
                "the state directory has room",
            ) from None
        self._install((model, version), info, ref)
        log.info(
            "drift reference captured", extra={"model": model, "version": version, "rows": cap.rows}
        )
        return parsed.values[len(take) :]

    def label(self, model: str) -> str:
        """The model label for counters: the name only once it has a loaded reference."""
        with self._lock:
            return self._label_locked(model)

    def _label_locked(self, model: str) -> str:
        known = any(m == model for (m, _) in self._tracked)
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
