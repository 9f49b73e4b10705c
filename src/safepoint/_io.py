"""Small file-system helpers shared by the format, the store and the scoring sinks."""

from __future__ import annotations

import contextlib
import os

__all__ = ["fsync_dir"]


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
