"""requirements.lock and requirements-runtime.lock against pyproject.toml: every package
pinned to one version with sha256 hashes, the lock still satisfying every range (a range
changed without rerunning scripts/lock fails here), and the runtime lock the same pins as
the full one."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# None: even nvidia-ml-py, whose major follows NVIDIA's driver branch, is capped at the
# newest major whose struct layouts the GPU collector was tested with (docs/gpu.md); older
# bindings keep working with newer drivers for the calls Vigil makes.
UNBOUNDED_ON_PURPOSE: set[str] = set()


def parse_lock(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, sha256 hashes)}; raises on any line that is not a pin."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)", line)
        if not m:
            raise ValueError(f"not a hash-pinned requirement: {line[:120]}")
        name = canonicalize_name(m.group(1))
        if name in out:
            raise ValueError(f"{name} pinned twice")
        out[name] = (m.group(2), frozenset(re.findall(r"sha256:([0-9a-f]{64})", m.group(3))))
    return out


def test_parse_lock_accepts_pins_and_refuses_the_rest() -> None:
    h = "a" * 64
    assert parse_lock(f"# head\nFoo_Bar==1.0 \\\n    --hash=sha256:{h}\n") == {
        "foo-bar": ("1.0", frozenset({h}))
    }
    for bad in ("foo>=1.0", "foo==1.0", f"foo==1.0 --hash=md5:{h}", "-e ."):
        with pytest.raises(ValueError):
            parse_lock(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_lock(f"foo==1 --hash=sha256:{h}\nFoo==2 --hash=sha256:{h}")


@pytest.fixture(scope="module")
def full() -> dict[str, tuple[str, frozenset[str]]]:
    return parse_lock((ROOT / "requirements.lock").read_text())


@pytest.fixture(scope="module")
def runtime() -> dict[str, tuple[str, frozenset[str]]]:
    return parse_lock((ROOT / "requirements-runtime.lock").read_text())


def requirements(*groups: str, build: bool = True) -> list[Requirement]:
    """The runtime dependencies, the named extras and (``build``) the build backend."""
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for g in groups:
        reqs += [Requirement(r) for r in project["optional-dependencies"][g]]
    if build:
        reqs += [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    return reqs


def test_full_lock_satisfies_every_range(full: dict[str, tuple[str, frozenset[str]]]) -> None:
    for req in requirements("test", "dev"):
        name = canonicalize_name(req.name)
        assert name in full, f"{req} is not in requirements.lock: run scripts/lock"
        version = full[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {req}: run scripts/lock"
        )


def test_runtime_lock_is_the_full_lock_less_the_tools(
    full: dict[str, tuple[str, frozenset[str]]], runtime: dict[str, tuple[str, frozenset[str]]]
) -> None:
    for name, pin in runtime.items():
        assert full.get(name) == pin, f"{name}: the two locks disagree; run scripts/lock"
    for req in requirements():
        assert canonicalize_name(req.name) in runtime, f"{req} missing from the runtime lock"
    tools = {
        canonicalize_name(Requirement(r).name)
        for r in PYPROJECT["project"]["optional-dependencies"]["dev"]
    }
    assert not tools & runtime.keys(), "dev tools in the image's lock"


def test_every_dependency_has_an_upper_bound() -> None:
    """A bare lower bound lets any future major release in, with whatever it breaks."""
    for req in requirements("test", "dev", build=False):
        if canonicalize_name(req.name) in UNBOUNDED_ON_PURPOSE:
            continue
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), (
            f"{req}: give it an upper bound (the next major release)"
        )


def test_lock_says_how_it_was_made() -> None:
    for name in ("requirements.lock", "requirements-runtime.lock"):
        head = (ROOT / name).read_text().splitlines()[:3]
        assert any("scripts/lock" in line for line in head), name
    assert os.access(ROOT / "scripts" / "lock", os.X_OK)
