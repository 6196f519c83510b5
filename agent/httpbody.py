"""Request bodies: how large and how slow a client may be. Used by the HTTP server (its
client_max_size and the 408 it answers) and by the components that read bodies (the drift
ingest API), which must not depend on the server itself."""

from __future__ import annotations

import asyncio

from aiohttp import web

# Drift batches are the largest bodies we accept; 8 MiB is ~500k numeric values as JSON,
# two orders of magnitude above a typical batch, and small enough to bound memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Reading a body: 8 MiB in 10 s is 6.7 Mbit/s, far below any node's link; a client slower
# than that is holding an ingest slot, not sending data.
BODY_TIMEOUT_S = 10.0


class BodyTimeout(Exception):
    """The client did not send its body within BODY_TIMEOUT_S."""


async def read_body(request: web.Request, timeout: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, within ``timeout``; the app's client_max_size still applies
    (web.HTTPRequestEntityTooLarge). A stalled client raises :class:`BodyTimeout`, which
    the server's front middleware answers with 408 and counts."""
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout() from None
