"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

The file Prometheus users already write for node_exporter works here unchanged::

    tls_server_config:
      cert_file: server.crt          # relative paths: to this file's directory
      key_file: server.key
      client_ca_file: ca.crt         # optional; then client_auth_type defaults to
      client_auth_type: RequireAndVerifyClientCert   # ... this (or VerifyClientCertIfGiven)
      min_version: TLS12             # TLS10 | TLS11 | TLS12 (default) | TLS13
      max_version: TLS13
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n')

With ``basic_auth_users`` every route needs basic auth, /metrics included, as in
exporter-toolkit, except the ``/v1`` APIs, which take their bearer token instead (one
``Authorization`` header cannot carry both). Options of exporter-toolkit that Python's
ssl module cannot honour (cipher_suites, curve_preferences, RequestClientCert, ...) are
refused by name rather than ignored. Parsing is :func:`parse_web_config`, pure.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from agent.auth import Refusal, parse_authorization
from agent.config import ConfigError

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# exporter-toolkit accepts these; Python's ssl cannot ask for a certificate without
# verifying it, nor set TLS 1.3 suites or curves per context.
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
            "max_version"}  # fmt: skip
UNSUPPORTED_TLS_KEYS = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                        "prefer_server_cipher_suites", "client_allowed_sans"}  # fmt: skip
TOP_KEYS = {"tls_server_config", "basic_auth_users"}
UNSUPPORTED_TOP_KEYS = {"http_server_config", "rate_limit"}
BCRYPT_RE = re.compile(r"^\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str | None = None


@dataclass(frozen=True)
class WebConfig:
    tls: TlsConfig | None = None
    users: dict[str, str] = field(default_factory=dict)  # user → bcrypt hash


def _str(value: Any, where: str) -> str:
    # A YAML number or boolean where a word is meant is a mistake, not a word.
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def parse_web_config(doc: Any, base: Path, source: str) -> WebConfig:
    """The file's YAML document → :class:`WebConfig`; ConfigError naming the key."""
    if doc is None:
        return WebConfig()
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    for key in doc:
        if key in UNSUPPORTED_TOP_KEYS:
            raise ConfigError(f"{source}: {key} is not supported by vigil")
        if key not in TOP_KEYS:
            raise ConfigError(
                f"{source}: unknown key {key!r} (allowed: {', '.join(sorted(TOP_KEYS))})"
            )
    tls = _parse_tls(doc.get("tls_server_config"), base, f"{source}: tls_server_config")
    users = _parse_users(doc.get("basic_auth_users"), f"{source}: basic_auth_users")
    return WebConfig(tls, users)


def _parse_tls(raw: Any, base: Path, where: str) -> TlsConfig | None:
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for key in raw:
        if key in UNSUPPORTED_TLS_KEYS:
            raise ConfigError(f"{where}.{key}: not supported by vigil")
        if key not in TLS_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}")

    def path(key: str) -> Path | None:
        if raw.get(key) is None:
            return None
        p = Path(_str(raw[key], f"{where}.{key}"))
        return p if p.is_absolute() else base / p

    cert, key = path("cert_file"), path("key_file")
    if cert is None:
        raise ConfigError(f"{where}.cert_file: missing (TLS needs a certificate and its key)")
    if key is None:
        raise ConfigError(f"{where}.key_file: missing (TLS needs a certificate and its key)")
    ca = path("client_ca_file")
    default_auth = "RequireAndVerifyClientCert" if ca else "NoClientCert"
    auth = _str(raw.get("client_auth_type", default_auth), f"{where}.client_auth_type")
    if auth in UNSUPPORTED_CLIENT_AUTH:
        raise ConfigError(
            f"{where}.client_auth_type: {auth} is not supported by vigil (Python's TLS cannot "
            "ask for a certificate without verifying it); use VerifyClientCertIfGiven"
        )
    if auth not in CLIENT_AUTH:
        raise ConfigError(
            f"{where}.client_auth_type: {auth!r} is not one of {', '.join(CLIENT_AUTH)}"
        )
    if auth != "NoClientCert" and ca is None:
        raise ConfigError(f"{where}.client_ca_file: needed to verify client certificates ({auth})")
    if auth == "NoClientCert" and ca is not None:
        raise ConfigError(
            f"{where}.client_auth_type: client_ca_file is set but client_auth_type is "
            "NoClientCert; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
        )
    lo = _version(raw.get("min_version", "TLS12"), f"{where}.min_version")
    hi = None
    if raw.get("max_version") is not None:
        hi = _version(raw["max_version"], f"{where}.max_version")
        if TLS_VERSIONS[hi] < TLS_VERSIONS[lo]:
            raise ConfigError(f"{where}.max_version: {hi} is below min_version {lo}")
    return TlsConfig(cert, key, ca, auth, lo, hi)


def _version(value: Any, where: str) -> str:
    v = _str(value, where)
    if v not in TLS_VERSIONS:
        raise ConfigError(f"{where}: {v!r} is not one of {', '.join(TLS_VERSIONS)}")
    return v


def _parse_users(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of user: bcrypt hash")
    users = {}
    for user, hashed in raw.items():
        name = _str(user, f"{where}: user name")
        if ":" in name:
            raise ConfigError(f"{where}.{name}: a user name cannot contain ':' (basic auth)")
        value = _str(hashed, f"{where}.{name}")
        if not BCRYPT_RE.match(value):
            raise ConfigError(
                f"{where}.{name}: not a bcrypt hash (expected $2b$<cost>$..., e.g. from "
                "htpasswd -nBC 12 USER)"
            )
        users[name] = value
    return users


def load_web_config(path: str) -> WebConfig:
    """Reads and checks the file, and builds its TLS context once to find bad files now."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"web.config.file: cannot read {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"web.config.file {path} is not valid YAML: {exc}") from None
    cfg = parse_web_config(doc, Path(path).resolve().parent, f"web.config.file {path}")
    if cfg.tls is not None:
        ssl_context(cfg.tls, f"web.config.file {path}")
    return cfg


def ssl_context(tls: TlsConfig, source: str = "web.config.file") -> ssl.SSLContext:
    where = f"{source}: tls_server_config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version is not None:
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    # ssl's errors do not say which file is missing: look first, to name the key.
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not path.is_file():
            raise ConfigError(f"{where}.{key}: {path} does not exist")
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{where}.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file}: "
            f"{getattr(exc, 'reason', None) or exc}"
        ) from None
    ctx.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.client_ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{where}.client_ca_file: cannot load {tls.client_ca_file}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    return ctx


# A hash of the right shape for users that do not exist, so that a wrong name costs the
# same bcrypt time as a wrong password and does not reveal which names exist.
_DUMMY_HASH = bcrypt.hashpw(b"vigil-no-such-user", bcrypt.gensalt(rounds=10))
# Checks waiting for bcrypt beyond this many are refused (429): bcrypt costs tens of ms of
# CPU by design, so an unbounded queue of wrong passwords would starve the agent.
MAX_PENDING_CHECKS = 8
# Valid (user, password) pairs remembered; a few per user covers a password rotation.
MAX_REMEMBERED = 64
# Uncached checks per user (any unknown name counting as one user) and client address: a
# burst of this many, then one a second; a success gives the budget back. A client that
# guesses passwords gets ~5 % of the one bcrypt thread per address and cannot keep the
# queue full, so a scraper whose credentials are not cached yet is not locked out; three
# leave room for a wrong password fixed a moment later.
CHECK_BURST = 3
CHECK_RATE_PER_S = 1.0
# (user, address) budgets remembered, oldest forgotten first: a bound on memory that costs
# only a fresh budget once more addresses than this fail at once.
MAX_FAILED_CLIENTS = 4096
# Wrong (user, password) pairs remembered: the same wrong password again (a scraper with a
# stale password) is answered 401 at once, without a check or a wait.
MAX_BAD_REMEMBERED = 1024


class BasicAuth:
    """Checks ``Authorization: Basic`` against the bcrypt users, off the event loop.

    A successful (user, password) pair is remembered by its SHA-256 so that a scraper
    sending the same credentials every 15 s costs one bcrypt, not one per scrape, as
    exporter-toolkit does, and never waits behind anyone. Failures are bounded too: a
    wrong pair is remembered (401 again without a check), and each user and address has a
    budget of checks (``CHECK_BURST``, refilled at ``CHECK_RATE_PER_S``).
    """

    def __init__(self, users: dict[str, str], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = dict(users)
        self._clock = clock
        self._good: set[bytes] = set()
        self._bad: OrderedDict[bytes, None] = OrderedDict()
        # (user, address) -> (checks left, when counted)
        self._budget: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._pending = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-bcrypt")

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    async def problem(self, header: str | None, peer: str = "") -> Refusal | None:
        """None when ``header`` holds a valid user and password; ``peer`` is the client's
        address, which failed attempts are throttled by."""
        denied = Refusal(401, "unauthorized", "basic auth required")
        parsed = parse_authorization(header)
        if parsed is None or parsed[0] != "basic":
            return denied
        try:
            user, sep, password = base64.b64decode(parsed[1], validate=True).decode().partition(":")
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
            return denied
        if not sep:
            return denied
        hashed = self.users.get(user)
        key = hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()
        if hashed is not None and any(hmac.compare_digest(key, k) for k in self._good):
            return None
        wrong = Refusal(401, "unauthorized", "wrong user name or password")
        if key in self._bad:
            return wrong
        # Unknown names share one budget per address: inventing names buys no extra checks.
        who = (user if hashed is not None else "", peer)
        now = self._clock()
        left, counted = self._budget.get(who, (CHECK_BURST, now))
        left = min(CHECK_BURST, left + (now - counted) * CHECK_RATE_PER_S)
        if left < 1:
            return Refusal(
                429, "busy", "too many wrong passwords for this user from this address; retry"
            )
        if self._pending >= MAX_PENDING_CHECKS:
            return Refusal(429, "busy", "too many authentication attempts at once; retry")
        _remember(self._budget, who, (left - 1, now), MAX_FAILED_CLIENTS)
        self._pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self._executor, _check, password, hashed or _DUMMY_HASH.decode()
            )
        finally:
            self._pending -= 1
        if not ok or hashed is None:
            _remember(self._bad, key, None, MAX_BAD_REMEMBERED)
            return wrong
        self._budget.pop(who, None)
        if len(self._good) >= MAX_REMEMBERED:
            self._good.clear()  # only ever full of valid pairs: forgetting costs a bcrypt
        self._good.add(key)
        return None


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, bound: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > bound:
        cache.popitem(last=False)


def _check(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:  # a hash bcrypt cannot read; parse_web_config keeps these out
        return False
