"""The catalog: models, versions, aliases, audit log, runs and checkpoints (SQLAlchemy Core).

One catalog serves one store. URLs select the backend (:func:`register_catalog_backend`):

* ``sqlite:///path/catalog.db``: the embedded default (WAL, ``synchronous=FULL`` so that a
  commit is durable; writers serialise with ``BEGIN IMMEDIATE``);
* ``postgresql://user@host/db``: a shared team catalog (row locks with ``FOR UPDATE``).
  Add ``?options=-csearch_path%3Dmyschema`` to keep the tables in a schema.

The schema is versioned in table ``sp_schema``; opening an older catalog applies the
missing :data:`MIGRATIONS` in one transaction (under a lock, so that concurrent openers
do not race); a catalog newer than this safepoint is refused with a clear message.

Commit protocol of a version (see :mod:`safepoint.stores.store`): the blob is written
and *leased* (:meth:`Catalog.lease`) before it is promoted, and the version row is
inserted in one transaction that also drops the lease. ``gc`` marks a blob
``deleting`` in a transaction that checks for references and live leases first, so
that a put and a gc can never both believe they own the same blob.

Layout: :mod:`.schema` (tables and migrations: the only module that names tables, and
only this package imports it), :mod:`.engine` (connections, transactions, dialect),
typed queries by table group (:mod:`.models`, :mod:`.leases`, :mod:`.checkpoints`,
:mod:`.runs`, :mod:`.meta`) combined in :class:`Catalog` (:mod:`.core`).

>>> from safepoint.stores.catalog import open_catalog
>>> cat = open_catalog("sqlite://")
>>> cat.schema_version() == SCHEMA_VERSION
True
"""

from __future__ import annotations

from .core import (
    Catalog,
    drop_tables,
    forget_catalog,
    memory_catalog,
    open_catalog,
    register_catalog_backend,
)
from .leases import Lease
from .schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    STALE_DELETE,
    TEMP_PREFIX,
    dumps_json,
    loads_json,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STALE_DELETE",
    "TEMP_PREFIX",
    "Catalog",
    "Lease",
    "drop_tables",
    "dumps_json",
    "forget_catalog",
    "loads_json",
    "memory_catalog",
    "open_catalog",
    "register_catalog_backend",
]
