"""``open_store(store_like)``: a Store from whatever a caller passed.

Workflows, scoring, search and the CLI accept a store as a :class:`Store`, a folder path
or URL (``str`` or ``os.PathLike``), or None (``$SAFEPOINT_STORE`` or ``.safepoint``):
:data:`StoreLike`. This is the one place that turns it into a Store.

>>> import tempfile
>>> store = open_store(tempfile.mkdtemp())
>>> open_store(store) is store
True
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypeAlias, Union

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .store import Store

__all__ = ["StoreLike", "open_store"]

#: what callers may pass where a store is wanted
StoreLike: TypeAlias = Union["Store", str, "os.PathLike[str]", None]


def open_store(
    store: StoreLike,
    *,
    metadata: str | None = None,
    create: bool = True,
) -> Store:
    """``store`` itself if it is a :class:`Store`; else ``Store(store, metadata,
    create=create)`` for a folder path or URL, or the default store for None.

    Anything else raises :class:`~safepoint.errors.InvalidArgumentError`.
    """
    from .store import Store

    if isinstance(store, Store):
        return store
    if store is None or isinstance(store, str | os.PathLike):
        return Store(None if store is None else os.fspath(store), metadata, create=create)
    raise InvalidArgumentError(
        f"store must be a safepoint Store, a URL or a folder path, not {type(store).__name__}"
    )
