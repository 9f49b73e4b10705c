"""The store id: blobs and catalog say which store they belong to, and must agree.

A new store draws a random id, records it in its catalog (table ``sp_store``) and in
``store.json`` beside the blobs. Each time a store opens, :func:`establish` compares
the two:

* equal: the catalog is the store's own;
* the blobs hold a store but the catalog is missing, empty, damaged or has another
  id: the store opens for reading, and writes and gc are refused with an error naming
  ``safepoint recover`` (which rebuilds the catalog from the version records);
* a store from before store ids (a catalog with versions, no marker): it is given an
  id, and a version record for each version and a journal entry for each alias are
  written once, so that it can be recovered from then on.

The catalog arbitrates a new id (insert-or-ignore, then read back), so that two
processes creating one store at once agree on it even on object storage, which has no
exclusive create.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import IntegrityError, NotFoundError, ReadOnlyStoreError
from .catalog import Catalog
from .records import MARKER, RECORDS, StoreMarker, read_marker

if TYPE_CHECKING:
    from .blobs import BlobStore

__all__ = ["Identity", "catalog_store_id", "establish"]

RECOVER = "run `safepoint recover` (Store.recover()) to rebuild it from the version records"


@dataclass
class Identity:
    """The outcome of :func:`establish`."""

    #: the store id both sides agree on (None if they do not, or nothing could be written)
    store_id: str | None
    #: why writes and gc are refused (None: they are not)
    problem: str | None = None
    #: a store from before store ids was given one now (its records must be written)
    adopted: bool = False


def catalog_store_id(catalog: Catalog) -> str | None:
    with catalog.tx(single=True) as conn:
        return catalog.store_id(conn)


def _claim(catalog: Catalog, candidate: str) -> str:
    """Record ``candidate`` as the catalog's store id unless one is there; the winner."""
    with catalog.tx(write=True) as conn:
        return catalog.claim_store_id(conn, candidate)


def _catalog_contents(catalog: Catalog) -> tuple[bool, bool]:
    """(has versions, has any data: models, checkpoints, runs or audit entries)."""
    return catalog.contents()


def _blobs_hold_data(blobs: BlobStore) -> bool:
    if blobs.supports_objects and blobs.any_object(RECORDS):
        return True
    return next(iter(blobs.list_blobs()), None) is not None


def establish(blobs: BlobStore, catalog: Catalog, *, create: bool = True) -> Identity:
    """Compare (and where safe, write) the store ids of ``blobs`` and ``catalog``.

    ``create=False``: a location with neither a store marker nor any data raises
    NotFoundError instead of becoming a new store.
    """
    if not blobs.supports_objects:
        return Identity(None)  # a third-party backend without small objects: no records
    try:
        marker = read_marker(blobs)
    except IntegrityError as exc:
        return Identity(
            None, f"the store marker {blobs.url}/{MARKER} is damaged ({exc}); {RECOVER}"
        )
    cat_id = catalog_store_id(catalog)
    if marker is not None and cat_id == marker.store_id:
        return Identity(cat_id)
    if marker is not None and cat_id is not None:
        return Identity(
            None,
            f"the catalog {catalog.url} belongs to another store (id {cat_id}) than the blobs "
            f"at {blobs.url} (id {marker.store_id}): check --metadata, or {RECOVER}",
        )
    has_versions, has_data = _catalog_contents(catalog)
    if marker is not None:  # the catalog has no id: new, emptied, or replaced
        if not has_data and not _blobs_hold_data(blobs):
            return Identity(_write_safely(catalog, blobs, marker.store_id, marker=False))
        state = "has no record of this store" if has_data else "is empty"
        return Identity(
            None,
            f"the catalog {catalog.url} {state}, but the blobs at {blobs.url} hold store "
            f"{marker.store_id}: its catalog was lost or replaced; {RECOVER}",
        )
    if cat_id is not None:  # blobs without a marker
        if not has_versions and not _blobs_hold_data(blobs):
            return Identity(_write_safely(catalog, blobs, cat_id, marker=True))
        return Identity(
            None,
            f"the blobs at {blobs.url} carry no store marker while the catalog {catalog.url} "
            f"belongs to store {cat_id}: is the store URL right? If these are its blobs, "
            f"{RECOVER} (it rewrites the marker)",
        )
    if has_versions or (has_data and not _blobs_hold_data(blobs)):
        # a store from before store ids: give it one (its records are written by the Store)
        sid = _write_safely(catalog, blobs, uuid.uuid4().hex, marker=True, claim=True)
        return Identity(sid, adopted=sid is not None)
    if _blobs_hold_data(blobs):
        return Identity(
            None,
            f"the blobs at {blobs.url} hold models but the catalog {catalog.url} is empty "
            f"and no store marker names them; {RECOVER}",
        )
    if not create:
        raise NotFoundError(
            f"no store at {blobs.url}: check --store / $SAFEPOINT_STORE (and --metadata), or "
            "create one with `safepoint put` or sp.Store(url)"
        )
    return Identity(_write_safely(catalog, blobs, uuid.uuid4().hex, marker=True, claim=True))


def _write_safely(
    catalog: Catalog, blobs: BlobStore, store_id: str, *, marker: bool, claim: bool = True
) -> str | None:
    """Claim ``store_id`` in the catalog (the catalog's winner counts) and write the
    marker; None if the store is read-only here."""
    try:
        sid = _claim(catalog, store_id) if claim else store_id
        if marker:
            blobs.create_object(MARKER, StoreMarker(sid, time.time()).to_bytes())
            written = read_marker(blobs)
            if written is None or written.store_id != sid:
                # another opener's marker won a race the catalog decided otherwise
                blobs.write_object(MARKER, StoreMarker(sid, time.time()).to_bytes())
        return sid
    except ReadOnlyStoreError:
        return None
