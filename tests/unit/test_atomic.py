"""agent.atomic: every file the agent and the controller write goes through one recipe, so
a crash at any point leaves the old file or the new one, never half of one, and a secret
is never readable by others, not even for a moment."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import atomic
from agent.atomic import atomic_write, fsync_dir, os_reason
from agent.auth import write_secret
from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.store import ReferenceStore, StoreError


@pytest.fixture
def umask0() -> Iterator[None]:
    """The most permissive umask: whatever mode a file gets, it asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _fail(err: int, after: Callable[..., Any] | None = None) -> Callable[..., Any]:
    def boom(*args: Any, **kwargs: Any) -> Any:
        if after is not None:
            after(*args, **kwargs)
        raise OSError(err, os.strerror(err))

    return boom


# -- writing -----------------------------------------------------------------------------
def test_writes_the_new_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert atomic_write(path, b"one") is True
    assert atomic_write(path, b"two, longer") is True
    assert path.read_bytes() == b"two, longer"
    assert _entries(tmp_path) == ["state.json"]


def test_large_content_is_written_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # larger than one write(2) may take at once on some systems
    atomic_write(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


@pytest.mark.parametrize(
    ("where", "err"),
    [("replace", errno.ENOSPC), ("fsync", errno.EIO), ("write", errno.ENOSPC)],
)
def test_a_crash_at_any_step_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, err: int
) -> None:
    path = tmp_path / "ref"
    atomic_write(path, b"old and complete")
    if where == "write":
        real_write = os.write

        # Half of the data reaches the temporary file, then the disk is full.
        def half(fd: int, data: Any) -> int:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(os, "write", half)
    else:
        monkeypatch.setattr(os, where, _fail(err))
    with pytest.raises(OSError) as caught:
        atomic_write(path, b"new " * 1000)
    monkeypatch.undo()
    assert caught.value.errno == err
    assert path.read_bytes() == b"old and complete"
    assert _entries(tmp_path) == ["ref"]


def test_a_crash_before_the_first_write_leaves_no_file_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", _fail(errno.EIO))
    with pytest.raises(OSError):
        atomic_write(tmp_path / "new", b"data")
    monkeypatch.undo()
    assert _entries(tmp_path) == []


def test_a_missing_directory_is_an_oserror_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        atomic_write(tmp_path / "nope" / "file", b"x")
    assert "nope" in str(caught.value.filename)


def test_mode_is_honoured_under_a_permissive_umask(tmp_path: Path, umask0: None) -> None:
    atomic_write(tmp_path / "secret", b"s")  # the default is private
    atomic_write(tmp_path / "public", b"p", mode=0o644)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644


def test_the_temporary_file_has_the_final_mode_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask0: None
) -> None:
    """Between creation and rename the secret already sits in the directory: it must not
    be readable by others then either."""
    seen: list[int] = []
    real_replace, real_link = os.replace, os.link

    def spy(src: Any, dst: Any, real: Callable[..., Any]) -> Any:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", lambda s, d: spy(s, d, real_replace))
    monkeypatch.setattr(os, "link", lambda s, d: spy(s, d, real_link))
    atomic_write(tmp_path / "a", b"x", mode=0o600)
    atomic_write(tmp_path / "b", b"x", mode=0o600, overwrite=False)
    assert seen == [0o600, 0o600]


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "state").symlink_to(victim)
    atomic_write(tmp_path / "state", b"new")
    assert victim.read_bytes() == b"keep me"
    assert not (tmp_path / "state").is_symlink()
    assert (tmp_path / "state").read_bytes() == b"new"


# -- no overwrite ------------------------------------------------------------------------
def test_no_overwrite_creates_once_and_keeps_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert atomic_write(path, b"first", overwrite=False) is True
    assert atomic_write(path, b"second", overwrite=False) is False
    assert path.read_bytes() == b"first"
    assert _entries(tmp_path) == ["token"]


@pytest.mark.parametrize("exists", [False, True])
def test_no_overwrite_without_hard_links_falls_back_to_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    path = tmp_path / "token"
    if exists:
        path.write_bytes(b"first")
    monkeypatch.setattr(os, "link", _fail(errno.EPERM))  # e.g. a vfat or FUSE state dir
    assert atomic_write(path, b"second", overwrite=False) is (not exists)
    assert path.read_bytes() == (b"first" if exists else b"second")
    assert _entries(tmp_path) == ["token"]


def test_no_overwrite_reports_other_link_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", _fail(errno.EIO))
    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "token", b"x", overwrite=False)
    monkeypatch.undo()
    assert caught.value.errno == errno.EIO
    assert _entries(tmp_path) == []


def test_write_secret_is_private_and_never_overwrites(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "ingest-token"
    assert write_secret(path, "abc\n") is True
    assert write_secret(path, "other\n") is False
    assert path.read_text() == "abc\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- the directory -----------------------------------------------------------------------
def test_fsync_dir_syncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    atomic_write(tmp_path / "f", b"x")
    # The file, then the directory (the rename is durable only once the directory is).
    assert len(synced) == 2


@pytest.mark.parametrize("err", [errno.EINVAL, errno.EOPNOTSUPP])
def test_fsync_dir_accepts_a_filesystem_that_cannot_sync_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    monkeypatch.setattr(os, "fsync", _fail(err))
    fsync_dir(tmp_path)  # nothing to make durable there, so nothing to report


def test_fsync_dir_reports_a_real_failure_naming_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fsync", _fail(errno.EIO))
    with pytest.raises(OSError) as caught:
        fsync_dir(tmp_path)
    assert caught.value.errno == errno.EIO and caught.value.filename == str(tmp_path)


def test_fsync_dir_of_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "gone")


def test_os_reason_names_the_errno() -> None:
    assert os_reason(OSError(errno.ENOSPC, "No space left on device")) == (
        "No space left on device (ENOSPC)"
    )
    assert os_reason(OSError("no errno at all")) == "no errno at all"


# -- a caller: the drift reference store -------------------------------------------------
def test_the_reference_store_reports_a_full_disk_naming_path_and_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ReferenceStore(tmp_path)
    ref = ReferenceSample(np.arange(60.0).reshape(30, 2), ["a", "b"])
    path = store.save("m", "v1", ref, "test")
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", _fail(errno.ENOSPC))
    with pytest.raises(StoreError) as caught:
        store.save("m", "v1", ReferenceSample(np.ones((30, 2)), ["a", "b"]), "test")
    monkeypatch.undo()
    assert str(caught.value) == f"cannot write {path}: No space left on device (ENOSPC)"
    assert path.read_bytes() == before
    assert _entries(path.parent) == ["v1.ref"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_one_fsync_policy() -> None:
    """Durability has one recipe: nothing else in the agent calls fsync itself."""
    agent_dir = Path(atomic.__file__).parent
    offenders = [
        str(p.relative_to(agent_dir))
        for p in agent_dir.rglob("*.py")
        if p.name != "atomic.py" and "fsync(" in p.read_text()
    ]
    assert offenders == []
