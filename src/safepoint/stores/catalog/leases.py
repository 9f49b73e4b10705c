"""Blob leases and gc marks in the catalog (see :mod:`safepoint.stores.staging`).

A blob is written and *leased* (:meth:`LeaseQueries.lease`) before it is promoted, and the
version row is inserted in one transaction that also drops the lease. ``gc`` marks a
blob ``deleting`` in a transaction that checks for references and live leases first
(:meth:`LeaseQueries.claim_for_delete`), so that a put and a gc can never both believe
they own the same blob.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..owners import owner_dead, this_owner
from .engine import CatalogEngine
from .schema import STALE_DELETE, T_BLOBS, T_CKPT, T_LEASES, T_VERSIONS, TEMP_PREFIX

__all__ = ["Lease", "LeaseQueries"]


class Lease(NamedTuple):
    """One lease row: a blob (or ``tmp:<id>``) that a writer holds."""

    id: str
    digest: str
    host: str
    pid: int
    owner: str


class LeaseQueries(CatalogEngine):
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

    def leases(self, conn: Connection) -> list[Lease]:
        """Every lease row (the holder of each, for liveness checks)."""
        rows = conn.execute(
            sa.select(
                T_LEASES.c.id, T_LEASES.c.digest, T_LEASES.c.host, T_LEASES.c.pid, T_LEASES.c.owner
            )
        ).all()
        return [Lease(str(i), str(d), h, int(p), o or "") for i, d, h, p, o in rows]

    def drop_expired_leases(self, conn: Connection, lease_ttl: float) -> None:
        """Drop the leases older than ``lease_ttl`` seconds."""
        conn.execute(T_LEASES.delete().where(T_LEASES.c.created_at < time.time() - lease_ttl))

    def drop_dead_leases(self, conn: Connection) -> None:
        """Drop the leases whose holder is seen dead (:mod:`~safepoint.stores.owners`)."""
        for lease in self.leases(conn):
            if owner_dead(lease.owner, lease.host, lease.pid):
                self.drop_lease(conn, lease.id)

    def blob_rows_before(self, conn: Connection, cutoff: float) -> list[str]:
        """Digests of blob rows whose state is older than ``cutoff`` (seconds)."""
        return [
            str(d)
            for d in conn.execute(
                sa.select(T_BLOBS.c.digest).where(T_BLOBS.c.state_at < cutoff)
            ).scalars()
        ]

    def used_digests(self, conn: Connection) -> set[str]:
        """Digests that a version or a checkpoint names."""
        return {str(d) for (d,) in conn.execute(sa.select(T_VERSIONS.c.digest).distinct())} | {
            str(d) for (d,) in conn.execute(sa.select(T_CKPT.c.digest).distinct()) if d
        }
