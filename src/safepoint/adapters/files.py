"""A directory tree as buffers: pack a folder a framework saved, unpack it safely.

Spark ML (and other frameworks) save a model as a directory. :func:`pack` turns one into
``(relative path, bytes)`` entries (a manifest of paths plus one buffer per file inside the
safepoint file); :func:`unpack` writes them back under a fresh folder and refuses absolute
paths, ``..``, backslashes, empty segments, links and duplicates, so a crafted file can never
write outside the target.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..errors import FormatError, SerializationError

__all__ = ["MAX_FILES", "check_relpath", "pack", "unpack", "verify_unpacked"]

MAX_FILES = 100_000


def check_relpath(rel: Any) -> str:
    """A safe relative POSIX path inside the tree, or :class:`FormatError`."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096:
        raise FormatError(f"a packed path must be a non-empty string, not {rel!r}")
    if rel.startswith("/") or "\\" in rel or "\x00" in rel or ":" in rel.split("/")[0]:
        raise FormatError(f"packed path {rel!r} is absolute or not POSIX: refused")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"packed path {rel!r} has an empty, '.' or '..' segment: refused")
    return rel


def pack(root: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """Every regular file under ``root`` as ``(relative POSIX path, bytes)``, sorted."""
    root = os.fspath(root)
    out: list[tuple[str, bytes]] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in dirs:  # os.walk lists a link to a folder here, and does not enter it
            if os.path.islink(os.path.join(folder, name)):
                raise SerializationError(
                    f"{os.path.join(folder, name)} is a symbolic link: refused (copy the target)"
                )
        for name in sorted(files):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                raise SerializationError(f"{full} is a symbolic link: refused (copy the target)")
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            with open(full, "rb") as f:
                out.append((check_relpath(rel), f.read()))
            if len(out) > MAX_FILES:
                raise SerializationError(f"{root} holds more than {MAX_FILES} files")
    return out


def unpack(entries: list[tuple[str, bytes]], dest: str | os.PathLike[str]) -> None:
    """Write ``entries`` under ``dest`` (an existing, empty folder)."""
    dest = os.path.realpath(os.fspath(dest))
    if len(entries) > MAX_FILES:
        raise FormatError(f"a packed tree declares {len(entries)} files (limit {MAX_FILES})")
    seen: set[str] = set()
    for rel, data in entries:
        check_relpath(rel)
        if rel in seen:
            raise FormatError(f"packed path {rel!r} appears twice: refused")
        seen.add(rel)
        target = os.path.realpath(os.path.join(dest, *rel.split("/")))
        if os.path.commonpath([dest, target]) != dest:  # belt and braces
            raise FormatError(f"packed path {rel!r} leaves the target folder: refused")
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # O_EXCL: never follow or overwrite something already there (a file vs folder clash)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise FormatError(
                f"packed path {rel!r} clashes with another entry (a file where a folder is "
                "needed, or the reverse): refused"
            ) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def verify_unpacked(dest: str | os.PathLike[str], rels: list[str]) -> None:
    """Check that ``dest`` holds exactly the regular files ``rels`` and their folders:
    no link, no device, nothing else (what a framework then reads is what was checked)."""
    dest = os.fspath(dest)
    want = set(rels)
    parents = {r.rsplit("/", i)[0] for r in want for i in range(1, r.count("/") + 1)}
    seen: set[str] = set()
    for folder, dirs, files in os.walk(dest, followlinks=False):
        for name in dirs + files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, dest).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                if rel not in parents:
                    raise FormatError(f"unpacked folder {rel!r} was not in the file: refused")
            elif stat.S_ISREG(st.st_mode) and rel in want:
                seen.add(rel)
            else:
                raise FormatError(f"unpacked entry {rel!r} is not a file from the model: refused")
    if seen != want:
        raise FormatError(f"unpacked tree lacks {sorted(want - seen)[0]!r}: refused")
