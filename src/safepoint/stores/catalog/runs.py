"""Typed queries of the runs table (:mod:`safepoint.stores.runs` is the API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import CatalogEngine
from .schema import T_RUNS

__all__ = ["RunQueries"]


class RunQueries(CatalogEngine):
    """Queries of the runs table."""

    def run_exists(self, conn: Connection, run_id: str) -> bool:
        return conn.execute(sa.select(T_RUNS.c.id).where(T_RUNS.c.id == run_id)).first() is not None

    def insert_run(self, conn: Connection, **values: Any) -> None:
        """Insert a run row (every column of the runs table)."""
        conn.execute(T_RUNS.insert().values(**values))

    def run_state_for_update(self, conn: Connection, run_id: str) -> str | None:
        """The run's state (JSON text), row-locked until the transaction ends."""
        state = conn.execute(
            sa.select(T_RUNS.c.state).where(T_RUNS.c.id == run_id).with_for_update()
        ).scalar()
        return None if state is None else str(state)

    def update_run(self, conn: Connection, run_id: str, **values: Any) -> bool:
        """Change columns of a run; False if there is no such run."""
        return bool(
            conn.execute(T_RUNS.update().where(T_RUNS.c.id == run_id).values(**values)).rowcount
        )

    def run_row(self, conn: Connection, run_id: str) -> Any:
        """The run's row, or None."""
        return conn.execute(sa.select(T_RUNS).where(T_RUNS.c.id == run_id)).first()

    def run_rows(
        self,
        conn: Connection,
        *,
        kind: str | None = None,
        name: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[Any]:
        """Run rows, newest first, filtered by kind, name and status."""
        q = sa.select(T_RUNS).order_by(T_RUNS.c.started_at.desc()).limit(limit)
        if kind is not None:
            q = q.where(T_RUNS.c.kind == kind)
        if name is not None:
            q = q.where(T_RUNS.c.name == name)
        if status is not None:
            q = q.where(T_RUNS.c.status == status)
        return list(conn.execute(q).all())

    def delete_run(self, conn: Connection, run_id: str) -> bool:
        return bool(conn.execute(T_RUNS.delete().where(T_RUNS.c.id == run_id)).rowcount)

    def run_kinds(self, conn: Connection) -> set[str]:
        """The kinds of run recorded (custom kinds included)."""
        return {str(k) for k in conn.execute(sa.select(T_RUNS.c.kind).distinct()).scalars()}

    def start_run_exclusive(
        self,
        values: dict[str, Any],
        *,
        alive: Callable[[Any], bool],
        lock_by: str,
        interrupted: Callable[[Any], str],
    ) -> tuple[Any, list[str]]:
        """Insert the run row ``values`` unless a live run of the same kind and name holds
        it, in one write transaction: two starters never both run (SQLite serialises
        writers with ``BEGIN IMMEDIATE``; on PostgreSQL the transaction first row-locks a
        ``models`` row named after the run, created by ``lock_by`` if needed).

        ``alive(row)`` says whether a ``running`` row's process still runs; the dead ones
        are marked ``interrupted`` with the message ``interrupted(row)``. Returns
        ``(holder_row, [])`` when a live run holds it (nothing changed), else
        ``(None, ids_of_runs_taken_over)``.
        """
        kind, name, now = values["kind"], values["name"], values["started_at"]
        taken: list[str] = []
        with self.tx(write=True) as conn:
            if self.dialect == "postgresql":
                # serialise the check-and-insert of concurrent starters on one row lock
                self.model_id(conn, name, create_by=lock_by)  # type: ignore[attr-defined]
            rows = conn.execute(
                sa.select(T_RUNS).where(
                    T_RUNS.c.kind == kind, T_RUNS.c.name == name, T_RUNS.c.status == "running"
                )
            ).all()
            for r in rows:
                if alive(r):
                    return r, []
            for r in rows:
                self.update_run(
                    conn, r.id, status="interrupted", finished_at=now, message=interrupted(r)[:1000]
                )
                taken.append(str(r.id))
            self.insert_run(conn, **values)
        return None, taken
