"""Credentials of the HTTP APIs, one policy for the agent and the rollback controller.

Every ``/v1/...`` route (drift samples and checks, profiles, the controller's webhook and
journal) needs ``Authorization: Bearer <token>`` whatever the listen address: loopback is
shared by every local user and every process of the pod, so it is no trust boundary. The
scheme is matched case-insensitively (RFC 7235 §2.1: ``bearer`` and ``Bearer`` are the
same scheme), the token compared in constant time, and a token file re-read when it
changes, so a rotated token takes effect without a restart.

The agent's token needs no set-up: on first start it is generated into
``<state-dir>/ingest-token`` (mode 0600, written whole or not at all), where the CLI and
the client library (agent/drift/client.py) look for it. A state directory either server
creates is created 0700 (:func:`ensure_private_dir`).

A token file, generated or given, is used only if nobody else could have written or read
it (:func:`token_file_problem`): a token planted in advance by another local user (the
default state directory of a non-root user is ``./var``), or one every user can read, is
no secret. Otherwise the agent's APIs answer 503 saying which file and how to fix it, and
the controller does not start.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.atomic import atomic_write

log = logging.getLogger("vigil.auth")

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


def token_file_problem(mode: int, uid: int, gid: int, euid: int, egid: int) -> str:
    """Why a token file with this mode and owner cannot be trusted ("" when it can).

    The owner must be this process's user or root (only root could have made a root-owned
    file, and root can read everything anyway). Nobody else may write it, and others may
    not read it. The group may read it only when it is this process's own group: that is
    how Kubernetes hands a Secret to a non-root pod (root-owned, group fsGroup, mode 0440).
    """
    perm = f"mode {stat.S_IMODE(mode):04o}"
    if uid not in (euid, 0):
        return f"belongs to uid {uid}, not to this process's user (uid {euid}) or root"
    if mode & stat.S_IWOTH:
        return f"is writable by others ({perm})"
    if mode & stat.S_IWGRP:
        return f"is writable by its group ({perm})"
    if mode & stat.S_IROTH:
        return f"is readable by others ({perm})"
    if mode & stat.S_IRGRP and gid != egid:
        return f"is readable by group {gid}, not this process's own ({perm})"
    return ""


def _check_private(path: Path, st: os.stat_result) -> None:
    euid, egid = os.geteuid(), os.getegid()
    problem = token_file_problem(st.st_mode, st.st_uid, st.st_gid, euid, egid)
    if problem:
        owner = "" if st.st_uid in (euid, 0) else f"chown {euid} {path} && "
        raise TokenError(
            f"token file {path} {problem}, so it is no secret: check who made it, then "
            f"{owner}chmod 600 {path} (a Kubernetes Secret volume: defaultMode: 0400)"
        )


class TokenFile:
    """A token kept in a file, re-read when the file changes (rotation needs no restart).

    Mode and owner are checked on every read: a chmod does not change the content.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            _check_private(self.path, st)
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


def read_token_file(path: Path | str) -> str:
    """The token in ``path``, once, with the same checks as :class:`TokenFile`."""
    return TokenFile(path).read()


class BearerAuth:
    """The bearer-token check of one server; ``token`` is fixed or read from a file."""

    def __init__(self, token: str | None = None, token_file: TokenFile | None = None) -> None:
        if (token is None) == (token_file is None):
            raise ValueError("give exactly one of token and token_file")
        self._token, self._file = token, token_file
        self._last_error = ""

    @property
    def source(self) -> str:
        return str(self._file.path) if self._file is not None else "configured token"

    def _read(self) -> tuple[str, str]:
        """(token, "") or ("", why there is none); a new cause is logged once."""
        try:
            token = self._token if self._file is None else self._file.read()
        except TokenError as exc:
            if str(exc) != self._last_error:
                log.error(
                    "API token unusable: /v1 APIs refuse every request (503)",
                    extra={"token_file": self.source, "error": str(exc)},
                )
            self._last_error = str(exc)
            return "", str(exc)
        if self._last_error:
            log.info("API token usable again", extra={"token_file": self.source})
            self._last_error = ""
        assert token is not None
        return token, ""

    def check(self) -> str:
        """Why the token cannot be used now ("" when it can), for a check at start."""
        return self._read()[1]

    def problem(self, header: str | None) -> Refusal | None:
        token, error = self._read()
        if error:
            # The server cannot tell anyone apart: refuse everyone, and say how to fix it.
            return Refusal(503, "no_credential", f"API disabled: {error}")
        return bearer_problem(header, token)


def write_secret(path: Path, text: str) -> bool:
    """Creates ``path`` holding ``text``, mode 0600, all at once; False if it already exists.

    Never readable by others, not even for a moment, and never overwritten: two starts on
    one state dir share the first token (see :func:`agent.atomic.atomic_write`). A crash or
    a full disk leaves no file or a complete one, never a half one.
    """
    return atomic_write(path, text.encode(), mode=0o600, overwrite=False)


def ensure_private_dir(path: Path) -> None:
    """Creates the state directory ``path`` mode 0700 if it is missing (parents as the
    umask says); an existing one is left as its owner set it.

    A state directory a server creates is its own: the token, references, captures and the
    journal in it are nobody else's to read or replace.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def ensure_token(path: Path) -> bool:
    """Makes a random token at ``path`` unless one is there; True when it made one.

    One that is there is kept as it is: whether it can be trusted is checked where it is
    read (:class:`TokenFile`), every time.
    """
    if path.exists():
        return False
    ensure_private_dir(path.parent)
    return write_secret(path, secrets.token_urlsafe(TOKEN_BYTES) + "\n")
