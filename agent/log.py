"""Structured, rate-limited logging.

Every line is one record, ``key=value`` (logfmt) by default or JSON, so that a node's
logs can be grepped and shipped without parsing prose. Causes that repeat (a GPU that
stays lost, a process py-spy cannot read) go through :func:`log_limited` so they cost one
line per interval, not one per poll.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info and record.levelno >= logging.ERROR:
            # Unexpected errors keep their traceback, folded onto the same line.
            fields["exc"] = self.formatException(record.exc_info).replace("\n", " | ")
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info and record.levelno >= logging.ERROR:
            fields["exc"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str)


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _Limiter:
    """Remembers when each cause was last logged; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def allow(self, logger: str, key: str, every: float) -> int | None:
        """Returns how many repeats were suppressed, or None when this one is too."""
        now = self._clock()
        with self._lock:
            k = (logger, key)
            last = self._last.get(k)
            if last is not None and now - last < every:
                self._suppressed[k] = self._suppressed.get(k, 0) + 1
                return None
            self._last[k] = now
            return self._suppressed.pop(k, 0)


_limiter = _Limiter()


def log_limited(
    logger: logging.Logger,
    level: int,
    key: str,
    msg: str,
    *,
    every: float = 300.0,
    exc_info: Any = False,  # Any: callers spread **dict[str, object] of fields after it
    **fields: Any,
) -> bool:
    """Logs ``msg`` unless the same ``key`` was logged within ``every`` seconds; with
    ``exc_info`` (inside an ``except``) the traceback goes on the same line."""
    suppressed = _limiter.allow(logger.name, key, every)
    if suppressed is None:
        return False
    if suppressed:
        fields["suppressed"] = suppressed
    logger.log(level, msg, exc_info=exc_info, extra=fields)
    return True
