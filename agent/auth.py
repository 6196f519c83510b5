"""Credentials of the HTTP APIs, one policy for the agent and the rollback controller.

Every ``/v1/...`` route (drift samples and checks, profiles, the controller's webhook and
journal) needs ``Authorization: Bearer <token>`` whatever the listen address: loopback is
shared by every local user and every process of the pod, so it is no trust boundary. The
scheme is matched case-insensitively (RFC 7235 §2.1: ``bearer`` and ``Bearer`` are the
same scheme), the token compared in constant time, and a token file re-read when it
changes, so a rotated token takes effect without a restart.

The agent's token needs no set-up: on first start it is generated into
``<state-dir>/ingest-token`` (mode 0600, written whole or not at all), where the CLI and
the client library (agent/drift/client.py) look for it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# The client library keeps its own copy of this name (it imports nothing of Vigil);
# tests/security/test_http_auth.py checks that the two agree.
INGEST_TOKEN_NAME = "ingest-token"
# 32 random bytes, URL-safe: as strong as the controller's token, and safe in a header.
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, a metric reason, a message for the caller."""

    status: int
    reason: str
    message: str


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """``"Bearer abc"`` → ``("bearer", "abc")``; None when absent or malformed.

    The scheme is returned lower-cased: auth schemes are case-insensitive (RFC 7235 §2.1).
    """
    if not header:
        return None
    scheme, sep, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if not sep or not scheme or not credentials:
        return None
    return scheme.lower(), credentials


def bearer_problem(header: str | None, token: str) -> Refusal | None:
    """None when ``header`` carries ``token`` as a bearer token, else why not."""
    parsed = parse_authorization(header)
    if parsed is None or parsed[0] != "bearer":
        return Refusal(
            401, "unauthorized", "bearer token required: send 'Authorization: Bearer <token>'"
        )
    # compare_digest: the time taken does not tell how much of a guess was right.
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way.
    given = parsed[1].encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, token.encode()):
        return Refusal(401, "unauthorized", "wrong bearer token")
    return None


class TokenError(Exception):
    """The server's own token cannot be used; the message says which file and why."""


class TokenFile:
    """A token kept in a file, re-read when the file changes (rotation needs no restart)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._token = self.path.read_text().strip()
                self._stamp = stamp
        except OSError as exc:
            raise TokenError(
                f"token file {self.path} cannot be read ({exc.strerror or exc})"
            ) from None
        if not self._token:
            raise TokenError(f"token file {self.path} is empty")
        return self._token


class BearerAuth:
    """The bearer-token check of one server; ``token`` is fixed or read from a file."""

    def __init__(self, token: str | None = None, token_file: TokenFile | None = None) -> None:
        if (token is None) == (token_file is None):
            raise ValueError("give exactly one of token and token_file")
        self._token, self._file = token, token_file

    @property
    def source(self) -> str:
        return str(self._file.path) if self._file is not None else "configured token"

    def problem(self, header: str | None) -> Refusal | None:
        try:
            token = self._token if self._file is None else self._file.read()
        except TokenError as exc:
            # The server cannot tell anyone apart: refuse everyone, and say how to fix it.
            return Refusal(503, "no_credential", f"API disabled: {exc}")
        assert token is not None
        return bearer_problem(header, token)


def write_secret(path: Path, text: str) -> bool:
    """Creates ``path`` holding ``text``, mode 0600, all at once; False if it already exists.

    The temporary file is created with O_EXCL and mode 0600 (never readable by others,
    not even for a moment), fsynced, then linked into place (link fails rather than
    overwrite: two starts on one state dir share the first token), and the directory is
    fsynced. A crash or a full disk leaves no file or a complete one, never a half one.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            data = text.encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
        except OSError:
            # A filesystem without hard links: rename is atomic too; the existence check
            # keeps a token that another start just made (the only race left).
            created = not path.exists()
            if created:
                os.replace(tmp, path)
        _fsync_dir(path.parent)
        return created
    finally:
        tmp.unlink(missing_ok=True)


def ensure_token(path: Path) -> bool:
    """Makes a random token at ``path`` unless one is there; True when it made one."""
    if path.exists():
        return False
    # A state directory the agent creates is its own: the token, references and captures
    # in it are nobody else's to read or replace.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write_secret(path, secrets.token_urlsafe(TOKEN_BYTES) + "\n")


def _fsync_dir(directory: Path) -> None:
    """Makes the new entry durable; best effort where a directory cannot be opened."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
