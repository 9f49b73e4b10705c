"""Model stores: versioned, content-addressed blobs plus a catalog; checkpointer; runs.

Modules: :mod:`~safepoint.stores.store` (``Store``, ``ModelVersion``),
:mod:`~safepoint.stores.checkpointer`, :mod:`~safepoint.stores.runs`,
:mod:`~safepoint.stores.blobs` (blob backends and their registry),
:mod:`~safepoint.stores.staging` (writing blobs, leased until their rows commit),
:mod:`~safepoint.stores.catalog` (SQLite/PostgreSQL catalog, schema migrations),
:mod:`~safepoint.stores.names` (name validation), :mod:`~safepoint.stores.arguments`
(argument checks), :mod:`~safepoint.stores.records` (store marker, version records,
journal), :mod:`~safepoint.stores.identity` (the store id), :mod:`~safepoint.stores.intents`
(undoing a crashed writer's objects), :mod:`~safepoint.stores.recover` (rebuilding a
catalog), :mod:`~safepoint.stores.check` (fsck), :mod:`~safepoint.stores.gc`,
:mod:`~safepoint.stores.owners` (lease holders, the one liveness check),
:mod:`~safepoint.stores.opening` (``open_store``: a Store from what a caller passed),
:mod:`~safepoint.stores.faults` (errors that tell the truth).
"""

from .blobs import BlobStore, register_blob_backend
from .catalog import SCHEMA_VERSION, register_catalog_backend
from .check import CheckReport, Finding
from .checkpointer import Checkpointer
from .opening import StoreLike, open_store
from .recover import RecoverReport
from .runs import Run, RunInfo, Runs
from .store import AuditEntry, GcReport, ModelVersion, Store, default_store_url

__all__ = [
    "SCHEMA_VERSION",
    "AuditEntry",
    "BlobStore",
    "CheckReport",
    "Checkpointer",
    "Finding",
    "GcReport",
    "ModelVersion",
    "RecoverReport",
    "Run",
    "RunInfo",
    "Runs",
    "Store",
    "StoreLike",
    "default_store_url",
    "open_store",
    "register_blob_backend",
    "register_catalog_backend",
]
