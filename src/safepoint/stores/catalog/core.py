"""The catalog class (every typed query) and the registry of catalog backends."""

from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa

from ...errors import StoreError
from .checkpoints import CheckpointQueries
from .engine import _file_id, _read_only
from .leases import LeaseQueries
from .meta import MetaQueries, drop_all
from .models import ModelQueries
from .runs import RunQueries

__all__ = [
    "Catalog",
    "drop_tables",
    "forget_catalog",
    "memory_catalog",
    "open_catalog",
    "register_catalog_backend",
]


class Catalog(ModelQueries, LeaseQueries, CheckpointQueries, RunQueries, MetaQueries):
    """A SQLAlchemy catalog (SQLite or PostgreSQL; see :mod:`safepoint.stores.catalog`)."""


_FACTORIES: dict[str, Callable[..., Catalog]] = {}
_MEMORY: dict[str, Catalog] = {}


def register_catalog_backend(scheme: str, factory: Callable[..., Catalog]) -> None:
    """Make metadata URLs whose backend name is ``scheme`` open with ``factory(url)``
    (``factory(url, create=False)`` when only an existing catalog may be opened)."""
    _FACTORIES[scheme] = factory


register_catalog_backend("sqlite", Catalog)
register_catalog_backend("postgresql", Catalog)


_OPEN: dict[str, tuple[Catalog, tuple[int, int] | None]] = {}
_OPEN_LOCK = threading.Lock()


def open_catalog(url: str, create: bool = True) -> Catalog:
    """Open (and migrate) the catalog at ``url``.

    Catalogs are shared within a process (one connection pool per database, and opening
    a store costs one read); a SQLite file that was deleted or replaced since is reopened.
    ``create=False``: a missing SQLite file or a database without safepoint tables raises
    NotFoundError instead of being set up.
    """
    with _OPEN_LOCK:
        hit = _OPEN.get(url)
        if hit is not None:
            cat, fid = hit
            same_mode = cat.path is None or _read_only(cat.path) == cat.read_only
            if (fid is None or _file_id(cat) == fid) and same_mode:
                cat.migrate()  # a read: refuses a catalog another process upgraded
                return cat
        try:
            backend = sa.make_url(url).get_backend_name()
        except sa.exc.ArgumentError:
            raise StoreError(
                f"metadata URL {url!r} is not a database URL; use sqlite:///path/catalog.db "
                "or postgresql://user@host/db"
            ) from None
        factory = _FACTORIES.get(backend)
        if factory is None:
            raise StoreError(
                f"no catalog backend for {backend!r} URLs ({url!r}); known: {sorted(_FACTORIES)}"
            )
        cat = factory(url) if create else factory(url, create=False)
        if not cat.in_memory:
            _OPEN[url] = (cat, _file_id(cat))
        return cat


def forget_catalog(cat: Catalog) -> None:
    """Close ``cat`` and drop it from the cache of open catalogs (before its file is moved)."""
    with _OPEN_LOCK:
        for url, (c, _) in list(_OPEN.items()):
            if c is cat:
                del _OPEN[url]
    cat.engine.dispose()


def memory_catalog(key: str) -> Catalog:
    """A process-wide in-memory SQLite catalog shared by stores with the same ``key``."""
    cat = _MEMORY.get(key)
    if cat is None:
        cat = _MEMORY[key] = Catalog("sqlite://")
    return cat


def drop_tables(url: str) -> None:
    """Drop the safepoint tables of the (damaged) server catalog at ``url``, through an
    engine of its own (``recover(force=True)``; the catalog then opens empty)."""
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed)
    try:
        with engine.begin() as conn:
            drop_all(conn)
    finally:
        engine.dispose()
