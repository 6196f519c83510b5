"""Durable drift references under the state directory, one file per model and version.

Layout (``STATE`` is ``--state-dir``, shared by ``vigil run`` and ``vigil drift``)::

    STATE/drift/references/<model>/<version>.ref    a reference, sorted per feature
    STATE/drift/bootstrap/<model>/<version>.json     "capture the next N samples"

A ``.ref`` file is a magic line, one JSON header line and the float64 values (features x
rows, little-endian, already sorted so that loading costs no sort). The header carries a
SHA-256 over itself and the values. Files are written to a temporary name, fsynced and
renamed, so a reader sees the old file or the new one, never half of one; a file that
fails any check is refused whole with :class:`CorruptReference`, which names the file and
the command that repairs it. The running agent notices new, changed and deleted files by
their (inode, size, mtime) on each check, so no restart is needed, and at once when a
sample arrives for a model version it has not loaded (:meth:`ReferenceStore.model_dir_stamp`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.atomic import atomic_write as _atomic_write
from agent.atomic import fsync_dir
from agent.atomic import os_reason as _why
from agent.collectors.drift.ks import ReferenceSample, SampleError
from agent.collectors.drift.reference import Reference
from agent.collectors.drift.schema import Schema, SchemaError

MAGIC = b"VIGIL-DRIFT-REFERENCE 1\n"
SUFFIX = ".ref"
# Model and version names become file names and metric labels: a conservative alphabet,
# no path separators, no leading dot; 128 characters is far beyond any real tag.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
MAX_FEATURE_NAME = 200
# Each feature is a label value on two series per model; beyond this a reference is more
# likely a mistake (a wide embedding) than a feature vector worth one series each.
MAX_FEATURES = 10_000


class StoreError(Exception):
    """A reference cannot be read or written; the message says why and what to do."""


class CorruptReference(StoreError):
    pass


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise StoreError(
            f"{kind} {name!r} is not a valid name: use letters, digits and . _ : + - "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def check_features(names: tuple[str, ...]) -> None:
    if len(names) > MAX_FEATURES:
        raise StoreError(f"{len(names)} features; at most {MAX_FEATURES} are supported")
    for n in names:
        if not n or len(n) > MAX_FEATURE_NAME or not n.isprintable():
            raise StoreError(
                f"feature name {n[:50]!r} must be 1-{MAX_FEATURE_NAME} printable characters"
            )


@dataclass(frozen=True)
class ReferenceInfo:
    model: str
    version: str
    features: tuple[str, ...]
    rows: int
    created: str
    source: str
    path: Path
    stamp: tuple[int, int, int]  # (inode, size, mtime_ns): changes when the file does
    categorical: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # output features, confidence scores included


@dataclass(frozen=True)
class BootstrapRequest:
    model: str
    version: str
    rows: int
    path: Path
    # {"categorical": [...], "outputs": [...], "confidence": [...]}; empty: numeric inputs
    declared: dict[str, list[str]] = field(default_factory=dict)


class ReferenceStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "drift"
        self.refs = self.root / "references"
        self.boot = self.root / "bootstrap"

    def path(self, model: str, version: str) -> Path:
        return self.refs / check_name("model", model) / (check_name("version", version) + SUFFIX)

    # -- writing -------------------------------------------------------------------
    def save(
        self, model: str, version: str, sample: ReferenceSample | Reference, source: str
    ) -> Path:
        sample = Reference.of(sample)
        check_features(sample.feature_names)
        payload = np.ascontiguousarray(sample.sorted_values, dtype="<f8").tobytes()
        header: dict[str, Any] = {
            "model": model,
            "version": version,
            "features": list(sample.feature_names),
            "rows": sample.n,
            "dtype": "<f8",
            "layout": "features-by-rows, sorted",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            # Kinds, roles and categories; absent for numeric inputs only, which keeps
            # those files readable by agents that predate them.
            **sample.schema.header(),
        }
        header["sha256"] = _digest(header, payload)
        path = self.path(model, version)
        atomic_write(path, MAGIC + json.dumps(header).encode() + b"\n" + payload)
        self.cancel_bootstrap(model, version)
        return path

    def delete(self, model: str, version: str) -> bool:
        path = self.path(model, version)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {_why(exc)}") from None
        _fsync_dir(path.parent)
        with contextlib.suppress(OSError):  # only when it was the model's last version
            path.parent.rmdir()
        return True

    def request_bootstrap(
        self,
        model: str,
        version: str,
        rows: int,
        declared: dict[str, list[str]] | None = None,
    ) -> Path:
        path = self.boot / check_name("model", model) / (check_name("version", version) + ".json")
        doc: dict[str, Any] = {"model": model, "version": version, "rows": rows}
        if declared and any(declared.values()):
            doc["declared"] = declared
        atomic_write(path, json.dumps(doc).encode())
        return path

    def cancel_bootstrap(self, model: str, version: str) -> None:
        path = self.boot / model / (version + ".json")
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass  # no request: nothing to cancel
        except OSError as exc:
            raise StoreError(f"cannot remove the capture request {path}: {_why(exc)}") from None

    # -- reading -------------------------------------------------------------------
    def load(self, model: str, version: str) -> tuple[ReferenceInfo, Reference]:
        return self.load_path(self.path(model, version))

    def load_path(self, path: Path) -> tuple[ReferenceInfo, Reference]:
        try:
            with open(path, "rb") as fh:
                stamp = _stamp(os.fstat(fh.fileno()))
                data = fh.read()
        except FileNotFoundError:
            raise StoreError(f"no reference file {path}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        header, payload = _split(path, data)
        n, names = int(header["rows"]), tuple(header["features"])
        if len(payload) != 8 * n * len(names):
            raise _corrupt(
                path, header, f"{len(payload)} data bytes, header promises {8 * n * len(names)}"
            )
        if _digest({k: v for k, v in header.items() if k != "sha256"}, payload) != header["sha256"]:
            raise _corrupt(path, header, "checksum mismatch")
        values = np.frombuffer(payload, dtype="<f8").reshape(len(names), n)
        try:
            sample = Reference(values, Schema.from_header(names, header))
        except (SampleError, SchemaError) as exc:
            raise _corrupt(path, header, str(exc)) from None
        return _info(header, path, stamp), sample

    def read_info(self, path: Path) -> ReferenceInfo:
        """The header only (no checksum): cheap, for listings and change detection."""
        try:
            with open(path, "rb") as fh:
                stamp = _stamp(os.fstat(fh.fileno()))
                head = fh.read(len(MAGIC))
                line = fh.readline(16 * 1024 * 1024)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        header, _ = _split(path, head + line)
        return _info(header, path, stamp)

    def files(self) -> Iterator[tuple[str, str, Path, tuple[int, int, int]]]:
        """Every (model, version, path, stamp) on disk; unreadable dirs are skipped."""
        try:
            models = sorted(os.scandir(self.refs), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for m in models:
            if not m.is_dir() or not NAME_RE.match(m.name):
                continue
            try:
                entries = sorted(os.scandir(m.path), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                version = e.name[: -len(SUFFIX)]
                if e.name.endswith(SUFFIX) and NAME_RE.match(version) and e.is_file():
                    yield m.name, version, Path(e.path), _stamp(e.stat())

    def model_dir_stamp(self, model: str) -> tuple[tuple[int, int], ...] | None:
        """(inode, mtime_ns) of ``model``'s reference and capture-request directories, None
        when it has neither: two stats, and it changes whenever a reference or request of
        the model is written or deleted."""
        if not NAME_RE.match(model):
            return None
        stamps = tuple(_dir_stamp(top / model) for top in (self.refs, self.boot))
        return None if stamps == ((0, 0), (0, 0)) else stamps

    def model_dir_stamps(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """:meth:`model_dir_stamp` of every model with a directory."""
        names: set[str] = set()
        for top in (self.refs, self.boot):
            try:
                names.update(e.name for e in os.scandir(top) if NAME_RE.match(e.name))
            except OSError:
                continue  # no such directory yet: no models there
        out = {}
        for name in names:
            stamp = self.model_dir_stamp(name)
            if stamp is not None:
                out[name] = stamp
        return out

    def bootstrap_requests(self) -> list[BootstrapRequest]:
        out: list[BootstrapRequest] = []
        if not self.boot.is_dir():
            return out
        for path in sorted(self.boot.glob("*/*.json")):
            try:
                doc = json.loads(path.read_text())
                rows = int(doc["rows"])
                out.append(
                    BootstrapRequest(
                        check_name("model", doc["model"]),
                        check_name("version", doc["version"]),
                        rows,
                        path,
                        _declared_lists(doc.get("declared", {})),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError, StoreError):
                continue  # half-written or foreign: ignored, like a missing request
        return out


def atomic_write(path: Path, data: bytes) -> None:
    """:func:`agent.atomic.atomic_write` (all or nothing, durably), mode 0600, making the
    model's directory first.

    An OSError (unwritable or bogus state directory, full disk) becomes a StoreError that
    names the path and the OS reason, so the CLI and the agent report it in one line.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data, mode=0o600)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {_why(exc)}") from None


def _dir_stamp(path: Path) -> tuple[int, int]:
    """(inode, mtime_ns) of a directory; (0, 0) when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_ino, st.st_mtime_ns


def _fsync_dir(path: Path) -> None:
    try:
        fsync_dir(path)
    except OSError as exc:
        raise StoreError(f"cannot make {path} durable (fsync): {_why(exc)}") from None


def _digest(header: dict[str, Any], payload: bytes) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    h.update(payload)
    return h.hexdigest()


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _split(path: Path, data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(MAGIC):
        raise CorruptReference(
            f"{path} is not a Vigil drift reference (bad magic); remove it, then set the "
            "reference again with `vigil drift reference set`"
        )
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end if end >= 0 else None])
        assert isinstance(header, dict)
        for key, typ in (
            ("model", str),
            ("version", str),
            ("features", list),
            ("rows", int),
            ("sha256", str),
        ):
            assert isinstance(header.get(key), typ), key
    except (ValueError, AssertionError):
        raise CorruptReference(
            f"{path} has an unreadable header; remove it, then set the reference again with "
            "`vigil drift reference set`"
        ) from None
    return header, data[end + 1 :] if end >= 0 else b""


def _corrupt(path: Path, header: dict[str, Any], why: str) -> CorruptReference:
    m, v = header.get("model", "?"), header.get("version", "?")
    return CorruptReference(
        f"reference {path} is corrupt ({why}); it was not loaded. Replace it with "
        f"`vigil drift reference set --model {m} --version {v} FILE` or remove it with "
        f"`vigil drift reference delete --model {m} --version {v}`"
    )


def _info(header: dict[str, Any], path: Path, stamp: tuple[int, int, int]) -> ReferenceInfo:
    return ReferenceInfo(
        model=header["model"],
        version=header["version"],
        features=tuple(header["features"]),
        rows=int(header["rows"]),
        created=str(header.get("created", "")),
        source=str(header.get("source", "")),
        path=path,
        stamp=stamp,
        categorical=_declared(header, "kinds", ("categorical",)),
        outputs=_declared(header, "roles", ("output", "confidence")),
    )


def _declared(header: dict[str, Any], key: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """The features whose ``key`` (kinds or roles) is one of ``values``; none if absent."""
    listed = header.get(key)
    if not isinstance(listed, list) or len(listed) != len(header["features"]):
        return ()
    return tuple(f for f, v in zip(header["features"], listed, strict=True) if v in values)


def _declared_lists(doc: Any) -> dict[str, list[str]]:
    """A request file's declarations, checked (a ValueError ignores the request)."""
    if not isinstance(doc, dict):
        raise ValueError("declared must be an object")
    out = {}
    for key in ("categorical", "outputs", "confidence"):
        cols = doc.get(key, [])
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise ValueError(f"declared {key} must be a list of names")
        out[key] = cols
    return out
