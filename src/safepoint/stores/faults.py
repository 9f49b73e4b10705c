"""What went wrong, said truthfully: database and operating-system errors as store errors.

Every failure of a catalog database (SQLAlchemy, sqlite3, psycopg) or of the local
disk becomes one :class:`~safepoint.errors.SafepointError` subclass that says what
happened and what to do; no raw driver or ``OSError`` leaves a public method.

==========================  ===========================================================
condition                   error
==========================  ===========================================================
disk or quota full          :class:`~safepoint.errors.StorageFullError` (an ``OSError``,
                            ``errno.ENOSPC``; names the path and "no space left")
read-only file, folder, DB  :class:`~safepoint.errors.ReadOnlyStoreError`
                            (a ``PermissionError``)
SQLite locked or busy       :class:`~safepoint.errors.CatalogBusyError`
                            (a ``TimeoutError``)
damaged database file       :class:`~safepoint.errors.CatalogDamagedError`
                            (names ``safepoint recover``)
I/O error, missing folder   :class:`~safepoint.errors.StorageIOError` (an ``OSError``)
server unreachable or gone  :class:`~safepoint.errors.BackendUnavailableError`
value out of range          :class:`~safepoint.errors.InvalidArgumentError`
==========================  ===========================================================

>>> import errno
>>> err = os_error(OSError(errno.ENOSPC, "No space left on device"), "/data/store", "write")
>>> type(err).__name__, isinstance(err, OSError), err.errno == errno.ENOSPC
('StorageFullError', True, True)
>>> print(str(err)[:60])
no space left on the device holding /data/store (write): fre
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
from collections.abc import Iterator

from ..errors import (
    BackendUnavailableError,
    CatalogBusyError,
    CatalogDamagedError,
    InvalidArgumentError,
    ReadOnlyStoreError,
    SafepointError,
    StorageFullError,
    StorageIOError,
    StoreError,
)

__all__ = ["catalog_error", "is_db_error", "os_error", "os_errors", "raise_if_os_error"]

RECOVER_HINT = "rebuild it from the blobs with `safepoint recover` (Store.recover())"

# SQLite primary result codes (the low byte of an extended code)
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED = 3, 5, 6
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _device_full(path: str | None) -> bool:
    """True if the file system holding ``path`` has no free block left (for I/O errors
    that do not say why: SQLite reports a full disk during a WAL write as an I/O error)."""
    if not path:
        return False
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail == 0


def _read_only_fs(path: str | None) -> bool:
    if not path:
        return False
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def os_error(exc: OSError, path: str, doing: str) -> SafepointError:
    """The store error for an ``OSError`` met while ``doing`` something to ``path``."""
    code = exc.errno
    reason = exc.strerror or _first_line(exc)
    if code in (_errno.ENOSPC, getattr(_errno, "EDQUOT", -1)):
        return StorageFullError(
            f"no space left on the device holding {path} ({doing}): free space and retry; "
            "nothing was committed",
            _errno.ENOSPC,
            path,
        )
    if code in (_errno.EROFS, _errno.EACCES, _errno.EPERM):
        return ReadOnlyStoreError(
            f"cannot {doing} {path}: {reason}; the store is read-only here (reading works; "
            "for writes use a folder this user can write)",
            code,
            path,
        )
    if code == _errno.ENOENT:
        return StorageIOError(
            f"cannot {doing} {path}: it does not exist (was the store folder moved or deleted?)",
            code,
            path,
        )
    return StorageIOError(f"cannot {doing} {path}: {reason}", code, path)


@contextlib.contextmanager
def os_errors(path: str, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`os_error`'s store error."""
    try:
        yield
    except SafepointError:
        raise
    except OSError as exc:
        raise os_error(exc, path, doing) from None


def _driver_error(exc: BaseException) -> BaseException:
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def is_db_error(exc: BaseException) -> bool:
    """True for errors of SQLAlchemy or a database driver (sqlite3, psycopg)."""
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.SQLAlchemyError):
        return True
    mod = type(exc).__module__
    return mod.startswith(("sqlite3", "psycopg", "_sqlite3"))


def catalog_error(
    exc: BaseException, url: str, *, path: str | None = None, timeout: float = 60.0
) -> SafepointError:
    """The store error for a database error ``exc`` of the catalog at ``url``.

    ``path`` is the SQLite file (None for servers), ``timeout`` the lock timeout.
    """
    orig = _driver_error(exc)
    text = _first_line(orig)
    where = path or url
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _sqlite_error(code & 0xFF, text, url, where, path, timeout)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str):
        return _pg_error(sqlstate, text, url)
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        if path is not None:
            return StorageIOError(f"the catalog {where} failed: {text}", None, path)
        return BackendUnavailableError(
            f"cannot reach the catalog {url}: {text}; check that the database server runs "
            "and the URL is right"
        )
    return StoreError(f"the catalog {url} failed: {text}")


def _sqlite_error(
    code: int, text: str, url: str, where: str, path: str | None, timeout: float
) -> SafepointError:
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return CatalogBusyError(
            f"the catalog {where} stayed locked for {timeout:g} s by another process; retry, "
            "or look for a stuck safepoint process"
        )
    if code == _SQLITE_FULL or (code == _SQLITE_IOERR and _device_full(path)):
        return StorageFullError(
            f"no space left on the device holding the catalog {where}: free space and retry; "
            "nothing was committed",
            _errno.ENOSPC,
            path,
        )
    if code in (_SQLITE_READONLY, _SQLITE_PERM) or (
        code == _SQLITE_CANTOPEN and _read_only_fs(path)
    ):
        return ReadOnlyStoreError(
            f"the catalog {where} is read-only ({text}): reading works; writes need a "
            "folder and file this user can write",
            _errno.EROFS if _read_only_fs(path) else _errno.EACCES,
            path,
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CatalogDamagedError(f"the catalog {where} is damaged ({text}); {RECOVER_HINT}")
    if code == _SQLITE_IOERR:
        return StorageIOError(f"disk I/O error on the catalog {where} ({text})", _errno.EIO, path)
    if code == _SQLITE_CANTOPEN:
        return StorageIOError(
            f"cannot open the catalog {where} ({text}): check that its folder exists and "
            "is writable",
            None,
            path,
        )
    return StoreError(f"the catalog {where} failed: {text}")


def _pg_error(sqlstate: str, text: str, url: str) -> SafepointError:
    cls = sqlstate[:2]
    if sqlstate == "53100":
        return StorageFullError(
            f"the database server of the catalog {url} has no space left ({text}): free "
            "space on it and retry; nothing was committed",
            _errno.ENOSPC,
            None,
        )
    if sqlstate == "25006":
        return ReadOnlyStoreError(
            f"the catalog {url} is read-only ({text}): reading works; writes need a "
            "writable database",
            _errno.EROFS,
            None,
        )
    if cls in ("08", "57", "53") or sqlstate in ("58030",):
        return BackendUnavailableError(
            f"the catalog {url} is unreachable or closed the connection ({text}); check "
            "that the database server runs, then retry: nothing was committed"
        )
    if cls == "40":
        return CatalogBusyError(
            f"the catalog {url} aborted the transaction because of a concurrent one ({text}); "
            "retry: nothing was committed"
        )
    if cls == "22":
        return InvalidArgumentError(f"the catalog {url} refused a value: {text}")
    if cls == "42" and "does not exist" in text:
        return CatalogDamagedError(
            f"the catalog {url} lacks its tables ({text}): it was dropped or emptied; "
            f"{RECOVER_HINT}"
        )
    return StoreError(f"the catalog {url} failed: {text}")


def raise_if_os_error(exc: BaseException, path: str, doing: str) -> None:
    """Raise the store error for a raw ``OSError`` (a full disk while writing a blob, ...);
    return for anything else (the caller re-raises it)."""
    if isinstance(exc, OSError) and not isinstance(exc, SafepointError):
        raise os_error(exc, path, doing) from None
