"""XID errors from an NVML event set, counted per GPU and XID code.

Measures: ``nvmlEventTypeXidCriticalError`` events (the driver's Xid reports, the same as
``NVRM: Xid`` lines in the kernel log). Source: one NVML event set, waited on with
``nvmlEventSetWait_v2`` in its own thread, so a burst of events is counted whole however
slow the poller is. Cost: the thread sleeps in the driver; one wake-up per event and one
per timeout (``WAIT_MS``). Privilege: as for the other NVML calls (no SYS_ADMIN).

Unlike a last-value gauge, the counter says how many XIDs happened, and a repeat of the
same code is visible as an increase.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agent.collectors.gpu.poll import decode, handle_address
from agent.log import log_limited
from agent.loop import Backoff, Loop

log = logging.getLogger("vigil.gpu")

# How long one wait blocks: bounds how late close() returns, and costs one wake-up each.
WAIT_MS = 500
# After a failed wait, the next try waits this long, doubling on each failure in a row up to
# ERROR_BACKOFF_MAX_S, so a broken driver is not spun on.
ERROR_BACKOFF_S = 1.0
ERROR_BACKOFF_MAX_S = 30.0


class XidWatcher:
    """Owns the event set; :meth:`register` adds a device, :meth:`counts` reads totals.

    An event names its GPU by a device handle; as NVIDIA's device plugin does
    (``internal/rm/health.go``), the GPU is found by the handle's UUID, not by comparing
    handle addresses, which nothing in nvml.h promises to be those the poller holds. A
    failed wait (``GPU_IS_LOST`` after an XID 79, for one) is counted, the event set is
    freed and made anew, and every GPU is registered again by the next poll: a set that
    held a lost GPU may never deliver another event.
    """

    def __init__(self, nvml: Any, wait_ms: int = WAIT_MS) -> None:
        self.nvml = nvml
        self.wait_ms = wait_ms
        self._set: Any = None
        self._lock = threading.Lock()
        # Held while a set is registered on, freed or made: never register on a freed set.
        # The wait runs outside it; only the event thread frees, so never during a wait.
        self._set_lock = threading.Lock()
        self._devices: dict[str, int] = {}  # uuid → index, registered in the current set
        self._addresses: dict[int, tuple[int, str]] = {}  # handle address → (index, uuid)
        self._unsupported: set[str] = set()
        self._counts: dict[tuple[int, str, int], int] = {}
        self._wait_errors: dict[str, int] = {}
        self._backoff = Backoff(ERROR_BACKOFF_S, ERROR_BACKOFF_MAX_S)
        # A step returns its own delay (0 after a wait, the backoff after a failure); the
        # interval is only the pause after an unexpected error, counted by the loop.
        self._loop = Loop(
            "gpu-xid",
            self._step,
            ERROR_BACKOFF_S,
            logger=log,
            message="XID watcher failed",
            fields={"collector": "gpu"},
        )

    def start(self) -> bool:
        """Creates the event set and the thread; False (logged) when events are unavailable."""
        try:
            self._set = self.nvml.nvmlEventSetCreate()
        except self.nvml.NVMLError as exc:
            log.warning(
                "NVML events unavailable; XID errors not counted",
                extra={"collector": "gpu", "error": str(exc)},
            )
            return False
        self._loop.start()
        return True

    def register(self, index: int, handle: Any, uuid: str) -> None:
        """Registers a device for XID events, in the caller's thread (the poller's).

        Called for every answering GPU on every poll; free once registered. Registering
        before the first snapshot is published means no XID after readiness is missed.
        """
        with self._lock:
            if uuid in self._devices or uuid in self._unsupported or self._set is None:
                return
        with self._set_lock:
            self._register(index, handle, uuid)

    def _register(self, index: int, handle: Any, uuid: str) -> None:
        n = self.nvml
        event_set = self._set
        if event_set is None:
            return
        try:
            n.nvmlDeviceRegisterEvents(handle, n.nvmlEventTypeXidCriticalError, event_set)
        except n.NVMLError_NotSupported as exc:
            log.info(
                "XID events not supported on this GPU",
                extra={"collector": "gpu", "gpu": index, "uuid": uuid, "error": str(exc)},
            )
            self._unsupported.add(uuid)
            return
        except n.NVMLError as exc:
            # Lost or busy: the next poll tries again.
            log_limited(
                log,
                logging.WARNING,
                f"xid-register:{uuid}",
                "cannot register GPU for XID events; retrying",
                collector="gpu",
                gpu=index,
                uuid=uuid,
                error=str(exc),
            )
            return
        with self._lock:
            self._devices[uuid] = index
            self._addresses[handle_address(handle)] = (index, uuid)

    def counts(self) -> dict[tuple[int, str, int], int]:
        """(gpu index, uuid, xid) → events since start."""
        with self._lock:
            return dict(self._counts)

    def wait_errors(self) -> dict[str, int]:
        """NVML error class → failed waits since start."""
        with self._lock:
            return dict(self._wait_errors)

    def close(self) -> None:
        self._loop.stop(timeout=self.wait_ms / 1000.0 + 1.0)
        if self._set is not None:
            try:
                self.nvml.nvmlEventSetFree(self._set)
            except self.nvml.NVMLError as exc:
                log.info("nvmlEventSetFree failed", extra={"collector": "gpu", "error": str(exc)})

    # -- the thread ----------------------------------------------------------------------
    def _step(self) -> float:
        """One wait for an event; returns the pause before the next one."""
        n = self.nvml
        with self._lock:
            event_set, registered = self._set, bool(self._devices)
        if event_set is None:  # a rebuild could not create one: try again, backing off
            self._create()
            return self._backoff.next()
        if not registered:
            return self.wait_ms / 1000.0
        try:
            data = n.nvmlEventSetWait(event_set, self.wait_ms)
        except n.NVMLError_Timeout:
            self._backoff.reset()
            return 0.0
        except n.NVMLError as exc:
            kind = type(exc).__name__
            with self._lock:
                self._wait_errors[kind] = self._wait_errors.get(kind, 0) + 1
            log_limited(
                log,
                logging.WARNING,
                f"xid-wait:{kind}",
                "waiting for NVML events failed; event set rebuilt, retrying",
                collector="gpu",
                error=str(exc),
                retry_in_s=self._backoff.current,
            )
            self._renew()
            return self._backoff.next()
        self._backoff.reset()
        if int(data.eventType) & n.nvmlEventTypeXidCriticalError:
            self._count(self._gpu_of(data.device), int(data.eventData))
        return 0.0

    def _renew(self) -> None:
        """Frees the event set and makes a new, empty one; the poller registers anew."""
        n = self.nvml
        with self._set_lock:
            with self._lock:
                old, self._set = self._set, None
                self._devices.clear()
                self._addresses.clear()
            if old is not None:
                try:
                    n.nvmlEventSetFree(old)
                except n.NVMLError as exc:
                    log.info(
                        "nvmlEventSetFree failed", extra={"collector": "gpu", "error": str(exc)}
                    )
            self._create_locked()

    def _create(self) -> None:
        with self._set_lock:
            self._create_locked()

    def _create_locked(self) -> None:
        n = self.nvml
        try:
            fresh = n.nvmlEventSetCreate()
        except n.NVMLError as exc:
            # Left without a set: registrations are refused and the loop tries again.
            log_limited(
                log,
                logging.WARNING,
                "xid-create",
                "cannot create an NVML event set; XID errors not counted until it can",
                collector="gpu",
                error=str(exc),
            )
            return
        with self._lock:
            self._set = fresh

    def _gpu_of(self, device: Any) -> tuple[int, str]:
        """(index, uuid) of an event's device: by UUID, else by address, else (-1, "")."""
        n = self.nvml
        try:
            uuid = decode(n.nvmlDeviceGetUUID(device))
        except n.NVMLError:
            uuid = ""
        with self._lock:
            if uuid in self._devices:
                return self._devices[uuid], uuid
            return self._addresses.get(handle_address(device), (-1, uuid))

    def _count(self, gpu: tuple[int, str], xid: int) -> None:
        index, uuid = gpu
        with self._lock:
            key = (index, uuid, xid)
            self._counts[key] = self._counts.get(key, 0) + 1
        log.warning(
            "GPU XID error", extra={"collector": "gpu", "gpu": index, "uuid": uuid, "xid": xid}
        )
