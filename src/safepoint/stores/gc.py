"""Garbage collection: retention, then what no version, record, checkpoint or writer needs.

:func:`collect` (``Store.gc``) runs in this order:

1. **Identity.** The blobs' ``store.json`` and the catalog must name the same store, read
   again now: a gc against a catalog that is missing, empty, damaged or another store's
   would see every blob as unreferenced. It is refused (``RecoveryNeededError``).
2. **Retention** (``keep_last``, ``keep_best``): versions deleted through
   ``Store.delete`` (audited, journaled).
3. **Version records.** A record is *live* while its version row exists. A record whose
   version the catalog does not know at all (a number above the model's counter, or an
   unknown model) means the catalog is behind the blobs (restored from an old backup):
   gc stops and says to run ``recover``. A record without a row is *dead*, and removed,
   when the audit log shows that its version was deleted or never committed (a put that
   died between writing its record and its commit), its blob is not leased by a writer
   and it is older than ``grace``.
4. **Blobs.** A blob older than ``grace`` goes if no version row, checkpoint, live lease
   or remaining version record names it (:meth:`Catalog.claim_for_delete` marks it in a
   transaction that checks all of these and the store id once more).
5. Abandoned temporary objects, leftover ``.part`` files, dead leases.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import NotFoundError, RecoveryNeededError
from . import intents
from .arguments import count_arg, keep_best_arg, seconds_arg
from .owners import owner_dead
from .records import RecordRef, list_records, read_marker

if TYPE_CHECKING:
    from .store import Store

__all__ = ["PART_AGE", "GcReport", "collect"]

#: seconds after which a ``.part`` file of an interrupted small-object write is removed
PART_AGE = 600.0


@dataclass
class GcReport:
    """What :meth:`Store.gc` removed (or would remove with ``dry_run``)."""

    dry_run: bool
    deleted_versions: list[str] = field(default_factory=list)
    deleted_blobs: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    deleted_temps: int = 0
    kept_blobs: int = 0
    #: version records removed (of deleted versions, or of puts that never committed)
    deleted_records: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(
    store: Store,
    keep_last: int | None = None,
    keep_best: Any = None,
    keep_aliases: bool = True,
    dry_run: bool = False,
    grace: float | None = None,
) -> GcReport:
    """See :meth:`Store.gc` and the module docstring."""
    grace = store.grace if grace is None else seconds_arg(grace, "grace")
    if keep_last is not None:
        keep_last = count_arg(keep_last, "keep_last")
    best = keep_best_arg(keep_best)
    report = GcReport(dry_run=bool(dry_run))
    store.require_writable()
    _check_marker(store)
    if store.records_enabled and not dry_run:
        intents.heal(store)  # crashed writers' records and journal entries first
    if keep_last is not None or best is not None:
        for name in store.models(kind=None):
            for v in _retention(store, name, keep_last, best, keep_aliases):
                report.deleted_versions.append(f"{name}@{v}")
                if not dry_run:
                    with contextlib.suppress(NotFoundError):
                        store.delete(name, v, force=not keep_aliases)
    now = time.time()
    protected = _sweep_records(store, grace, now, dry_run, report) if store.records_enabled else {}
    for b in list(store.blobs.list_blobs()):
        if b.mtime > now - grace or b.key in protected:
            report.kept_blobs += 1
            continue
        if dry_run:
            with store.catalog.tx() as conn:
                used = store.catalog.referenced(conn, b.key)
            if used:
                report.kept_blobs += 1
            else:
                report.deleted_blobs.append(b.key)
                report.freed_bytes += b.size
            continue
        if not store.catalog.claim_for_delete(
            b.key, b.size, grace, store.lease_ttl, keep=_vetoes(store, b.key)
        ):
            report.kept_blobs += 1
            continue
        store.blobs.delete(b.key)
        store.catalog.forget_blob(b.key)
        report.deleted_blobs.append(b.key)
        report.freed_bytes += b.size
    temps = list(store.blobs.list_temps())
    if temps:
        # listed first, then the leases: a temporary object's lease predates its file
        live = {
            t
            for t, h, p, o in store.catalog.temp_leases(store.lease_ttl)
            if not owner_dead(o, h, p)
        }
        for t in temps:
            if t.mtime <= now - grace and t.key not in live:
                report.deleted_temps += 1
                report.freed_bytes += t.size
                if not dry_run:
                    store.blobs.delete_temp(t.key)
    if not dry_run:
        # a record or journal write takes milliseconds and holds no lease: its .part file
        # goes only once it is clearly abandoned, whatever the grace
        _remove_parts(store, now - max(grace, PART_AGE))
        _gc_catalog(store, grace)
        with store.catalog.tx(write=True) as conn:
            store.catalog.audit(
                conn,
                actor=store.actor,
                host=store.host,
                action="gc",
                name="*",
                versions=len(report.deleted_versions),
                blobs=len(report.deleted_blobs),
                records=len(report.deleted_records),
                freed=report.freed_bytes,
            )
    return report


def _check_marker(store: Store) -> None:
    """The blobs still name the store this catalog belongs to (read now, not at open)."""
    if not store.records_enabled or store.store_id is None:
        return
    marker = read_marker(store.blobs)
    if marker is None or marker.store_id != store.store_id:
        raise RecoveryNeededError(
            f"refusing to gc store {store.url!r}: its blobs name store "
            f"{marker.store_id if marker else 'none (store.json is missing)'}, its catalog "
            f"{store.store_id}. Nothing was deleted; check the URLs, or run "
            "`safepoint recover` (Store.recover())"
        )


def _vetoes(store: Store, digest: str) -> Any:
    def keep(conn: sa.Connection) -> bool:
        store.check_identity(conn)  # raises if the catalog changed under us
        return False

    return keep


def _retention(
    store: Store,
    name: str,
    keep_last: int | None,
    best: tuple[str, str, int] | None,
    keep_aliases: bool,
) -> list[int]:
    vs = store.versions(name)
    keep: set[int] = set()
    if keep_last is not None:
        keep |= {v.version for v in vs[len(vs) - int(keep_last) :]} if keep_last else set()
    if best is not None:
        metric, mode, k = best
        scored = [v for v in vs if metric in v.metrics and not math.isnan(v.metrics[metric])]
        scored.sort(key=lambda v: v.metrics[metric], reverse=(mode == "max"))
        keep |= {v.version for v in scored[:k]}
    if keep_aliases:
        keep |= {v.version for v in vs if v.aliases}
    return [v.version for v in vs if v.version not in keep]


def record_states(
    store: Store, refs: list[RecordRef]
) -> tuple[list[RecordRef], list[RecordRef], list[RecordRef], list[RecordRef]]:
    """Sort records into (live, ahead of the catalog, dead, unexplained).

    *live*: its version row exists. *ahead*: the catalog never handed out its number.
    *dead*: no row, and the audit log shows the version deleted or never committed.
    *unexplained*: no row, but the audit log says it was committed and never deleted
    (the catalog lost a row).
    """
    with store.catalog.tx() as conn:
        models = {
            name: (m["id"], m["last"]) for name, m in store.catalog.model_counters(conn).items()
        }
        rows = {(r.name, int(r.version)) for r in store.catalog.version_list(conn)}
        live, ahead, orphans = [], [], []
        for ref in refs:
            if (ref.name, ref.version) in rows:
                live.append(ref)
            elif ref.name not in models or ref.version > models[ref.name][1]:
                ahead.append(ref)
            else:
                orphans.append(ref)
        dead: list[RecordRef] = []
        unexplained: list[RecordRef] = []
        if orphans:
            actions: dict[tuple[str, int], set[str]] = defaultdict(set)
            names = sorted({r.name for r in orphans})
            for name, version, action in store.catalog.audited_actions(
                conn, names, ("put", "copy", "delete")
            ):
                actions[(name, version)].add(action)
            for ref in orphans:
                seen = actions.get((ref.name, ref.version), set())
                committed = bool(seen & {"put", "copy"})
                (dead if "delete" in seen or not committed else unexplained).append(ref)
    return live, ahead, dead, unexplained


def _sweep_records(
    store: Store, grace: float, now: float, dry_run: bool, report: GcReport
) -> dict[str, str]:
    """Remove dead version records; the digests that the remaining ones protect."""
    refs = list(list_records(store.blobs))
    live, ahead, dead, unexplained = record_states(store, refs)
    if ahead:
        shown = ", ".join(f"{r.name}@{r.version}" for r in ahead[:5])
        raise RecoveryNeededError(
            f"refusing to gc store {store.url!r}: {len(ahead)} version record(s) ({shown}) are "
            "newer than its catalog, which looks restored from an older copy. Nothing was "
            "deleted; run `safepoint recover` (Store.recover()) to add them back"
        )
    protected = {r.digest: r.key for r in live + unexplained}
    for ref in dead:
        if ref.mtime > now - grace or not _remove_dead_record(store, ref, dry_run):
            protected[ref.digest] = ref.key
            continue
        report.deleted_records.append(f"{ref.name}@{ref.version}")
    return protected


def _remove_dead_record(store: Store, ref: RecordRef, dry_run: bool) -> bool:
    """Remove a record found dead, if it still is: under the model row's lock (which a
    put's commit takes), its version has no row and its blob no live lease (which a put
    holds from before it reserves the number until its commit). False: keep it."""
    with store.catalog.tx(write=not dry_run) as conn:
        try:
            mid = store.catalog.model_id(conn, ref.name, lock=not dry_run)
        except NotFoundError:
            return False
        has = store.catalog.has_version(conn, mid, ref.version)
        if has or store.catalog.leased(conn, ref.digest, store.lease_ttl):
            return False
        if not dry_run:
            store.blobs.delete_object(ref.key)
    return True


def _remove_parts(store: Store, cutoff: float) -> None:
    """``.part`` files of small-object writes that a crash interrupted."""
    for prefix in ("records", "journal"):
        for part in list(store.blobs.list_parts(prefix)):
            if part.mtime < cutoff:
                store.blobs.delete_object(part.key)


def _gc_catalog(store: Store, grace: float) -> None:
    """Drop stale leases and blob rows whose blob is gone and unreferenced."""
    cutoff = time.time() - grace
    with store.catalog.tx(write=True) as conn:
        store.catalog.drop_expired_leases(conn, store.lease_ttl)
        store.catalog.drop_dead_leases(conn)
    with store.catalog.tx() as conn:
        rows = store.catalog.blob_rows_before(conn, cutoff)
    for d in rows:
        if not store.blobs.exists(d) and store.catalog.claim_for_delete(
            d, 0, grace, store.lease_ttl
        ):
            store.catalog.forget_blob(d)
