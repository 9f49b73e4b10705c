"""Rebuild a catalog from what the blob storage keeps: version records and the journal.

:func:`recover` (``Store.recover()``, ``safepoint recover``) reads every version record
and journal entry beside the blobs (see :mod:`~safepoint.stores.records`), replays each
model's journal (alias moves, edits, deletions, in order) and writes the result into the
store's catalog in one transaction:

* a **lost, emptied or new** catalog (SQLite or PostgreSQL) is filled with every model,
  version, alias, edit and deletion, and the audit log of puts, alias moves, edits and
  deletions, each with its original time and author;
* a **damaged SQLite file** is moved aside (``catalog.db.damaged-<time>``, never
  deleted) and a new one is built; damaged PostgreSQL tables are dropped and rebuilt
  only with ``force=True``;
* a catalog that is the store's own but **behind** the blobs (restored from an older
  copy) gets what it lacks: versions newer than its counters, and the journal's changes
  after its own;
* another store's catalog is refused unless ``force=True`` (its contents are replaced).

What the blob storage does not keep cannot be restored, and the report says so:
checkpointer values and keys, the runs table, verify results, and audit entries other
than puts, alias moves, edits and deletions. A version whose blob is missing, or whose
record is damaged, is listed and skipped (its number is never handed out again).

A put killed after writing its record and before its commit cannot be told from a
committed version: ``recover`` restores it (its blob is complete and verified at put).

:func:`write_missing_records` and :func:`sync_journal` go the other way (catalog to
blobs): they run when a store from before version records is opened for the first time,
and from ``safepoint check --repair``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import (
    CatalogDamagedError,
    IntegrityError,
    RecoveryNeededError,
    StoreError,
)
from .catalog import (
    Catalog,
    drop_tables,
    dumps_json,
    forget_catalog,
    loads_json,
    open_catalog,
)
from .identity import catalog_store_id
from .records import (
    MARKER,
    JournalEntry,
    StoreMarker,
    VersionRecord,
    list_entries,
    list_records,
    read_entry,
    read_marker,
    read_record,
)

if TYPE_CHECKING:
    from .store import Store

__all__ = ["RecoverReport", "recover", "scan", "sync_journal", "write_missing_records"]

#: what the blob storage does not keep (said in every report of a rebuilt catalog)
NOT_KEPT = (
    "checkpointer values and keys, the runs table, verify results and audit entries other "
    "than puts, alias moves, edits and deletions are kept only in the catalog: they were "
    "not restored"
)


@dataclass
class ModelState:
    """One model as the blob storage describes it (after replaying its journal)."""

    name: str
    kind: str = "model"
    records: dict[int, VersionRecord] = field(default_factory=dict)
    deleted: dict[int, JournalEntry] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    edits: dict[int, JournalEntry] = field(default_factory=dict)
    entries: list[JournalEntry] = field(default_factory=list)
    last_version: int = 0
    journal_seq: int = 0

    @property
    def live(self) -> dict[int, VersionRecord]:
        """Records of versions that were not deleted."""
        return {v: r for v, r in self.records.items() if v not in self.deleted}


@dataclass
class Scan:
    """Everything read from the blob storage."""

    marker: StoreMarker | None
    marker_problem: str | None
    models: dict[str, ModelState]
    blobs: dict[str, int]  # digest -> size
    problems: list[str] = field(default_factory=list)


def scan(store: Store) -> Scan:
    """Read the marker, every record and journal entry, and list the blobs."""
    blobs = store.blobs
    problems: list[str] = []
    marker_problem = None
    try:
        marker = read_marker(blobs)
    except IntegrityError as exc:
        marker, marker_problem = None, str(exc)
    models: dict[str, ModelState] = {}
    for ref in list_records(blobs):
        state = models.setdefault(ref.name, ModelState(ref.name))
        state.last_version = max(state.last_version, ref.version)
        try:
            rec = read_record(blobs, ref.key)
        except IntegrityError as exc:
            problems.append(f"{ref.name}@{ref.version}: its record is damaged ({exc})")
            continue
        if rec is None:
            continue  # removed since listed (a gc)
        if (rec.name, rec.version, rec.digest) != (ref.name, ref.version, ref.digest):
            problems.append(f"{ref.key}: its content names another version; skipped")
            continue
        state.records[rec.version] = rec
    for name, _seq, info in list_entries(blobs):
        state = models.setdefault(name, ModelState(name))
        try:
            entry = read_entry(blobs, info.key)
        except IntegrityError as exc:
            problems.append(f"{info.key}: a damaged journal entry ({exc}); skipped")
            continue
        if entry is not None and entry.name == name:
            state.entries.append(entry)
    for state in models.values():
        _replay(state, problems)
    return Scan(
        marker,
        marker_problem,
        models,
        {b.key: b.size for b in blobs.list_blobs()},
        problems,
    )


def _replay(state: ModelState, problems: list[str]) -> None:
    state.entries.sort(key=lambda e: e.seq)
    for e in state.entries:
        state.journal_seq = max(state.journal_seq, e.seq)
        if e.version is not None:
            state.last_version = max(state.last_version, e.version)
        if e.op == "alias" and e.alias:
            if e.version is None:
                state.aliases.pop(e.alias, None)
            else:
                state.aliases[e.alias] = e.version
        elif e.op == "edit" and e.version is not None:
            state.edits[e.version] = e
        elif e.op == "delete" and e.version is not None:
            state.deleted[e.version] = e
    if state.records:
        newest = state.records[max(state.records)]
        state.kind = newest.kind or "model"


@dataclass
class RecoverReport:
    """What :func:`recover` restored, and what it could not."""

    store_id: str
    dry_run: bool = False
    models: int = 0
    versions_restored: list[str] = field(default_factory=list)
    versions_present: int = 0
    aliases_restored: list[str] = field(default_factory=list)
    deletions_applied: list[str] = field(default_factory=list)
    edits_applied: list[str] = field(default_factory=list)
    not_restored: list[str] = field(default_factory=list)
    unreferenced_blobs: int = 0
    moved_aside: str | None = None
    rebuilt: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{len(self.versions_restored)} version(s) of {self.models} model(s) restored",
            f"{len(self.aliases_restored)} alias(es)",
            f"{len(self.deletions_applied)} deletion(s)",
            f"{len(self.edits_applied)} edit(s)",
        ]
        if self.versions_present:
            parts.append(f"{self.versions_present} already in the catalog")
        return ", ".join(parts)


def recover(store: Store, *, force: bool = False, dry_run: bool = False) -> RecoverReport:
    """Rebuild ``store``'s catalog from its blobs (see the module docstring)."""
    if not store.records_enabled:
        raise StoreError(
            f"the blob backend of {store.url!r} keeps no version records: its catalog cannot "
            "be rebuilt from the blobs"
        )
    found = scan(store)
    sid = _target_id(store, found)
    report = RecoverReport(store_id=sid, dry_run=dry_run)
    if dry_run:
        catalog = store._catalog
        if catalog is None:
            report.rebuilt = True
            _plan(store, found, report, existing=None)
            return report
    else:
        catalog = _usable_catalog(store, sid, force, report)
    existing = _catalog_view(catalog) if catalog is not None else None
    if existing is not None and not existing["versions"] and not existing["models"]:
        report.rebuilt = True
    if dry_run:
        _plan(store, found, report, existing)
        return report
    assert catalog is not None
    with catalog.tx(write=True) as conn:
        catalog.set_store_id(conn, sid)
        _apply(store, catalog, conn, found, report, existing or _empty_view())
        catalog.audit(
            conn,
            actor=store.actor,
            host=store.host,
            action="recover",
            name="*",
            summary=report.summary(),
            not_restored=len(report.not_restored),
        )
    if found.marker is None or found.marker.store_id != sid:
        store.blobs.write_object(MARKER, StoreMarker(sid, time.time()).to_bytes())
    store._catalog, store._catalog_error = catalog, None
    store.store_id, store.problem = sid, None
    store._catalog_file = catalog.file_id()
    return report


def _target_id(store: Store, found: Scan) -> str:
    """The store id to rebuild under: the marker's, else the one the records name."""
    if found.marker is not None:
        return found.marker.store_id
    ids = {r.store_id for m in found.models.values() for r in m.records.values() if r.store_id}
    if len(ids) > 1:
        raise RecoveryNeededError(
            f"the version records at {store.blobs.url} name {len(ids)} different stores "
            f"({', '.join(sorted(ids))}) and store.json is missing: which store these blobs "
            "belong to is unclear; nothing was changed"
        )
    if ids:
        return ids.pop()
    if store._catalog is not None:
        cid = catalog_store_id(store._catalog)
        if cid:
            return cid
    import uuid

    return uuid.uuid4().hex


def _usable_catalog(store: Store, sid: str, force: bool, report: RecoverReport) -> Any:
    """The catalog to write into: the store's, or a fresh one where it was damaged."""
    cat = store._catalog
    if cat is None:
        err = store._catalog_error
        path = getattr(err, "path", None) or _sqlite_path(store)
        if path is None:
            if not force:
                raise CatalogDamagedError(
                    f"the catalog of {store.url!r} is damaged ({err}); recover(force=True) "
                    "drops its safepoint tables and rebuilds them from the blobs"
                )
            return _rebuild_server_catalog(store)
        report.moved_aside = _move_aside(path)
        return open_catalog("sqlite:///" + path)
    try:
        cid = catalog_store_id(cat)
    except CatalogDamagedError:
        if cat.path is not None:
            forget_catalog(cat)
            report.moved_aside = _move_aside(cat.path)
            return open_catalog("sqlite:///" + cat.path)
        if not force:
            raise
        return _rebuild_server_catalog(store)
    if cid is not None and cid != sid:
        if not force:
            raise RecoveryNeededError(
                f"the catalog {cat.url} belongs to another store (id {cid}), not to the blobs "
                f"at {store.blobs.url} (id {sid}): nothing was changed. Point --metadata at "
                "this store's catalog, or pass force=True (--force) to replace that catalog's "
                "contents with this store's"
            )
        _wipe(cat)
    return cat


def _sqlite_path(store: Store) -> str | None:
    url = store.metadata_url
    if url is None and store.blobs.is_local:
        return os.path.join(store.blobs.url, "catalog.db")
    if url is not None and url.startswith("sqlite:///"):
        return os.path.abspath(url[len("sqlite:///") :].split("?", 1)[0])
    return None


def _move_aside(path: str) -> str | None:
    """Rename a damaged SQLite file (and its -wal/-shm) out of the way; never delete it."""
    if not os.path.exists(path):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = f"{path}.damaged-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.damaged-{stamp}-{n}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target


def _rebuild_server_catalog(store: Store) -> Any:
    """Drop the safepoint tables of a damaged server catalog and create them again."""
    url = store.metadata_url
    if url is None:
        raise StoreError(f"no catalog URL to rebuild for {store.url!r}")
    drop_tables(url)
    return open_catalog(url)


def _wipe(cat: Catalog) -> None:
    """Empty every safepoint table of ``cat`` (recover(force=True) on another store's)."""
    cat.wipe()


def _empty_view() -> dict[str, Any]:
    return {"models": {}, "versions": {}, "aliases": {}}


def _catalog_view(cat: Catalog) -> dict[str, Any]:
    """What the catalog holds: models (id, last_version, journal_seq), versions, aliases."""
    with cat.tx() as conn:
        models = cat.model_counters(conn)
        ids = {m["id"]: n for n, m in models.items()}
        versions = {
            (ids[int(r.model_id)], int(r.version)): r.digest for r in cat.version_list(conn)
        }
        aliases: dict[str, dict[str, int]] = defaultdict(dict)
        for mid, alias, version in cat.all_aliases(conn):
            aliases[ids[mid]][alias] = version
    return {"models": models, "versions": versions, "aliases": dict(aliases)}


def _decide(
    state: ModelState, view: dict[str, Any], found: Scan, report: RecoverReport
) -> tuple[list[VersionRecord], list[int], bool, int]:
    """For one model: records to insert, versions to delete, whether to take the
    journal's aliases, and the catalog's journal counter before."""
    have = view["models"].get(state.name)
    seq_before = have["seq"] if have else 0
    last_before = have["last"] if have else 0
    inserts, deletes = [], []
    for v, rec in sorted(state.records.items()):
        key = (state.name, v)
        if v in state.deleted:
            if key in view["versions"]:
                deletes.append(v)
            continue
        if key in view["versions"]:
            report.versions_present += 1
            if view["versions"][key] != rec.digest:
                report.not_restored.append(
                    f"{state.name}@{v}: the catalog has digest {view['versions'][key]}, the "
                    f"record {rec.digest}; the catalog's was kept"
                )
            continue
        if have is not None and v <= last_before:
            # the catalog handed this number out and has no row: deleted (its journal
            # entry lost) or a put that died before its commit
            continue
        if rec.digest not in found.blobs:
            report.not_restored.append(
                f"{state.name}@{v}: its blob {rec.digest} is missing from the storage"
            )
            continue
        inserts.append(rec)
    take_aliases = state.journal_seq > seq_before
    return inserts, deletes, take_aliases, seq_before


def _plan(
    store: Store, found: Scan, report: RecoverReport, existing: dict[str, Any] | None
) -> None:
    view = existing or _empty_view()
    for state in found.models.values():
        inserts, deletes, take_aliases, _ = _decide(state, view, found, report)
        if inserts or deletes or take_aliases:
            report.models += 1
        report.versions_restored += [f"{state.name}@{r.version}" for r in inserts]
        report.deletions_applied += [f"{state.name}@{v}" for v in deletes]
        if take_aliases:
            report.aliases_restored += [f"{state.name}@{a}" for a in state.aliases]
    _finish_report(found, report)


def _finish_report(found: Scan, report: RecoverReport) -> None:
    report.not_restored = found.problems + report.not_restored
    if found.marker_problem:
        report.not_restored.append(f"{MARKER} was damaged ({found.marker_problem}); rewritten")
    referenced = {r.digest for m in found.models.values() for r in m.records.values()}
    report.unreferenced_blobs = len(set(found.blobs) - referenced)
    if report.rebuilt:
        report.not_restored.append(NOT_KEPT)
        if report.unreferenced_blobs:
            report.not_restored.append(
                f"{report.unreferenced_blobs} blob(s) belong to no version record (checkpointer "
                "values, or uploads that never committed): kept, and removed by the next gc "
                "after its grace period"
            )


def _apply(
    store: Store,
    catalog: Catalog,
    conn: sa.Connection,
    found: Scan,
    report: RecoverReport,
    view: dict[str, Any],
) -> None:
    audit: list[dict[str, Any]] = []
    for state in sorted(found.models.values(), key=lambda s: s.name):
        inserts, deletes, take_aliases, seq_before = _decide(state, view, found, report)
        if not (inserts or deletes or take_aliases):
            continue
        report.models += 1
        mid = _model_row(catalog, conn, state, view)
        restored = {v for (n, v) in view["versions"] if n == state.name}
        for v, rec in sorted(state.records.items()):
            if v in state.deleted and (state.name, v) not in view["versions"]:
                # history: the put of a version deleted since (its record remains)
                _audit(
                    audit,
                    rec.created_at,
                    rec.created_by,
                    rec.host,
                    "put",
                    state.name,
                    v,
                    digest=rec.digest,
                    size=rec.size,
                    recovered=True,
                )
        for rec in inserts:
            row = _row_of(rec)
            edit = state.edits.get(rec.version)
            if edit is not None:
                row.update(
                    metrics=dumps_json(edit.metrics or {}),
                    tags=dumps_json(edit.tags or {}),
                    description=edit.description or "",
                )
                report.edits_applied.append(f"{state.name}@{rec.version}")
            catalog.insert_version(conn, mid, row)
            _audit(
                audit,
                rec.created_at,
                rec.created_by,
                rec.host,
                "put",
                state.name,
                rec.version,
                digest=rec.digest,
                size=rec.size,
                recovered=True,
            )
            report.versions_restored.append(f"{state.name}@{rec.version}")
            restored.add(rec.version)
        for v in deletes:
            catalog.delete_version(conn, mid, v)
            restored.discard(v)
            report.deletions_applied.append(f"{state.name}@{v}")
        for e in state.entries:
            if e.seq <= seq_before:
                continue
            if e.op == "delete":
                _audit(
                    audit, e.at, e.actor, e.host, "delete", state.name, e.version, recovered=True
                )
            elif e.op == "alias":
                _audit(
                    audit,
                    e.at,
                    e.actor,
                    e.host,
                    "alias" if e.version is not None else "unalias",
                    state.name,
                    e.version,
                    alias=e.alias,
                    previous=e.previous,
                    recovered=True,
                )
            elif e.op == "edit":
                _audit(audit, e.at, e.actor, e.host, "edit", state.name, e.version, recovered=True)
                if e.version is not None and (state.name, e.version) in view["versions"]:
                    catalog.update_version(
                        conn,
                        mid,
                        e.version,
                        metrics=e.metrics or {},
                        tags=e.tags or {},
                        description=e.description or "",
                    )
                    report.edits_applied.append(f"{state.name}@{e.version}")
        if take_aliases:
            keep: list[tuple[str, int, float, str]] = []
            for alias, v in sorted(state.aliases.items()):
                if v not in restored:
                    report.not_restored.append(
                        f"{state.name}@{alias}: it pointed at version {v}, which is not restored"
                    )
                    continue
                last = max(
                    (e for e in state.entries if e.op == "alias" and e.alias == alias),
                    key=lambda e: e.seq,
                )
                keep.append((alias, v, last.at, last.actor or "recover"))
                report.aliases_restored.append(f"{state.name}@{alias}")
            catalog.replace_aliases(conn, mid, keep)
    catalog.insert_audit_rows(conn, sorted(audit, key=lambda r: r["at"]))
    _finish_report(found, report)


def _model_row(
    catalog: Catalog, conn: sa.Connection, state: ModelState, view: dict[str, Any]
) -> int:
    have = view["models"].get(state.name)
    first = state.records[min(state.records)] if state.records else None
    if have is None:
        return catalog.insert_model(
            conn,
            state.name,
            created_at=first.created_at if first else time.time(),
            created_by=first.created_by if first else "recover",
            last_version=state.last_version,
            kind=state.kind,
            journal_seq=state.journal_seq,
        )
    catalog.set_model_counters(
        conn,
        have["id"],
        last_version=max(have["last"], state.last_version),
        journal_seq=max(have["seq"], state.journal_seq),
    )
    return int(have["id"])


def _row_of(rec: VersionRecord) -> dict[str, Any]:
    from .store import version_row

    return version_row(rec)


def _audit(
    rows: list[dict[str, Any]],
    at: float,
    actor: str,
    host: str,
    action: str,
    name: str,
    version: int | None,
    **detail: Any,
) -> None:
    """Collect an audit row (inserted in time order once every model is done)."""
    rows.append(
        {
            "at": float(at or time.time()),
            "actor": (actor or "unknown")[:100],
            "host": (host or "")[:255],
            "action": action,
            "name": name,
            "version": version,
            "detail": dumps_json(detail),
        }
    )


# -- catalog to blobs ---------------------------------------------------------------------
def write_missing_records(store: Store) -> int:
    """Write a version record for every version that lacks one, and journal the aliases
    of models whose journal is empty (a store from before version records); the count of
    records written."""
    if not store.records_enabled:
        return 0
    have = {(r.name, r.version) for r in list_records(store.blobs)}
    n = 0
    with store.catalog.tx() as conn:
        rows = store.catalog.all_versions(conn)
    for r in rows:
        if (r.model_name, int(r.version)) in have:
            continue
        rec = VersionRecord(
            name=r.model_name,
            version=int(r.version),
            digest=r.digest,
            size=int(r.size),
            created_at=float(r.created_at),
            created_by=r.created_by,
            host=r.host,
            root_type=r.root_type,
            environment=loads_json(r.environment, {}),
            metadata=loads_json(r.metadata, {}),
            metrics=loads_json(r.metrics, {}),
            tags=loads_json(r.tags, {}),
            parents=loads_json(r.parents, []),
            data_digest=r.data_digest,
            code_digest=r.code_digest,
            run_id=r.run_id,
            description=r.description or "",
            kind=r.kind or "model",
            store_id=store.store_id or "",
        )
        store.blobs.write_object(rec.key, rec.to_bytes())
        n += 1
    sync_journal(store)
    return n


def sync_journal(store: Store, apply: bool = True, found: Scan | None = None) -> list[str]:
    """Journal what the catalog holds and the journal does not say: aliases whose
    replayed value differs, edits, deletions of versions whose record remains. Returns
    what was (``apply``) or would be journaled: ``alias name@alias``, ``edit name@N``,
    ``delete name@N``."""
    if not store.records_enabled:
        return []
    found = found or scan(store)
    done: list[str] = []
    view = _catalog_view(store.catalog)
    with store.catalog.tx() as conn:
        rows = {(r.model_name, int(r.version)): r for r in store.catalog.all_versions(conn)}
    for name, info in view["models"].items():
        state = found.models.get(name, ModelState(name))
        want_aliases = view["aliases"].get(name, {})
        stale_aliases = {a: v for a, v in want_aliases.items() if state.aliases.get(a) != v} | {
            a: None for a in state.aliases if a not in want_aliases
        }
        edits = []
        for (n, v), row in rows.items():
            if n != name:
                continue
            rec = state.records.get(v)
            if rec is None:
                continue
            m, t, d = loads_json(row.metrics, {}), loads_json(row.tags, {}), row.description or ""
            e = state.edits.get(v)
            cur = (
                (e.metrics, e.tags, e.description or "")
                if e
                else (rec.metrics, rec.tags, rec.description)
            )
            if (m, t, d) != tuple(cur):
                edits.append((v, m, t, d))
        deletions = [
            v
            for v in state.records
            if (name, v) not in view["versions"]
            and v not in state.deleted
            and v <= info["last"]
            and _audited_delete(store, name, v)
        ]
        if not (stale_aliases or edits or deletions):
            continue
        if not apply:
            done += [f"alias {name}@{a}" for a in sorted(stale_aliases)]
            done += [f"edit {name}@{v}" for v, *_ in edits]
            done += [f"delete {name}@{v}" for v in deletions]
            continue
        with store.change(name) as (conn, written, after):
            mid = store.catalog.model_id(conn, name, lock=True)
            for a, v in sorted(stale_aliases.items()):
                store.journal(
                    conn,
                    mid,
                    name,
                    "alias",
                    alias=a,
                    version=v,
                    previous=state.aliases.get(a),
                    out=written,
                )
                done.append(f"alias {name}@{a}")
            for v, m, t, d in edits:
                store.journal(
                    conn,
                    mid,
                    name,
                    "edit",
                    version=v,
                    metrics=m,
                    tags=t,
                    description=d,
                    out=written,
                )
                done.append(f"edit {name}@{v}")
            for v in deletions:
                after.append(store.journal(conn, mid, name, "delete", version=v, write=False))
                done.append(f"delete {name}@{v}")
    return done


def _audited_delete(store: Store, name: str, version: int) -> bool:
    with store.catalog.tx() as conn:
        return store.catalog.was_audited(conn, name, version, "delete")
