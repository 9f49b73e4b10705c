"""numpy dtypes and arrays built from inert pickle data, never by calling numpy's
pickle hooks (``dtype.__setstate__``, ``_reconstruct``) on what the file says.

A dtype is rebuilt from its validated type code and state (byte order, fields,
subarray, datetime unit); an array from its dtype, shape and raw bytes with
``np.frombuffer`` after the byte count was checked.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from ..errors import FormatError, LimitExceededError
from .nodes import BytesNode, Call, DictNode, GlobalRef, ListNode, TupleNode

__all__ = ["array_from_bytes", "build_dtype", "check_shape", "plain", "plain_bytes"]

# kind letter + item size, as numpy's dtype.__reduce__ writes it (``f8``, ``U5``, ``V24``)
_CODE = re.compile(r"[biufcOUSVMm][0-9]{0,10}|\?")
_DATETIME_UNITS = frozenset(
    {"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "μs", "ns", "ps", "fs", "as", "generic"}
)
_CODECS_ENCODE = frozenset({("_codecs", "encode")})
_MAX_ITEMSIZE = 1 << 31


def fail(msg: str) -> FormatError:
    return FormatError(
        f"malformed pickle: {msg} (refused: the file is corrupt, crafted, or uses a form "
        "safepoint does not import; nothing was executed)"
    )


def is_global(node: Any, *names: tuple[str, str]) -> bool:
    return isinstance(node, GlobalRef) and (node.module, node.name) in names


def plain_bytes(node: Any) -> bytes | memoryview | None:
    """The bytes a node stands for (BINBYTES, or protocol 2's ``_codecs.encode(s, 'latin1')``)."""
    if isinstance(node, BytesNode):
        return node.data
    if (
        isinstance(node, Call)
        and node.how == "reduce"
        and not node.ops
        and is_global(node.callee, *_CODECS_ENCODE)
        and isinstance(node.args, TupleNode)
        and len(node.args.items) == 2
        and isinstance(node.args.items[0], str)
        and node.args.items[1] in ("latin1", "latin-1")
    ):
        try:
            return node.args.items[0].encode("latin-1")
        except UnicodeEncodeError:
            raise fail("_codecs.encode of a string that is not latin-1") from None
    if (
        isinstance(node, Call)
        and node.how == "reduce"
        and not node.ops
        and is_global(node.callee, ("builtins", "bytes"))
        and isinstance(node.args, TupleNode)
        and not node.args.items
    ):
        return b""
    return None


def plain(node: Any, depth: int = 0) -> Any:
    """Small structural values (shapes, dtype states, wrapper states) as Python values.

    Only scalars, bytes, tuples, lists and str-keyed dicts are accepted: this is
    used where the importer must understand a value before the audit.
    """
    if depth > 64:
        raise fail("a structural value nests too deeply")
    if node is None or type(node) in (bool, int, float, str):
        return node
    if isinstance(node, TupleNode):
        return tuple(plain(x, depth + 1) for x in node.items)
    if isinstance(node, ListNode):
        return [plain(x, depth + 1) for x in node.items]
    if isinstance(node, DictNode):
        out = {}
        for k, v in node.pairs:
            if type(k) is not str:
                raise fail("a structural dict has a non-string key")
            out[k] = plain(v, depth + 1)
        return out
    b = plain_bytes(node)
    if b is not None:
        return bytes(b)
    raise fail(f"expected a plain value, found {type(node).__name__}")


def check_shape(shape: Any, max_ndim: int) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(type(s) is int and 0 <= s < 2**62 for s in shape):
        raise fail(f"an array shape must be a tuple of non-negative integers, not {shape!r}")
    if len(shape) > max_ndim:
        raise LimitExceededError(f"an array has {len(shape)} dimensions (limit {max_ndim})")
    return shape


def _dtype_parts(node: Any) -> tuple[str, Any]:
    """(type code, state or None) of a ``numpy.dtype(code, align, copy)`` call node."""
    if not (
        isinstance(node, Call)
        and node.how == "reduce"
        and is_global(node.callee, ("numpy", "dtype"))
        and isinstance(node.args, TupleNode)
        and 1 <= len(node.args.items) <= 3
    ):
        raise fail("expected a numpy dtype")
    code = node.args.items[0]
    flags = node.args.items[1:]
    if not isinstance(code, str) or not all(type(f) is bool for f in flags):
        raise fail("a numpy dtype is named by a type code")
    builds = [s for op, s in node.ops if op == "build"]
    if len(builds) != len(node.ops) or len(builds) > 1:
        raise fail("a numpy dtype has unexpected operations")
    return code, (builds[0] if builds else None)


def build_dtype(node: Any, cache: dict[int, np.dtype[Any]] | None = None, depth: int = 0) -> Any:
    """A ``numpy.dtype`` from its inert call node (code + BUILD state)."""
    if cache is not None and id(node) in cache:
        return cache[id(node)]
    if depth > 32:
        raise fail("a dtype nests too deeply")
    code, state_node = _dtype_parts(node)
    if not _CODE.fullmatch(code):
        raise fail(f"unknown dtype code {code!r}")
    try:
        dt = np.dtype(code)
    except TypeError:
        raise fail(f"unknown dtype code {code!r}") from None
    if state_node is not None:
        dt = _apply_state(dt, code, state_node, cache, depth)
    if dt.itemsize > _MAX_ITEMSIZE:
        raise LimitExceededError(f"a dtype declares {dt.itemsize}-byte items")
    if cache is not None:
        cache[id(node)] = dt
    return dt


def _apply_state(
    dt: np.dtype[Any],
    code: str,
    state_node: Any,
    cache: dict[int, np.dtype[Any]] | None,
    depth: int,
) -> np.dtype[Any]:
    if not isinstance(state_node, TupleNode) or len(state_node.items) not in (8, 9):
        raise fail("a dtype state must be a tuple of 8 or 9 items")
    items = state_node.items
    version, endian, sub, names, fields = items[:5]
    elsize, _alignment, _flags = (plain(x) for x in items[5:8])
    if version not in (3, 4) or endian not in ("<", ">", "|", "="):
        raise fail(f"unsupported dtype state (version {version!r}, byte order {endian!r})")
    if not all(type(x) is int for x in (elsize, _alignment, _flags)):
        raise fail("dtype sizes must be integers")
    if dt.kind in "Mm" and len(items) == 9:
        meta = plain(items[8])
        if not (isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple)):
            raise fail("a datetime dtype lacks its unit")
        unit, num = meta[1][0], meta[1][1]
        if isinstance(unit, bytes):
            unit = unit.decode("latin-1")
        if unit not in _DATETIME_UNITS or type(num) is not int or not 1 <= num < 2**31:
            raise fail(f"unknown datetime unit {unit!r}")
        dt = np.dtype(f"{code}[{num if num != 1 else ''}{unit}]")
    if sub is not None:
        if not isinstance(sub, TupleNode) or len(sub.items) != 2:
            raise fail("a subarray dtype needs (base, shape)")
        base = build_dtype(sub.items[0], cache, depth + 1)
        shape = check_shape(plain(sub.items[1]), 32)
        n = 1
        for s in shape:
            n *= s
        if n * base.itemsize > _MAX_ITEMSIZE:
            raise LimitExceededError("a subarray dtype is too large")
        dt = np.dtype((base, shape))
    elif names is not None:
        dt = _structured(names, fields, elsize, cache, depth)
    elif endian in "<>" and dt.byteorder != "|":
        dt = dt.newbyteorder(endian)
    if elsize not in (-1, 0) and dt.itemsize != elsize and dt.kind != "O":
        raise fail(f"dtype {dt} has {dt.itemsize}-byte items, the state says {elsize}")
    return dt


def _structured(
    names: Any,
    fields: Any,
    elsize: int,
    cache: dict[int, np.dtype[Any]] | None,
    depth: int,
) -> np.dtype[Any]:
    if not isinstance(names, TupleNode) or not isinstance(fields, DictNode):
        raise fail("a structured dtype needs names and fields")
    if not all(type(n) is str for n in names.items) or len(set(names.items)) != len(names.items):
        raise fail("structured dtype field names must be distinct strings")
    by_name: dict[str, Any] = {}
    for k, v in fields.pairs:
        if type(k) is not str or k in by_name:
            raise fail("structured dtype fields must be distinct strings")
        by_name[k] = v
    if set(by_name) != set(names.items):
        raise fail("structured dtype names and fields differ")
    if not 0 < elsize <= _MAX_ITEMSIZE:
        raise fail("a structured dtype needs a positive item size")
    formats, offsets = [], []
    for name in names.items:
        entry = by_name[name]
        if not isinstance(entry, TupleNode) or len(entry.items) not in (2, 3):
            raise fail(f"field {name!r} needs (dtype, offset)")
        fdt = build_dtype(entry.items[0], cache, depth + 1)
        off = entry.items[1]
        if type(off) is not int or off < 0 or off + fdt.itemsize > elsize:
            raise fail(f"field {name!r} lies outside its record")
        formats.append(fdt)
        offsets.append(off)
    try:
        return np.dtype(
            {"names": list(names.items), "formats": formats, "offsets": offsets, "itemsize": elsize}
        )
    except (TypeError, ValueError) as exc:
        raise fail(f"invalid structured dtype: {exc}") from None


def array_from_bytes(
    data: bytes | memoryview, dtype: np.dtype[Any], shape: tuple[int, ...], order: str
) -> np.ndarray[Any, Any]:
    """A fresh, writable array holding ``data``; its size was declared by the file."""
    if dtype.hasobject:
        raise fail("an array of Python objects cannot come from raw bytes")
    if order not in ("C", "F"):
        raise fail(f"unknown array order {order!r}")
    count = 1
    for s in shape:
        count *= s
    mv = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if count * dtype.itemsize != len(mv):
        raise fail(
            f"array data has {len(mv)} bytes, shape {shape} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    lit: Literal["C", "F"] = "F" if order == "F" else "C"
    if dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype, order=lit)
    flat = np.frombuffer(mv, dtype=dtype, count=count)
    return flat.reshape(shape, order=lit).copy(order="K")
