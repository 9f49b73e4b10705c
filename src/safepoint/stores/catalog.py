"""The catalog: models, versions, aliases, audit log, runs and checkpoints (SQLAlchemy Core).

One catalog serves one store. URLs select the backend (:func:`register_catalog_backend`):

* ``sqlite:///path/catalog.db``: the embedded default (WAL, ``synchronous=FULL`` so that a
  commit is durable; writers serialise with ``BEGIN IMMEDIATE``);
* ``postgresql://user@host/db``: a shared team catalog (row locks with ``FOR UPDATE``).
  Add ``?options=-csearch_path%3Dmyschema`` to keep the tables in a schema.

The schema is versioned in table ``sp_schema``; opening an older catalog applies the
missing :data:`MIGRATIONS` in one transaction (under a lock, so that concurrent openers
do not race); a catalog newer than this safepoint is refused with a clear message.

Commit protocol of a version (see :mod:`safepoint.stores.store`): the blob is written
and *leased* (:meth:`Catalog.lease`) before it is promoted, and the version row is
inserted in one transaction that also drops the lease. ``gc`` marks a blob
``deleting`` in a transaction that checks for references and live leases first, so
that a put and a gc can never both believe they own the same blob.

>>> from safepoint.stores.catalog import open_catalog
>>> cat = open_catalog("sqlite://")
>>> cat.schema_version() == SCHEMA_VERSION
True
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import (
    BackendUnavailableError,
    NotFoundError,
    ReadOnlyStoreError,
    SafepointError,
    StoreError,
)
from .faults import catalog_error, is_db_error
from .owners import owner_dead, this_owner

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Catalog",
    "open_catalog",
    "register_catalog_backend",
]

# -- schema ----------------------------------------------------------------------------
# Each migration takes the catalog from version i to i + 1. Never edit a released step:
# add a new one (and a test that opens a catalog written by the older schema).


def _v1_tables(md: sa.MetaData) -> None:
    """The first released schema."""
    sa.Table(
        "sp_schema",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "models",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
    )
    sa.Table(
        "versions",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("digest", sa.String(128), nullable=False, index=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("root_type", sa.String(255), nullable=False),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("parents", sa.Text, nullable=False),
        sa.Column("data_digest", sa.String(128)),
        sa.Column("code_digest", sa.String(128)),
    )
    sa.Table(
        "aliases",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
    )
    sa.Table(
        "audit",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False),
    )
    sa.Table(
        "checkpointers",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Table(
        "checkpoints",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(128), index=True),
        sa.Column("value", sa.LargeBinary),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "blobs",
        md,
        sa.Column("digest", sa.String(128), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_at", sa.Float, nullable=False),
    )
    sa.Table(
        "leases",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(128), nullable=False, index=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def _v2_runs(md: sa.MetaData) -> None:
    sa.Table(
        "runs",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Index("ix_runs_kind_name", "kind", "name"),
    )


def _migrate_1(conn: Connection) -> None:
    md = sa.MetaData()
    _v1_tables(md)
    md.create_all(conn)


def _migrate_2(conn: Connection) -> None:
    """Runs table (workflows, search, scoring), run lineage of versions, audit time index."""
    md = sa.MetaData()
    _v2_runs(md)
    md.create_all(conn)
    conn.exec_driver_sql("ALTER TABLE versions ADD COLUMN run_id VARCHAR(32)")
    conn.exec_driver_sql("CREATE INDEX ix_audit_at ON audit (at)")


def _migrate_3(conn: Connection) -> None:
    """A per-model version counter, so that a deleted version number is never reused; the
    holder of a lease (host, pid), so that gc can tell a crashed writer's lease."""
    conn.exec_driver_sql("ALTER TABLE leases ADD COLUMN host VARCHAR(255) NOT NULL DEFAULT ''")
    conn.exec_driver_sql("ALTER TABLE leases ADD COLUMN pid INTEGER NOT NULL DEFAULT 0")
    conn.exec_driver_sql("ALTER TABLE models ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0")
    conn.exec_driver_sql(
        "UPDATE models SET last_version = (SELECT COALESCE(MAX(v.version), 0) "
        "FROM versions v WHERE v.model_id = models.id)"
    )


def _v4_verifications(md: sa.MetaData) -> None:
    sa.Table(
        "verifications",
        md,
        # no foreign key: the migration creates this table on its own metadata
        sa.Column("model_id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
    )


def _migrate_4(conn: Connection) -> None:
    """The last `verify` of each version (the console shows it without loading anything),
    and a covering index so that listing models does not read every version row."""
    md = sa.MetaData()
    _v4_verifications(md)
    md.create_all(conn)
    conn.exec_driver_sql(
        "CREATE INDEX ix_versions_summary ON versions (model_id, version, created_at, size)"
    )


def _v5_store(md: sa.MetaData) -> None:
    sa.Table(
        "sp_store",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("store_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    sa.Table(
        "sp_intents",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def _migrate_5(conn: Connection) -> None:
    """The store id shared with the blobs (a catalog that is not the store's is refused),
    and intents (what a change writes beside the blobs before its commit, so that the
    objects of a crashed change are undone);
    a kind per model (step outputs apart from models) and a per-model journal counter
    (alias moves, edits and deletes are journaled beside the blobs); a description per
    version; the full identity of lease and gc-mark holders (host, boot, PID namespace,
    PID and start time: a reused PID is not mistaken for a live holder); a checksum of
    every checkpoint value kept in the catalog row."""
    md = sa.MetaData()
    _v5_store(md)
    md.create_all(conn)
    for ddl in (
        "ALTER TABLE models ADD COLUMN kind VARCHAR(32) NOT NULL DEFAULT 'model'",
        "ALTER TABLE models ADD COLUMN journal_seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE versions ADD COLUMN description TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE leases ADD COLUMN owner VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE blobs ADD COLUMN owner VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE checkpoints ADD COLUMN checksum VARCHAR(64)",
        # gc asks the audit log whether a version was committed or deleted
        "CREATE INDEX ix_audit_name_version ON audit (name, version)",
    ):
        conn.exec_driver_sql(ddl)
    # outputs of step workflows carry the tag safepoint.step (see workflows/steps.py)
    models = sa.table("models", sa.column("id"), sa.column("kind"))
    versions = sa.table("versions", sa.column("model_id"), sa.column("tags"))
    conn.execute(
        models.update()
        .where(
            sa.exists().where(
                versions.c.model_id == models.c.id,
                versions.c.tags.like('%"safepoint.step"%'),
            )
        )
        .values(kind="step")
    )


MIGRATIONS: list[Callable[[Connection], None]] = [
    _migrate_1,
    _migrate_2,
    _migrate_3,
    _migrate_4,
    _migrate_5,
]
SCHEMA_VERSION = len(MIGRATIONS)

# the tables as of SCHEMA_VERSION, for queries
META = sa.MetaData()
_v1_tables(META)
_v2_runs(META)
_v4_verifications(META)
_v5_store(META)
T_SCHEMA = META.tables["sp_schema"]
T_MODELS = META.tables["models"]
T_MODELS.append_column(sa.Column("last_version", sa.Integer, nullable=False, default=0))
T_MODELS.append_column(sa.Column("kind", sa.String(32), nullable=False, default="model"))
T_MODELS.append_column(sa.Column("journal_seq", sa.Integer, nullable=False, default=0))
T_VERSIONS = META.tables["versions"]
T_VERSIONS.append_column(sa.Column("run_id", sa.String(32)))
T_ALIASES = META.tables["aliases"]
T_AUDIT = META.tables["audit"]
T_CKPTS = META.tables["checkpointers"]
T_CKPT = META.tables["checkpoints"]
T_BLOBS = META.tables["blobs"]
T_LEASES = META.tables["leases"]
T_LEASES.append_column(sa.Column("host", sa.String(255), nullable=False, default=""))
T_LEASES.append_column(sa.Column("pid", sa.Integer, nullable=False, default=0))
T_LEASES.append_column(sa.Column("owner", sa.String(255), nullable=False, default=""))
T_BLOBS.append_column(sa.Column("owner", sa.String(255), nullable=False, default=""))
T_CKPT.append_column(sa.Column("checksum", sa.String(64)))
T_VERSIONS.append_column(sa.Column("description", sa.Text, nullable=False, default=""))
T_RUNS = META.tables["runs"]
T_VERIFY = META.tables["verifications"]
T_STORE = META.tables["sp_store"]
T_INTENTS = META.tables["sp_intents"]

#: a gc that died while deleting a blob leaves it "deleting"; after this many seconds a
#: put takes it over (it re-creates the blob from its own copy)
STALE_DELETE = 60.0
#: leases on temporary objects name them "tmp:<id>" in the digest column
TEMP_PREFIX = "tmp:"


def dumps_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=True)


def loads_json(text: str | None, default: Any = None) -> Any:
    if not text:
        return default
    return json.loads(text)


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


class Catalog:
    """A SQLAlchemy catalog (SQLite or PostgreSQL; see the module docstring)."""

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

    def upsert(
        self, conn: Connection, table: sa.Table, keys: dict[str, Any], values: dict[str, Any]
    ) -> None:
        """Insert the row ``keys`` + ``values``, or update ``values`` if ``keys`` exist
        (one statement: no window between a delete and an insert for another writer)."""
        stmt = self._insert_fn()(table).values(**keys, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=values))

    def model_id(
        self,
        conn: Connection,
        name: str,
        *,
        create_by: str | None = None,
        kind: str = "model",
        lock: bool = False,
    ) -> int:
        """The id of model ``name`` (created as ``kind`` if ``create_by``).

        ``create_by`` or ``lock``: the model row is locked (``FOR UPDATE`` on PostgreSQL;
        SQLite writers hold the database lock from BEGIN), which serialises every change
        of the model's versions, aliases and journal counter.
        """
        if create_by is not None:
            self._insert_ignore(
                conn,
                T_MODELS,
                name=name,
                created_at=time.time(),
                created_by=create_by,
                last_version=0,
                kind=kind,
                journal_seq=0,
            )
        q = sa.select(T_MODELS.c.id).where(T_MODELS.c.name == name)
        if create_by is not None or lock:
            q = q.with_for_update()
        mid = conn.execute(q).scalar()
        if mid is None:
            raise NotFoundError(
                f"no model named {name!r} in this store; `safepoint ls` lists the models"
            )
        return int(mid)

    def audit(
        self,
        conn: Connection,
        *,
        actor: str,
        host: str,
        action: str,
        name: str,
        version: int | None = None,
        **detail: Any,
    ) -> None:
        conn.execute(
            T_AUDIT.insert().values(
                at=time.time(),
                actor=actor,
                host=host,
                action=action,
                name=name,
                version=version,
                detail=dumps_json(detail),
            )
        )

    # -- blob leases (see the module docstring) -------------------------------------------
    def lease_temp(self, lease_id: str, tmp_id: str, host: str, pid: int) -> None:
        """Record that ``tmp_id`` is being written (gc keeps it while the lease lives)."""
        with self.tx(write=True, durable=False) as conn:
            conn.execute(
                T_LEASES.insert().values(
                    id=lease_id,
                    digest=TEMP_PREFIX + tmp_id,
                    created_at=time.time(),
                    host=host,
                    pid=pid,
                    owner=this_owner(),
                )
            )

    def lease(self, digest: str, size: int, lease_id: str, host: str = "", pid: int = 0) -> bool:
        """Lease blob ``digest`` as ``lease_id``: gc keeps the blob until the lease is
        dropped, expires or its holder is seen dead (:mod:`~safepoint.stores.owners`).
        (The lease of the temporary object stays until the blob is promoted: both are
        held at once.)

        Returns False if a live gc is deleting the blob right now (retry shortly); the
        mark of a gc that died is taken over at once.
        """
        now = time.time()
        with self.tx(write=True, durable=False) as conn:
            self._insert_ignore(conn, T_BLOBS, digest=digest, size=size, state="live", state_at=now)
            row = conn.execute(
                sa.select(T_BLOBS.c.state, T_BLOBS.c.state_at, T_BLOBS.c.owner)
                .where(T_BLOBS.c.digest == digest)
                .with_for_update()
            ).one()
            if row.state == "deleting":
                if now - row.state_at < STALE_DELETE and not owner_dead(row.owner or ""):
                    return False
                conn.execute(
                    T_BLOBS.update()
                    .where(T_BLOBS.c.digest == digest)
                    .values(state="live", state_at=now, owner="")
                )
            conn.execute(
                T_LEASES.insert().values(
                    id=lease_id,
                    digest=digest,
                    created_at=now,
                    host=host,
                    pid=pid,
                    owner=this_owner(),
                )
            )
        return True

    def temp_leases(self, lease_ttl: float) -> list[tuple[str, str, int, str]]:
        """``(tmp_id, host, pid, owner)`` of the unexpired leases on temporary objects."""
        with self.tx() as conn:
            rows = conn.execute(
                sa.select(
                    T_LEASES.c.digest, T_LEASES.c.host, T_LEASES.c.pid, T_LEASES.c.owner
                ).where(
                    T_LEASES.c.digest.startswith(TEMP_PREFIX),
                    T_LEASES.c.created_at > time.time() - lease_ttl,
                )
            ).all()
        return [(d[len(TEMP_PREFIX) :], h, int(p), o or "") for d, h, p, o in rows]

    def leased(self, conn: Connection, digest: str, lease_ttl: float) -> bool:
        """True if a live lease holds ``digest`` (unexpired, holder not seen dead)."""
        rows = conn.execute(
            sa.select(T_LEASES.c.host, T_LEASES.c.pid, T_LEASES.c.owner).where(
                T_LEASES.c.digest == digest, T_LEASES.c.created_at > time.time() - lease_ttl
            )
        ).all()
        return any(not owner_dead(o or "", h, int(p)) for h, p, o in rows)

    def drop_lease(self, conn: Connection, *lease_ids: str) -> None:
        conn.execute(T_LEASES.delete().where(T_LEASES.c.id.in_(lease_ids)))

    def referenced(self, conn: Connection, digest: str) -> bool:
        v = conn.execute(
            sa.select(sa.literal(1)).where(T_VERSIONS.c.digest == digest).limit(1)
        ).first()
        if v is not None:
            return True
        c = conn.execute(sa.select(sa.literal(1)).where(T_CKPT.c.digest == digest).limit(1)).first()
        return c is not None

    def claim_for_delete(
        self,
        digest: str,
        size: int,
        grace: float,
        lease_ttl: float,
        keep: Callable[[Connection], bool] = lambda conn: False,
    ) -> bool:
        """Mark an unreferenced, unleased blob ``deleting``; False if it must be kept.

        A lease counts while younger than ``lease_ttl`` seconds unless its holder is seen
        dead (a crashed writer on this machine). ``keep(conn)`` may veto the deletion
        inside the same transaction (the store checks its identity and version records).
        The mark records this process as its holder, so that a put meeting the mark of a
        gc that died takes it over at once.
        """
        now = time.time()
        with self.tx(write=True, durable=False) as conn:
            self._insert_ignore(
                conn, T_BLOBS, digest=digest, size=size, state="live", state_at=now - grace
            )
            row = conn.execute(
                sa.select(T_BLOBS.c.state, T_BLOBS.c.state_at)
                .where(T_BLOBS.c.digest == digest)
                .with_for_update()
            ).one()
            if self.referenced(conn, digest):
                return False
            if self.leased(conn, digest, lease_ttl):
                return False
            if row.state == "live" and row.state_at > now - grace:
                return False  # registered moments ago: its writer may still be committing
            if keep(conn):
                return False
            conn.execute(
                T_BLOBS.update()
                .where(T_BLOBS.c.digest == digest)
                .values(state="deleting", state_at=now, owner=this_owner())
            )
        return True

    def forget_blob(self, digest: str) -> None:
        with self.tx(write=True, durable=False) as conn:
            conn.execute(
                T_BLOBS.delete().where(T_BLOBS.c.digest == digest, T_BLOBS.c.state == "deleting")
            )
            conn.execute(T_LEASES.delete().where(T_LEASES.c.digest == digest))


def _forget_connections_after_fork(cat: Catalog) -> None:
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


_FACTORIES: dict[str, Callable[..., Catalog]] = {}
_MEMORY: dict[str, Catalog] = {}


def register_catalog_backend(scheme: str, factory: Callable[..., Catalog]) -> None:
    """Make metadata URLs whose backend name is ``scheme`` open with ``factory(url)``
    (``factory(url, create=False)`` when only an existing catalog may be opened)."""
    _FACTORIES[scheme] = factory


register_catalog_backend("sqlite", Catalog)
register_catalog_backend("postgresql", Catalog)


def _file_id(cat: Catalog) -> tuple[int, int] | None:
    """(device, inode) of a SQLite catalog file; None if not a file or gone."""
    db = sa.make_url(cat.engine.url).database if cat.is_sqlite and not cat.in_memory else None
    if not db:
        return None
    try:
        st = os.stat(db)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


_OPEN: dict[str, tuple[Catalog, tuple[int, int] | None]] = {}
_OPEN_LOCK = threading.Lock()


def open_catalog(url: str, create: bool = True) -> Catalog:
    """Open (and migrate) the catalog at ``url``.

    Catalogs are shared within a process (one connection pool per database, and opening
    a store costs one read); a SQLite file that was deleted or replaced since is reopened.
    ``create=False``: a missing SQLite file or a database without safepoint tables raises
    NotFoundError instead of being set up.
    """
    with _OPEN_LOCK:
        hit = _OPEN.get(url)
        if hit is not None:
            cat, fid = hit
            same_mode = cat.path is None or _read_only(cat.path) == cat.read_only
            if (fid is None or _file_id(cat) == fid) and same_mode:
                cat.migrate()  # a read: refuses a catalog another process upgraded
                return cat
        try:
            backend = sa.make_url(url).get_backend_name()
        except sa.exc.ArgumentError:
            raise StoreError(
                f"metadata URL {url!r} is not a database URL; use sqlite:///path/catalog.db "
                "or postgresql://user@host/db"
            ) from None
        factory = _FACTORIES.get(backend)
        if factory is None:
            raise StoreError(
                f"no catalog backend for {backend!r} URLs ({url!r}); known: {sorted(_FACTORIES)}"
            )
        cat = factory(url) if create else factory(url, create=False)
        if not cat.in_memory:
            _OPEN[url] = (cat, _file_id(cat))
        return cat


def forget_catalog(cat: Catalog) -> None:
    """Close ``cat`` and drop it from the cache of open catalogs (before its file is moved)."""
    with _OPEN_LOCK:
        for url, (c, _) in list(_OPEN.items()):
            if c is cat:
                del _OPEN[url]
    cat.engine.dispose()


def memory_catalog(key: str) -> Catalog:
    """A process-wide in-memory SQLite catalog shared by stores with the same ``key``."""
    cat = _MEMORY.get(key)
    if cat is None:
        cat = _MEMORY[key] = Catalog("sqlite://")
    return cat
