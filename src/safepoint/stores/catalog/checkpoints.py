"""Typed queries of checkpointers and their values (:mod:`safepoint.stores.checkpointer`)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import CatalogEngine
from .schema import T_CKPT, T_CKPTS

__all__ = ["CheckpointQueries"]


class CheckpointQueries(CatalogEngine):
    """Queries of the checkpointers and checkpoints tables."""

    def checkpointer_description(self, conn: Connection, name: str) -> str | None:
        """The description of checkpointer ``name``, or None if it does not exist."""
        row = conn.execute(sa.select(T_CKPTS.c.description).where(T_CKPTS.c.name == name)).first()
        return None if row is None else str(row[0])

    def ensure_checkpointer(self, conn: Connection, name: str, description: str) -> None:
        """Create checkpointer ``name`` unless it exists; a non-empty ``description``
        replaces the old one."""
        self._insert_ignore(
            conn, T_CKPTS, name=name, description=description, created_at=time.time()
        )
        if description:
            conn.execute(
                T_CKPTS.update()
                .where(T_CKPTS.c.name == name, T_CKPTS.c.description != description)
                .values(description=description)
            )

    def list_checkpointers(self, conn: Connection) -> list[Any]:
        """One row per checkpointer, by name: ``name``, ``description``, ``created_at``,
        ``n`` (keys), ``bytes``, ``updated`` (None without keys), ``ledger`` (1 if it holds
        a search ledger)."""
        return list(
            conn.execute(
                sa.select(
                    T_CKPTS.c.name,
                    T_CKPTS.c.description,
                    T_CKPTS.c.created_at,
                    sa.func.count(T_CKPT.c.key).label("n"),
                    sa.func.coalesce(sa.func.sum(T_CKPT.c.size), 0).label("bytes"),
                    sa.func.max(T_CKPT.c.updated_at).label("updated"),
                    sa.func.max(sa.case((T_CKPT.c.key == "search/meta", 1), else_=0)).label(
                        "ledger"
                    ),
                )
                .outerjoin(T_CKPT, T_CKPT.c.name == T_CKPTS.c.name)
                .group_by(T_CKPTS.c.name, T_CKPTS.c.description, T_CKPTS.c.created_at)
                .order_by(T_CKPTS.c.name)
            ).all()
        )

    def upsert_checkpoint(self, conn: Connection, name: str, key: str, row: dict[str, Any]) -> None:
        """Set ``name[key]`` to ``row`` (kind, size, digest, value, checksum, updated_at),
        in one statement: no window between a delete and an insert for another writer."""
        self._upsert(conn, T_CKPT, {"name": name, "key": key}, row)

    def delete_checkpoint(self, conn: Connection, name: str, key: str) -> bool:
        n = conn.execute(T_CKPT.delete().where(T_CKPT.c.name == name, T_CKPT.c.key == key))
        return bool(n.rowcount)

    def clear_checkpoints(self, conn: Connection, name: str) -> int:
        return int(conn.execute(T_CKPT.delete().where(T_CKPT.c.name == name)).rowcount)

    def checkpoint_row(self, conn: Connection, name: str, key: str, value: bool = True) -> Any:
        """The row of ``name[key]`` (kind, size, digest, checksum, updated_at, and
        ``value`` unless ``value=False``: up to 256 KiB not read for nothing) or None."""
        cols = [c for c in T_CKPT.c if value or c.name != "value"]
        return conn.execute(
            sa.select(*cols).where(T_CKPT.c.name == name, T_CKPT.c.key == key)
        ).first()

    def has_checkpoint(self, conn: Connection, name: str, key: str) -> bool:
        return (
            conn.execute(
                sa.select(sa.literal(1)).where(T_CKPT.c.name == name, T_CKPT.c.key == key)
            ).first()
            is not None
        )

    def checkpoint_keys(self, conn: Connection, name: str) -> list[str]:
        return [
            str(k)
            for k in conn.execute(
                sa.select(T_CKPT.c.key).where(T_CKPT.c.name == name).order_by(T_CKPT.c.key)
            ).scalars()
        ]

    def checkpoint_count(self, conn: Connection, name: str) -> int:
        n = conn.execute(sa.select(sa.func.count()).where(T_CKPT.c.name == name)).scalar()
        return int(n or 0)

    def all_checkpoints(self, conn: Connection) -> list[Any]:
        """Every checkpoint row (name, key, digest, value, checksum, size, ...)."""
        return list(conn.execute(sa.select(T_CKPT)).all())
