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

from agent.collectors.gpu_poll import handle_address
from agent.log import log_limited

log = logging.getLogger("vigil.gpu")

# How long one wait blocks: bounds how late close() returns, and costs one wake-up each.
WAIT_MS = 500
# After an unexpected error, wait before the next try so a broken driver is not spun on.
ERROR_BACKOFF_S = 1.0


class XidWatcher:
    """Owns the event set; :meth:`register` adds a device, :meth:`counts` reads totals."""

    def __init__(self, nvml: Any, wait_ms: int = WAIT_MS) -> None:
        self.nvml = nvml
        self.wait_ms = wait_ms
        self._set: Any = None
        self._lock = threading.Lock()
        self._devices: dict[int, tuple[int, str]] = {}  # address → (index, uuid), registered
        self._unsupported: set[str] = set()
        self._counts: dict[tuple[int, str, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        self._thread = threading.Thread(target=self._loop, name="vigil-gpu-xid", daemon=True)
        self._thread.start()
        return True

    def register(self, index: int, handle: Any, uuid: str) -> None:
        """Registers a device for XID events, in the caller's thread (the poller's).

        Called for every answering GPU on every poll; free once registered. Registering
        before the first snapshot is published means no XID after readiness is missed.
        """
        n = self.nvml
        address = handle_address(handle)
        if address in self._devices or uuid in self._unsupported or self._set is None:
            return
        try:
            n.nvmlDeviceRegisterEvents(handle, n.nvmlEventTypeXidCriticalError, self._set)
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
            self._devices[address] = (index, uuid)

    def counts(self) -> dict[tuple[int, str, int], int]:
        """(gpu index, uuid, xid) → events since start."""
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.wait_ms / 1000.0 + 1.0)
        if self._set is not None:
            try:
                self.nvml.nvmlEventSetFree(self._set)
            except self.nvml.NVMLError as exc:
                log.info("nvmlEventSetFree failed", extra={"collector": "gpu", "error": str(exc)})

    # -- the thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        n = self.nvml
        while not self._stop.is_set():
            if not self._devices:
                self._stop.wait(self.wait_ms / 1000.0)
                continue
            try:
                data = n.nvmlEventSetWait(self._set, self.wait_ms)
            except n.NVMLError_Timeout:
                continue
            except n.NVMLError as exc:
                log_limited(
                    log,
                    logging.WARNING,
                    f"xid-wait:{type(exc).__name__}",
                    "waiting for NVML events failed",
                    collector="gpu",
                    error=str(exc),
                )
                self._stop.wait(ERROR_BACKOFF_S)
                continue
            if int(data.eventType) & n.nvmlEventTypeXidCriticalError:
                self._count(handle_address(data.device), int(data.eventData))

    def _count(self, address: int, xid: int) -> None:
        with self._lock:
            index, uuid = self._devices.get(address, (-1, ""))
            key = (index, uuid, xid)
            self._counts[key] = self._counts.get(key, 0) + 1
        log.warning(
            "GPU XID error", extra={"collector": "gpu", "gpu": index, "uuid": uuid, "xid": xid}
        )
