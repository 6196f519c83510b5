"""A PEP 517 / PEP 660 build backend for vigil-client using the standard library only.

The package is one pure-Python module directory, so a wheel is a zip of it plus the
metadata files; nothing here needs setuptools or an index, so `pip install` works offline
and with build isolation on any Python the client supports.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "vigil-client"
MODULE = "vigil_client"
REQUIRES_PYTHON = ">=3.9"
SUMMARY = "Send a model server's inputs to Vigil's drift ingest (standard library only)"
LICENSE = "Apache-2.0"
TAG = "py3-none-any"


def _version() -> str:
    """The version is __version__ in the package: one place for it."""
    with open(os.path.join(HERE, MODULE, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if m is None:
        raise RuntimeError(f"no __version__ in {MODULE}/__init__.py")
    return m.group(1)


def _metadata() -> bytes:
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {_version()}\n"
        f"Summary: {SUMMARY}\n"
        f"License: {LICENSE}\n"
        f"Requires-Python: {REQUIRES_PYTHON}\n"
    ).encode()


def _dist_info() -> str:
    return f"{MODULE}-{_version()}.dist-info"


def _package_files() -> list[tuple[str, bytes]]:
    out = []
    root = os.path.join(HERE, MODULE)
    for name in sorted(os.listdir(root)):
        if name.endswith(".py") or name == "py.typed":
            with open(os.path.join(root, name), "rb") as f:
                out.append((f"{MODULE}/{name}", f.read()))
    return out


def _write_wheel(directory: str, files: list[tuple[str, bytes]]) -> str:
    dist = _dist_info()
    wheel = f"Wheel-Version: 1.0\nGenerator: {MODULE}-build\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    files = [*files, (f"{dist}/METADATA", _metadata()), (f"{dist}/WHEEL", wheel.encode())]
    record = io.StringIO()
    for path, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{path},sha256={digest},{len(data)}\n")
    record.write(f"{dist}/RECORD,,\n")
    files.append((f"{dist}/RECORD", record.getvalue().encode()))
    name = f"{MODULE}-{_version()}-{TAG}.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files:
            zf.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
    return name


def get_requires_for_build_wheel(config_settings: dict[str, str] | None = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: dict[str, str] | None = None) -> list[str]:
    return []


def get_requires_for_build_editable(
    config_settings: dict[str, str] | None = None,
) -> list[str]:
    return []


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, str] | None = None,
    metadata_directory: str | None = None,
) -> str:
    return _write_wheel(wheel_directory, _package_files())


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, str] | None = None,
    metadata_directory: str | None = None,
) -> str:
    # A .pth line puts this directory on sys.path: edits to the source take effect at once.
    return _write_wheel(wheel_directory, [(f"__editable__.{MODULE}.pth", (HERE + "\n").encode())])


def build_sdist(sdist_directory: str, config_settings: dict[str, str] | None = None) -> str:
    base = f"{MODULE}-{_version()}"
    name = f"{base}.tar.gz"
    members = [("pyproject.toml", None), ("build_backend.py", None)]
    members += [(p, d) for p, d in _package_files()]
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tf:
        for path, data in [*members, ("PKG-INFO", _metadata())]:
            if data is None:
                with open(os.path.join(HERE, path), "rb") as f:
                    data = f.read()
            info = tarfile.TarInfo(f"{base}/{path}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return name
