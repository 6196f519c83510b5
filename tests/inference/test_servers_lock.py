"""requirements-servers.lock, the real inference server the tests run: every package pinned
with sha256 hashes, the pins of requirements-servers.in kept, and .venv-servers installed
from this very lock (scripts/setup.sh records its sha256 there)."""

from __future__ import annotations

import hashlib
import re

from agentproc import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from servers import VENV

LOCK = ROOT / "requirements-servers.lock"
INPUT = ROOT / "requirements-servers.in"
PIN = re.compile(r"([A-Za-z0-9._-]+)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)")


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    joined = re.sub(r"\s*\\\n\s*", " ", LOCK.read_text())
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = PIN.fullmatch(line)
            assert m, f"not a hash-pinned requirement: {line[:120]}"
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def test_lock_keeps_the_input_pins() -> None:
    locked = pins()
    for line in INPUT.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name in locked, f"{name} not in {LOCK.name}: run scripts/lock"
            assert req.specifier.contains(locked[name]), (
                f"{req} vs {locked[name]}: run scripts/lock"
            )


def test_servers_venv_holds_this_lock() -> None:
    want = f"{hashlib.sha256(LOCK.read_bytes()).hexdigest()} {LOCK.name}"
    stamp = VENV / ".vigil-deps"
    assert stamp.exists(), f"{VENV} not installed: run scripts/setup.sh"
    assert stamp.read_text().strip() == want, (
        f"{VENV} is older than {LOCK.name}: run scripts/setup.sh"
    )
