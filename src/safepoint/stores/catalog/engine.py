"""The catalog's engine: connections, transactions and dialect (SQLite, PostgreSQL).

``sqlite:///path/catalog.db`` is the embedded default (WAL, ``synchronous=FULL`` so that
a commit is durable; writers serialise with ``BEGIN IMMEDIATE``);
``postgresql://user@host/db`` a shared team catalog (row locks with ``FOR UPDATE``).
Dialect differences (upserts, insert-or-ignore, advisory locks) stay in this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ...errors import (
    BackendUnavailableError,
    NotFoundError,
    ReadOnlyStoreError,
    SafepointError,
    StoreError,
)
from ..faults import catalog_error, is_db_error
from .schema import MIGRATIONS, SCHEMA_VERSION, T_SCHEMA

__all__ = ["CatalogEngine"]


def _safe_url(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def _read_only(path: str) -> bool:
    """True if an existing SQLite file at ``path`` cannot be written here (a read-only
    file, folder or file system); a missing file is created, so it is not read-only."""
    if not os.path.exists(path):
        return False
    return not (os.access(path, os.W_OK) and os.access(os.path.dirname(path), os.W_OK))


def _read_only_connect(path: str, cargs: dict[str, Any]) -> Callable[[], Any]:
    """A connection factory opening ``path`` read-only.

    With a write-ahead log left beside it (another process has it open, or one crashed)
    SQLite reads it in ``mode=ro``; without one the file holds every commit, and
    ``immutable=1`` lets SQLite read it without creating the shared-memory file that a
    read-only folder cannot hold.
    """
    import sqlite3
    import urllib.parse

    def connect() -> Any:
        wal = path + "-wal"
        has_wal = os.path.exists(wal) and os.path.getsize(wal) > 0
        uri = (
            "file:" + urllib.parse.quote(path) + ("?mode=ro" if has_wal else "?mode=ro&immutable=1")
        )
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=float(cargs.get("timeout", 60.0)),
            check_same_thread=bool(cargs.get("check_same_thread", False)),
        )

    return connect


class CatalogEngine:
    """Connections, transactions, dialect and schema of a catalog; the typed queries are
    in the mixins of :class:`~safepoint.stores.catalog.Catalog`."""

    lock_timeout = 60.0

    def __init__(
        self, url: str, *, connect_args: dict[str, Any] | None = None, create: bool = True
    ) -> None:
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise StoreError(
                f"metadata URL {url!r} is not a database URL; use sqlite:///path/catalog.db "
                "or postgresql://user@host/db"
            ) from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = _safe_url(parsed)
        self.is_sqlite = self.dialect == "sqlite"
        self.in_memory = self.is_sqlite and parsed.database in (None, "", ":memory:")
        #: the SQLite file (None for servers and in-memory catalogs)
        self.path: str | None = (
            os.path.abspath(str(parsed.database)) if self.is_sqlite and not self.in_memory else None
        )
        if self.path is not None and not create and not os.path.exists(self.path):
            raise NotFoundError(f"no catalog at {self.path!r}")
        #: opened read-only: the file or its folder cannot be written by this process
        self.read_only = self.path is not None and _read_only(self.path)
        self._lock = threading.RLock() if self.in_memory else None
        kwargs: dict[str, Any] = {}
        cargs = dict(connect_args or {})
        if self.is_sqlite:
            cargs.setdefault("timeout", 60.0)
            cargs.setdefault("check_same_thread", False)
            self.lock_timeout = float(cargs["timeout"])
            if self.in_memory:
                kwargs["poolclass"] = sa.pool.StaticPool
            elif self.read_only:
                kwargs["creator"] = _read_only_connect(self.path or "", cargs)
        else:
            kwargs["pool_pre_ping"] = True
            cargs.setdefault("connect_timeout", 10)
        try:
            self.engine: Engine = sa.create_engine(parsed, connect_args=cargs, **kwargs)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"no database driver for {self.url}: {exc}. For PostgreSQL: "
                "pip install 'safepoint[postgres]'"
            ) from None
        if self.is_sqlite:
            self._sqlite_events()
        _forget_connections_after_fork(self)
        if not create and self.schema_version() == 0:
            self.engine.dispose()
            raise NotFoundError(f"no catalog at {self.url} (the database has no safepoint tables)")
        self.migrate()

    # -- connections --------------------------------------------------------------------
    def _sqlite_events(self) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, record: Any) -> None:
            # let us emit BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not self.in_memory and not self.read_only:
                cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is fsynced, so a committed version survives a power loss
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(self.engine, "begin")
        def _begin(conn: Connection) -> None:
            # writers take the write lock at BEGIN: no lock upgrade deadlocks, and a
            # read-then-write (max(version) + 1) is serialised
            opts = conn.get_execution_options()
            if opts.get("sp_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif not opts.get("sp_single"):
                conn.exec_driver_sql("BEGIN")
            # sp_single: one SELECT, atomic on its own; skipping BEGIN saves a round trip

    @contextlib.contextmanager
    def tx(
        self, write: bool = False, durable: bool = True, single: bool = False
    ) -> Iterator[Connection]:
        """A transaction (committed on success); ``write=True`` locks early on SQLite.

        ``single=True`` (reads of one statement): no explicit BEGIN on SQLite.

        ``durable=False`` skips the fsync of the commit (SQLite ``synchronous=NORMAL``,
        PostgreSQL ``synchronous_commit=off``): the change is visible to every other
        client at once and survives a crash of this process, but maybe not a power loss.
        For bookkeeping that only matters while its writer lives (leases, heartbeats).
        """
        if write and self.read_only:
            raise ReadOnlyStoreError(
                f"the catalog {self.path} is read-only (its file or folder cannot be written "
                "here): reading works; writes need a folder this user can write",
                errno.EROFS,
                self.path,
            )
        lock = self._lock if self._lock is not None else contextlib.nullcontext()
        relaxed = write and not durable
        with lock:
            try:
                with self.engine.connect() as conn:
                    if write:
                        conn.execution_options(sp_write=True)
                    elif single:
                        conn.execution_options(sp_single=True)
                    raw = None
                    if relaxed and self.is_sqlite and not self.in_memory:
                        raw = conn.connection.driver_connection
                        raw.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
                    try:
                        with conn.begin():
                            if relaxed and self.dialect == "postgresql":
                                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                            yield conn
                    finally:
                        if raw is not None:
                            raw.execute("PRAGMA synchronous=FULL")
            except SafepointError:
                raise
            except Exception as exc:
                if not is_db_error(exc):
                    raise
                raise catalog_error(
                    exc, self.url, path=self.path, timeout=self.lock_timeout
                ) from None

    def close(self) -> None:
        self.engine.dispose()

    def file_id(self) -> tuple[int, int] | None:
        """(device, inode) of a SQLite catalog file; None for servers, memory, or if gone."""
        return _file_id(self)

    # -- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.tx() as conn:
            return self._schema_version(conn)

    def _schema_version(self, conn: Connection) -> int:
        if not sa.inspect(conn).has_table("sp_schema"):
            return 0
        v = conn.execute(sa.select(T_SCHEMA.c.version).where(T_SCHEMA.c.id == 1)).scalar()
        return int(v or 0)

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Bring the schema to ``target`` (the latest by default); returns the old version."""
        if target == SCHEMA_VERSION:
            # the common case, without taking the write lock: already up to date
            current = self.schema_version()
            if current == SCHEMA_VERSION:
                return current
        if self.read_only:
            raise ReadOnlyStoreError(
                f"the catalog {self.path} has schema version {self.schema_version()} and "
                f"needs an upgrade to {SCHEMA_VERSION}, but it is read-only here: open it "
                "once where it can be written",
                errno.EROFS,
                self.path,
            )
        with self.tx(write=True) as conn:
            if self.dialect == "postgresql":
                # one migrator at a time per database
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(718281828)")
            current = self._schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the catalog {self.url} has schema version {current}, newer than this "
                    f"safepoint knows ({SCHEMA_VERSION}): upgrade safepoint to use it"
                )
            for i in range(current, target):
                MIGRATIONS[i](conn)
            if target > current:
                now = time.time()
                if current == 0:
                    conn.execute(T_SCHEMA.insert().values(id=1, version=target, updated_at=now))
                else:
                    conn.execute(
                        T_SCHEMA.update()
                        .where(T_SCHEMA.c.id == 1)
                        .values(version=target, updated_at=now)
                    )
            return current

    # -- helpers --------------------------------------------------------------------------
    def _insert_fn(self) -> Callable[[sa.Table], Any]:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert
        from sqlalchemy.dialects.sqlite import insert as lite_insert

        return lite_insert

    def _insert_ignore(self, conn: Connection, table: sa.Table, **values: Any) -> bool:
        """Insert a row unless its key exists; True if it was inserted."""
        stmt = self._insert_fn()(table).values(**values).on_conflict_do_nothing()
        return bool(conn.execute(stmt).rowcount)

    def _upsert(
        self, conn: Connection, table: sa.Table, keys: dict[str, Any], values: dict[str, Any]
    ) -> None:
        """Insert the row ``keys`` + ``values``, or update ``values`` if ``keys`` exist
        (one statement: no window between a delete and an insert for another writer)."""
        stmt = self._insert_fn()(table).values(**keys, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=values))


def _forget_connections_after_fork(cat: CatalogEngine) -> None:
    """A forked child must not use its parent's pooled connections (two processes on one
    SQLite handle or PostgreSQL socket corrupt each other): drop them, unclosed, in the
    child, which then opens its own."""
    if not hasattr(os, "register_at_fork") or cat.in_memory:
        return
    ref = weakref.ref(cat)

    def reset() -> None:
        c = ref()
        if c is not None:
            c.engine.dispose(close=False)

    os.register_at_fork(after_in_child=reset)


def _file_id(cat: CatalogEngine) -> tuple[int, int] | None:
    """(device, inode) of a SQLite catalog file; None if not a file or gone."""
    db = sa.make_url(cat.engine.url).database if cat.is_sqlite and not cat.in_memory else None
    if not db:
        return None
    try:
        st = os.stat(db)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
