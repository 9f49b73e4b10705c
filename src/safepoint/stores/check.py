"""``Store.check()`` / ``safepoint check``: find what is missing, orphaned or damaged.

What is checked:

* the store id: blobs' ``store.json`` and catalog agree (else only ``recover`` helps);
* every blob a version or checkpoint names: present, and (``verify_blobs``, the default)
  intact: its digest and every buffer checksum are recomputed;
* every checkpoint value kept in the catalog row against its checksum;
* every version row against its version record (present, same digest, readable), and
  every record against the catalog (a record the catalog never numbered means the
  catalog is behind; one of a version deleted or never committed is left to gc);
* the journal against the catalog: aliases, edits and deletions it does not describe;
* orphans: blobs nothing names, abandoned temporary objects, leases of dead writers.

Each finding is a :class:`Finding` with a ``kind``, the item, what is wrong and, when a
safe fix exists, what ``repair=True`` does. Safe fixes only write what the catalog
already knows into the blob storage, or remove what no one can use: missing or damaged
version records are written from the catalog, the journal is brought up to date,
abandoned temporary objects and dead leases are removed. Nothing a version needs is ever
removed; a missing or damaged blob is reported with what to do, not "fixed".
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, IntegrityError, NotFoundError, SafepointError
from ..format.reader import problems_against
from .gc import record_states
from .owners import owner_dead
from .records import list_records, read_marker, read_record

if TYPE_CHECKING:
    from .store import Store

__all__ = ["CheckReport", "Finding", "check"]


@dataclass
class Finding:
    """One problem found by :func:`check`."""

    kind: str
    item: str
    problem: str
    #: what ``repair=True`` does about it (None: no safe automatic fix)
    fix: str | None = None
    repaired: bool = False


@dataclass
class CheckReport:
    """The outcome of :func:`check`."""

    ok: bool = True
    repair: bool = False
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: what was not checked, and why
    skipped: list[str] = field(default_factory=list)

    def add(self, kind: str, item: str, problem: str, fix: str | None = None) -> Finding:
        f = Finding(kind, item, problem, fix)
        self.findings.append(f)
        return f

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# kinds that are worth a line but do not make a store unhealthy: gc handles them
_BENIGN = {"orphan-blob", "orphan-record", "abandoned-upload", "dead-lease"}


def check(
    store: Store, *, repair: bool = False, verify_blobs: bool = True, grace: float | None = None
) -> CheckReport:
    """See the module docstring and :meth:`Store.check`."""
    grace = store.grace if grace is None else float(grace)
    report = CheckReport(repair=repair)
    if store.problem is not None:
        report.add("catalog", store.url, store.problem)
    if store._catalog is None:
        report.skipped.append("everything that needs the catalog: it cannot be read")
        report.ok = False
        return report
    if not store.records_enabled:
        report.skipped.append("version records and journal: this blob backend keeps none")
    _check_versions(store, report, verify_blobs)
    _check_checkpoints(store, report, verify_blobs)
    if store.records_enabled and store.problem is None:
        _check_intents(store, report, repair)
        _check_records(store, report, repair)
        _check_journal(store, report, repair)
    _check_orphans(store, report, repair, grace)
    report.ok = all(f.kind in _BENIGN or f.repaired for f in report.findings)
    return report


def _verify_blob(store: Store, digest: str, size: int, verify: bool) -> str | None:
    """What is wrong with blob ``digest`` (None: nothing)."""
    if not verify:
        if not store.blobs.exists(digest):
            return "missing"
        return None
    try:
        path = store.blobs.local_path(digest)
        src: Any = path if path is not None else store.blobs.read(digest)
        problems = problems_against(src, digest)
    except NotFoundError:
        return "missing"
    except (FormatError, IntegrityError) as exc:
        return f"damaged: {exc}"
    except FileNotFoundError:
        return "missing"
    if problems:
        return "damaged: " + "; ".join(problems)
    return None


def _check_versions(store: Store, report: CheckReport, verify: bool) -> None:
    with store.catalog.tx() as conn:
        rows = store.catalog.version_list(conn)
    seen: dict[str, str | None] = {}
    for r in rows:
        if r.digest not in seen:
            seen[r.digest] = _verify_blob(store, r.digest, int(r.size), verify)
        wrong = seen[r.digest]
        if wrong == "missing":
            report.add(
                "missing-blob",
                f"{r.name}@{r.version}",
                f"its blob {r.digest} is missing: restore it from a backup, or delete the version",
            )
        elif wrong:
            report.add(
                "damaged-blob",
                f"{r.name}@{r.version}",
                f"its blob {r.digest} is {wrong}: restore it from a backup, or delete the version",
            )
    report.checked["versions"] = len(rows)
    report.checked["blobs_verified" if verify else "blobs_present"] = len(seen)


def _check_checkpoints(store: Store, report: CheckReport, verify: bool) -> None:
    from .checkpointer import value_checksum

    with store.catalog.tx() as conn:
        rows = store.catalog.all_checkpoints(conn)
    unchecked = 0
    for r in rows:
        item = f"checkpoint {r.name}[{r.key!r}]"
        if r.digest is not None:
            wrong = _verify_blob(store, r.digest, int(r.size), verify)
            if wrong:
                report.add(
                    "missing-blob" if wrong == "missing" else "damaged-blob",
                    item,
                    f"its blob {r.digest} is {wrong}: set the key again",
                )
        elif r.checksum is None:
            unchecked += 1
        elif value_checksum(bytes(r.value or b"")) != r.checksum:
            report.add("damaged-value", item, "its value does not match its checksum: set it again")
    report.checked["checkpoints"] = len(rows)
    if unchecked:
        report.skipped.append(
            f"{unchecked} checkpoint value(s) written before values carried checksums"
        )


def _check_records(store: Store, report: CheckReport, repair: bool) -> None:
    from .recover import write_missing_records

    try:
        marker = read_marker(store.blobs)
    except IntegrityError as exc:
        report.add("marker", "store.json", f"damaged ({exc}): `safepoint recover` rewrites it")
        marker = None
    if marker is None:
        report.add("marker", "store.json", "missing: `safepoint recover` rewrites it")
    refs = list(list_records(store.blobs))
    _, ahead, dead, unexplained = record_states(store, refs)
    by_version = {(r.name, r.version): r for r in refs}
    with store.catalog.tx() as conn:
        rows = store.catalog.version_list(conn)
    missing: list[Finding] = []
    for r in rows:
        ref = by_version.get((r.name, int(r.version)))
        item = f"{r.name}@{r.version}"
        if ref is None:
            missing.append(
                report.add(
                    "missing-record",
                    item,
                    "no version record: a lost catalog could not restore it",
                    "write the record from the catalog",
                )
            )
            continue
        if ref.digest != r.digest:
            report.add(
                "record-mismatch",
                item,
                f"the record names blob {ref.digest}, the catalog {r.digest}",
            )
            continue
        try:
            read_record(store.blobs, ref.key)
        except IntegrityError as exc:
            f = report.add(
                "damaged-record", item, str(exc), "write the record again from the catalog"
            )
            if repair:
                store.blobs.delete_object(ref.key)
                missing.append(f)
    for ref in ahead:
        report.add(
            "record-ahead",
            f"{ref.name}@{ref.version}",
            "the catalog does not know this version (it looks restored from an older copy): "
            "`safepoint recover` adds it",
        )
    for ref in unexplained:
        report.add(
            "missing-row",
            f"{ref.name}@{ref.version}",
            "the catalog recorded this version as put and never deleted, but has no row for "
            "it: the catalog lost it; its record and blob are kept",
        )
    for ref in dead:
        report.add(
            "orphan-record",
            f"{ref.name}@{ref.version}",
            "a record of a version deleted, or of a put that died before its commit: gc removes it",
        )
    report.checked["records"] = len(refs)
    if repair and missing:
        write_missing_records(store)
        for f in missing:
            f.repaired = True


def _check_intents(store: Store, report: CheckReport, repair: bool) -> None:
    from . import intents

    left = intents.stale(store)
    found = [
        report.add(
            "interrupted",
            f"{r.model} ({r.kind})",
            "a writer died between writing beside the blobs and its commit",
            "undo or finish it (as the next writer to open the store would)",
        )
        for r in left
    ]
    if repair and found:
        intents.heal(store)
        for f in found:
            f.repaired = True


def _check_journal(store: Store, report: CheckReport, repair: bool) -> None:
    from .recover import sync_journal

    pending = sync_journal(store, apply=False)
    if not pending:
        return
    done = set(sync_journal(store)) if repair else set()
    for item in pending:
        what, _, ref = item.partition(" ")
        f = report.add(
            "journal",
            ref,
            f"the journal does not record this {what}: a lost catalog would not restore it",
            "journal it from the catalog",
        )
        f.repaired = item in done


def _check_orphans(store: Store, report: CheckReport, repair: bool, grace: float) -> None:
    now = time.time()
    with store.catalog.tx() as conn:
        used = store.catalog.used_digests(conn)
        leases = store.catalog.leases(conn)
    recorded = {r.digest for r in list_records(store.blobs)} if store.records_enabled else set()
    n = 0
    for b in store.blobs.list_blobs():
        n += 1
        if b.key not in used and b.key not in recorded and b.mtime < now - grace:
            report.add("orphan-blob", b.key, f"{b.size} bytes nothing names: gc removes it")
    report.checked["blobs"] = n
    dead = [lz for lz in leases if owner_dead(lz.owner or "", lz.host, int(lz.pid))]
    for lz in dead:
        f = report.add("dead-lease", lz.digest, "held by a process that is gone", "drop it")
        if repair:
            with store.catalog.tx(write=True, durable=False) as conn:
                store.catalog.drop_lease(conn, lz.id)
            f.repaired = True
    live_tmp = {
        t for t, h, p, o in store.catalog.temp_leases(store.lease_ttl) if not owner_dead(o, h, p)
    }
    for t in list(store.blobs.list_temps()):
        if t.key in live_tmp or t.mtime > now - grace:
            continue
        f = report.add(
            "abandoned-upload", t.key, f"{t.size} bytes of an interrupted write", "delete it"
        )
        if repair:
            with contextlib.suppress(SafepointError):
                store.blobs.delete_temp(t.key)
                f.repaired = True
