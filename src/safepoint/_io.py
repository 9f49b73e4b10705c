"""Small file-system helpers shared by the format, the store and the scoring sinks."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["fsync_dir", "temp_beside", "umask"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a directory, so that a rename or create in it survives a power loss.

    Best effort: some file systems refuse to open or fsync a directory.
    """
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def umask() -> int:
    """The process umask, read without changing it (os.umask would, racing other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def temp_beside(path: str, prefix: str) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, to be renamed over ``path`` once
    written: created exclusively under a random name (``mkstemp``: a file or symlink
    planted beside ``path`` cannot redirect the write), with the mode a new file gets
    here (0666 less the umask; mkstemp's own 0600 would follow it to ``path``).
    Returns the open descriptor and the temporary path."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd, tmp
