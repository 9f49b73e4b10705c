"""A key/value checkpointer on a store (Beneath-style), shared between processes.

>>> import safepoint as sp, tempfile
>>> store = sp.Store(tempfile.mkdtemp())
>>> ckpt = store.checkpointer("fraud/scoring", description="scoring job state")
>>> ckpt.set("model", {"threshold": 0.7})
>>> ckpt.get("model")
{'threshold': 0.7}
>>> ckpt.get("missing", default=0)
0
>>> ckpt.set("raw", b"\\x00\\x01")
>>> sorted(ckpt.keys())
['model', 'raw']
>>> ckpt.delete("raw")
True

API: ``set(key, value)``, ``get(key, default=None)``, ``delete(key) -> bool``, ``keys()``,
``items()``, ``info(key)``, ``clear()``, ``key in ckpt``, and ``await aset(key, value)``,
``await aget(key, default=None)`` (run in a worker thread).

Values are any object safepoint can save, or raw bytes (returned as bytes). There is no
small size limit: values up to 256 KiB live in the catalog row (one durable transaction,
a few milliseconds); larger ones stream into a content-addressed blob first. Every
``get`` reads the catalog, so what one process sets, another sees on its next ``get``.
A ``set`` is atomic and durable when it returns; concurrent sets of one key: the last
commit wins. Every value carries a checksum: a value kept in the catalog row is checked
against the xxh3-128 recorded beside it, a value in a blob against the blob's digest and
checksums; a mismatch raises :class:`~safepoint.IntegrityError` instead of returning
changed bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, IntegrityError
from ..format import api as _api
from .faults import raise_if_os_error
from .names import check_key, check_name

if TYPE_CHECKING:
    from .blobs import TempBlob
    from .staging import BlobStaging
    from .store import Store

__all__ = ["INLINE_MAX", "Checkpointer", "value_checksum"]

#: values whose file is at most this many bytes are kept inline in the catalog
INLINE_MAX = 256 * 1024


def value_checksum(data: bytes) -> str:
    """The checksum recorded with a value kept in the catalog row (xxh3-128, hex)."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


class _Spill:
    """A write-only file: in memory up to ``limit`` bytes, then a temporary blob."""

    def __init__(self, staging: BlobStaging, limit: int) -> None:
        self.staging = staging
        self.limit = limit
        self.buf = bytearray()
        self.tmp: TempBlob | None = None

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        if self.tmp is None:
            if len(self.buf) + n <= self.limit:
                self.buf += data
                return n
            self.tmp = self.staging.begin()
            self.tmp.file.write(self.buf)
            self.buf = bytearray()
        self.tmp.file.write(data)
        return n

    def flush(self) -> None:
        pass


def _reopen(store: Store, name: str, trusted: Any, env: str) -> Checkpointer:
    return Checkpointer(store, name, trusted=trusted, env=env)


class Checkpointer:
    """Durable key/value state in a store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        description: str = "",
        trusted: Iterable[Any] | str | type | None = (),
        env: str = "warn",
    ) -> None:
        self.store = store
        #: the store's blob staging: values too large for a catalog row become blobs
        self.staging = store.staging
        self.name = check_name(name, "checkpointer name")
        self.description = str(description or "")
        self.trusted = trusted
        self.env = env
        cat = store.catalog
        with cat.tx(single=True) as conn:
            have = cat.checkpointer_description(conn, self.name)
        if have is not None and (not self.description or have == self.description):
            return  # opening an existing checkpointer is one read
        # the row only names and describes the checkpointer: no fsync needed
        with cat.tx(write=True, durable=False) as conn:
            cat.ensure_checkpointer(conn, self.name, self.description)

    def __repr__(self) -> str:
        return f"Checkpointer({self.name!r}, store={self.store.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.store, self.name, self.trusted, self.env))

    # -- writing -------------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (atomic, durable when this returns)."""
        key = check_key(key)
        lease_ids: tuple[str, ...] = ()
        digest: str | None = None
        inline: bytes | None = None
        if isinstance(value, bytes | bytearray | memoryview) and len(value) <= INLINE_MAX:
            kind, inline, size = "bytes", bytes(value), len(value)
        else:
            kind = "bytes" if isinstance(value, bytes | bytearray | memoryview) else "object"
            if isinstance(value, bytearray | memoryview):
                value = bytes(value)
            spill = _Spill(self.staging, INLINE_MAX)
            try:
                res = _api.dump(value, spill)  # type: ignore[arg-type]
            except BaseException as exc:
                if spill.tmp is not None:
                    self.staging.abort(spill.tmp)
                    raise_if_os_error(exc, spill.tmp.path, "write the value's blob")
                raise
            size = res.size
            if spill.tmp is None:
                inline = bytes(spill.buf)
            else:
                tmp = spill.tmp
                try:
                    staged = self.staging.finish(tmp, res.digest, res.size, True)
                except BaseException as exc:
                    self.staging.abort(tmp)
                    raise_if_os_error(exc, tmp.path, "write the value's blob")
                    raise
                digest, lease_ids = staged.digest, staged.lease_ids
        cat = self.store.catalog
        row = {
            "kind": kind,
            "size": size,
            "digest": digest,
            "value": inline,
            "checksum": None if inline is None else value_checksum(inline),
            "updated_at": time.time(),
        }
        try:
            self.store.require_writable()
            with cat.tx(write=True) as conn:
                self.store.check_identity(conn)
                cat.upsert_checkpoint(conn, self.name, key, row)
                if lease_ids:
                    cat.drop_lease(conn, *lease_ids)
        except BaseException:
            if lease_ids:
                self.staging.release(*lease_ids)
            raise

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed. Its blob (if any) goes at the next gc."""
        key = check_key(key)
        self.store.require_writable()
        with self.store.catalog.tx(write=True) as conn:
            self.store.check_identity(conn)
            return self.store.catalog.delete_checkpoint(conn, self.name, key)

    def clear(self) -> int:
        """Remove every key; returns how many there were."""
        self.store.require_writable()
        with self.store.catalog.tx(write=True) as conn:
            self.store.check_identity(conn)
            return self.store.catalog.clear_checkpoints(conn, self.name)

    # -- reading -------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` if there is none (read fresh each time)."""
        key = check_key(key)
        with self.store.catalog.tx(single=True) as conn:
            row = self.store.catalog.checkpoint_row(conn, self.name, key)
        if row is None:
            return default
        what = f"checkpoint {self.name}[{key!r}]"
        if row.digest is not None:
            return self.store.load_blob(row.digest, what, trusted=self.trusted, env=self.env)
        data = bytes(row.value if row.value is not None else b"")
        if row.checksum is not None and value_checksum(data) != row.checksum:
            raise IntegrityError(
                f"the value of {what} does not match its checksum: it changed in the catalog "
                "after it was set; set it again"
            )
        if row.kind == "bytes":
            return data
        try:
            return _api.loads(data, trusted=self.trusted, env=self.env)
        except FormatError as exc:
            raise IntegrityError(f"the value of {what} is corrupt in the catalog: {exc}") from None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self.store.catalog.tx() as conn:
            return self.store.catalog.has_checkpoint(conn, self.name, check_key(key))

    def keys(self) -> list[str]:
        """The keys, sorted."""
        with self.store.catalog.tx() as conn:
            return self.store.catalog.checkpoint_keys(conn, self.name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        with self.store.catalog.tx() as conn:
            return self.store.catalog.checkpoint_count(conn, self.name)

    def items(self) -> list[tuple[str, Any]]:
        """``(key, value)`` pairs (each value loaded)."""
        return [(k, self.get(k)) for k in self.keys()]

    def info(self, key: str) -> dict[str, Any]:
        """Kind, stored size, where it lives and when it was last set (no load)."""
        key = check_key(key)
        with self.store.catalog.tx() as conn:
            row = self.store.catalog.checkpoint_row(conn, self.name, key, value=False)
        if row is None:
            from ..errors import NotFoundError

            raise NotFoundError(f"checkpointer {self.name!r} has no key {key!r}")
        return {
            "key": key,
            "kind": row.kind,
            "size": int(row.size),
            "blob": row.digest,
            "updated_at": float(row.updated_at),
        }

    # -- async -----------------------------------------------------------------------------
    async def aset(self, key: str, value: Any) -> None:
        """:meth:`set` in a worker thread."""
        await asyncio.to_thread(self.set, key, value)

    async def aget(self, key: str, default: Any = None) -> Any:
        """:meth:`get` in a worker thread."""
        return await asyncio.to_thread(self.get, key, default)
