"""Conformance suites that any Store backend or type handler must pass.

* :class:`BlobStoreTests` (:mod:`safepoint.testing.blob_store`): a pytest class for a new
  blob backend, with raw put/get hooks that bypass the backend;
* :mod:`safepoint.testing.store_conformance`: ``StoreConformance``, a pytest class to
  subclass with a ``store_factory`` fixture for a new blob or catalog backend.

Both import pytest: they load on first use, not with ``safepoint.testing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .blob_store import BlobStoreTests
    from .store_conformance import StoreConformance

__all__ = ["BlobStoreTests", "StoreConformance"]


def __getattr__(name: str) -> Any:
    if name == "BlobStoreTests":
        from .blob_store import BlobStoreTests

        return BlobStoreTests
    if name == "StoreConformance":
        from .store_conformance import StoreConformance

        return StoreConformance
    raise AttributeError(f"module 'safepoint.testing' has no attribute {name!r}")
