"""A local, content-addressed read cache for blobs kept on remote storage (S3, GCS, ...).

A remote store would otherwise download a model on every ``get``. With the cache, the
first read of a blob downloads it once per machine, with parallel ranged requests,
into the cache folder; every later read (of any process on this machine that uses the
same folder) opens the local file, and ``get(mmap=True)`` maps it. Layout::

    <folder>/blobs/ab/ab12...ef.sp   complete, verified entries (named by blob digest)
    <folder>/tmp/<uuid>.part         being filled (or left by a crash; removed after 1 h)
    <folder>/locks/<digest>.lock     one fill lock per digest (empty files)

The folder is ``Store(..., cache=FOLDER)``, else ``$SAFEPOINT_CACHE_DIR``, else the
user cache folder (``$XDG_CACHE_HOME/safepoint`` or ``~/.cache/safepoint`` on Linux).
The size bound is ``BlobCache(max_bytes=...)``, else ``$SAFEPOINT_CACHE_SIZE`` (``10G``,
``500M``, bytes; ``0`` turns the cache off), else 10 GiB.

Why it is safe:

* **Verified once, then trusted by size.** A fill downloads to a temporary file, checks
  that the file's digest is the blob's and that every buffer matches its checksum, and
  only then renames it into place (atomic): a reader never sees a partial or unverified
  entry. A later read checks the entry's size against the catalog's and the format
  checks every buffer's checksum while loading; an entry that fails either is dropped
  and downloaded again, once (:func:`load_cached`).
* **Several processes.** A fill holds an exclusive ``flock`` on the digest's lock file,
  and looks for the entry again once it has the lock: processes that want the same
  blob at once download it once, the others wait and then open the entry.
* **Eviction never breaks a reader.** Least recently used entries go first (a hit
  sets the entry's mtime). Eviction unlinks: on POSIX an open file or a memory map
  keeps its data until closed, so a process reading or mapping an evicted entry goes on
  undisturbed; a process that has looked an entry up but not yet opened it finds it
  gone and fills it again. (Where unlinking an open file fails, as on Windows, the
  entry is skipped and stays.)
* **A full disk never fails a read.** Any local error while filling (``ENOSPC``, a
  read-only folder, ...) abandons the fill: the temporary file is removed and the blob
  is read from the network into memory instead.

Entries are not fsynced: after a power loss an entry may be truncated or zeroed, which
the size check and the format's checksums detect (and the entry is fetched again).

>>> import tempfile
>>> cache = BlobCache(tempfile.mkdtemp(), max_bytes="1G")
>>> cache.info()["entries"], cache.max_bytes
(0, 1073741824)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import IntegrityError, InvalidArgumentError, NotFoundError, SafepointError
from .faults import os_error

if TYPE_CHECKING:
    from .blobs import BlobStore

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BlobCache",
    "default_cache_dir",
    "load_cached",
    "parse_size",
    "read_parallel",
    "resolve_cache",
]

T = TypeVar("T")

DEFAULT_MAX_BYTES = 10 * 1024**3
#: ranged requests of a first read: this many at once, each of a size between these
#: (a blob is split in one wave of requests where the bound allows: fewer, bigger
#: requests cost less per byte; the upper bound caps the memory held in flight)
PARALLEL_REQUESTS = 8
MIN_CHUNK_BYTES = 8 * 1024 * 1024
MAX_CHUNK_BYTES = 32 * 1024 * 1024
#: a temporary file untouched this long was left by a crashed fill
STALE_TEMP_SECONDS = 3600.0

_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_IUNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DIGEST = re.compile(r"^[0-9a-f]{16,128}$")


def parse_size(value: Any, what: str = "cache size") -> int:
    """Bytes from an int or a string such as ``"10G"``, ``"500MB"``, ``"1GiB"``, ``"4096"``.

    ``G``/``M``/``K`` alone are binary (GiB, ...), as ``du`` and ``ls -h`` read them;
    ``GB``/``MB``/``KB`` are decimal.

    >>> parse_size("10G"), parse_size("1MB"), parse_size(0)
    (10737418240, 1000000, 0)
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a number of bytes, not {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", value)
        if not m:
            raise InvalidArgumentError(
                f"{what} {value!r} is not a size: use bytes or a number with K, M, G or T "
                "(e.g. 10G, 500M)"
            )
        num, unit, suffix = m.group(1), m.group(2).lower(), (m.group(3) or "").lower()
        factor = _UNITS[unit] if suffix == "b" and unit else _IUNITS.get(unit, 1)
        n = int(float(num) * factor)
    else:
        raise InvalidArgumentError(f"{what} must be bytes or a string like '10G', not {value!r}")
    if n < 0:
        raise InvalidArgumentError(f"{what} must not be negative, not {value!r}")
    return n


def default_cache_dir() -> str:
    """``$SAFEPOINT_CACHE_DIR``, else the user's cache folder + ``safepoint``."""
    env = os.environ.get("SAFEPOINT_CACHE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    with contextlib.suppress(ImportError):
        import platformdirs

        return str(platformdirs.user_cache_dir("safepoint", appauthor=False))
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/safepoint")
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        return os.path.join(base, "safepoint", "Cache")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "safepoint")


def _default_max_bytes() -> int:
    env = os.environ.get("SAFEPOINT_CACHE_SIZE")
    if env is None or not env.strip():
        return DEFAULT_MAX_BYTES
    return parse_size(env, "$SAFEPOINT_CACHE_SIZE")


# -- parallel ranged reads -----------------------------------------------------------
def read_parallel(
    read_range: Callable[[int, int], bytes],
    size: int,
    write: Callable[[int, bytes], None],
    *,
    workers: int = PARALLEL_REQUESTS,
    chunk: int | None = None,
) -> None:
    """Read bytes ``[0, size)`` as ranged requests ``read_range(start, end)`` run
    ``workers`` at a time, handing each piece to ``write(offset, data)`` as it arrives
    (memory: about ``workers * chunk`` bytes). A short piece raises IntegrityError (the
    object is not as long as recorded); the first error of any request is raised."""
    if chunk is None:
        chunk = min(max(-(-size // workers), MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)
    ranges = [(s, min(s + chunk, size)) for s in range(0, size, chunk)]

    def one(r: tuple[int, int]) -> None:
        data = read_range(*r)
        if len(data) != r[1] - r[0]:
            raise IntegrityError(
                f"a ranged read of bytes {r[0]}-{r[1]} returned {len(data)} bytes: the "
                f"stored object is shorter than its recorded size {size}"
            )
        write(r[0], data)

    if len(ranges) <= 1:
        for r in ranges:
            one(r)
        return
    with ThreadPoolExecutor(min(workers, len(ranges)), thread_name_prefix="sp-fetch") as pool:
        # list(): wait for all, raising the first error in order
        for fut in [pool.submit(one, r) for r in ranges]:
            fut.result()


def _range_reader(blobs: BlobStore, digest: str) -> Callable[[int, int], bytes] | None:
    fn = getattr(blobs, "read_range", None)
    if fn is None:
        return None
    return lambda start, end: bytes(fn(digest, start, end))


def read_blob(blobs: BlobStore, digest: str, size: int | None = None) -> bytes:
    """The whole blob in memory, with parallel ranged requests where the backend has
    them (``read_range``), else one read."""
    reader = _range_reader(blobs, digest)
    if reader is None or not blobs.is_remote or size is None:
        # (an unknown size: one plain read rather than a HEAD request first)
        return blobs.read(digest)
    buf = bytearray(size)
    view = memoryview(buf)

    def put(offset: int, data: bytes) -> None:
        view[offset : offset + len(data)] = data

    try:
        read_parallel(reader, size, put)
    except IntegrityError:
        # not the recorded size: read it as it is, and let the format say what is wrong
        return blobs.read(digest)
    return bytes(buf)  # immutable, as a plain read's: loaded arrays must be read-only


_SEEK_LOCK = threading.Lock()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (safe from several threads at once)."""
    view, done = memoryview(data), 0
    pwrite = getattr(os, "pwrite", None)
    if pwrite is None:  # pragma: no cover - Windows: no positional write
        with _SEEK_LOCK:
            os.lseek(fd, offset, os.SEEK_SET)
            while done < len(view):
                done += os.write(fd, view[done:])
        return
    while done < len(view):
        done += pwrite(fd, view[done:], offset + done)


class _LocalWriteError(Exception):
    """An OSError of the cache's own files during a fill (kept apart from the network's:
    ``ConnectionError`` is an ``OSError`` too, and must not be mistaken for a full disk)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


# -- the cache -----------------------------------------------------------------------
class BlobCache:
    """The read cache in ``folder`` (see the module docstring), at most ``max_bytes``.

    Nothing is created until the first fill. Picklable (a folder and a size), so a Store
    sent to Dask workers reads through the same folder on each of their machines.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None, max_bytes: Any = None):
        self.folder = os.path.abspath(os.fspath(folder)) if folder else default_cache_dir()
        self.max_bytes = _default_max_bytes() if max_bytes is None else parse_size(max_bytes)
        self.blob_dir = os.path.join(self.folder, "blobs")
        self.tmp_dir = os.path.join(self.folder, "tmp")
        self.lock_dir = os.path.join(self.folder, "locks")
        #: downloads this object made into the cache (for tests and the benchmark)
        self.fills = 0
        #: fills abandoned because of a local error (disk full, ...), and the last one
        self.skipped = 0
        self.last_skip: str | None = None

    def __repr__(self) -> str:
        return f"BlobCache({self.folder!r}, max_bytes={self.max_bytes})"

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"], state["max_bytes"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlobCache) and (self.folder, self.max_bytes) == (
            other.folder,
            other.max_bytes,
        )

    def __hash__(self) -> int:
        return hash((self.folder, self.max_bytes))

    def path(self, digest: str) -> str:
        return os.path.join(self.blob_dir, digest[:2], digest + ".sp")

    # -- reading -----------------------------------------------------------------------
    def lookup(self, digest: str, size: int | None = None) -> str | None:
        """The entry's path if it is cached (and ``size`` bytes long), marked as used."""
        path = self.path(digest)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if size is not None and st.st_size != size:
            self.drop(digest)  # truncated (power loss) or damaged: fetch it again
            return None
        # the mtime is the LRU clock (atime is often not kept: noatime, relatime)
        with contextlib.suppress(OSError):
            os.utime(path)
        return path

    def ensure(self, blobs: BlobStore, digest: str, size: int | None = None) -> str | None:
        """The path of the cached blob ``digest`` of ``blobs``, downloaded first if needed;
        None when it cannot be cached here (disk full, too big for the bound, unverified
        download): the caller then reads from the network.

        Errors of the network (unreachable, missing blob) are raised as they are."""
        hit = self.lookup(digest, size)
        if hit is not None:
            return hit
        if size is not None and size > self.max_bytes:
            return None
        try:
            with self._fill_lock(digest):
                hit = self.lookup(digest, size)  # another process filled it meanwhile
                if hit is not None:
                    return hit
                return self._fill(blobs, digest, size)
        except _LocalWriteError as exc:
            self._skip(exc.exc)
            return None

    def drop(self, digest: str) -> None:
        """Remove the entry (missing is fine; open readers keep their data on POSIX)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path(digest))

    # -- filling -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _fill_lock(self, digest: str) -> Iterator[None]:
        try:
            os.makedirs(self.lock_dir, exist_ok=True)
            fd = os.open(os.path.join(self.lock_dir, digest + ".lock"), os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise _LocalWriteError(exc) from None
        try:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows: two fills at once are
                fcntl = None  # type: ignore[assignment]  # harmless, the rename is atomic
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _fill(self, blobs: BlobStore, digest: str, size: int | None) -> str | None:
        reader = _range_reader(blobs, digest)
        part = os.path.join(self.tmp_dir, f"{uuid.uuid4().hex}.part")
        fd = -1
        try:
            try:
                os.makedirs(self.tmp_dir, exist_ok=True)
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError as exc:
                raise _LocalWriteError(exc) from None

            def put(offset: int, data: bytes) -> None:
                try:
                    _pwrite_all(fd, data, offset)
                except OSError as exc:
                    raise _LocalWriteError(exc) from None

            if reader is not None and size is not None:
                try:
                    read_parallel(reader, size, put)
                except IntegrityError:
                    return None  # shorter than recorded: the network read says how
            else:
                put(0, blobs.read(digest))
            os.close(fd)
            fd = -1
            if not self._verified(part, digest, size):
                return None  # the remote copy is damaged: the network read says how
            final = self.path(digest)
            try:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(part, final)
            except OSError as exc:
                raise _LocalWriteError(exc) from None
            self.fills += 1
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(part)  # gone after the rename; left only by a failed fill
        self.evict(keep=digest)
        return final

    @staticmethod
    def _verified(path: str, digest: str, size: int | None) -> bool:
        from ..errors import FormatError
        from ..format.reader import open_reader

        try:
            if size is not None and os.path.getsize(path) != size:
                return False
            with contextlib.closing(open_reader(path)) as reader:
                return reader.digest == digest and not reader.verify_all()
        except (FormatError, IntegrityError):
            return False
        except OSError as exc:
            raise _LocalWriteError(exc) from None

    def _skip(self, exc: OSError) -> None:
        self.skipped += 1
        full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
        self.last_skip = str(os_error(exc, self.folder, "fill the read cache"))
        if full:
            # make room for the next fill; this read goes to the network
            with contextlib.suppress(OSError):
                self.evict(target=self.max_bytes // 2)

    # -- size bound --------------------------------------------------------------------
    def _entries(self) -> list[tuple[str, int, float]]:
        """(digest, size, mtime) of every entry."""
        out: list[tuple[str, int, float]] = []
        try:
            subs = list(os.scandir(self.blob_dir))
        except FileNotFoundError:
            return out
        for sub in subs:
            if not sub.is_dir():
                continue
            with contextlib.suppress(FileNotFoundError):
                for e in os.scandir(sub.path):
                    if e.name.endswith(".sp") and _DIGEST.match(e.name[:-3]):
                        with contextlib.suppress(FileNotFoundError):
                            st = e.stat()
                            out.append((e.name[:-3], st.st_size, st.st_mtime))
        return out

    def evict(self, keep: str | None = None, target: int | None = None) -> list[str]:
        """Remove least recently used entries until the total is at most ``target``
        (default the size bound); never ``keep``. The digests removed."""
        limit = self.max_bytes if target is None else target
        entries = self._entries()
        total = sum(s for _, s, _ in entries)
        removed: list[str] = []
        for digest, size, _mtime in sorted(entries, key=lambda e: e[2]):
            if total <= limit:
                break
            if digest == keep:
                continue
            try:
                os.unlink(self.path(digest))
            except FileNotFoundError:
                pass  # another process evicted it
            except OSError:
                continue  # e.g. open on Windows: it stays
            total -= size
            removed.append(digest)
            # its lock file too (a fill of it holding the lock is unaffected; one that
            # opens the file anew while another holds the old one may download it
            # twice at worst: the rename is atomic and the bytes are equal)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.lock_dir, digest + ".lock"))
        self._remove_stale_temps()
        return removed

    def _remove_stale_temps(self) -> None:
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            for e in os.scandir(self.tmp_dir):
                with contextlib.suppress(OSError):
                    if now - e.stat().st_mtime > STALE_TEMP_SECONDS:
                        os.unlink(e.path)

    # -- CLI -----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """folder, entries, bytes, limit (max_bytes) and temporary files."""
        entries = self._entries()
        temps = 0
        with contextlib.suppress(FileNotFoundError):
            temps = sum(1 for e in os.scandir(self.tmp_dir) if e.name.endswith(".part"))
        return {
            "folder": self.folder,
            "entries": len(entries),
            "bytes": sum(s for _, s, _ in entries),
            "limit": self.max_bytes,
            "temporary_files": temps,
        }

    def clear(self) -> dict[str, Any]:
        """Remove every entry and lock file, and stale temporary files (fills in
        progress keep theirs). What was removed: entries, bytes."""
        entries = self._entries()
        removed, freed = 0, 0
        for digest, size, _ in entries:
            try:
                os.unlink(self.path(digest))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise os_error(exc, self.path(digest), "remove the cache entry") from None
            removed += 1
            freed += size
        # a lock file removed while held only lets a second process fill the same
        # blob at the same time: harmless, the rename is atomic and the bytes equal
        with contextlib.suppress(FileNotFoundError):
            for e in os.scandir(self.lock_dir):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
        self._remove_stale_temps()
        return {"folder": self.folder, "removed": removed, "freed_bytes": freed}


# -- how a Store uses it ---------------------------------------------------------------
def check_cache_arg(cache: Any) -> None:
    """Refuse a ``cache=`` that is none of those :func:`resolve_cache` takes, for every
    store (local ones too: a wrong argument is wrong everywhere)."""
    if not (cache is None or isinstance(cache, bool | str | os.PathLike | BlobCache)):
        raise InvalidArgumentError(
            f"cache must be a folder, a BlobCache, True or False, not {type(cache).__name__}"
        )


def resolve_cache(cache: Any, blobs: BlobStore) -> BlobCache | None:
    """The cache a Store uses for ``blobs`` given its ``cache=`` argument.

    ``None``/``True``: the default cache for remote blob storage (none for local
    folders and ``memory://``; none when ``$SAFEPOINT_CACHE_SIZE`` is 0). ``False``: none.
    A folder path: a cache there. A :class:`BlobCache`: that one.
    """
    check_cache_arg(cache)
    if cache is False or blobs.is_local or not blobs.is_remote:
        return None
    if isinstance(cache, BlobCache):
        return cache
    c = BlobCache() if cache is None or cache is True else BlobCache(cache)
    return c if c.max_bytes > 0 else None


def load_cached(
    cache: BlobCache,
    blobs: BlobStore,
    digest: str,
    size: int | None,
    load: Callable[[str | None], T],
) -> T:
    """``load(path)`` of the cached blob (``load(None)``: read it from the network
    instead, when it cannot be cached). An :class:`IntegrityError` from a cached entry
    (damaged after it was filled, or evicted before it was opened) drops the entry and
    fetches it again, once; a second failure is the stored blob's and is raised."""
    for attempt in (0, 1):
        try:
            path = cache.ensure(blobs, digest, size)
        except NotFoundError:
            path = None  # the blob is gone: the network read says so in the caller's words
        if path is None:
            return load(None)
        try:
            return load(path)
        except IntegrityError:
            if attempt:
                raise
            cache.drop(digest)
        except SafepointError:
            raise
    raise AssertionError("unreachable")  # pragma: no cover
