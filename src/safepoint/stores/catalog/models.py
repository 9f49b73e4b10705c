"""Typed queries of models, versions, aliases, the audit log and verify reports.

Every method takes the connection of a transaction the caller opened with
:meth:`~safepoint.stores.catalog.engine.CatalogEngine.tx`, so that a store change (a
commit of a version with its alias move, a delete with its audit entry) stays one
transaction; the store decides what goes together, the catalog how it is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...errors import NotFoundError
from .engine import CatalogEngine
from .schema import T_ALIASES, T_AUDIT, T_MODELS, T_VERIFY, T_VERSIONS, dumps_json

__all__ = ["ModelQueries"]


class ModelQueries(CatalogEngine):
    """Queries of the models, versions, aliases, audit and verifications tables."""

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

    # -- models ---------------------------------------------------------------------------
    def find_model_id(self, conn: Connection, name: str) -> int | None:
        """The id of model ``name``, or None if there is none."""
        mid = conn.execute(sa.select(T_MODELS.c.id).where(T_MODELS.c.name == name)).scalar()
        return None if mid is None else int(mid)

    def last_version(self, conn: Connection, mid: int) -> int:
        """The highest version number the model handed out (deleted ones count)."""
        last = conn.execute(sa.select(T_MODELS.c.last_version).where(T_MODELS.c.id == mid)).scalar()
        return int(last or 0)

    def set_last_version(self, conn: Connection, mid: int, version: int) -> None:
        conn.execute(T_MODELS.update().where(T_MODELS.c.id == mid).values(last_version=version))

    def journal_seq(self, conn: Connection, mid: int) -> int:
        """The sequence number of the model's last journal entry."""
        seq = conn.execute(sa.select(T_MODELS.c.journal_seq).where(T_MODELS.c.id == mid)).scalar()
        return int(seq or 0)

    def next_journal_seq(self, conn: Connection, mid: int) -> int:
        """Move the model's journal counter on; the new value."""
        conn.execute(
            T_MODELS.update()
            .where(T_MODELS.c.id == mid)
            .values(journal_seq=T_MODELS.c.journal_seq + 1)
        )
        return self.journal_seq(conn, mid)

    def model_counters(self, conn: Connection) -> dict[str, dict[str, int]]:
        """``{name: {"id", "last", "seq"}}``: every model's id, last version and journal
        counter."""
        return {
            r.name: {"id": int(r.id), "last": int(r.last_version), "seq": int(r.journal_seq)}
            for r in conn.execute(
                sa.select(
                    T_MODELS.c.name, T_MODELS.c.id, T_MODELS.c.last_version, T_MODELS.c.journal_seq
                )
            )
        }

    def insert_model(
        self,
        conn: Connection,
        name: str,
        *,
        created_at: float,
        created_by: str,
        last_version: int,
        kind: str,
        journal_seq: int,
    ) -> int:
        """Insert a model row with its counters (``recover``); its id."""
        conn.execute(
            T_MODELS.insert().values(
                name=name,
                created_at=created_at,
                created_by=created_by[:100],
                last_version=last_version,
                kind=kind,
                journal_seq=journal_seq,
            )
        )
        return int(self.find_model_id(conn, name) or 0)

    def set_model_counters(
        self, conn: Connection, mid: int, *, last_version: int, journal_seq: int
    ) -> None:
        conn.execute(
            T_MODELS.update()
            .where(T_MODELS.c.id == mid)
            .values(last_version=last_version, journal_seq=journal_seq)
        )

    def model_names(
        self, conn: Connection, prefix: str | None = None, kind: str | None = None
    ) -> list[str]:
        """Names of the models that have at least one version, under ``prefix/`` and of
        ``kind`` if given."""
        q = (
            sa.select(T_MODELS.c.name)
            .where(sa.exists().where(T_VERSIONS.c.model_id == T_MODELS.c.id))
            .order_by(T_MODELS.c.name)
        )
        if prefix:
            q = q.where(T_MODELS.c.name.startswith(prefix + "/", autoescape=True))
        if kind is not None:
            q = q.where(T_MODELS.c.kind == kind)
        return [str(n) for n in conn.execute(q).scalars()]

    def model_summary(self, conn: Connection, kind: str | None = None) -> list[Any]:
        """One row per model with versions: name, id, kind, n, latest, updated, bytes."""
        q = (
            sa.select(
                T_MODELS.c.name,
                T_MODELS.c.id,
                T_MODELS.c.kind,
                sa.func.count(T_VERSIONS.c.version).label("n"),
                sa.func.max(T_VERSIONS.c.version).label("latest"),
                sa.func.max(T_VERSIONS.c.created_at).label("updated"),
                sa.func.sum(T_VERSIONS.c.size).label("bytes"),
            )
            .join(T_VERSIONS, T_VERSIONS.c.model_id == T_MODELS.c.id)
            .group_by(T_MODELS.c.id, T_MODELS.c.name, T_MODELS.c.kind)
            .order_by(T_MODELS.c.name)
        )
        if kind is not None:
            q = q.where(T_MODELS.c.kind == kind)
        return list(conn.execute(q).all())

    def latest_metrics_and_tags(
        self, conn: Connection, names: list[str]
    ) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """``{name: (metrics, tags)}`` of the latest version of each of ``names``."""
        from .schema import loads_json

        out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for chunk in range(0, len(names), 500):
            ids = sa.select(T_MODELS.c.id).where(T_MODELS.c.name.in_(names[chunk : chunk + 500]))
            latest = (
                sa.select(T_VERSIONS.c.model_id, sa.func.max(T_VERSIONS.c.version).label("v"))
                .where(T_VERSIONS.c.model_id.in_(ids))
                .group_by(T_VERSIONS.c.model_id)
                .subquery()
            )
            q = (
                sa.select(T_MODELS.c.name, T_VERSIONS.c.metrics, T_VERSIONS.c.tags)
                .join(latest, latest.c.model_id == T_MODELS.c.id)
                .join(
                    T_VERSIONS,
                    (T_VERSIONS.c.model_id == latest.c.model_id)
                    & (T_VERSIONS.c.version == latest.c.v),
                )
            )
            for r in conn.execute(q):
                out[r.name] = (loads_json(r.metrics, {}), loads_json(r.tags, {}))
        return out

    # -- versions -------------------------------------------------------------------------
    def has_versions(self, conn: Connection, name: str) -> bool:
        """True if model ``name`` has at least one version."""
        return (
            conn.execute(
                sa.select(sa.literal(1))
                .select_from(T_VERSIONS.join(T_MODELS))
                .where(T_MODELS.c.name == name)
                .limit(1)
            ).first()
            is not None
        )

    def has_version(self, conn: Connection, mid: int, version: int) -> bool:
        return (
            conn.execute(
                sa.select(sa.literal(1)).where(
                    T_VERSIONS.c.model_id == mid, T_VERSIONS.c.version == version
                )
            ).first()
            is not None
        )

    def insert_version(self, conn: Connection, mid: int, row: dict[str, Any]) -> None:
        """Insert a version row (``row``: the ``versions`` columns but ``model_id``)."""
        conn.execute(T_VERSIONS.insert().values(model_id=mid, **row))

    def update_version(
        self,
        conn: Connection,
        mid: int,
        version: int,
        *,
        metrics: dict[str, Any],
        tags: dict[str, Any],
        description: str,
    ) -> None:
        """Replace a version's metrics, tags and description (the blob never changes)."""
        conn.execute(
            T_VERSIONS.update()
            .where(T_VERSIONS.c.model_id == mid, T_VERSIONS.c.version == version)
            .values(metrics=dumps_json(metrics), tags=dumps_json(tags), description=description)
        )

    def delete_version(self, conn: Connection, mid: int, version: int) -> None:
        conn.execute(
            T_VERSIONS.delete().where(T_VERSIONS.c.model_id == mid, T_VERSIONS.c.version == version)
        )

    def latest_version(self, conn: Connection, mid: int) -> int | None:
        """The model's highest existing version, or None if it has none."""
        v = conn.execute(
            sa.select(sa.func.max(T_VERSIONS.c.version)).where(T_VERSIONS.c.model_id == mid)
        ).scalar()
        return None if v is None else int(v)

    def version_range(self, conn: Connection, mid: int) -> tuple[int | None, int | None]:
        """(lowest, highest) existing version of the model (None, None if it has none)."""
        lo, hi = conn.execute(
            sa.select(sa.func.min(T_VERSIONS.c.version), sa.func.max(T_VERSIONS.c.version)).where(
                T_VERSIONS.c.model_id == mid
            )
        ).one()
        return (None if lo is None else int(lo), None if hi is None else int(hi))

    def version_row(self, conn: Connection, mid: int, version: int) -> Any:
        """The ``versions`` row of ``mid``/``version``, or None."""
        return conn.execute(
            sa.select(T_VERSIONS).where(
                T_VERSIONS.c.model_id == mid, T_VERSIONS.c.version == version
            )
        ).first()

    def version_rows(self, conn: Connection, mid: int) -> list[Any]:
        """The model's version rows, oldest first."""
        return list(
            conn.execute(
                sa.select(T_VERSIONS)
                .where(T_VERSIONS.c.model_id == mid)
                .order_by(T_VERSIONS.c.version)
            ).all()
        )

    def version_numbers(self, conn: Connection, mid: int) -> list[int]:
        return [
            int(v)
            for v in conn.execute(
                sa.select(T_VERSIONS.c.version).where(T_VERSIONS.c.model_id == mid)
            ).scalars()
        ]

    def all_versions(self, conn: Connection) -> list[Any]:
        """Every version row with ``model_name`` and ``kind`` of its model."""
        return list(
            conn.execute(
                sa.select(T_VERSIONS, T_MODELS.c.name.label("model_name"), T_MODELS.c.kind).join(
                    T_MODELS, T_MODELS.c.id == T_VERSIONS.c.model_id
                )
            ).all()
        )

    def version_list(self, conn: Connection) -> list[Any]:
        """``(name, version, digest, size, model_id)`` of every version."""
        return list(
            conn.execute(
                sa.select(
                    T_MODELS.c.name,
                    T_VERSIONS.c.version,
                    T_VERSIONS.c.digest,
                    T_VERSIONS.c.size,
                    T_VERSIONS.c.model_id,
                ).join(T_MODELS, T_MODELS.c.id == T_VERSIONS.c.model_id)
            ).all()
        )

    def find_versions(
        self,
        conn: Connection,
        *,
        data_digest: str | None = None,
        code_digest: str | None = None,
        run_id: str | None = None,
        parent: str | None = None,
    ) -> list[Any]:
        """Version rows (with ``model_name``) matching the given lineage fields; ``parent``
        narrows by text (the caller checks the parsed list)."""
        q = sa.select(T_VERSIONS, T_MODELS.c.name.label("model_name")).join(
            T_MODELS, T_MODELS.c.id == T_VERSIONS.c.model_id
        )
        if data_digest is not None:
            q = q.where(T_VERSIONS.c.data_digest == data_digest)
        if code_digest is not None:
            q = q.where(T_VERSIONS.c.code_digest == code_digest)
        if run_id is not None:
            q = q.where(T_VERSIONS.c.run_id == run_id)
        if parent is not None:
            q = q.where(T_VERSIONS.c.parents.contains(json.dumps(parent)))
        return list(conn.execute(q.order_by(T_MODELS.c.name, T_VERSIONS.c.version)).all())

    def latest_with_digest(self, conn: Connection, name: str, digest: str) -> int | None:
        """The newest version of model ``name`` whose blob is ``digest``, or None."""
        mid = self.find_model_id(conn, name)
        if mid is None:
            return None
        v = conn.execute(
            sa.select(sa.func.max(T_VERSIONS.c.version)).where(
                T_VERSIONS.c.model_id == mid, T_VERSIONS.c.digest == digest
            )
        ).scalar()
        return None if v is None else int(v)

    # -- aliases --------------------------------------------------------------------------
    def alias_version(self, conn: Connection, mid: int, alias: str) -> int | None:
        """The version ``alias`` points at, or None."""
        v = conn.execute(
            sa.select(T_ALIASES.c.version).where(
                T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == alias
            )
        ).scalar()
        return None if v is None else int(v)

    def aliases_of(self, conn: Connection, mid: int) -> list[tuple[str, int]]:
        """``(alias, version)`` of the model, sorted."""
        rows = conn.execute(
            sa.select(T_ALIASES.c.alias, T_ALIASES.c.version).where(T_ALIASES.c.model_id == mid)
        ).all()
        return sorted((str(a), int(v)) for a, v in rows)

    def all_aliases(self, conn: Connection) -> list[tuple[int, str, int]]:
        """``(model_id, alias, version)`` of every alias."""
        rows = conn.execute(sa.select(T_ALIASES.c.model_id, T_ALIASES.c.alias, T_ALIASES.c.version))
        return [(int(m), str(a), int(v)) for m, a, v in rows]

    def move_alias(
        self,
        conn: Connection,
        mid: int,
        alias: str,
        *,
        current: int | None,
        version: int | None,
        actor: str,
    ) -> bool:
        """Compare-and-swap an alias row from ``current`` to ``version`` (None: absent);
        True if exactly this change was made (False: another writer changed it first).
        A new alias is inserted only if no other writer inserted it meanwhile."""
        now = time.time()
        if version is None:
            n = conn.execute(
                T_ALIASES.delete().where(
                    T_ALIASES.c.model_id == mid,
                    T_ALIASES.c.alias == alias,
                    T_ALIASES.c.version == current,
                )
            ).rowcount
        elif current is None:
            n = int(
                self._insert_ignore(
                    conn,
                    T_ALIASES,
                    model_id=mid,
                    alias=alias,
                    version=version,
                    updated_at=now,
                    updated_by=actor,
                )
            )
        else:
            n = conn.execute(
                T_ALIASES.update()
                .where(
                    T_ALIASES.c.model_id == mid,
                    T_ALIASES.c.alias == alias,
                    T_ALIASES.c.version == current,
                )
                .values(version=version, updated_at=now, updated_by=actor)
            ).rowcount
        return n == 1

    def replace_aliases(
        self, conn: Connection, mid: int, aliases: Iterable[tuple[str, int, float, str]]
    ) -> None:
        """Replace every alias of the model by ``(alias, version, updated_at, updated_by)``
        (``recover``)."""
        conn.execute(T_ALIASES.delete().where(T_ALIASES.c.model_id == mid))
        for alias, version, at, by in aliases:
            conn.execute(
                T_ALIASES.insert().values(
                    model_id=mid, alias=alias, version=version, updated_at=at, updated_by=by[:100]
                )
            )

    # -- audit ----------------------------------------------------------------------------
    def insert_audit_rows(self, conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
        """Insert audit rows as they are (``at``, ``actor``, ... ``detail`` as JSON text)."""
        for row in rows:
            conn.execute(T_AUDIT.insert().values(**row))

    def audit_rows(
        self, conn: Connection, name: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[Any]:
        """The newest ``limit`` audit rows, of ``name`` and ``action`` if given."""
        q = sa.select(T_AUDIT).order_by(T_AUDIT.c.id.desc()).limit(limit)
        if name is not None:
            q = q.where(T_AUDIT.c.name == name)
        if action is not None:
            q = q.where(T_AUDIT.c.action == action)
        return list(conn.execute(q).all())

    def audited_actions(
        self, conn: Connection, names: list[str], actions: tuple[str, ...]
    ) -> list[tuple[str, int, str]]:
        """``(name, version, action)`` of the audit entries of ``names`` with one of
        ``actions`` (entries without a version left out)."""
        out: list[tuple[str, int, str]] = []
        for i in range(0, len(names), 500):
            for r in conn.execute(
                sa.select(T_AUDIT.c.name, T_AUDIT.c.version, T_AUDIT.c.action).where(
                    T_AUDIT.c.name.in_(names[i : i + 500]), T_AUDIT.c.action.in_(actions)
                )
            ):
                if r.version is not None:
                    out.append((r.name, int(r.version), r.action))
        return out

    def was_audited(self, conn: Connection, name: str, version: int, action: str) -> bool:
        return (
            conn.execute(
                sa.select(sa.literal(1))
                .where(
                    T_AUDIT.c.name == name,
                    T_AUDIT.c.version == version,
                    T_AUDIT.c.action == action,
                )
                .limit(1)
            ).first()
            is not None
        )

    # -- verify reports -------------------------------------------------------------------
    def record_verify(
        self, conn: Connection, mid: int, version: int, *, at: float, ok: bool, report: str
    ) -> None:
        """Remember the last verify report (JSON text) of a version."""
        self._upsert(
            conn,
            T_VERIFY,
            {"model_id": mid, "version": version},
            {"at": at, "ok": ok, "report": report},
        )

    def verify_row(self, conn: Connection, mid: int, version: int) -> Any:
        """The last verify row (``at``, ``ok``, ``report``) of a version, or None."""
        return conn.execute(
            sa.select(T_VERIFY).where(T_VERIFY.c.model_id == mid, T_VERIFY.c.version == version)
        ).first()
