"""Object tree -> manifest nodes + buffers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from ..errors import SerializationError
from .registry import _cache as _handlers
from .registry import handler_for_tag, handler_for_type, list_encoder
from .writer import BufferSink

__all__ = ["Encoder"]

#: values that are their own JSON form; ``int`` is not among them (a big one is a node)
PLAIN = frozenset({type(None), bool, float, str})
#: the integers written as JSON numbers (readers parse them back exactly)
INT_MIN, INT_END = -(2**63), 2**64


@functools.cache
def canonical_module(module: str, qualname: str) -> str:
    """The importable module of a type that reports a bare extension name.

    Compiled classes of scikit-learn < 1.8 (its Cython losses) say their
    ``__module__`` is ``"_loss"``, the extension's file name, an alias that only
    those versions register; the class lives in ``sklearn._loss._loss``. The
    file must name that module, or later readers could not find (or trust) it.
    """
    if "." in module:
        return module
    head = qualname.partition(".")[0]

    def owns(name: Any, mod: Any) -> bool:
        obj = getattr(mod, head, None)
        return (
            isinstance(name, str)
            and name.endswith("." + module)
            and getattr(obj, "__module__", None) == module
        )

    bare = sys.modules.get(module)
    if bare is not None:
        # a real top-level module (numpy), or the extension registered under its bare
        # name as well as its full one (scikit-learn 1.5-1.7 do this for _loss)
        real = getattr(bare, "__name__", module)
        return real if real != module and owns(real, bare) else module
    for name, mod in list(sys.modules.items()):
        if getattr(mod, "__name__", None) == name and owns(name, mod):
            return name
    return module


class Encoder:
    """Walks an object tree depth-first; handlers call back into :meth:`encode`.

    Objects met twice become one node in ``shared`` and ``{"@": "memo"}``
    references wherever they occur, so identity (and memory) is kept on load.
    """

    def __init__(self, sink: BufferSink, max_depth: int = 256, *, tables: bool = True) -> None:
        self.sink = sink
        #: ``buffer(data) -> index``: store a buffer (the sink's own method: no extra call)
        self.buffer: Callable[[Any], int] = sink.add
        #: store long lists of same-class objects as object tables (handlers/tables.py)
        self.tables = tables
        self.max_depth = max_depth
        self.types: list[list[str]] = []
        self._type_index: dict[tuple[str, str, str], int] = {}
        self.shared: list[dict[str, Any]] = []
        # id -> (node, obj); the object is kept alive so its id cannot be reused
        self._memo: dict[int, tuple[dict[str, Any], Any]] = {}
        #: ids of the containers being encoded (their number is the nesting depth)
        self._active: set[int] = set()
        self._path: list[Any] = []
        #: top-level packages whose types are in the file (for the environment record)
        self.packages: set[str] = set()

    # -- helpers for handlers -------------------------------------------------
    def type_ref(self, module: str, qualname: str, kind: str) -> int:
        """Index of ``(module, qualname, kind)`` in the manifest's types table."""
        module = canonical_module(module, qualname)
        key = (module, qualname, kind)
        idx = self._type_index.get(key)
        if idx is None:
            idx = len(self.types)
            self.types.append([module, qualname, kind])
            self._type_index[key] = idx
            self.packages.add(module.partition(".")[0])
        return idx

    def where(self) -> str:
        # entries: a handler's label (str), a list index (int), a dict key (1-tuple);
        # the built-in containers push the raw index or key, formatted only here
        parts = []
        for p in self._path:
            t = type(p)
            parts.append(p if t is str else f"[{p}]" if t is int else f"[{p[0]!r}]")
        return "".join(parts) or "<root>"

    def fail(self, msg: str) -> SerializationError:
        return SerializationError(f"at {self.where()}: {msg}")

    def encode_child(self, obj: Any, label: str) -> Any:
        self._path.append(label)
        try:
            return self.encode(obj)
        finally:
            self._path.pop()

    # -- the walk -------------------------------------------------------------
    def encode(self, obj: Any) -> Any:
        t = type(obj)
        if t in PLAIN:
            return obj
        if t is int:
            return obj if INT_MIN <= obj < INT_END else {"@": "bigint", "v": hex(obj)}
        key = id(obj)
        seen = self._memo.get(key)
        if seen is not None:
            return self._again(seen[0])
        active = self._active
        if key in active or len(active) >= self.max_depth:
            raise self._refuse(t, key)
        if t is list and obj and self.tables and (encode_table := list_encoder()) is not None:
            active.add(key)
            try:
                table = encode_table(obj, self)
            finally:
                active.discard(key)
            if table is not None:
                node = {"@": "objtab", **table}
                self._memo[key] = (node, obj)
                return node
        found = _handlers.get(t, _UNKNOWN)
        if found is _UNKNOWN:
            found = handler_for_type(t)
        handler: Any
        if found is None:
            # the audited object handler (handlers.objects): any class, by name and state
            tag, handler = "obj", handler_for_tag("obj")
        else:
            tag, handler = found
            package = _package_of.get(t)
            if package is None:
                package = _package_of[t] = t.__module__.partition(".")[0]
            # the library of a natively handled type (pandas, scipy) belongs in the
            # environment record; only what the file holds, so digests are reproducible
            self.packages.add(package)
        active.add(key)
        try:
            node = handler.encode(obj, self)
        finally:
            active.discard(key)
        if "@" not in node:
            node = {"@": tag, **node}
        self._memo[key] = (node, obj)
        return node

    def _again(self, node: dict[str, Any]) -> dict[str, Any]:
        """The reference to an object met before; its node moves to ``shared``."""
        if node.get("@") != "memo":
            body = dict(node)
            node.clear()
            node["@"] = "memo"
            node["i"] = len(self.shared)
            self.shared.append(body)
        return {"@": "memo", "i": node["i"]}

    def _refuse(self, t: type, key: int) -> SerializationError:
        if key in self._active:
            return self.fail(
                f"a reference cycle through a {t.__name__}: safepoint refuses cycles; "
                "break the cycle (e.g. store an index instead of a back-reference)"
            )
        return self.fail(f"nesting deeper than {self.max_depth} levels; flatten the structure")


_UNKNOWN: Any = object()
#: type -> top-level package of its module (``builtins`` is dropped from the record)
_package_of: dict[type, str] = {}
