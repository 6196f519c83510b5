"""HTTP GETs to inference servers with a deadline and a size cap (stdlib http.client).

One request = connect, send, status line, headers and body, all inside one deadline: a
server that trickles bytes cannot hold a probe past its timeout, because every socket
operation gets only what is left of it. A body over the cap is refused as soon as the
cap is passed, so a 100 MB /metrics costs at most the cap in memory.

Failures are :class:`ProbeFailure` with a short ``reason`` that becomes a metric label.
"""

from __future__ import annotations

import errno
import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

# Reason labels, the complete set (metric label values; docs in metrics.py).
REASONS = (
    "timeout",
    "refused",
    "reset",
    "unreachable",
    "http_status",
    "too_large",
    "protocol",
    "error",
)
CHUNK = 64 * 1024  # read size: big enough for few syscalls, small enough to stop at the cap
USER_AGENT = "vigil-inference-probe"


class ProbeFailure(Exception):
    def __init__(self, reason: str, detail: str, status: int = 0) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    duration_s: float


def classify(exc: BaseException) -> str:
    """An exception from connecting or reading → a reason label (pure)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "reset"
    if isinstance(exc, http.client.HTTPException):
        return "protocol"
    if isinstance(exc, socket.gaierror):
        return "unreachable"
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EADDRNOTAVAIL,
    ):
        return "unreachable"
    return "error"


def get(
    host: str,
    port: int,
    path: str,
    timeout: float,
    max_bytes: int,
    clock: Callable[[], float] = time.monotonic,
) -> Response:
    """GET ``http://host:port/path``; any status is returned (the caller judges it).
    Raises :class:`ProbeFailure` on timeout, a broken connection or a body over ``max_bytes``."""
    started = clock()
    deadline = started + timeout

    def left() -> float:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        return remaining

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
            # Held here: http.client drops conn.sock once it knows the connection will
            # close, while the response still reads from the same socket.
            sock = conn.sock
            assert sock is not None
            sock.settimeout(left())
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            sock.settimeout(left())
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ProbeFailure("too_large", f"Content-Length {length} > {max_bytes} bytes")
            parts: list[bytes] = []
            size = 0
            # The response closes itself (and the socket under it) once the body is read.
            while not resp.isclosed():
                sock.settimeout(left())
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ProbeFailure("too_large", f"body over {max_bytes} bytes")
                parts.append(chunk)
        except ProbeFailure:
            raise
        except Exception as exc:
            raise ProbeFailure(classify(exc), f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    return Response(resp.status, b"".join(parts), clock() - started)


def get_ok(host: str, port: int, path: str, timeout: float, max_bytes: int) -> Response:
    """:func:`get`, with any status but 2xx a failure (reason http_status)."""
    resp = get(host, port, path, timeout, max_bytes)
    if not 200 <= resp.status < 300:
        raise ProbeFailure("http_status", f"HTTP {resp.status} from {path}", resp.status)
    return resp
