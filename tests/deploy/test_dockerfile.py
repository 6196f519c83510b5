"""The Dockerfile, read as `docker build` reads it (no engine here to build it): Debian 12
pinned by digest, installed through scripts/setup.sh from the hash-checked lock, every file
it copies exists, and it starts the agent."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from agent.config import FOREIGN_ENV

ROOT = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, args = full.partition(" ")
        out.append((word.upper(), args.strip()))
    assert not pending, "the last instruction ends with a backslash"
    return out


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = '# c\nFROM a\nRUN x \\\n    # inner\n    && y\n\nCOPY ["a b", "c"]\n'
    assert instructions(text) == [("FROM", "a"), ("RUN", "x  && y"), ("COPY", '["a b", "c"]')]


def copy_sources(args: str) -> list[str]:
    """Sources of a COPY/ADD, in shell or JSON form, flags (--chown=…) left out."""
    parts = json.loads(args) if args.startswith("[") else shlex.split(args)
    parts = [p for p in parts if not p.startswith("--")]
    assert len(parts) >= 2, f"COPY needs a source and a destination: {args}"
    return parts[:-1]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_debian_12_base(dockerfile: list[tuple[str, str]]) -> None:
    froms = [a for i, a in dockerfile if i == "FROM"]
    assert froms, "no FROM"
    image = froms[-1].split()[0]
    assert image.startswith(("debian:12", "debian:bookworm")), image


def test_every_copied_file_exists(dockerfile: list[tuple[str, str]]) -> None:
    copies = [(i, a) for i, a in dockerfile if i in ("COPY", "ADD")]
    assert copies
    for _, args in copies:
        if "--from=" in args:
            continue  # from another build stage, not the context
        for src in copy_sources(args):
            matches = list(ROOT.glob(src)) if any(c in src for c in "*?[") else [ROOT / src]
            assert matches and all(m.exists() for m in matches), f"COPY source {src} is missing"


def test_installs_through_setup_sh_as_copied(dockerfile: list[tuple[str, str]]) -> None:
    copied = {s for i, a in dockerfile if i == "COPY" for s in copy_sources(a)}
    runs = " ".join(a for i, a in dockerfile if i == "RUN")
    assert "scripts/setup.sh" in runs
    assert "scripts/setup.sh" in copied or "scripts" in copied or "." in copied
    # What the installer needs of the tree: the package and its metadata.
    for need in ("pyproject.toml", "agent", "probes"):
        assert any(s == need or s.startswith(need) for s in copied) or "." in copied, need


def test_setup_variables_are_ones_the_agent_leaves_alone(dockerfile: list[tuple[str, str]]) -> None:
    """VIGIL_* variables baked into the image must not stop `vigil run` as unknown settings."""
    for instr, args in dockerfile:
        if instr != "ENV":
            continue
        for item in shlex.split(args):
            name = item.split("=", 1)[0]
            if name.startswith("VIGIL_"):
                assert name in FOREIGN_ENV, f"{name} in the image would be rejected by vigil run"


def test_starts_the_agent_on_its_port(dockerfile: list[tuple[str, str]]) -> None:
    entry = [a for i, a in dockerfile if i == "ENTRYPOINT"]
    cmd = [a for i, a in dockerfile if i == "CMD"]
    assert entry and json.loads(entry[-1])[0].endswith("/vigil")
    assert cmd and json.loads(cmd[-1]) == ["run"]
    exposed = {p for i, a in dockerfile if i == "EXPOSE" for p in a.split()}
    assert "9475" in exposed


def test_daemonset_uses_what_the_image_provides(dockerfile: list[tuple[str, str]]) -> None:
    """The DaemonSet's args go to the image's ENTRYPOINT, and its port is the one exposed."""
    ds = yaml.safe_load((ROOT / "deploy" / "agent-daemonset.yaml").read_text())
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert "command" not in c  # keep the image's ENTRYPOINT
    exposed = {p for i, a in dockerfile if i == "EXPOSE" for p in a.split()}
    assert {str(p["containerPort"]) for p in c["ports"]} <= exposed


def test_base_image_pinned_by_digest(dockerfile: list[tuple[str, str]]) -> None:
    """A tag moves; the digest names the exact bytes, and the tag stays for readers."""
    for instr, args in dockerfile:
        if instr != "FROM":
            continue
        image = args.split()[0]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), (
            f"FROM {image}: pin the base image as tag@sha256:<digest>"
        )


def pip_installs(script: str) -> list[str]:
    """Every `pip install` command of a shell script, continuations joined."""
    joined = re.sub(r"\s*\\\n\s*", " ", script)
    return [ln.strip() for ln in joined.splitlines() if re.search(r"\bpip install\b", ln)]


def test_pip_installs_parser() -> None:
    script = (
        'x\n"$PY" -m pip install -q \\\n    --require-hashes -r "$lock" \\\n    2>&1\necho pip\n'
    )
    assert pip_installs(script) == ['"$PY" -m pip install -q --require-hashes -r "$lock" 2>&1']


def test_image_installs_python_packages_only_from_the_hash_lock(
    dockerfile: list[tuple[str, str]],
) -> None:
    """The image copies the runtime lock, and setup.sh's make_venv (VIGIL_SETUP_MINIMAL=1,
    as the image sets it) installs that file with --require-hashes; its other pip
    installs are Vigil itself with --no-deps and no build isolation, and its drift client
    from the repository with --no-deps --no-index, so nothing is fetched unchecked."""
    env = " ".join(a for i, a in dockerfile if i == "ENV")
    assert "VIGIL_SETUP_MINIMAL=1" in shlex.split(env)
    copied = {s for i, a in dockerfile if i == "COPY" for s in copy_sources(a)}
    assert "requirements-runtime.lock" in copied
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    # make_venv is what builds the venv, the image's included; test-only extras elsewhere
    # in the script (never run with VIGIL_SETUP_MINIMAL=1) are not the image's concern.
    m = re.search(r"^make_venv\(\) \{\n(.*?)^\}", setup, re.M | re.S)
    assert m, "setup.sh has no make_venv()"
    body = m.group(1)
    assert re.search(r'MINIMAL" = 1 \] && lock="\$ROOT/requirements-runtime\.lock"', body)
    installs = pip_installs(body)
    assert installs
    for cmd in installs:
        checked = "--require-hashes" in cmd and '-r "$lock"' in cmd
        own = "--no-deps" in cmd and "--no-build-isolation" in cmd and '-e "$ROOT"' in cmd
        # The drift client: a path in this repository, never an index (--no-index).
        client = "--no-deps" in cmd and "--no-index" in cmd and '"$ROOT/clients/python"' in cmd
        assert checked or own or client, f"setup.sh installs without hash checking: {cmd}"
