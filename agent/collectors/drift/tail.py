"""Follows a JSON-lines file of logged requests and feeds its rows to the drift monitor.

One line per request: ``{"model": "m", "version": "v", "features": {"f1": 0.3, ...}}``
(``version`` optional when the model has one reference). Like ``tail -F``: starts at the
end of the file, follows it across rotation (new inode) and truncation, and reads at most
a few MiB per poll. Bad lines are counted like bad ingested rows, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

from agent.collectors.drift.monitor import DriftMonitor, IngestError
from agent.collectors.drift.parse import MALFORMED, ParseError, parse_rows
from agent.loop import Loop

log = logging.getLogger("vigil.drift.tail")

POLL_S = 0.5  # new lines show up in a window within half a second
MAX_READ = 4 * 1024 * 1024  # per poll: bounds the memory a burst of log lines can take


class Tailer:
    def __init__(self, path: str, monitor: DriftMonitor, from_start: bool = False) -> None:
        self.path, self.monitor = path, monitor
        # The tailer must survive anything a file can do: a failed poll is logged and
        # counted, and the next one comes POLL_S later.
        self._loop = Loop(
            "drift-tail",
            self._step,
            POLL_S,
            logger=log,
            message="drift tail failed",
            fields={"path": path},
        )
        self._ino: int | None = None
        self._pos = 0
        self._partial = b""
        self._dropping = False  # inside an oversized line: discard until its newline
        self._from_start = from_start

    def start(self) -> None:
        self._loop.start()

    def close(self) -> None:
        self._loop.stop(timeout=2.0)

    def _step(self) -> None:
        self.poll()

    def poll(self) -> int:
        """Reads what was appended since the last poll; returns the rows accepted."""
        try:
            st = os.stat(self.path)
        except OSError:
            return 0  # not there (yet, or mid-rotation)
        if self._ino != st.st_ino or st.st_size < self._pos:
            first = self._ino is None
            self._ino, self._partial, self._dropping = st.st_ino, b"", False
            self._pos = st.st_size if first and not self._from_start else 0
        if st.st_size == self._pos:
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self._pos)
            data = fh.read(MAX_READ)
        self._pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next poll
        if self._dropping:
            # The rest of a line already counted as oversized: skip up to its newline.
            if not lines:
                self._partial = b""
                return self.feed(lines)
            lines.pop(0)
            self._dropping = False
        if len(self._partial) > MAX_READ:
            # A line longer than a poll's read (or a file with no newlines) would grow
            # _partial without bound; such a line is no sane request log entry anyway.
            self.monitor.count_rejected("", MALFORMED)
            self._partial, self._dropping = b"", True
        return self.feed(lines)

    def feed(self, lines: list[bytes]) -> int:
        groups: dict[tuple[str, str | None], list[object]] = defaultdict(list)
        for line in lines:
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                model, version, row = doc["model"], doc.get("version"), doc["features"]
                if not isinstance(model, str) or not (version is None or isinstance(version, str)):
                    raise TypeError
            except (ValueError, KeyError, TypeError, RecursionError):
                # RecursionError: a line nested too deeply for json's recursive decoder.
                self.monitor.count_rejected("", MALFORMED)
                continue
            groups[(model, version)].append(row)
        accepted = 0
        step = self.monitor.bounds.max_rows  # a burst of lines goes in batches, none refused
        for (model, version), group in groups.items():
            for start in range(0, len(group), step):
                rows = group[start : start + step]
                try:
                    resolved, features = self.monitor.resolve(model, version)
                    parsed = parse_rows(rows, features, self.monitor.bounds)
                    accepted += self.monitor.accept(model, resolved, parsed)
                except (IngestError, ParseError) as exc:
                    # accept() raises only for a whole batch refused (nothing of it kept).
                    reason = getattr(exc, "reason", MALFORMED)
                    self.monitor.count_rejected(model, reason, len(rows))
        return accepted
