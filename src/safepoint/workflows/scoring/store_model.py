"""A model taken from a store by ``NAME[@VERSION|@ALIAS]``, reloaded when the alias moves."""

from __future__ import annotations

from typing import Any

from ...stores.opening import StoreLike, open_store
from .model import ModelHandle

__all__ = ["StoreModelHandle", "open_store"]


class StoreModelHandle(ModelHandle):
    """Loads ``ref`` from ``store``; :meth:`refresh` follows alias moves.

    A pinned version (``NAME@3``) never changes; ``NAME`` follows the latest
    version and ``NAME@ALIAS`` follows the alias.
    """

    def __init__(self, ref: str, *, store: StoreLike = None, trusted: Any = ()) -> None:
        super().__init__()
        from ...stores.names import parse_ref

        self.store = open_store(store)
        self.name, self.selector = parse_ref(ref)
        self.label = ref
        self.trusted = trusted
        self._load(self.store.info(self.name, self.selector).version)

    def _load(self, version: int) -> None:
        from .frameworks import load_instead, prepare_load

        info = self.store.inspect(f"{self.name}@{version}", trusted=self.trusted)
        types = [t["name"] for t in info.types]
        prepare_load(types)  # e.g. a Spark model needs a session
        with self.store.open_blob(self.name, version) as src:
            model = load_instead(types, src)  # e.g. an H2O model's MOJO, with no cluster
        if model is None:
            model = self.store.get(self.name, version, trusted=self.trusted)
        signature = self._adopt(model, info.signature)
        # swap model, version and signature together: readers see one or the other
        with self._lock:
            self.model = model
            self.version = str(version)
            self.signature = signature
            self.number = version

    def current(self) -> tuple[Any, str]:
        with self._lock:
            return self.model, self.version

    def refresh(self) -> bool:
        if isinstance(self.selector, int):
            return False
        version = self.store.info(self.name, self.selector).version
        if version == getattr(self, "number", None):
            return False
        self._load(version)
        return True
