"""Intents: what a change is about to write beside the blobs, so that a crash can be undone.

A change writes to two places that cannot commit together: the catalog and the blob
storage (version records, journal entries). Before it writes an object that only its
commit makes true, it records an *intent* in the catalog (table ``sp_intents``, with its
holder, as leases are); the intent is removed in the same transaction as the commit.
An intent whose holder died therefore marks exactly the objects of a change that did
not commit, or the objects a committed change did not get to write:

``record``
    a version record written before its commit; left over, the put never committed: the
    record is removed (``recover`` would otherwise restore a version no one was given).
``journal``
    alias moves and edits of a model are journaled before their commit; left over, the
    entries above the model's journal counter never committed: they are removed.
``journal-after``
    deletions are journaled after their commit (a crash must never lose a version); the
    intent carries the entry, and is written into the catalog with the deletion; left
    over, the entry is written now.

:func:`heal` does this for every intent whose holder is gone (a process of this machine
that no longer runs, or an intent older than the store's ``lease_ttl``). It runs when a
writable store opens, before gc, and from ``check --repair``. Until it runs, ``recover``
may restore a put or an alias move that was in flight at a crash, or miss a deletion
(it never loses a committed version).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import NotFoundError
from .catalog import Catalog
from .owners import owner_dead, this_owner
from .records import JournalEntry, parse_record_key

if TYPE_CHECKING:
    from .store import Store

__all__ = ["add", "begin", "drop", "heal", "release", "stale"]


def add(
    catalog: Catalog,
    conn: sa.Connection,
    kind: str,
    model: str,
    key: str = "",
    payload: bytes | None = None,
) -> str:
    """Record an intent inside transaction ``conn``; its id."""
    iid = uuid.uuid4().hex
    catalog.add_intent(
        conn,
        id=iid,
        kind=kind,
        model=model,
        key=key,
        payload=payload.decode() if payload is not None else "",
        owner=this_owner(),
        created_at=time.time(),
    )
    return iid


def begin(catalog: Catalog, kind: str, model: str) -> str:
    """Record an intent in a transaction of its own (committed before the change starts)."""
    with catalog.tx(write=True, durable=False) as conn:
        return add(catalog, conn, kind, model)


def drop(catalog: Catalog, conn: sa.Connection, *ids: str) -> None:
    if ids:
        catalog.drop_intents(conn, *ids)


def release(catalog: Catalog, *ids: str) -> None:
    """Drop intents in a transaction of their own (best effort: heal drops what is left)."""
    if not ids:
        return
    from ..errors import SafepointError

    try:
        with catalog.tx(write=True, durable=False) as conn:
            drop(catalog, conn, *ids)
    except SafepointError:
        pass


def stale(store: Store) -> list[Any]:
    """The intents whose holder is gone."""
    with store.catalog.tx(single=True) as conn:
        rows = store.catalog.intents(conn)
    cutoff = time.time() - store.lease_ttl
    return [r for r in rows if r.created_at < cutoff or owner_dead(r.owner or "")]


def heal(store: Store) -> list[str]:
    """Undo or finish the changes of crashed writers (see the module docstring); returns
    what was done, e.g. ``"removed the record of p/m@7 (its put never committed)"``."""
    done: list[str] = []
    for row in stale(store):
        if row.kind == "record":
            done += _heal_record(store, row)
        elif row.kind == "journal":
            done += _heal_journal(store, row)
        elif row.kind == "journal-after":
            entry = JournalEntry.from_bytes(row.payload.encode(), row.key)
            store.blobs.write_object(entry.key, entry.to_bytes())
            done.append(f"journaled the deletion of {entry.name}@{entry.version}")
            with store.catalog.tx(write=True, durable=False) as conn:
                drop(store.catalog, conn, row.id)
        else:  # written by a newer safepoint: leave it to that version
            continue
    return done


def _model_lock(store: Store, conn: sa.Connection, name: str) -> int | None:
    try:
        return store.catalog.model_id(conn, name, lock=True)
    except NotFoundError:
        return None


def _heal_record(store: Store, row: Any) -> list[str]:
    parsed = parse_record_key(row.key)
    out: list[str] = []
    with store.catalog.tx(write=True) as conn:
        if parsed is not None:
            name, version, _ = parsed
            mid = _model_lock(store, conn, name)
            committed = mid is not None and store.catalog.has_version(conn, mid, version)
            if not committed:
                store.blobs.delete_object(row.key)
                out.append(f"removed the record of {name}@{version} (its put never committed)")
        drop(store.catalog, conn, row.id)
    return out


def _heal_journal(store: Store, row: Any) -> list[str]:
    out: list[str] = []
    with store.catalog.tx(write=True) as conn:
        mid = _model_lock(store, conn, row.model)
        if mid is not None:
            seq = store.catalog.journal_seq(conn, mid)
            for name, s, info in list(list_entries_of(store, row.model)):
                if name == row.model and s > int(seq or 0):
                    store.blobs.delete_object(info.key)
                    out.append(f"removed journal entry {s} of {name} (its change never committed)")
        drop(store.catalog, conn, row.id)
    return out


def list_entries_of(store: Store, name: str) -> Any:
    """The journal entries of model ``name`` only (listing its folder, not the journal)."""
    from .blobs import BlobInfo
    from .records import JOURNAL, parse_entry_key

    for info in store.blobs.list_objects(f"{JOURNAL}/{name}"):
        parsed = parse_entry_key(info.key)
        if parsed is not None and parsed[0] == name:
            yield parsed[0], parsed[1], BlobInfo(info.key, info.size, info.mtime)
