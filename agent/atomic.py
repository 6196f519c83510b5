"""Atomic, durable file writes: a reader (or the next start after a crash) sees the old
file or the new one, never half of one.

The recipe, in one place: create a temporary file beside the target (same directory, so
the rename cannot cross a filesystem) with O_EXCL and its final mode from the first byte
(a secret is never readable by others, not even for a moment), write, fsync, rename over
the target (or hard-link, which fails rather than overwrite), then fsync the directory so
the new name survives a power cut too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

# A directory fsync that the filesystem does not support (some FUSE and network
# filesystems answer EINVAL) has nothing to make durable; every other error is reported.
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def os_reason(exc: OSError) -> str:
    """The OS reason with its errno name ("No space left on device (ENOSPC)"): the name is
    what an operator searches for, the text what they read."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def fsync_dir(directory: Path) -> None:
    """Makes the entries just created, renamed or removed in ``directory`` durable.

    Raises OSError (naming the directory) when it cannot be opened or synced, except on a
    filesystem that cannot sync directories at all.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise OSError(exc.errno, exc.strerror, str(directory)) from None
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, overwrite: bool = True) -> bool:
    """Puts ``data`` at ``path`` all at once and durably; returns True when it did.

    ``mode`` is the file's mode from creation on (less what the umask takes away). With
    ``overwrite=False`` an existing ``path`` is kept and False returned: the file is linked
    into place, and ``link(2)`` fails rather than replace (two starts sharing one state
    directory keep the first one's file). On error (full disk, read-only or missing
    directory) the OSError propagates, the temporary file is removed, and ``path`` is as it
    was.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
            written = True
        else:
            written = _link_new(tmp, path)
        fsync_dir(path.parent)
        return written
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # already gone after a rename; left after a link or an error


def _link_new(tmp: Path, path: Path) -> bool:
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    # A filesystem without hard links: rename is atomic too; the existence check keeps a
    # file that another start just made (the only race left).
    if path.exists():
        return False
    os.replace(tmp, path)
    return True
