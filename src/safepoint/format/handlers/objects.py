"""Instances of audited classes, and functions/classes stored by reference.

Node kinds (each names its type through the manifest's types table, which the
audit checks before anything is imported):

``obj``  ``cls.__new__(cls)`` then ``__setstate__(state)`` (or ``__dict__`` update),
         the path of every plain Python class (all scikit-learn estimators);
``red``  ``cls(*args)`` then ``__setstate__(state)``, for extension types whose
         ``__reduce__`` names the class itself (``sklearn.tree._tree.Tree``);
``pyx``  Cython's generated ``__pyx_unpickle_<Class>`` of the class's own module;
``ref``  the function or class itself, resolved by exact module and qualname.

Instances are built by :func:`safepoint.format.construction.build`, the one
place that does it: validators first (bounds checks of internal arrays, so that
a crafted file cannot make compiled code read out of bounds later), then the
state by assignment or a reviewed ``__setstate__``.
"""

from __future__ import annotations

import copyreg
import functools
import types as _types
from typing import TYPE_CHECKING, Any

import numpy as np

from ..construction import build
from ..registry import reduce_state, register

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

_FUNCTION_TYPES = (
    _types.FunctionType,
    _types.BuiltinFunctionType,
    _types.MethodWrapperType,
    np.ufunc,
)


def _locate(obj: Any) -> tuple[str, str]:
    """(module, qualname) under which ``obj`` can be found again."""
    if isinstance(obj, np.ufunc):
        name = obj.__name__
        for modname in ("numpy", "scipy.special"):
            import importlib

            mod = importlib.import_module(modname)
            if getattr(mod, name, None) is obj:
                return modname, name
        raise ValueError(f"ufunc {name} is not found in numpy or scipy.special")
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ValueError(f"{obj!r} has no importable name")
    return module, qualname


def is_reference(obj: Any) -> bool:
    """Functions, classes and ufuncs are stored by name, never by value."""
    return isinstance(obj, (type, *_FUNCTION_TYPES)) or (
        type(obj).__name__ == "cython_function_or_method"
    )


def _check_importable(module: str, qualname: str, what: str, enc: Encoder) -> None:
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise enc.fail(
            f"{what} {qualname} is defined inside a function (or is a lambda): safepoint "
            "stores functions and classes by name only. Define it at module level in an "
            "importable module (not __main__), then trust it by name when loading."
        )
    if module in ("__main__", "__mp_main__"):
        raise enc.fail(
            f"{what} {qualname} is defined in __main__ (a script or notebook): it could not "
            "be found by name when loading. Move it to an importable module."
        )


def encode_reference(obj: Any, enc: Encoder) -> dict[str, Any]:
    try:
        module, qualname = _locate(obj)
    except ValueError as exc:
        raise enc.fail(str(exc)) from None
    _check_importable(module, qualname, "function" if not isinstance(obj, type) else "class", enc)
    return {"@": "ref", "t": enc.type_ref(module, qualname, "ref")}


@register("ref")
class RefHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via obj
        return encode_reference(obj, enc)

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        return dec.type_of(node)


def _state_of(obj: Any, enc: Encoder) -> tuple[str, tuple[Any, ...], Any, Any, Any, Any]:
    """Classify ``obj.__reduce_ex__`` into one of the node kinds."""
    cls = type(obj)
    try:
        rv = obj.__reduce_ex__(4)
    except Exception as exc:
        raise enc.fail(f"{cls.__module__}.{cls.__qualname__} cannot be serialized: {exc}") from None
    if isinstance(rv, str):
        return "ref", (), None, None, None, None
    n = len(rv)
    if n < 2:
        # what unpacking the pair raised before: a reduce value needs (func, args)
        raise ValueError(f"not enough values to unpack (expected at least 2, got {n})")
    func, args = rv[0], rv[1]
    state = rv[2] if n > 2 else None
    listitems = rv[3] if n > 3 else None
    dictitems = rv[4] if n > 4 else None
    # the common case first: every plain Python class (all estimators)
    if func is _NEWOBJ and args and args[0] is cls:
        return "obj", tuple(args[1:]), state, listitems, dictitems, None
    name = getattr(func, "__name__", "")
    reconstructor = getattr(copyreg, "_reconstructor", None)
    if func is reconstructor and args and args[0] is cls and args[1] is object:
        return "obj", (), state, listitems, dictitems, None
    if func is cls:
        return "red", tuple(args), state, listitems, dictitems, None
    if (
        name == "newObj"
        and getattr(func, "__module__", None) == cls.__module__
        and tuple(args) == (cls,)
    ):
        # sklearn's binary trees: newObj(cls) is cls.__new__(cls)
        return "obj", (), state, listitems, dictitems, None
    if (
        name == f"__pyx_unpickle_{cls.__name__}"
        and getattr(func, "__module__", None) == cls.__module__
        and len(args) == 3
        and args[0] is cls
    ):
        return "pyx", (args[1],), args[2], None, None, None
    raise enc.fail(
        f"{cls.__module__}.{cls.__qualname__} is rebuilt by {func!r} when pickled; "
        "safepoint only rebuilds classes from their state. Register a type handler "
        "(safepoint.format.registry.register) for it."
    )


_NEWOBJ = copyreg.__newobj__  # type: ignore[attr-defined]
#: class -> (module, qualname, "module.qualname") of a class that passed the checks of
#: ObjectHandler.encode (not a reference, importable by name); a model has a handful
_CLASSES: dict[type, tuple[str, str, str]] = {}


class ObjectHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        cls = type(obj)
        # isinstance reads __class__, which an instance may fake: only the classes of
        # honest instances are remembered
        known = _CLASSES.get(cls) if obj.__class__ is cls else None
        if known is None:
            if is_reference(obj):
                return encode_reference(obj, enc)
            module, qualname = cls.__module__, cls.__qualname__
            _check_importable(module, qualname, "class", enc)
            known = (module, qualname, f"{module}.{qualname}")
            if obj.__class__ is cls and isinstance(module, str) and isinstance(qualname, str):
                if len(_CLASSES) >= 4096:
                    _CLASSES.clear()
                _CLASSES[cls] = known
        module, qualname, name = known
        kind, args, state, listitems, dictitems, _ = _state_of(obj, enc)
        if kind == "ref":
            return encode_reference(obj, enc)
        node: dict[str, Any] = {"@": kind, "t": enc.type_ref(module, qualname, kind)}
        state = reduce_state(name, obj, state)
        if args:
            node["a"] = enc.encode_child(list(args), "<args>")
        if state is not None:
            node["s"] = enc.encode_child(state, f"<{cls.__name__}>")
        if listitems is not None:
            node["li"] = enc.encode_child(list(listitems), "<items>")
        if dictitems is not None:
            node["di"] = enc.encode_child(dict(dictitems), "<items>")
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        kind = node["@"]
        cls = dec.type_of(node)
        if not isinstance(cls, type):
            raise dec.fail(f"{kind} node names {cls!r}, which is not a class")
        args = dec.decode(node["a"]) if "a" in node else []
        if type(args) is not list:
            raise dec.fail("constructor arguments must be a list")
        state = dec.decode(node["s"]) if "s" in node else None
        items = dec.decode(node["li"]) if "li" in node else None
        if items is not None and type(items) is not list:
            raise dec.fail("list items must be a list")
        pairs = dec.decode(node["di"]) if "di" in node else None
        if pairs is not None and type(pairs) is not dict:
            raise dec.fail("dict items must be a dict")
        return build(dec, cls, kind, args, state, list_items=items, dict_items=pairs)


register("obj")(ObjectHandler)
register("red")(ObjectHandler)
register("pyx")(ObjectHandler)


@register("partial", [functools.partial])
class PartialHandler:
    """``functools.partial(func, *args, **keywords)`` where ``func`` is stored by name.

    scikit-learn builds such partials internally (HistGradientBoosting's
    preprocessor wraps ``check_array``). The wrapped function goes through the
    audit like any reference; the partial itself calls nothing at load.
    """

    @staticmethod
    def encode(obj: functools.partial[Any], enc: Encoder) -> dict[str, Any]:
        func = obj.func
        if not (is_reference(func) or type(func) is functools.partial):
            raise enc.fail(
                f"functools.partial wraps {type(func).__qualname__}, not a function: "
                "safepoint stores functions by name only"
            )
        node: dict[str, Any] = {
            "f": enc.encode_child(func, ".func"),
            "a": enc.encode_child(list(obj.args), ".args"),
            "k": enc.encode_child(dict(obj.keywords), ".keywords"),
        }
        if obj.__dict__:
            node["d"] = enc.encode_child(dict(obj.__dict__), ".__dict__")
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        func = dec.decode(node.get("f"))
        if not (is_reference(func) or type(func) is functools.partial) or not callable(func):
            raise dec.fail("a partial must wrap a function stored by name")
        args = dec.decode(node.get("a"))
        kwargs = dec.decode(node.get("k"))
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise dec.fail("a partial needs a list of arguments and a dict of keywords")
        if not all(type(k) is str for k in kwargs):
            raise dec.fail("partial keywords must be strings")
        out = functools.partial(func, *args, **kwargs)
        if "d" in node:
            extra = dec.decode(node["d"])
            if not isinstance(extra, dict) or not all(type(k) is str for k in extra):
                raise dec.fail("a partial's __dict__ must have str keys")
            out.__dict__.update(extra)
        return out
