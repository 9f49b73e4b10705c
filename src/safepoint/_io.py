"""Small file-system helpers shared by the format, the store and the scoring sinks."""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .errors import NotAFileError

__all__ = [
    "check_replaceable",
    "fsync_dir",
    "is_stream",
    "kind_of",
    "leftover_temps",
    "replacing",
    "temp_beside",
]

#: the end of every temporary file's name that temp_beside makes
_TEMP_SUFFIX = ".tmp"


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


def kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


#: paths that name an open descriptor of the process (the shell's redirections)
_FD_PATH = re.compile(r"/dev/(?:stdout|stderr|fd/\d+)|/proc/(?:self|\d+)/fd/\d+")


def is_stream(path: str) -> bool:
    """Whether ``path`` is written into rather than replaced by a rename: an existing
    character device or named pipe (``/dev/null``, a FIFO; symlinks followed), or a
    path naming one of the process's open descriptors (``/dev/stdout``,
    ``/proc/self/fd/1``) whatever it is redirected to. A rename would put a regular
    file in place of the device, or of the system's /dev/stdout link. Other symlinks
    are not followed by the writers: a rename replaces the link itself, so that a link
    planted at the output path cannot redirect the write."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return True
    return _FD_PATH.fullmatch(os.path.abspath(path)) is not None


def check_replaceable(path: str) -> None:
    """Raise :class:`NotAFileError` when ``path`` exists and is not a regular file (a
    folder, a device, a pipe, a socket; symlinks followed): renaming a written file
    over it would replace it."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        kind = kind_of(os.stat(path).st_mode)
        if kind is not None:
            raise NotAFileError(
                f"{path!r} is a {kind}, not a file: the file is written under a temporary "
                f"name and renamed into place, which would replace the {kind}; give the "
                "path of a file"
            )


#: flags of a temporary file: created here or refused (a planted file or symlink is
#: never opened), not inherited by child processes
_TEMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _temp_name() -> str:
    """Eight random characters of ``[a-z2-7]`` (40 bits from the OS's generator)."""
    return base64.b32encode(os.urandom(5)).decode("ascii").lower()


def temp_beside(path: str, prefix: str) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, to be renamed over ``path`` once
    written: created exclusively under a random name (``O_EXCL | O_NOFOLLOW``: a file
    or symlink planted beside ``path`` cannot redirect the write), with the mode a new
    file gets here (0666 less the umask, applied by the kernel; mkstemp's 0600 would
    follow it to ``path``). Returns the open descriptor and the temporary path.

    Not ``tempfile.mkstemp``: its first call in a process seeds a Mersenne Twister
    from 2.5 KB of OS randomness, and its mode then needs the umask, which cannot be
    read without a file of /proc (os.umask sets it, racing other threads): together
    about half a millisecond of a training script's only save.

    Raises :class:`NotAFileError` when ``path`` exists and is not a regular file (a
    folder, a device, a pipe, a socket; symlinks followed): the rename would replace it.
    """
    check_replaceable(path)
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{_temp_name()}{_TEMP_SUFFIX}")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name found", folder)


@contextlib.contextmanager
def replacing(
    path: str, prefix: str, *, buffering: int = -1, durable: bool = False
) -> Iterator[BinaryIO]:
    """A file object for the new content of ``path``: written under a temporary name
    (:func:`temp_beside`), renamed over ``path`` when the block ends, removed if it
    raises, so that ``path`` holds the old content or the new, never part of it.
    ``durable`` fsyncs the file before the rename (the caller fsyncs the folder)."""
    fd, tmp = temp_beside(path, prefix)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def leftover_temps(path: str, prefix: str) -> list[str]:
    """The temporary files ``temp_beside(path, prefix)`` made that are still there (a
    process killed before its rename leaves one): ``prefix``, eight random characters
    (:func:`_temp_name`'s, or mkstemp's, which earlier versions used), then the suffix;
    nothing else in the folder matches."""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(_TEMP_SUFFIX))
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if pattern.fullmatch(n)]
