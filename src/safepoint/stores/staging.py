"""Blob staging: how a blob gets from a writer to its content address, leased all the way.

A put (and a checkpoint value too large for its catalog row) writes its blob through the
:class:`BlobStaging` of its store (``Store.staging``), in this order:

1. :meth:`~BlobStaging.begin`: a temporary object, *leased in the catalog before it
   exists*, so that no gc, even with ``grace=0``, removes it while it is written;
2. the writer streams the file into ``tmp.file``;
3. :meth:`~BlobStaging.finish`: close (fsync when durable), lease the final digest, promote
   the temporary object to it; the result (:class:`Staged`) holds both leases;
4. the caller's catalog transaction commits the version (or checkpoint) row and drops
   both leases in the same transaction; on any error it calls :meth:`~BlobStaging.release`
   (after :meth:`~BlobStaging.abort` if the blob was not promoted yet).

A lease lives until it is dropped, until the store's ``lease_ttl``, or until its holder is
seen dead (:mod:`~safepoint.stores.owners`). ``gc`` never removes a leased blob.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import FormatError, IntegrityError, SafepointError, StoreError
from ..format import api as _api
from ..format.file import open as open_file
from .blobs import TempBlob
from .faults import raise_if_os_error

if TYPE_CHECKING:
    from .store import Store

__all__ = ["BlobStaging", "Staged"]


@dataclass
class Staged:
    """A blob written, leased and promoted, waiting for its catalog row."""

    digest: str
    size: int
    lease_ids: tuple[str, ...]  # of the temporary object and of the digest
    inspection: _api.Inspection | None


class _Miss(Exception):
    """A read outside the bytes a :class:`_Tee` kept."""


class _Tee:
    """Passes writes to the blob's file and keeps the first one (the header) and the last
    few (manifest, signature block, footer), so that the new file can be described
    without reading it back from (possibly remote) storage."""

    KEEP = 1 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0
        self.head: tuple[int, bytes] | None = None
        self.tail: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=4)

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if n <= self.KEEP:
            seg = (self.pos, bytes(mv))
            if self.head is None:
                self.head = seg
            else:
                self.tail.append(seg)
        elif self.head is None:
            self.head = (self.pos, b"")
        done = 0
        while done < n:
            k = self.f.write(mv[done:])
            done += n - done if k is None else k
        self.pos += n
        return n

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def sparse(self) -> _Sparse:
        segs = ([self.head] if self.head else []) + list(self.tail)
        return _Sparse(self.pos, segs)


class _Sparse(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only some segments are known."""

    def __init__(self, size: int, segments: list[tuple[int, bytes]]) -> None:
        self.size = size
        self.segments = segments
        self.at = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.at = (
            offset if whence == 0 else (self.at + offset if whence == 1 else self.size + offset)
        )
        return self.at

    def tell(self) -> int:
        return self.at

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.at
        for start, data in self.segments:
            if start <= self.at and self.at + n <= start + len(data):
                out = data[self.at - start : self.at - start + n]
                self.at += n
                return out
        raise _Miss(self.at, n)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class BlobStaging:
    """Writes the blobs of one store (see the module docstring); ``Store.staging``."""

    #: how long a put waits for a gc that is deleting the very blob it writes
    LEASE_WAIT = 120.0

    def __init__(self, store: Store) -> None:
        # the store, not its catalog: a store reopens a SQLite catalog that was replaced
        self.store = store

    def begin(self) -> TempBlob:
        """A temporary blob, leased in the catalog before it exists (so that no gc, even
        with ``grace=0``, removes it while this process writes it)."""
        store = self.store
        tmp_id, lease_id = uuid.uuid4().hex, uuid.uuid4().hex
        store.catalog.lease_temp(lease_id, tmp_id, store.host, os.getpid())
        try:
            tmp = store.blobs.begin(tmp_id)
        except BaseException:
            self.release(lease_id)
            raise
        tmp.lease_id = lease_id
        return tmp

    def abort(self, tmp: TempBlob) -> None:
        """Drop a temporary blob that will not be promoted, and its lease."""
        tmp.abort()
        self.release(tmp.lease_id)

    def lease(self, digest: str, size: int, lease_id: str) -> None:
        """Lease blob ``digest`` as ``lease_id`` (waiting out a gc that is deleting it)."""
        store = self.store
        deadline = time.monotonic() + self.LEASE_WAIT
        while not store.catalog.lease(digest, size, lease_id, store.host, os.getpid()):
            # a gc is deleting this very blob; it finishes in moments
            if time.monotonic() > deadline:
                raise StoreError(f"blob {digest} stayed locked by a gc for 2 minutes; retry")
            time.sleep(0.05)

    def finish(self, tmp: TempBlob, digest: str, size: int, durable: bool = True) -> Staged:
        """Close, lease the final digest, promote. On error the caller calls :meth:`abort`."""
        tmp.close(durable)
        digest_lease = uuid.uuid4().hex
        self.lease(digest, size, digest_lease)
        try:
            tmp.promote(digest, durable)
        except BaseException:
            self.release(digest_lease)
            raise
        return Staged(digest, size, (tmp.lease_id, digest_lease), None)

    def release(self, *lease_ids: str) -> None:
        """Drop leases (best effort: an unreleased lease expires or its holder dies)."""
        catalog = self.store.catalog
        with contextlib.suppress(SafepointError), catalog.tx(write=True, durable=False) as conn:
            catalog.drop_lease(conn, *lease_ids)

    def stage_object(self, obj: Any, durable: bool = True, **dump_kwargs: Any) -> Staged:
        """Dump ``obj`` into a staged blob (``dump_kwargs`` as for :func:`safepoint.dump`)."""
        tmp = self.begin()
        try:
            tee = _Tee(tmp.file)
            res = _api.dump(obj, tee, **dump_kwargs)  # type: ignore[arg-type]
            tmp.close(durable)
            try:
                # header, manifest and footer are still in memory: no read-back round trip
                insp: _api.Inspection | None = _api.inspect(tee.sparse())  # type: ignore[arg-type]
            except _Miss:
                insp = self.inspect_temp(tmp)
            if insp is not None and insp.digest != res.digest:  # pragma: no cover
                raise IntegrityError("the blob changed while it was written")
            staged = self.finish(tmp, res.digest, res.size, durable)
        except BaseException as exc:
            self.abort(tmp)
            raise_if_os_error(exc, tmp.path, "write the blob")
            raise
        staged.inspection = insp
        return staged

    def stage_stream(self, src: BinaryIO, durable: bool = True) -> Staged:
        """Copy a safepoint file into a staged blob, validating it (manifest, checksums)."""
        tmp = self.begin()
        try:
            shutil.copyfileobj(src, tmp.file, 8 << 20)
            tmp.close(durable)
            with self.open_temp(tmp) as f:
                try:
                    with open_file(f) as sf:
                        problems = sf.verify(golden=False).problems
                        insp = sf.inspect()
                except FormatError as exc:
                    raise FormatError(f"not a valid safepoint file: {exc}") from None
            if problems:
                raise IntegrityError("the file is corrupt: " + "; ".join(problems))
            staged = self.finish(tmp, insp.digest, insp.size, durable)
        except BaseException as exc:
            self.abort(tmp)
            raise_if_os_error(exc, tmp.path, "write the blob")
            raise
        staged.inspection = insp
        return staged

    @contextlib.contextmanager
    def open_temp(self, tmp: TempBlob) -> Iterator[BinaryIO]:
        """Read back a closed temporary blob."""
        f = self.store.blobs.open_temp(tmp.id)
        try:
            yield f
        finally:
            f.close()

    def inspect_temp(self, tmp: TempBlob) -> _api.Inspection | None:
        with self.open_temp(tmp) as f:
            return _api.inspect(f)
