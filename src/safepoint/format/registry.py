"""The type-handler registry: the extension point of the format.

A handler turns objects of some types into manifest nodes (plain JSON plus
buffers) and back. Handlers are registered by the *name* of the type they
handle, so that the encoder never imports an optional library to look one up::

    from safepoint.format.registry import register

    @register(tag="mylib.thing", types=["mylib.core.Thing"])
    class ThingHandler:
        @staticmethod
        def encode(obj, enc): return {"v": enc.encode(obj.value)}
        @staticmethod
        def decode(node, dec): return Thing(dec.decode(node["v"]))

Every node a handler returns gets ``"@": tag``; decoding dispatches on it.
Handlers registered here construct only their own library's types (numpy,
pandas, scipy); arbitrary classes go through the audited object handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .decoder import Decoder
    from .encoder import Encoder

__all__ = ["Handler", "handler_for_tag", "handler_for_type", "register", "register_fallback"]


class Handler(Protocol):
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]: ...

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any: ...


_by_name: dict[str, tuple[str, Handler]] = {}
_by_tag: dict[str, Handler] = {}
_fallbacks: list[tuple[Callable[[type], bool], str, Handler]] = []
_cache: dict[type, tuple[str, Handler] | None] = {}


def _type_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def register(tag: str, types: Iterable[str | type] = ()) -> Callable[[Any], Any]:
    """Class decorator: register a handler for a tag and (exact) type names."""

    def deco(handler: Any) -> Any:
        if tag in _by_tag and _by_tag[tag] is not handler:
            raise ValueError(f"tag {tag!r} is already registered")
        _by_tag[tag] = handler
        for t in types:
            _by_name[t if isinstance(t, str) else _type_name(t)] = (tag, handler)
        _cache.clear()
        return handler

    return deco


def register_fallback(tag: str, predicate: Callable[[type], bool]) -> Callable[[Any], Any]:
    """Register a handler for types matched by ``predicate`` (subclasses, families)."""

    def deco(handler: Any) -> Any:
        _by_tag.setdefault(tag, handler)
        _fallbacks.append((predicate, tag, handler))
        _cache.clear()
        return handler

    return deco


def handler_for_type(t: type) -> tuple[str, Handler] | None:
    try:
        return _cache[t]
    except KeyError:
        pass
    found = _by_name.get(_type_name(t))
    if found is None:
        for pred, tag, handler in _fallbacks:
            if pred(t):
                found = (tag, handler)
                break
    _cache[t] = found
    return found


def handler_for_tag(tag: str) -> Handler | None:
    return _by_tag.get(tag)
