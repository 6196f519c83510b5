"""The COS overlay's init container unpacks a downloaded archive as root into a host
directory: no member may land outside it, by its name or through a link.

The script is the one in deploy-overlays/cos-headers/init-headers.yaml, run as the init
container runs it (``python -c SCRIPT PLACED HOST BASE``) against temporary directories
and a local HTTP server that serves hostile archives.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PATCH = ROOT / "deploy-overlays" / "cos-headers" / "init-headers.yaml"
BUILD = "18244.85.49"
KCONFIG = b"/* kconfig.h */\n"


def init_container() -> dict[str, object]:
    doc = yaml.safe_load(PATCH.read_text())
    (init,) = doc["spec"]["template"]["spec"]["initContainers"]
    return dict(init)


def script() -> str:
    return str(init_container()["args"][0])  # type: ignore[index]


def interpreters() -> list[str]:
    """The test's own Python (3.11 without tarfile's filters, like the image's), and one
    with the "data" filter where this machine has it, so both branches run."""
    found = [sys.executable]
    for name in ("python3.12", "python3.13"):
        path = shutil.which(name)
        if (
            path
            and subprocess.run([path, "-c", "import tarfile; tarfile.data_filter"]).returncode == 0
        ):
            found.append(path)
            break
    return found


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP: <dir>/<BUILD>/kernel-headers.tgz is the download."""
    www = tmp_path / "www"
    (www / BUILD).mkdir(parents=True)
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(www))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def archive(www: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> None:
    with tarfile.open(www / BUILD / "kernel-headers.tgz", "w:gz") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))


def link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def run(tmp_path: Path, base: str, python: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    placed, host = tmp_path / "placed", tmp_path / "host"
    placed.mkdir(exist_ok=True)
    (host / "etc").mkdir(parents=True, exist_ok=True)
    (host / "etc" / "os-release").write_text(f'NAME="Container-Optimized OS"\nBUILD_ID={BUILD}\n')
    res = subprocess.run(
        [python, "-c", script(), str(placed), str(host), base],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res, placed


def test_the_manifest_passes_the_in_pod_paths() -> None:
    init = init_container()
    assert init["args"][1:] == ["/placed", "/host", "https://storage.googleapis.com/cos-tools"]  # type: ignore[index]


@pytest.mark.parametrize("python", interpreters())
def test_a_sound_archive_is_placed_with_its_inner_links(
    tmp_path: Path, site: tuple[Path, str], python: str
) -> None:
    www, base = site
    archive(
        www,
        [
            ("kernel-headers/include/linux/kconfig.h", KCONFIG),
            link("kernel-headers/build", "."),  # links inside the tree are kept
            link("kernel-headers/include/kconfig-copy.h", "linux/kconfig.h", hard=False),
        ],
    )
    res, placed = run(tmp_path, base, python)
    assert res.returncode == 0, res.stderr
    dest = placed / os.uname().release
    assert (dest / "include" / "linux" / "kconfig.h").read_bytes() == KCONFIG
    assert (dest / "build" / "include" / "kconfig-copy.h").read_bytes() == KCONFIG
    assert sorted(p.name for p in placed.iterdir()) == [os.uname().release], "no temp dir left"


@pytest.mark.parametrize("python", interpreters())
@pytest.mark.parametrize("attack", ["symlink", "hardlink", "symlink-chain", "dotdot", "device"])
def test_no_member_lands_outside_the_directory(
    tmp_path: Path, site: tuple[Path, str], python: str, attack: str
) -> None:
    www, base = site
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("host file\n")
    evil: list[tarfile.TarInfo | tuple[str, bytes]] = {
        # A link to a host directory, then a file written through it.
        "symlink": [link("kernel-headers/evil", str(outside)), ("kernel-headers/evil/pwned", b"x")],
        # A hard link to a host file, then a member of the same name rewriting it.
        "hardlink": [
            link("kernel-headers/hl", str(victim), hard=True),
            ("kernel-headers/hl", b"x"),
        ],
        # Each link looks inside by its name; through the first, the second points out.
        "symlink-chain": [
            link("x/l", ".."),
            link("x/l/l2", ".."),
            ("x/l/l2/pwned", b"x"),
        ],
        "dotdot": [("kernel-headers/../../outside/pwned", b"x")],
        "device": [tarfile.TarInfo("kernel-headers/null")],
    }[attack]
    if attack == "device":
        evil[0].type = tarfile.CHRTYPE  # type: ignore[union-attr]
    archive(www, [("kernel-headers/include/linux/kconfig.h", KCONFIG), *evil])
    res, placed = run(tmp_path, base, python)
    assert res.returncode != 0
    assert "unsafe member" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert victim.read_text() == "host file\n"
    assert list(placed.iterdir()) == [], "nothing placed, no temp dir left"
    assert not (tmp_path / "pwned").exists()
