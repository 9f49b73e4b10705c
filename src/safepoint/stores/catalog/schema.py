"""The catalog's tables and their migrations (only the catalog package uses the tables).

Each migration takes the catalog from version i to i + 1. Never edit a released step:
add a new one (and a test that opens a catalog written by the older schema).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STALE_DELETE",
    "TEMP_PREFIX",
    "dumps_json",
    "loads_json",
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
