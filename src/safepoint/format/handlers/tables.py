"""Object tables: many small objects of one class, stored column by column.

A gradient-boosting model holds hundreds of ``TreePredictor`` objects, each a
dict of three small arrays. As one ``obj`` node per predictor (and one buffer
per array) the manifest, the buffer table and the per-object checks grow with
their number, and a load costs ten times pickle's. An ``objtab`` node stores
such a list once: the class, the attribute names, and per attribute either one
buffer holding every object's array end to end (with each object's length) or
a JSON list of scalars. On load the objects get views of one validated array
per attribute, and a *table validator* checks all of them in a few vectorised
passes.

A list becomes a table only when it is safe to:

* it holds at least :data:`TABLE_MIN` objects of exactly one class that the
  object handler would store as ``obj`` nodes with a dict state (no
  constructor arguments, no list or dict items), or lists of them (the rows of
  ``HistGradientBoosting._predictors``);
* every state has the same attribute names, and each attribute is, for every
  object, a numpy array of one dtype, dimensionality and trailing shape, or a
  JSON scalar;
* no object, row or array in it is referenced from anywhere else (checked by
  reference count), so that storing them by value cannot break an identity the
  ``memo`` mechanism would have kept.

Anything else is stored node by node, as before; the audit is the same either
way (the class is a row of the ``types`` table of kind ``obj``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ..migrations import ReplacedType
from ..registry import handler_for_type, register
from ..validators import migrate_state, reduce_state, table_validator_of, validate_state_of
from .numpy_ import dtype_from_json, dtype_to_json
from .objects import _check_importable, _state_of, is_reference, set_state

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

__all__ = ["TABLE_MIN", "encode_table"]

#: lists shorter than this are stored node by node (a table saves nothing on a few)
TABLE_MIN = 16
_SCALARS = (type(None), bool, int, float, str)


def _max_refs(items: list[Any]) -> int:
    """The highest reference count among ``items`` (as seen from this frame)."""
    most = 0
    for x in items:
        n = sys.getrefcount(x)
        if n > most:
            most = n
    return most


# what _max_refs sees for objects held by nothing but the one container they are
# read from: measured, not assumed, as it differs between Python versions
_ALONE_IN_LIST = _max_refs([object()])
_probe_state = {"x": object()}
_ALONE_IN_DICT = _max_refs(list(_probe_state.values()))
del _probe_state


def _flatten(items: list[Any]) -> tuple[list[Any], list[int] | None] | None:
    """The objects of a list, or of a list of lists (with the row lengths)."""
    if type(items[0]) is not list:
        return items, None
    # the rows themselves are stored by value too (counted before a loop variable
    # holds one of them)
    if _max_refs(items) > _ALONE_IN_LIST:
        return None
    rows: list[int] = []
    flat: list[Any] = []
    for row in items:
        if type(row) is not list:
            return None
        rows.append(len(row))
        flat.extend(row)
    return flat, rows


def encode_table(items: list[Any], enc: Encoder) -> dict[str, Any] | None:
    """An ``objtab`` node for ``items``, or ``None`` if it does not qualify."""
    found = _flatten(items)
    if found is None:
        return None
    flat, rows = found
    if len(flat) < TABLE_MIN:
        return None
    cls = type(flat[0])
    if (
        cls in _SCALARS
        or handler_for_type(cls) is not None
        or is_reference(flat[0])
        or any(type(x) is not cls for x in flat)
        # each object must be reachable through this list only
        or _max_refs(flat) > _ALONE_IN_LIST + (1 if rows is not None else 0)
        or any(id(x) in enc._memo for x in flat)
    ):
        return None
    module, qualname = cls.__module__, cls.__qualname__
    name = f"{module}.{qualname}"
    states: list[dict[str, Any]] = []
    for x in flat:
        kind, args, state, listitems, dictitems, _ = _state_of(x, enc)
        if kind != "obj" or args or listitems is not None or dictitems is not None:
            return None
        state = reduce_state(name, x, state)
        if type(state) is not dict:
            return None
        states.append(state)
    keys = list(states[0])
    if not all(type(k) is str for k in keys) or any(list(s) != keys for s in states):
        return None
    columns = []
    for key in keys:
        values = [s[key] for s in states]
        col = _column(values, enc)
        if col is None:
            return None
        columns.append(col)
    _check_importable(module, qualname, "class", enc)
    node: dict[str, Any] = {
        "t": enc.type_ref(module, qualname, "obj"),
        "n": len(flat),
        "k": keys,
        "c": columns,
    }
    for col in columns:
        if "v" not in col:
            arrays = col.pop("arrays")
            whole = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            col["b"] = enc.buffer(np.ascontiguousarray(whole).reshape(-1).view(np.uint8))
    if rows is not None:
        node["r"] = rows
    return node


def _column(values: list[Any], enc: Encoder) -> dict[str, Any] | None:
    if type(values[0]) in _SCALARS:
        for v in values:
            t = type(v)
            if t not in _SCALARS or (t is int and not -(2**63) <= v < 2**64):
                return None
        return {"v": values}
    # held by their object's state only (counted before a local name holds one)
    if type(values[0]) is not np.ndarray or _max_refs(values) > _ALONE_IN_DICT:
        return None
    first = values[0]
    if first.ndim < 1:
        return None
    dt, tail = first.dtype, first.shape[1:]
    if dt.hasobject or dt.kind == "T":
        return None
    for v in values:
        if type(v) is not np.ndarray or v.dtype != dt or v.shape[1:] != tail:
            return None
    return {
        "d": dtype_to_json(dt, enc),
        "s": list(tail),
        "l": [v.shape[0] for v in values],
        "arrays": values,
    }


def _int_list(value: Any, n: int, dec: Decoder, what: str) -> list[int]:
    if (
        type(value) is not list
        or len(value) != n
        or not all(type(x) is int and 0 <= x < 2**62 for x in value)
    ):
        raise dec.fail(f"an object table's {what} must be {n} non-negative integers")
    return value


@register("objtab")
class ObjectTableHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via Encoder
        raise enc.fail("object tables are made by the encoder, not by type")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        cls = dec.type_of(node)
        if isinstance(cls, ReplacedType):
            raise dec.fail(
                f"an object table of {cls.name}, a class the installed library no longer has; "
                "load the file with the library version that wrote it"
            )
        if not isinstance(cls, type):
            raise dec.fail(f"an object table names {cls!r}, which is not a class")
        n = dec.field(node, "n", int)
        if not 0 <= n <= dec.max_items:
            raise dec.fail(f"an object table declares {n} objects")
        keys = dec.field(node, "k", list)
        cols = dec.field(node, "c", list)
        if (
            len(keys) != len(cols)
            or len(keys) > 4096
            or not all(type(k) is str for k in keys)
            or len(set(keys)) != len(keys)
        ):
            raise dec.fail("an object table needs distinct str attribute names, one per column")
        columns: dict[str, Any] = {}
        lengths: dict[str, np.ndarray[Any, Any]] = {}
        for key, col in zip(keys, cols, strict=True):
            if type(col) is not dict:
                raise dec.fail("an object table column must be an object")
            if "v" in col:
                values = dec.field(col, "v", list)
                if len(values) != n or not all(type(v) in _SCALARS for v in values):
                    raise dec.fail(f"column {key!r} of an object table needs {n} scalars")
                columns[key] = values
                continue
            dt = dtype_from_json(col.get("d"), dec)
            tail = col.get("s")
            if (
                type(tail) is not list
                or len(tail) >= dec.reader.limits.max_ndim
                or not all(type(s) is int and 0 <= s < 2**31 for s in tail)
            ):
                raise dec.fail(f"column {key!r} of an object table has an invalid shape")
            counts = np.array(_int_list(col.get("l"), n, dec, "lengths"), dtype=np.int64)
            total = int(counts.sum())
            # structural: the validators below check these arrays in memory, and the
            # objects must keep exactly what was checked (never a mapped page)
            whole = dec.array(dec.field(col, "b", int), dt, (total, *tail), structural=True)
            columns[key] = whole
            lengths[key] = counts
            if whole.base is None:
                dec.row_sources[id(whole)] = whole
        validate = table_validator_of(cls)
        if validate is not None:
            validate(columns, lengths, n, dec)
        name = f"{cls.__module__}.{cls.__qualname__}"
        sliced = [(k, np.concatenate(([0], np.cumsum(c))).tolist()) for k, c in lengths.items()]
        scalars = [k for k in keys if k not in lengths]
        objs: list[Any] = []
        new: Any = cls.__new__
        for i in range(n):
            parts = {k: columns[k][b[i] : b[i + 1]] for k, b in sliced}
            state = {k: columns[k][i] for k in scalars}
            state.update(parts)
            state = migrate_state(name, state, dec)
            # the table validator checked these very slices; anything else (no
            # table validator, or a migration that replaced an array) is checked
            # object by object, with the validators of every base class
            if validate is None or not all(state.get(k) is v for k, v in parts.items()):
                state = validate_state_of(cls, [], state, dec)
            obj = new(cls)
            set_state(obj, state, dec.fail)
            objs.append(obj)
        rows = node.get("r")
        if rows is None:
            return objs
        if type(rows) is not list or len(rows) > dec.max_items:
            raise dec.fail("an object table's rows must be a list")
        sizes = _int_list(rows, len(rows), dec, "row lengths")
        if sum(sizes) != n:
            raise dec.fail("an object table's rows do not add up to its objects")
        out: list[Any] = []
        at = 0
        for size in sizes:
            out.append(objs[at : at + size])
            at += size
        return out
