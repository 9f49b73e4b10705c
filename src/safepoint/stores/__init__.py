"""Model stores: versioned, content-addressed blobs plus a catalog; checkpointer; runs.

Modules: :mod:`~safepoint.stores.store` (``Store``, ``ModelVersion``),
:mod:`~safepoint.stores.checkpointer`, :mod:`~safepoint.stores.runs`,
:mod:`~safepoint.stores.blobs` (blob backends and their registry),
:mod:`~safepoint.stores.catalog` (SQLite/PostgreSQL catalog, schema migrations),
:mod:`~safepoint.stores.names` (name validation).
"""

from .blobs import BlobStore, register_blob_backend
from .catalog import SCHEMA_VERSION, register_catalog_backend
from .checkpointer import Checkpointer
from .runs import Run, RunInfo, Runs
from .store import AuditEntry, GcReport, ModelVersion, Store, default_store_url

__all__ = [
    "SCHEMA_VERSION",
    "AuditEntry",
    "BlobStore",
    "Checkpointer",
    "GcReport",
    "ModelVersion",
    "Run",
    "RunInfo",
    "Runs",
    "Store",
    "default_store_url",
    "register_blob_backend",
    "register_catalog_backend",
]
