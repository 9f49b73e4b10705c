"""Which files a step reads (and what else it reaches outside Python) while it runs.

A process-wide audit hook (``sys.addaudithook``, installed once, on the first step
that runs) sees every ``open`` of the process; it records nothing unless a context
variable says that a step of this thread is running, so outside a step it costs one
comparison per audited event. Inside a step it records:

* the paths opened for reading (``open``, ``os.open``, ``numpy.loadtxt``,
  ``pandas.read_csv`` ... anything that goes through Python's ``open``); when the
  step ends each is stat-ed and hashed (xxh3-128 of its content), and the record
  (path, size, mtime, digest) is kept with the step's output. Files the step itself
  wrote, Python modules and compiled extensions (imports), and files of installed
  packages are left out;
* what cannot be compared later: a network connection, a URL fetched, a SQLite
  database opened, a program started. These are listed, so that a status says
  "not checked: ..." instead of "unchanged".

Reads made by native code without Python's ``open`` (pyarrow's Parquet reader,
h5py, a database driver), in other threads or in other processes are not seen;
see docs/steps.md.

>>> with FileReads() as reads:
...     _ = open(__file__.replace(".pyc", ".py"), "rb").close()
>>> [r["path"].endswith("_files.py") for r in reads.records()]   # a .py is an import
[]
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["FileReads", "describe_change", "file_change", "human_size", "paused"]

_ACTIVE: contextvars.ContextVar[FileReads | None] = contextvars.ContextVar(
    "safepoint_step_reads", default=None
)
_EVENTS = frozenset(
    {"open", "socket.connect", "urllib.Request", "sqlite3.connect", "subprocess.Popen"}
)
_installed = False
_install_lock = threading.Lock()
#: imports open these; they are code, which the code fingerprint covers
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dylib", ".pth")
#: a file changed less than this before it was hashed may change again within the
#: same mtime tick: it is hashed at every check instead of trusting size and mtime
_RACY_NS = 2_000_000_000
_CHUNK = 1 << 20
#: files the kernel makes up (their content changes at every read): never inputs
_SYSTEM_ROOTS = ("/proc/", "/sys/", "/dev/", "/run/")
#: at most this many files are recorded per step; beyond, the count is said to be unchecked
MAX_FILES = 1000


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    reads = _ACTIVE.get()
    if reads is None:
        return
    try:
        reads._event(event, args)
    except Exception:  # an audit hook must never break the code it watches
        pass


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Record nothing inside (safepoint reading its own store on behalf of a step)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def human_size(n: int) -> str:
    """``1234`` -> ``'1.2 kB'`` (decimal units, as file managers show them)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000.0
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _digest(path: str) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _display(path: str) -> str:
    """A path as explanations show it: relative to the working folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


class FileReads:
    """Records what the code run inside ``with FileReads(...):`` reads (this thread only).

    ``exclude`` are folders whose files are not inputs (the store's own folder).
    """

    def __init__(self, exclude: tuple[str, ...] = ()) -> None:
        from ._code import _site_dirs, _stdlib_dirs

        self._read: dict[str, None] = {}  # ordered set
        self._written: set[str] = set()
        self._other: dict[str, None] = {}
        self._beyond = 0
        roots = [*_site_dirs(), *_stdlib_dirs(), *(os.path.realpath(e) + os.sep for e in exclude)]
        roots.extend(_SYSTEM_ROOTS)
        for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix):
            roots.append(os.path.realpath(prefix) + os.sep)
        self._exclude = tuple(sorted(set(roots)))
        self._token: contextvars.Token[FileReads | None] | None = None

    def __enter__(self) -> FileReads:
        _install()
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None

    # -- in the hook: cheap, never raises ------------------------------------------------
    def _event(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
            if isinstance(path, int) or path is None:
                return  # an already open descriptor
            path = os.fsdecode(path)
            if isinstance(mode, str):
                writes = any(c in mode for c in "wax+")
            elif isinstance(flags, int):
                writes = (flags & os.O_ACCMODE) != os.O_RDONLY
            else:
                writes = False
            if writes:
                self._written.add(os.path.abspath(path))
            else:
                self._read.setdefault(os.path.abspath(path), None)
        elif event == "socket.connect":
            address = args[1] if len(args) > 1 else None
            if isinstance(address, tuple) and len(address) >= 2:
                where = f"{address[0]}:{address[1]}"
            else:
                where = str(address)
            self._other.setdefault(f"a network connection to {where}", None)
        elif event == "urllib.Request":
            self._other.setdefault(f"a URL it fetched ({args[0]})", None)
        elif event == "sqlite3.connect":
            self._other.setdefault(f"a SQLite database ({os.fsdecode(args[0])})", None)
        elif event == "subprocess.Popen":
            program = os.fsdecode(args[0]) if args and args[0] is not None else "?"
            self._other.setdefault(f"a program it ran ({os.path.basename(program)})", None)

    # -- after the step --------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """One record per regular file read (and still there), in the order first read;
        at most :data:`MAX_FILES` (the others are counted in :meth:`unchecked`)."""
        out: list[dict[str, Any]] = []
        self._beyond = 0
        for path in self._read:
            if path in self._written or path.endswith(_CODE_SUFFIXES):
                continue
            real = os.path.realpath(path)
            if real.startswith(self._exclude) or "__pycache__" in real:
                continue
            if len(out) >= MAX_FILES:
                self._beyond += 1
                continue
            try:
                st = os.stat(real)
                if not _is_regular(st.st_mode):
                    continue
                digest = _digest(real)
            except OSError:
                continue  # gone already: a temporary file of the step's own
            out.append(
                {
                    "path": real,
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "digest": digest,
                    "hashed_ns": time.time_ns(),
                }
            )
        return out

    def unchecked(self) -> list[str]:
        """What the step reached that cannot be compared later (network, databases, ...);
        call after :meth:`records`."""
        found = list(self._other)
        if self._beyond:
            found.append(
                f"{self._beyond} more files it read (only the first {MAX_FILES} are compared)"
            )
        return found


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def file_change(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(reason, note)`` for a recorded file read: a reason when it changed.

    Size and mtime equal to the record mean unchanged (as ``make`` and ``git`` decide),
    unless the file was written within two seconds before it was hashed; otherwise the
    content is hashed again, so a file touched but not changed is still unchanged
    (then ``note`` says so).
    """
    path = str(record.get("path", ""))
    name = _display(path)
    old_size = record.get("size")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{name} was removed", None
    except OSError as exc:
        return f"{name} cannot be read ({exc.strerror})", None
    mtime, hashed = record.get("mtime_ns"), record.get("hashed_ns")
    racy = not isinstance(hashed, int) or not isinstance(mtime, int) or hashed - mtime < _RACY_NS
    if st.st_size == old_size and st.st_mtime_ns == mtime and not racy:
        return None, None
    try:
        digest = _digest(path)
    except OSError as exc:
        return f"{name} cannot be read ({exc.strerror})", None
    if digest == record.get("digest"):
        if st.st_mtime_ns != mtime:
            return None, f"{name} was touched but its content is unchanged"
        return None, None
    return describe_change(name, old_size, st.st_size), None


def describe_change(name: str, old: Any, new: int) -> str:
    """``data.csv changed: 1.2 kB -> 1.5 kB`` (or ``same size, other content``)."""
    if isinstance(old, int) and old != new:
        return f"{name} changed: {human_size(old)} -> {human_size(new)}"
    return f"{name} changed: same size ({human_size(new)}), other content"
