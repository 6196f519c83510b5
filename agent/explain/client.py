"""The agent's diagnosis over HTTP: where the agent is, its token, and every way asking it
can fail, each turned into one sentence that says what to do (:class:`DiagnosisError`)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import Any

from agent.config import AGENT_FIELDS
from agent.drift.client import TokenLookup, find_token

EXIT_FAIL, EXIT_USAGE = 1, 2
PATH = "/v1/diagnosis"
# A diagnosis is read from memory by the agent: a healthy one answers in milliseconds, so
# 10 s only ever cuts off an agent that is wedged, and `vigil top` keeps its rhythm.
FETCH_TIMEOUT_S = 10.0
# The agent's answer is a few kB per watched process; 16 MiB is thousands of processes
# and still bounds what a wrong URL (a big file server) can make this command hold.
MAX_ANSWER_BYTES = 16 << 20


class DiagnosisError(Exception):
    """The agent could not give a diagnosis; the message says why and what to do."""

    exit_code = EXIT_FAIL


class UsageError(DiagnosisError):
    exit_code = EXIT_USAGE


def default_agent_url(env: dict[str, str] | None = None) -> str:
    """The agent `vigil run` would start with the same environment, on loopback: its
    listen address ($VIGIL_LISTEN, else the setting's default) with any-interface hosts
    replaced by 127.0.0.1."""
    env = dict(os.environ) if env is None else env
    default = next(f.default for f in AGENT_FIELDS if f.key == "listen")
    host, _, port = (env.get("VIGIL_LISTEN") or str(default)).rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


@dataclass
class Agent:
    """Where the agent is and how to authenticate to it (the token may be read again)."""

    url: str
    auth: TokenLookup

    @classmethod
    def from_args(cls, url: str, token_file: str | None, state_dir: str | None) -> Agent:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--agent {url!r} must be an http:// or https:// URL")
        auth = find_token(token_file=token_file, state_dirs=[state_dir] if state_dir else None)
        if token_file and auth.token is None:
            raise UsageError(f"--token-file: {auth.tried[-1]}")
        return cls(url.rstrip("/"), auth)

    def _get(self, path: str, authenticate: bool) -> bytes:
        headers = {"Accept": "application/json"}
        if authenticate and self.auth.token is not None:
            headers["Authorization"] = f"Bearer {self.auth.token}"
        req = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S) as r:
            body: bytes = r.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise DiagnosisError(
                f"the answer of {self.url}{path} is larger than {MAX_ANSWER_BYTES >> 20} MiB; "
                "is --agent a Vigil agent?"
            )
        return body

    def diagnosis(self) -> dict[str, Any]:
        """The agent's whole diagnosis, checked to have the shape the report reads."""
        try:
            try:
                body = self._get(PATH, authenticate=True)
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or not self._token_rotated():
                    raise
                body = self._get(PATH, authenticate=True)
        except urllib.error.HTTPError as exc:
            raise DiagnosisError(self._refused(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DiagnosisError(
                f"cannot reach the agent at {self.url} ({reason}); is `vigil run` running? "
                "(--agent URL asks another one)"
            ) from None
        return parse_answer(body)

    def _token_rotated(self) -> bool:
        """Reads the token file again (the agent re-reads it on change, so a long-running
        `vigil top` must too); True when it now holds another token."""
        if self.auth.path is None:
            return False
        again = find_token(token_file=self.auth.path)
        if again.token is None or again.token == self.auth.token:
            return False
        self.auth = replace(self.auth, token=again.token)
        return True

    def _refused(self, exc: urllib.error.HTTPError) -> str:
        why = error_text(exc.read(4096), str(exc.reason))
        if exc.code == 404:
            version = self.version()
            return (
                f"this agent has no diagnosis (version {version or 'unknown'}): "
                f"{self.url}{PATH} is not a route there; upgrade the agent"
            )
        if exc.code == 401:
            return f"the agent at {self.url} refused the token ({why}); {token_hint(self.auth)}"
        return f"the agent at {self.url} answered {exc.code}: {why}"

    def version(self) -> str | None:
        """The agent's version, from ``vigil_build_info`` on its open /metrics page."""
        try:
            return build_version(
                self._get("/metrics", authenticate=False).decode("utf-8", "replace")
            )
        except (OSError, DiagnosisError, urllib.error.URLError):
            return None


def token_hint(auth: TokenLookup) -> str:
    """Where the token came from or was looked for, and how to give one."""
    hint = auth.explain()
    if any("Permission denied" in t for t in auth.tried):
        hint += (
            " (the agent's token file is readable by the agent's user only: run as that "
            "user, e.g. with sudo)"
        )
    return hint + "; give it with --token-file FILE or $VIGIL_INGEST_TOKEN_FILE"


def error_text(body: bytes, default: str) -> str:
    """The ``error`` of a JSON error answer, else ``default``."""
    try:
        doc = json.loads(body)
    except ValueError:
        return default
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return default


_BUILD_INFO = re.compile(r'^vigil_build_info\{[^}]*\bversion="([^"]*)"', re.MULTILINE)


def build_version(metrics_text: str) -> str | None:
    m = _BUILD_INFO.search(metrics_text)
    return m.group(1) if m else None


def parse_answer(body: bytes) -> dict[str, Any]:
    """The JSON answer, with ``targets`` a list of objects; anything else is an error."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise DiagnosisError(
            "the agent's diagnosis is not JSON; is --agent a Vigil agent?"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("targets"), list):
        raise DiagnosisError(
            "the agent's diagnosis has no list of targets; is --agent a Vigil agent?"
        )
    doc["targets"] = [t for t in doc["targets"] if isinstance(t, dict)]
    return doc
