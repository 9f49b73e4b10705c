"""Typed queries of the catalog's own rows: the store id and intents."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import CatalogEngine
from .schema import META, T_AUDIT, T_CKPT, T_INTENTS, T_MODELS, T_RUNS, T_STORE, T_VERSIONS

__all__ = ["MetaQueries", "drop_all"]


def drop_all(conn: Connection) -> None:
    """Drop the safepoint tables in ``conn`` (PostgreSQL: with what depends on them)."""
    for table in reversed(META.sorted_tables):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name} CASCADE")
    conn.exec_driver_sql("DROP TABLE IF EXISTS sp_schema CASCADE")


class MetaQueries(CatalogEngine):
    """The store id (``sp_store``), intents (``sp_intents``), and whole-catalog checks."""

    def store_id(self, conn: Connection) -> str | None:
        """The store id recorded in the catalog, or None."""
        sid = conn.execute(sa.select(T_STORE.c.store_id).where(T_STORE.c.id == 1)).scalar()
        return None if sid is None else str(sid)

    def claim_store_id(self, conn: Connection, candidate: str) -> str:
        """Record ``candidate`` as the store id unless one is there; the one that is."""
        self._insert_ignore(conn, T_STORE, id=1, store_id=candidate, created_at=time.time())
        return str(self.store_id(conn))

    def set_store_id(self, conn: Connection, store_id: str) -> None:
        """Record ``store_id``, replacing any other (``recover``)."""
        self._upsert(conn, T_STORE, {"id": 1}, {"store_id": store_id, "created_at": time.time()})

    def contents(self) -> tuple[bool, bool]:
        """(has versions, has any data: models, checkpoints, runs or audit entries)."""
        with self.tx() as conn:
            versions = conn.execute(
                sa.select(sa.literal(1)).select_from(T_VERSIONS).limit(1)
            ).first()
            if versions is not None:
                return True, True
            for t in (T_MODELS, T_CKPT, T_RUNS, T_AUDIT):
                if conn.execute(sa.select(sa.literal(1)).select_from(t).limit(1)).first():
                    return False, True
        return False, False

    def wipe(self, keep_schema: bool = True) -> None:
        """Empty every safepoint table (but the schema version with ``keep_schema``):
        ``recover(force=True)``, and tests that lose a catalog."""
        with self.tx(write=True) as conn:
            for table in reversed(META.sorted_tables):
                if table.name != "sp_schema" or not keep_schema:
                    conn.execute(table.delete())

    def drop_tables(self) -> None:
        """Drop every safepoint table (a server catalog lost the way a database is)."""
        with self.engine.begin() as conn:
            drop_all(conn)

    # -- intents (see safepoint.stores.intents) -------------------------------------------
    def add_intent(self, conn: Connection, **values: Any) -> None:
        conn.execute(T_INTENTS.insert().values(**values))

    def drop_intents(self, conn: Connection, *ids: str) -> None:
        conn.execute(T_INTENTS.delete().where(T_INTENTS.c.id.in_(ids)))

    def intents(self, conn: Connection) -> list[Any]:
        """Every intent row."""
        return list(conn.execute(sa.select(T_INTENTS)).all())
