"""Python builtins: containers, bytes, complex, big ints, slices, ranges.

``None``, ``bool``, ``int``, ``float`` and ``str`` are plain JSON values in the
manifest and never reach a handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import spec
from ..encoder import INT_END, INT_MIN, PLAIN
from ..registry import register
from .strings import decode_strings, encode_strings

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

#: lists, tuples and dict keys of at least this many strings go columnar
COLUMNAR_MIN = 32

#: types whose hash and equality are value-based builtins: only these may be set
#: items or dict keys (hashing an object built from the file would call its methods)
_KEY_TYPES = frozenset({type(None), bool, int, float, str, bytes, complex, range, slice})


#: the JSON values that are their own Python value (Decoder.decode returns them as is)
_PLAIN = frozenset({type(None), bool, int, float, str})


def check_keys(items: Any, dec: Any, what: str) -> None:
    """Every item is a plain value (a number, a string, bytes, None, a numpy scalar, or
    a tuple/frozenset of such), so that hashing it calls no method from the file."""
    stack = list(items)
    while stack:
        k = stack.pop()
        t = type(k)
        if t in _KEY_TYPES:
            continue
        if t is tuple or t is frozenset:
            stack.extend(k)
            continue
        if isinstance(k, np.generic) and t.__module__ == "numpy":
            continue
        raise dec.fail(
            f"{what} holds a {t.__module__}.{t.__qualname__}: only plain values may be set "
            "items or dict keys (crafted file?)"
        )


def _encode_seq(items: Any, enc: Encoder, tag: str) -> dict[str, Any]:
    if len(items) >= COLUMNAR_MIN and all(type(x) is str for x in items):
        return {"@": tag, "ks": encode_strings(list(items), enc)}
    # plain values are their own node: no call, no path entry (they cannot fail);
    # the path holds the index itself, formatted only for an error (Encoder.where)
    out = []
    path = enc._path
    encode = enc.encode
    for i, x in enumerate(items):
        t = type(x)
        if t in PLAIN or (t is int and INT_MIN <= x < INT_END):
            out.append(x)
        else:
            path.append(i)
            try:
                out.append(encode(x))
            finally:
                path.pop()
    return {"@": tag, "v": out}


def _decode_seq(node: dict[str, Any], dec: Decoder) -> list[Any]:
    if "ks" in node:
        return decode_strings(dec.field(node, "ks", dict), dec)
    # a plain JSON value is its own value: no call for it
    return [x if type(x) in _PLAIN else dec.decode(x) for x in dec.items(node)]


@register("list", [list])
class ListHandler:
    @staticmethod
    def encode(obj: list[Any], enc: Encoder) -> dict[str, Any]:
        return _encode_seq(obj, enc, "list")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        return _decode_seq(node, dec)


@register("tuple", [tuple])
class TupleHandler:
    @staticmethod
    def encode(obj: tuple[Any, ...], enc: Encoder) -> dict[str, Any]:
        return _encode_seq(obj, enc, "tuple")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        return tuple(_decode_seq(node, dec))


@register("set", [set, frozenset])
class SetHandler:
    @staticmethod
    def encode(obj: set[Any] | frozenset[Any], enc: Encoder) -> dict[str, Any]:
        node = _encode_seq(sorted(obj, key=repr) if len(obj) < 10_000 else list(obj), enc, "set")
        if type(obj) is frozenset:
            node["f"] = True
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        items = _decode_seq(node, dec)
        check_keys(items, dec, "a set")
        try:
            return frozenset(items) if node.get("f") else set(items)
        except TypeError:
            raise dec.fail("a set holds an unhashable item") from None


#: columnar dicts at least this large are built with hashes kept in the table
_HASHED_DICT_MIN = 1 << 12


def _str_dict(keys: list[str], values: list[Any]) -> dict[str, Any]:
    """``dict(zip(keys, values))``, faster for large dicts.

    CPython (3.11+) keeps no hashes in the table of a dict with only str keys, so
    every probe while inserting reads the hash from the probed key's object: a
    cache miss each for hundreds of thousands of keys. A dict that once held a
    non-str key keeps its hashes in the table (a general table, still one after
    the key is deleted): inserting a large vocabulary costs about a quarter less.
    The result is an ordinary dict with the same items in the same order.
    """
    if len(keys) < _HASHED_DICT_MIN:
        return dict(zip(keys, values, strict=True))
    out: dict[Any, Any] = {None: None}
    out.update(zip(keys, values, strict=True))
    del out[None]
    return out


@register("dict", [dict])
class DictHandler:
    @staticmethod
    def encode(obj: dict[Any, Any], enc: Encoder) -> dict[str, Any]:
        if len(obj) < COLUMNAR_MIN:
            # the state dict of an estimator: a score of str keys, mostly plain values
            for k in obj:
                if type(k) is not str:
                    break
            else:
                body = {}
                path = enc._path
                encode = enc.encode
                for k, v in obj.items():
                    t = type(v)
                    if t in PLAIN or (t is int and INT_MIN <= v < INT_END):
                        body[k] = v
                    else:
                        path.append((k,))  # the key, formatted only for an error
                        try:
                            body[k] = encode(v)
                        finally:
                            path.pop()
                return {"@": "dict", "s": body}
        keys = list(obj)
        if all(type(k) is str for k in keys):
            if len(keys) >= COLUMNAR_MIN:
                vals = list(obj.values())
                for kind, dtype in ((int, np.int64), (float, np.float64)):
                    if all(type(v) is kind for v in vals):
                        try:
                            arr = np.array(vals, dtype=dtype)
                        except OverflowError:
                            break
                        return {
                            "ks": encode_strings(keys, enc),
                            "vn": enc.buffer(arr),
                            "vk": kind.__name__,
                        }
            return {"s": {k: enc.encode_child(v, f"[{k!r}]") for k, v in obj.items()}}
        pairs = []
        for i, (k, v) in enumerate(obj.items()):
            pairs.append([enc.encode_child(k, f"<key {i}>"), enc.encode_child(v, f"[{k!r}]")])
        return {"p": pairs}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        if "s" in node:
            body = node["s"]
            if type(body) is not dict:
                body = dec.field(node, "s", dict)
            if len(body) > dec.max_items:
                raise dec.fail("a dict declares too many items")
            # a plain JSON value is its own value: no call for it
            return {k: v if type(v) in _PLAIN else dec.decode(v) for k, v in body.items()}
        if "ks" in node:
            column = dec.field(node, "ks", dict)
            keys = decode_strings(column, dec)
            kind = node.get("vk")
            if kind not in ("int", "float"):
                raise dec.fail("unknown value kind of a columnar dict")
            dtype = np.dtype("<i8" if kind == "int" else "<f8")
            dec.reader.charge(spec.OBJECT_COST * len(keys), "a columnar dict's values")
            vals = dec.array(dec.field(node, "vn", int), dtype, (len(keys),))
            # only a column with a missing-values buffer can hold anything but str
            if "z" in column and not set(map(type, keys)) <= {str}:
                raise dec.fail("a columnar dict has missing keys")
            out = _str_dict(keys, vals.tolist())
            if len(out) != len(keys):
                raise dec.fail("a columnar dict has duplicate keys")
            return out
        out2: dict[Any, Any] = {}
        for pair in dec.items(node, "p"):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise dec.fail("a dict pair must be [key, value]")
            k = dec.decode(pair[0])
            check_keys((k,), dec, "a dict key")
            try:
                out2[k] = dec.decode(pair[1])
            except TypeError:
                raise dec.fail("a dict key is unhashable") from None
        return out2


@register("odict", ["collections.OrderedDict"])
class OrderedDictHandler:
    """``collections.OrderedDict`` (torch ``state_dict``\\ s, XGBoost ``evals_result_``):
    a dict node inside; extra instance attributes (torch's ``_metadata``) are not kept."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return {"d": {"@": "dict", **DictHandler.encode(obj, enc)}}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        import collections

        inner = dec.field(node, "d", dict)
        if inner.get("@") != "dict":
            raise dec.fail("an OrderedDict node must hold a dict node")
        return collections.OrderedDict(DictHandler.decode(inner, dec))


@register("bytes", [bytes, bytearray])
class BytesHandler:
    @staticmethod
    def encode(obj: bytes | bytearray, enc: Encoder) -> dict[str, Any]:
        node: dict[str, Any] = {"b": enc.buffer(obj)}
        if type(obj) is bytearray:
            node["m"] = True
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        data = dec.raw(dec.field(node, "b", int))
        return bytearray(data) if node.get("m") else data


@register("complex", [complex])
class ComplexHandler:
    @staticmethod
    def encode(obj: complex, enc: Encoder) -> dict[str, Any]:
        return {"v": [obj.real, obj.imag]}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        v = dec.field(node, "v", list)
        if len(v) != 2 or not all(type(x) in (int, float) for x in v):
            raise dec.fail("complex needs [real, imag]")
        return complex(v[0], v[1])


@register("bigint")
class BigIntHandler:
    @staticmethod
    def encode(obj: int, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - inline
        return {"v": hex(obj)}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        v = dec.field(node, "v", str)
        if len(v) > 2 + 4096:
            raise dec.fail("an integer literal is too long")
        try:
            return int(v, 16)
        except ValueError:
            raise dec.fail("bad integer literal") from None


@register("slice", [slice, range])
class SliceHandler:
    @staticmethod
    def encode(obj: slice | range, enc: Encoder) -> dict[str, Any]:
        parts = [obj.start, obj.stop, obj.step]
        if not all(p is None or type(p) is int for p in parts):
            raise enc.fail("slices of non-integers are not supported")
        return {"v": parts, "r": type(obj) is range}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        v = dec.field(node, "v", list)
        if len(v) != 3 or not all(p is None or type(p) is int for p in v):
            raise dec.fail("a slice needs [start, stop, step]")
        if node.get("r"):
            if None in v or v[2] == 0:
                raise dec.fail("a range needs integer start, stop and non-zero step")
            return range(v[0], v[1], v[2])
        return slice(v[0], v[1], v[2])
