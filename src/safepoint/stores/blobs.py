"""Blob backends: where the bytes of versions live, addressed by their content digest.

A blob is one safepoint file, named by the digest that :func:`safepoint.dump`
returns (the xxh3-128 of its manifest, which holds the checksum of every buffer).
Blobs are immutable: a write goes to a temporary object first and is *promoted*
to its final name only once complete and durable, so that a reader never sees a
partial blob. Layout under the store's root::

    blobs/ab/ab12...ef.sp   committed, content-addressed
    tmp/<uuid>.tmp          being written (or orphaned by a crash; gc removes them)

Backends register by URL scheme (:func:`register_blob_backend`): a local folder
(no scheme or ``file://``: written with ``os`` calls, ``fsync`` and atomic
``rename``), and any fsspec URL (``memory://``, ``s3://bucket/prefix``, ...)
where promotion is a server-side copy and a completed upload is durable.

**Writing a backend.** Subclass :class:`BlobStore` and implement its abstract methods
(every one is public: ``begin``, ``close_temp``, ``promote_temp``, ``open_temp``,
``open``, ``exists``, ``delete``, ``list_blobs``, ``list_temps``, ``delete_temp``,
``check``); set ``supports_objects = True`` and implement the small-object methods
(``write_object``, ``create_object``, ``read_object``, ``list_objects``,
``delete_object``) so that the store keeps version records beside the blobs and can be
recovered. Register it with :func:`register_blob_backend`, then run
:class:`safepoint.testing.BlobStoreTests` (the backend alone) and
:class:`safepoint.testing.store_conformance.StoreConformance` (a whole store over it).

>>> from safepoint.stores.blobs import open_blobs
>>> blobs = open_blobs("memory://doc-blobs")
>>> tmp = blobs.begin()
>>> _ = tmp.file.write(b"hello")
>>> tmp.promote("0" * 32)
>>> blobs.read("0" * 32)
b'hello'
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from .._io import fsync_dir
from ..errors import (
    BackendUnavailableError,
    IntegrityError,
    NotFoundError,
    SafepointError,
    StoreError,
)
from .faults import os_error, os_errors

__all__ = [
    "BlobInfo",
    "BlobStore",
    "FsspecBlobs",
    "LocalBlobs",
    "TempBlob",
    "open_blobs",
    "register_blob_backend",
]

_DIGEST = re.compile(r"^[0-9a-f]{16,128}$")


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise IntegrityError(f"not a blob digest: {digest!r}")
    return digest


@dataclass
class BlobInfo:
    """A blob or temporary object as listed by a backend."""

    key: str  # the digest of a blob, or the id of a temporary object
    size: int
    mtime: float  # seconds since the epoch


class TempBlob:
    """A blob being written: write to ``file``, then :meth:`promote` or :meth:`abort`."""

    def __init__(self, owner: BlobStore, tmp_id: str, file: BinaryIO, path: str = "") -> None:
        self.owner = owner
        self.id = tmp_id
        self.file = file
        #: where the object is written (a local path or a URL), for messages
        self.path = path or f"{owner.url}/tmp/{tmp_id}.tmp"
        self.closed = False
        #: the catalog lease protecting this object from gc (set by the store)
        self.lease_id = ""

    def close(self, durable: bool = True) -> None:
        """Finish writing (flush, fsync when ``durable`` on a local disk, close)."""
        if not self.closed:
            self.owner.close_temp(self, durable)
            self.closed = True

    def promote(self, digest: str, durable: bool = True) -> None:
        """Make the complete temporary object the blob ``digest`` (atomic, durable)."""
        self.close(durable)
        self.owner.promote_temp(self.id, check_digest(digest), durable)

    def abort(self) -> None:
        """Drop the temporary object (best effort: gc removes what is left)."""
        with contextlib.suppress(Exception):
            self.file.close()
        self.closed = True
        with contextlib.suppress(Exception):
            self.owner.delete_temp(self.id)


class BlobStore(ABC):
    """Interface of a blob backend (see the module docstring)."""

    url: str
    #: True when the blobs are on this machine's disk (mmap loads are possible)
    is_local: bool = False
    #: True when several machines can reach the blobs (then the catalog should be shared)
    is_remote: bool = False

    @abstractmethod
    def begin(self, tmp_id: str | None = None) -> TempBlob:
        """Open a new temporary object (named ``tmp_id``, default a random id) for writing."""

    @abstractmethod
    def close_temp(self, tmp: TempBlob, durable: bool) -> None:
        """Finish writing ``tmp.file`` and close it; when ``durable``, the bytes must
        survive a crash of this machine once this returns (fsync on a local disk; a
        completed upload on object storage). Called once, by :meth:`TempBlob.close`."""

    @abstractmethod
    def promote_temp(self, tmp_id: str, digest: str, durable: bool) -> None:
        """Make the closed temporary object ``tmp_id`` the blob ``digest``, atomically:
        a reader sees the whole blob or none. Replacing an existing blob of the same
        digest is allowed (same content). The temporary object is gone afterwards."""

    @abstractmethod
    def open_temp(self, tmp_id: str) -> BinaryIO:
        """A seekable binary file reading the closed temporary object ``tmp_id`` (the
        store validates a streamed file before it promotes it)."""

    @abstractmethod
    def open(self, digest: str) -> BinaryIO:
        """A seekable binary file object reading the blob."""

    def local_path(self, digest: str) -> str | None:
        """The blob's path on the local disk, or None for remote backends."""
        return None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def delete(self, digest: str) -> None:
        """Remove a blob (missing is fine)."""

    @abstractmethod
    def list_blobs(self) -> Iterator[BlobInfo]: ...

    @abstractmethod
    def list_temps(self) -> Iterator[BlobInfo]: ...

    @abstractmethod
    def delete_temp(self, tmp_id: str) -> None: ...

    @abstractmethod
    def check(self) -> None:
        """Raise BackendUnavailableError if the backend cannot be reached."""

    # -- small objects beside the blobs: store marker, version records, journal --------
    # Keys are relative paths ("records/fraud/scorer/@3.<digest>.json"). A backend that
    # does not implement these cannot keep version records: such a store cannot be
    # recovered from its blobs (Store says so when it opens).
    supports_objects: bool = False

    def write_object(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically and durably (replacing what was there)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store small objects")

    def create_object(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless it exists; True if this call created it."""
        raise NotImplementedError(f"{type(self).__name__} cannot store small objects")

    def read_object(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None if there is none."""
        raise NotImplementedError(f"{type(self).__name__} cannot store small objects")

    def list_objects(self, prefix: str) -> Iterator[BlobInfo]:
        """Every object under ``prefix/`` (``BlobInfo.key`` is the full key)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store small objects")

    def any_object(self, prefix: str) -> bool:
        """True if at least one object exists under ``prefix/`` (cheaper than listing)."""
        return next(iter(self.list_objects(prefix)), None) is not None

    def delete_object(self, key: str) -> None:
        """Remove the object ``key`` (missing is fine)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store small objects")

    def list_parts(self, prefix: str) -> Iterator[BlobInfo]:
        """Leftovers of small-object writes that a crash interrupted, under ``prefix/``
        (``gc`` removes old ones). Backends whose object writes are atomic have none."""
        return iter(())

    def write_bytes(self, data: bytes, digest: str, durable: bool = True) -> None:
        """Store ``data`` as blob ``digest`` (through a temporary object)."""
        tmp = self.begin()
        try:
            tmp.file.write(data)
            tmp.promote(digest, durable)
        except BaseException:
            tmp.abort()
            raise


# -- local folder --------------------------------------------------------------------
class LocalBlobs(BlobStore):
    """Blobs in a local folder: temp file in ``tmp/``, fsync, rename, fsync the folder."""

    is_local = True

    def __init__(self, root: str, create: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root
        self.blob_dir = os.path.join(self.root, "blobs")
        self.tmp_dir = os.path.join(self.root, "tmp")
        if not create and not os.path.isdir(self.blob_dir):
            raise NotFoundError(
                f"no store at {self.root!r}: check --store / $SAFEPOINT_STORE, or create "
                "one with `safepoint put` or sp.Store(path)"
            )
        for d in (self.root, self.blob_dir, self.tmp_dir):
            if os.path.isdir(d):
                continue  # a read-only store has its folders already
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as exc:
                raise os_error(exc, d, "create the store folder") from None

    def path(self, digest: str) -> str:
        return os.path.join(self.blob_dir, digest[:2], digest + ".sp")

    def begin(self, tmp_id: str | None = None) -> TempBlob:
        tmp_id = tmp_id or uuid.uuid4().hex
        path = os.path.join(self.tmp_dir, tmp_id + ".tmp")
        with os_errors(path, "create the temporary blob"):
            f = open(path, "xb", buffering=1 << 20)  # noqa: SIM115 - closed by TempBlob
        return TempBlob(self, tmp_id, f, path)

    def open_temp(self, tmp_id: str) -> BinaryIO:
        path = os.path.join(self.tmp_dir, tmp_id + ".tmp")
        with os_errors(path, "read the temporary blob"):
            return open(path, "rb")

    def close_temp(self, tmp: TempBlob, durable: bool) -> None:
        f = tmp.file
        with os_errors(tmp.path, "write the temporary blob"):
            try:
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            finally:
                with contextlib.suppress(OSError):
                    f.close()

    def promote_temp(self, tmp_id: str, digest: str, durable: bool) -> None:
        final = self.path(digest)
        folder = os.path.dirname(final)
        with os_errors(final, "store the blob"):
            created = not os.path.isdir(folder)
            if created:
                os.makedirs(folder, exist_ok=True)
            # an existing blob of the same digest has the same content: replacing it is
            # harmless and refreshes its mtime (which gc's grace period looks at)
            os.replace(os.path.join(self.tmp_dir, tmp_id + ".tmp"), final)
            if durable:
                fsync_dir(folder)
                if created:
                    fsync_dir(self.blob_dir)

    def open(self, digest: str) -> BinaryIO:
        path = self.path(check_digest(digest))
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(
                f"blob {digest} is missing from {self.blob_dir!r}: it was deleted outside "
                "safepoint; restore it from a backup or delete the version"
            ) from None
        except OSError as exc:
            raise os_error(exc, path, "read the blob") from None

    # -- small objects ----------------------------------------------------------------
    supports_objects = True

    def _key_path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _make_dirs(self, folder: str) -> None:
        """Create ``folder`` and its missing parents durably (each new entry fsynced)."""
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d)
            fsync_dir(os.path.dirname(d))

    def _write_file(self, path: str, data: bytes) -> str:
        """Write ``data`` to a fresh temporary file beside ``path`` (fsynced); its path."""
        self._make_dirs(os.path.dirname(path))
        part = f"{path}.{uuid.uuid4().hex}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
        os.close(fd)
        return part

    def write_object(self, key: str, data: bytes) -> None:
        path = self._key_path(key)
        with os_errors(path, "write"):
            part = self._write_file(path, data)
            try:
                os.replace(part, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(part)
                raise
            fsync_dir(os.path.dirname(path))

    def create_object(self, key: str, data: bytes) -> bool:
        path = self._key_path(key)
        with os_errors(path, "create"):
            part = self._write_file(path, data)
            try:
                os.link(part, path)  # atomic, and fails if the object exists
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(part)
            fsync_dir(os.path.dirname(path))
        return True

    def read_object(self, key: str) -> bytes | None:
        path = self._key_path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise os_error(exc, path, "read") from None

    def list_objects(self, prefix: str) -> Iterator[BlobInfo]:
        top = self._key_path(prefix)
        try:
            walker = list(os.walk(top))
        except OSError as exc:
            raise os_error(exc, top, "list") from None
        for folder, _dirs, files in walker:
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for fname in files:
                if fname.endswith(".part"):
                    continue  # a write in progress, or left by a crash
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(os.path.join(folder, fname))
                    yield BlobInfo(f"{rel}/{fname}", st.st_size, st.st_mtime)

    def any_object(self, prefix: str) -> bool:
        top = self._key_path(prefix)
        for _folder, _dirs, files in os.walk(top):
            if any(not f.endswith(".part") for f in files):
                return True
        return False

    def delete_object(self, key: str) -> None:
        path = self._key_path(key)
        with os_errors(path, "delete"), contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def list_parts(self, prefix: str) -> Iterator[BlobInfo]:
        """Temporary ``.part`` files that a crashed write of a small object left."""
        for folder, _dirs, files in os.walk(self._key_path(prefix)):
            for fname in files:
                if fname.endswith(".part"):
                    with contextlib.suppress(FileNotFoundError):
                        p = os.path.join(folder, fname)
                        st = os.stat(p)
                        rel = os.path.relpath(p, self.root).replace(os.sep, "/")
                        yield BlobInfo(rel, st.st_size, st.st_mtime)

    def local_path(self, digest: str) -> str | None:
        return self.path(check_digest(digest))

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(check_digest(digest)))

    def delete(self, digest: str) -> None:
        path = self.path(check_digest(digest))
        with os_errors(path, "delete the blob"), contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def list_blobs(self) -> Iterator[BlobInfo]:
        with contextlib.suppress(FileNotFoundError):
            for sub in os.scandir(self.blob_dir):
                if not sub.is_dir():
                    continue
                for e in os.scandir(sub.path):
                    if e.name.endswith(".sp") and _DIGEST.match(e.name[:-3]):
                        with contextlib.suppress(FileNotFoundError):
                            st = e.stat()
                            yield BlobInfo(e.name[:-3], st.st_size, st.st_mtime)

    def list_temps(self) -> Iterator[BlobInfo]:
        with contextlib.suppress(FileNotFoundError):
            for e in os.scandir(self.tmp_dir):
                if e.name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        st = e.stat()
                        yield BlobInfo(e.name[:-4], st.st_size, st.st_mtime)

    def delete_temp(self, tmp_id: str) -> None:
        path = os.path.join(self.tmp_dir, tmp_id + ".tmp")
        with os_errors(path, "delete the temporary blob"), contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def check(self) -> None:
        if not os.path.isdir(self.blob_dir):
            raise BackendUnavailableError(f"the store folder {self.root!r} is gone")

    @property
    def read_only(self) -> bool:
        """True if this process cannot write the store folder (permissions, read-only mount)."""
        return not os.access(self.blob_dir, os.W_OK)


# -- fsspec ----------------------------------------------------------------------------
def _mtime(info: dict[str, Any]) -> float:
    for k in ("LastModified", "mtime", "created", "last_modified", "updated"):
        v = info.get(k)
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return time.time()  # unknown: treat as fresh, so that gc never removes it early


#: the S3 client settings a store uses unless ``storage_options`` says otherwise: an
#: unreachable server is reported in seconds, not after a minute of silent retries
S3_DEFAULTS: dict[str, Any] = {
    "retries": 2,  # attempts of s3fs's own retry loop (set on the file system object)
    "config_kwargs": {
        "connect_timeout": 3,
        "read_timeout": 20,
        "retries": {"max_attempts": 2, "mode": "standard"},  # botocore's, per call
    },
}


def s3_defaults(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` with :data:`S3_DEFAULTS` filled in where it sets nothing (a copy)."""
    out = dict(opts)
    out.setdefault("retries", S3_DEFAULTS["retries"])
    config = dict(out.get("config_kwargs") or {})
    # deep copies: botocore rewrites the retries dict it is given in place
    for k, v in copy.deepcopy(S3_DEFAULTS["config_kwargs"]).items():
        config.setdefault(k, v)
    out["config_kwargs"] = config
    return out


class FsspecBlobs(BlobStore):
    """Blobs on any fsspec filesystem (S3, memory, GCS, ...).

    Writes stream through fsspec's buffered file (multipart upload on S3); a blob
    appears under ``blobs/`` only by a copy of a completed temporary object.
    """

    is_remote = True

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.url = url
        opts = dict(storage_options or {})
        # other clients write the same bucket: a cached listing would hide their blobs
        opts.setdefault("use_listings_cache", False)
        retries = None
        if scheme_of(url) in ("s3", "s3a"):
            opts = s3_defaults(opts)
            retries = opts.pop("retries")  # an attribute of S3FileSystem, not an argument
        try:
            fs, path = fsspec.core.url_to_fs(url, **opts)
        except (ImportError, ValueError, TypeError) as exc:
            raise BackendUnavailableError(
                f"cannot open blob storage {url!r}: {exc}. For s3:// install the extra: "
                "pip install 'safepoint[s3]'"
            ) from None
        if retries is not None:
            fs.retries = int(retries)
        self.fs = fs
        self.root = path.rstrip("/")
        self.protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.is_remote = self.protocol not in ("memory",)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except SafepointError:
            raise
        except FileNotFoundError as exc:
            raise NotFoundError(f"{what}: not found in {self.url!r} ({exc})") from None
        except PermissionError as exc:
            raise StoreError(f"{what}: permission denied on {self.url!r} ({exc})") from None
        except Exception as exc:
            # botocore/aiohttp errors do not share a base class: anything else from the
            # backend means it cannot serve us right now
            raise BackendUnavailableError(
                f"{what}: blob storage {self.url!r} is unreachable or failed "
                f"({type(exc).__name__}: {exc}); check the URL, credentials and network"
            ) from None

    def _blob(self, digest: str) -> str:
        return f"{self.root}/blobs/{digest[:2]}/{digest}.sp"

    def _tmp(self, tmp_id: str) -> str:
        return f"{self.root}/tmp/{tmp_id}.tmp"

    def begin(self, tmp_id: str | None = None) -> TempBlob:
        tmp_id = tmp_id or uuid.uuid4().hex
        with self._errors("cannot start a blob upload"):
            f = self.fs.open(self._tmp(tmp_id), "wb")
        return TempBlob(self, tmp_id, f)

    def open_temp(self, tmp_id: str) -> BinaryIO:
        with self._errors(f"cannot read temporary blob {tmp_id}"):
            return self.fs.open(self._tmp(tmp_id), "rb")

    def close_temp(self, tmp: TempBlob, durable: bool) -> None:
        # a completed upload (close) is durable on object stores
        with self._errors("cannot complete the blob upload"):
            tmp.file.close()

    def promote_temp(self, tmp_id: str, digest: str, durable: bool) -> None:
        with self._errors(f"cannot store blob {digest}"):
            src, dst = self._tmp(tmp_id), self._blob(digest)
            self.fs.copy(src, dst)
            self.fs.rm_file(src)

    def open(self, digest: str) -> BinaryIO:
        with self._errors(f"cannot read blob {digest}"):
            return self.fs.open(self._blob(check_digest(digest)), "rb")

    def read(self, digest: str) -> bytes:
        with self._errors(f"cannot read blob {digest}"):
            return self.fs.cat_file(self._blob(check_digest(digest)))

    # -- ranged reads, for the read cache's parallel download (stores/cache.py) ---------
    def read_range(self, digest: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the blob (one ranged GET on object stores)."""
        with self._errors(f"cannot read blob {digest}"):
            return bytes(self.fs.cat_file(self._blob(check_digest(digest)), start=start, end=end))

    def exists(self, digest: str) -> bool:
        with self._errors(f"cannot check blob {digest}"):
            return bool(self.fs.exists(self._blob(check_digest(digest))))

    def delete(self, digest: str) -> None:
        with self._errors(f"cannot delete blob {digest}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._blob(check_digest(digest)))

    def _list(self, sub: str, suffix: str) -> Iterator[BlobInfo]:
        with self._errors("cannot list blobs"):
            try:
                found = self.fs.find(f"{self.root}/{sub}", detail=True)
            except FileNotFoundError:
                return
            self.fs.invalidate_cache()
        for path, info in found.items():
            name = path.rsplit("/", 1)[-1]
            if info.get("type") == "file" and name.endswith(suffix):
                yield BlobInfo(name[: -len(suffix)], int(info.get("size") or 0), _mtime(info))

    def list_blobs(self) -> Iterator[BlobInfo]:
        for b in self._list("blobs", ".sp"):
            if _DIGEST.match(b.key):
                yield b

    # -- small objects ----------------------------------------------------------------
    supports_objects = True

    def write_object(self, key: str, data: bytes) -> None:
        # a PUT is atomic: readers see the old object or the new one, never a part
        with self._errors(f"cannot write {key}"):
            self.fs.pipe_file(f"{self.root}/{key}", data)

    def create_object(self, key: str, data: bytes) -> bool:
        # object stores have no portable exclusive create: the catalog arbitrates the
        # store id (see Store), so a lost race here writes the same bytes
        with self._errors(f"cannot create {key}"):
            if self.fs.exists(f"{self.root}/{key}"):
                return False
            self.fs.pipe_file(f"{self.root}/{key}", data)
        return True

    def read_object(self, key: str) -> bytes | None:
        with self._errors(f"cannot read {key}"):
            try:
                return bytes(self.fs.cat_file(f"{self.root}/{key}"))
            except FileNotFoundError:
                return None

    def list_objects(self, prefix: str) -> Iterator[BlobInfo]:
        with self._errors(f"cannot list {prefix}"):
            try:
                found = self.fs.find(f"{self.root}/{prefix}", detail=True)
            except FileNotFoundError:
                return
            self.fs.invalidate_cache()
        start = len(self.root) + 1
        for path, info in sorted(found.items()):
            if info.get("type") == "file":
                key = path[start:] if path.startswith(self.root + "/") else path
                yield BlobInfo(key, int(info.get("size") or 0), _mtime(info))

    def any_object(self, prefix: str) -> bool:
        with self._errors(f"cannot list {prefix}"):
            try:
                found = self.fs.ls(f"{self.root}/{prefix}", detail=False, refresh=True)
            except FileNotFoundError:
                return False
        return bool(found)

    def delete_object(self, key: str) -> None:
        with self._errors(f"cannot delete {key}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.root}/{key}")

    def list_temps(self) -> Iterator[BlobInfo]:
        return self._list("tmp", ".tmp")

    def delete_temp(self, tmp_id: str) -> None:
        with self._errors("cannot delete a temporary blob"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._tmp(tmp_id))

    def check(self) -> None:
        if self.protocol not in ("s3", "s3a", "gs", "gcs"):
            return
        bucket = self.root.split("/", 1)[0]
        try:
            # ls (not exists, which answers False when the server is down) tells
            # a missing bucket from an unreachable server
            self.fs.ls(bucket, refresh=True)
        except FileNotFoundError:
            raise NotFoundError(
                f"bucket {bucket!r} of {self.url!r} does not exist: create it first"
            ) from None
        except PermissionError:
            pass  # listing may be forbidden while reading and writing objects is allowed
        except Exception as exc:
            raise BackendUnavailableError(
                f"blob storage {self.url!r} is unreachable ({type(exc).__name__}: {exc}); "
                "check the URL, endpoint, credentials and network"
            ) from None


# -- registry ------------------------------------------------------------------------
BlobFactory = Callable[..., BlobStore]
_BACKENDS: dict[str, BlobFactory] = {}


def register_blob_backend(scheme: str, factory: BlobFactory) -> None:
    """Make ``scheme://`` URLs open with ``factory(url, storage_options, create=bool)``.

    Schemes without a registered factory fall back to :class:`FsspecBlobs`.
    """
    _BACKENDS[scheme] = factory


def _local(url: str, storage_options: dict[str, Any] | None, create: bool = True) -> BlobStore:
    return LocalBlobs(url[len("file://") :] if url.startswith("file://") else url, create)


register_blob_backend("", _local)
register_blob_backend("file", _local)


def scheme_of(url: str) -> str:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return m.group(1).lower() if m else ""


def open_blobs(
    url: str, storage_options: dict[str, Any] | None = None, create: bool = True
) -> BlobStore:
    """Open the blob backend for ``url`` (a folder path or an fsspec URL).

    ``create=False``: a missing local store raises NotFoundError instead of being made.
    """
    scheme = scheme_of(url)
    factory = _BACKENDS.get(scheme)
    if factory is None:
        return FsspecBlobs(url, storage_options)
    return factory(url, storage_options, create=create)
