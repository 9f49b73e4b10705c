"""Object tables: many objects of one class, stored column by column.

A gradient-boosting model holds hundreds of ``TreePredictor`` objects, each a
dict of three small arrays; a random forest holds hundreds of decision trees,
each with a compiled ``Tree``. As one node per object (and one buffer per
array) the manifest, the buffer table and the per-object work grow with their
number. An ``objtab`` node stores such a list once: the class, the attribute
names, and one column per attribute:

* ``v``: a JSON list of scalars;
* ``d``/``s``/``l``/``b``: every object's array end to end in one buffer, with
  each object's number of rows;
* ``sc``/``b``: numpy scalars of one dtype (``n_classes_``);
* ``o``: a nested table (each tree's ``Tree``);
* ``x``: one node for a value every object holds (the ``RandomState`` all trees
  of a gradient boosting share), decoded once and shared as a memo reference is;

plus ``a``, constructor-argument columns, for classes rebuilt as ``cls(*args)``
(node kind ``red``, such as ``Tree``).

A list becomes a table only when that is safe:

* it holds at least :data:`TABLE_MIN` objects of exactly one class that the
  object handler would store as ``obj`` or ``red`` nodes with a dict state (no
  list or dict items), or lists of them (``HistGradientBoosting._predictors``);
* every state has the same attribute names, and each attribute has one of the
  column kinds above for every object (same dtype and trailing shape);
* no object, row or array in it is referenced from anywhere else (checked by
  reference count), so that storing them by value cannot break an identity the
  ``memo`` mechanism would have kept. Nothing is written before the whole
  table qualifies; anything else is stored node by node.

On load, a *table validator* (``register_table_validator``) checks all objects
of a class at once and the objects get row views of its columns; a class
without one is validated object by object, and its large columns are read
object by object (``Reader.stream``), so that a class that copies its arrays
never has the whole column in memory beside the copies. The audit is the same
either way: the class is a row of the ``types`` table, of its node kind.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..construction import (
    ClassPlan,
    build,
    check_callable_value,
    check_methods_allowed,
    check_names,
    plan_for,
)
from ..registry import (
    ReplacedType,
    handler_for_type,
    migrations_of,
    reduce_state,
    register,
    register_list_encoder,
    table_validator_of,
)
from .numpy_ import dtype_from_json, dtype_to_json
from .objects import _state_of, is_reference

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder
    from ..reader import BufferStream

__all__ = ["TABLE_MIN", "encode_items", "encode_table"]

#: lists shorter than this are stored node by node (a table saves nothing on a few)...
TABLE_MIN = 16
#: ...unless a table validator checks some class of the table (a forest of 10 trees): one
#: vectorised check then costs less than a few per-object ones. Measured (forests and
#: gradient boostings of 2-12 trees, depth 3 and unbounded): the table loads slower for
#: 2 trees, as fast for 3 and faster from 4 on (0.38 against 0.48 ms). From 5, so that
#: smaller ensembles (and the node-by-node checks, which old files need) stay in use
TABLE_MIN_VALIDATED = 5
_SCALARS = (type(None), bool, int, float, str)
_SCALAR_TYPES = frozenset(_SCALARS)
_INT_ONLY = frozenset({int})


def _refs(items: Sequence[Any]) -> list[int]:
    """The reference count of each of ``items`` (as seen from here)."""
    return [sys.getrefcount(x) for x in items]


def _by_key(states: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each attribute's values, one tuple per attribute in the states' key order, last
    attribute first (to be popped): a transposition in C. The rows it is made from are
    gone when it returns, so that each value is held by its state and its tuple only."""
    out = list(zip(*[tuple(s.values()) for s in states], strict=True))
    out.reverse()
    return out


# what _refs sees for an object held by nothing but the one container it is read
# from (a list; a dict or tuple listed in turn): measured, not assumed, as it
# differs between Python versions
_ALONE_IN_LIST = _refs([object()])[0]
#: ...and for a value of a state, in its column (made the way _plan makes columns)
_probe = [{"x": object()}]
_ALONE_IN_STATE = _refs(_by_key(_probe)[0])[0]
del _probe

#: what one object of a table is counted as against the load's budget (an instance
#: and its attribute dict; Limits.max_expansion)
TABLE_OBJECT_COST = 8 * 64

#: object tables nest (a forest's trees hold a Tree each) this deep at most
MAX_NESTING = 4


def _flatten(items: list[Any]) -> tuple[list[Any], list[int] | None] | None:
    """The objects of a list, or of a list of lists (with the row lengths)."""
    if type(items[0]) is not list:
        return items, None
    # the rows are stored by value too (counted before a loop variable holds one)
    if max(_refs(items)) > _ALONE_IN_LIST:
        return None
    rows: list[int] = []
    flat: list[Any] = []
    for row in items:
        if type(row) is not list:
            return None
        rows.append(len(row))
        flat.extend(row)
    return flat, rows


def _tabular(x: Any) -> bool:
    """Whether ``x``'s class could head an object table: one the object handler
    stores (not a scalar, a type with a handler of its own, or a reference)."""
    t = type(x)
    return t not in _SCALARS and handler_for_type(t) is None and not is_reference(x)


def _head(items: list[Any]) -> Any:
    """The first object of a list, or of a list of rows (None for an empty first row)."""
    if type(items[0]) is list:
        return items[0][0] if items[0] else None
    return items[0]


@register_list_encoder
def encode_table(items: list[Any], enc: Encoder) -> dict[str, Any] | None:
    """An ``objtab`` node for the list ``items``, or ``None`` if it does not qualify."""
    return encode_items(items, enc, held=0)


def encode_items(items: list[Any], enc: Encoder, *, held: int) -> dict[str, Any] | None:
    """An ``objtab`` node for ``items``, or ``None`` if it does not qualify.

    ``held``: references to each item the caller knows of besides ``items`` (an object
    array's items are held by the array and by the list of them). Nothing is written
    unless the whole table (nested tables included) qualifies.
    """
    # every list of the model passes here: the class of the first item rules out most
    # (numbers, strings, arrays, rows of them) before anything walks the list. No
    # local name may hold an item: it would count as a reference in _refs below
    if not _tabular(_head(items)):
        return None
    found = _flatten(items)
    if found is None:
        return None
    flat, rows = found
    if len(flat) < TABLE_MIN_VALIDATED:
        return None
    # each object must be reachable through this list only
    allowed = _ALONE_IN_LIST + held + (1 if rows is not None else 0)
    if max(_refs(flat)) > allowed:
        return None
    node = _plan(flat, enc, 0)
    if node is None or (len(flat) < TABLE_MIN and not _table_validated(node)):
        return None
    # a value shared by every object is encoded here: a path back to this list is a
    # cycle, refused as the node-by-node form would refuse it
    enc._active.add(id(items))
    try:
        _emit(node, enc)
    finally:
        enc._active.discard(id(items))
    if rows is not None:
        node["r"] = rows
    return node


def _plan(flat: Sequence[Any], enc: Encoder, depth: int) -> dict[str, Any] | None:
    """The table of ``flat`` (private objects of one class) with its arrays still
    in memory, or ``None``."""
    cls = type(flat[0])
    if (
        depth > MAX_NESTING
        or not _tabular(flat[0])
        or any(type(x) is not cls for x in flat)
        or any(id(x) in enc._memo for x in flat)
    ):
        return None
    module, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname or module in ("__main__", "__mp_main__"):
        return None  # the object handler explains what to do
    name = f"{module}.{qualname}"
    states: list[dict[str, Any]] = []
    arglists: list[tuple[Any, ...]] = []
    kind = None
    for x in flat:
        k, args, state, listitems, dictitems, _ = _state_of(x, enc)
        if kind is None:
            kind = k
        if k != kind or k not in ("obj", "red") or listitems is not None or dictitems is not None:
            return None
        if k == "obj" and args:
            return None
        state = reduce_state(name, x, state)
        if type(state) is not dict:
            return None
        states.append(state)
        arglists.append(args)
    keys = list(states[0])
    if not all(type(k) is str for k in keys) or any(list(s) != keys for s in states):
        return None
    columns = []
    by_key = _by_key(states)
    dicts: list[dict[str, Any]] | None = None
    for key in keys:
        values = by_key.pop()
        extra = None
        if type(values[0]) not in _SCALAR_TYPES:
            # a state that copies the instance dict (sklearn's __getstate__) holds
            # each value a second time, through the instance
            if dicts is None:
                dicts = [getattr(x, "__dict__", None) or {} for x in flat]
            extra = [1 if d.get(key) is v else 0 for d, v in zip(dicts, values, strict=True)]
        col = _column(values, extra, enc, depth)
        if col is None:
            return None
        columns.append(col)
    node: dict[str, Any] = {"t": (module, qualname, kind), "n": len(flat), "k": keys, "c": columns}
    node["cls"] = cls  # for _table_validated; not written
    if kind == "red":
        width = len(arglists[0])
        if width > 64 or any(len(a) != width for a in arglists):
            return None
        acols = []
        for i in range(width):
            values = tuple([a[i] for a in arglists])
            col = _column(values, None, enc, depth)
            if col is None:
                return None
            acols.append(col)
        node["a"] = acols
    return node


def _column(
    values: tuple[Any, ...], extra: list[int] | None, enc: Encoder, depth: int
) -> dict[str, Any] | None:
    """The column of one attribute's ``values`` (one per object), or ``None``.

    ``extra[i]``: references to ``values[i]`` known besides its state and ``values``
    (the instance dict a copied state came from); ``None``: none."""
    t = type(values[0])
    if t not in _SCALARS and len(values) > 1 and all(v is values[0] for v in values):
        # one object every state holds (the RandomState all of a gradient boosting's
        # trees share): stored once, as any other reference to it is, and shared again
        return {"same": values[0]}
    if t in _SCALARS:
        for v in values:
            t = type(v)
            if t not in _SCALARS or (t is int and not -(2**63) <= v < 2**64):
                return None
        return {"v": list(values)}
    # held by their object's state (or arguments) only: counted before a local
    # name holds one of them
    refs = _refs(values)
    if extra is None:
        if max(refs) > _ALONE_IN_STATE:
            return None
    elif any(r > _ALONE_IN_STATE + e for r, e in zip(refs, extra, strict=True)):
        return None
    first = values[0]
    if t is np.ndarray:
        dt, tail = first.dtype, first.shape[1:]
        if first.ndim < 1 or dt.hasobject or dt.kind == "T":
            return None
        for v in values:
            # `is` first: comparing structured dtypes field by field is slow
            if type(v) is not np.ndarray or (v.dtype is not dt and v.dtype != dt):
                return None
            if v.shape[1:] != tail:
                return None
        return {
            "d": dtype_to_json(dt, enc),
            "s": list(tail),
            "l": [v.shape[0] for v in values],
            "arrays": values,
        }
    if isinstance(first, np.generic):
        dt = first.dtype
        if dt.kind not in "biufc" or not dt.isnative or t is not dt.type:
            return None
        if any(type(v) is not t for v in values):
            return None
        return {"sc": dtype_to_json(dt, enc), "scalars": values}
    sub = _plan(values, enc, depth + 1)
    return None if sub is None else {"o": sub}


def _table_validated(node: dict[str, Any]) -> bool:
    """Whether a table validator checks the class of a planned table or of a table it
    nests (whether a short list is worth a table)."""
    return table_validator_of(node["cls"]) is not None or any(
        "o" in col and _table_validated(col["o"]) for col in (*node["c"], *node.get("a", ()))
    )


def _emit(node: dict[str, Any], enc: Encoder) -> None:
    """Write the buffers of a planned table and name its class in the types table."""
    del node["cls"]
    module, qualname, kind = node["t"]
    node["t"] = enc.type_ref(module, qualname, kind)
    for col in (*node["c"], *node.get("a", ())):
        if "arrays" in col:
            # end to end as bytes: the arrays share one dtype, and concatenating
            # structured arrays as such would promote their dtypes pairwise, slowly
            # (as bytes of any shape: the sink flattens them)
            parts = [np.ascontiguousarray(a).view(np.uint8) for a in col.pop("arrays")]
            col["b"] = enc.sink.add_parts(parts)
        elif "scalars" in col:
            dt = np.dtype(type(col["scalars"][0]))
            col["b"] = enc.buffer(np.array(col.pop("scalars"), dtype=dt).view(np.uint8))
        elif "o" in col:
            _emit(col["o"], enc)
        elif "same" in col:
            col["x"] = enc.encode_child(col.pop("same"), "[shared by a table]")


def _int_list(value: Any, n: int, dec: Decoder, what: str) -> list[int]:
    if (
        type(value) is not list
        or len(value) != n
        or (n and not (_INT_ONLY.issuperset(map(type, value)) and min(value) >= 0))
        or (n and max(value) >= 2**62)
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
        objs = _decode_table(node, dec, 0)
        rows = node.get("r")
        if rows is None:
            return objs
        if type(rows) is not list or len(rows) > dec.max_items:
            raise dec.fail("an object table's rows must be a list")
        sizes = _int_list(rows, len(rows), dec, "row lengths")
        if sum(sizes) != len(objs):
            raise dec.fail("an object table's rows do not add up to its objects")
        out: list[Any] = []
        at = 0
        for size in sizes:
            out.append(objs[at : at + size])
            at += size
        return out


def _decode_table(node: Any, dec: Decoder, depth: int) -> list[Any]:
    if type(node) is not dict or depth > MAX_NESTING:
        raise dec.fail("an object table is malformed or nests too deeply")
    cls = dec.type_of(node)
    kind = dec.reader.types[node["t"]][2]
    if isinstance(cls, ReplacedType):
        raise dec.fail(
            f"an object table of {cls.name}, a class the installed library no longer has; "
            "load the file with the library version that wrote it"
        )
    if not isinstance(cls, type) or kind not in ("obj", "red") or (kind == "red") != ("a" in node):
        raise dec.fail(f"an object table names {cls!r} of kind {kind!r}, not a class it can build")
    n = dec.field(node, "n", int)
    if not 0 <= n <= dec.max_items:
        raise dec.fail(f"an object table declares {n} objects")
    # each object is an instance with its own attribute dict
    dec.reader.charge(TABLE_OBJECT_COST * n, f"an object table of {n} objects")
    keys = dec.field(node, "k", list)
    cols = dec.field(node, "c", list)
    if (
        len(keys) != len(cols)
        or len(keys) > 4096
        or not all(type(k) is str for k in keys)
        or len(set(keys)) != len(keys)
    ):
        raise dec.fail("an object table needs distinct str attribute names, one per column")
    validate = table_validator_of(cls)
    if validate is not None and _rows_per_object(cols, n) > TABLE_VALIDATOR_MAX_ROWS:
        # big objects (a forest of deep trees): checking them one by one costs little
        # per object, and lets their columns stream (see below); the one-pass table
        # check would hold every column whole beside the objects' copies
        validate = None
    columns: dict[str, Any] = {}
    lengths: dict[str, np.ndarray[Any, Any]] = {}
    for key, col in zip(keys, cols, strict=True):
        # without a table validator, each object's arrays are checked on their own:
        # a large column is then read object by object, so that a class that copies
        # its arrays (a Tree) never has the whole column in memory beside its copies
        columns[key] = _decode_column(key, col, n, dec, depth, lengths, stream=validate is None)
    arg_columns: list[Any] = []
    arg_lengths: dict[str, np.ndarray[Any, Any]] = {}
    if kind == "red":
        acols = dec.field(node, "a", list)
        if len(acols) > 64:
            raise dec.fail("an object table has too many constructor arguments")
        arg_columns = [
            _decode_column(f"<arg {i}>", c, n, dec, depth, arg_lengths) for i, c in enumerate(acols)
        ]
        arg_bounds = [
            np.concatenate(([0], np.cumsum(arg_lengths[f"<arg {i}>"]))).tolist()
            if f"<arg {i}>" in arg_lengths
            else None
            for i in range(len(acols))
        ]
    if validate is not None:
        # constructor arguments are columns "<arg 0>", "<arg 1>", ... for the validator
        validate(
            {**columns, **{f"<arg {i}>": c for i, c in enumerate(arg_columns)}},
            {**lengths, **arg_lengths},
            n,
            dec,
        )
    plan = plan_for(cls)
    # a migration that says it leaves every object of this table as it is (the file
    # was written by the installed library: each object's own recorded version, read
    # from its column, not the file's) is not run object by object
    migrations = [fn for fn in migrations_of(plan.name) if not _unchanged_by(fn, columns)]
    # every object has the same attribute names: checked once (unless a migration
    # rewrites states, whose names are then checked object by object)
    check_names(plan, keys, dec.fail)
    # hundreds of objects: everything that does not depend on the object is settled
    # here, once (the loop below is most of a forest's or a boosted model's load)
    check_methods_allowed(plan, dec.policy, dec.fail)
    slots_checked = not migrations and _slots_checked(plan, columns, dec)
    whole_keys = [k for k in keys if k not in lengths]
    # every column holds n values (checked as decoded)
    whole = zip(*(columns[k] for k in whole_keys), strict=True) if whole_keys else None
    sliced = [
        (k, columns[k], np.concatenate(([0], np.cumsum(c))).tolist(), type(columns[k]) is _Streamed)
        for k, c in lengths.items()
    ]
    objs: list[Any] = []
    for i in range(n):
        state = dict(zip(whole_keys, next(whole), strict=True)) if whole is not None else {}
        for k, col, b, streamed in sliced:
            state[k] = col.take(b[i + 1] - b[i]) if streamed else col[b[i] : b[i + 1]]
        # the table validator checked these very values; anything else (no table
        # validator, or a migration that changed the state) is checked object by
        # object, with the validators of every base class, as an obj node would be
        checked = validate is not None
        if migrations:
            before = state
            for fn in migrations:
                state = fn(state, dec)
            kept = (
                type(state) is dict
                and len(state) == len(before)
                and all(state.get(k) is v for k, v in before.items())
            )
            checked = checked and kept
            del before
        args: list[Any] = []
        if kind == "red":
            args = [
                col[i] if b is None else col[b[i] : b[i + 1]]
                for col, b in zip(arg_columns, arg_bounds, strict=True)
            ]
        objs.append(
            build(
                dec,
                cls,
                kind,
                args,
                state,
                plan=plan,
                migrated=True,
                validated=checked,
                names_checked=not migrations,
                slots_checked=slots_checked,
                methods_checked=True,
            )
        )
        # this object's rows are now held only by what it kept of them (see _Streamed)
        del state
    for col in columns.values():
        if type(col) is _Streamed:
            col.stream.close()
    return objs


def _unchanged_by(migration: Any, columns: dict[str, Any]) -> bool:
    """Whether ``migration`` says, from the table's columns, that it returns every
    object's state as it is (its optional ``unchanged_for_columns``)."""
    test = getattr(migration, "unchanged_for_columns", None)
    return test is not None and test(columns) is True


def _slots_checked(plan: ClassPlan, columns: dict[str, Any], dec: Decoder) -> bool:
    """Check every object's callable slots column by column (as ``build`` would,
    object by object); False if some column must be left to the per-object check."""
    for slot, allowed in plan.slots.items():
        col = columns.get(slot, _ABSENT)
        if col is _ABSENT:
            continue
        if type(col) is list:
            for value in col:
                check_callable_value(value, allowed, f"{plan.name}.{slot}", dec.fail)
        elif type(col) is not np.ndarray or col.dtype.kind == "O":
            # arrays of numbers pass as they are; anything else, object by object
            return False
    return True


_ABSENT = object()


def _decode_column(
    key: str,
    col: Any,
    n: int,
    dec: Decoder,
    depth: int,
    lengths: dict[str, np.ndarray[Any, Any]],
    *,
    stream: bool = False,
) -> Any:
    """A column's values: a list of n items, or (array columns) the whole array,
    with each object's length put in ``lengths[key]``."""
    if type(col) is not dict:
        raise dec.fail("an object table column must be an object")
    if "v" in col:
        values = dec.field(col, "v", list)
        if len(values) != n or not _SCALAR_TYPES.issuperset(map(type, values)):
            raise dec.fail(f"column {key!r} of an object table needs {n} scalars")
        return values
    if "x" in col:
        # one value every object holds, as a memo reference would share it
        value = dec.decode(col["x"])
        if n > 1:
            dec.shared(value)
        return [value] * n
    if "o" in col:
        objs = _decode_table(col["o"], dec, depth + 1)
        if len(objs) != n:
            raise dec.fail(f"column {key!r} of an object table needs {n} objects")
        return objs
    if "sc" in col:
        dt = dtype_from_json(col.get("sc"), dec)
        if dt.kind not in "biufc" or not dt.isnative:
            raise dec.fail(f"column {key!r} of an object table has an invalid scalar dtype")
        return dec.array(dec.field(col, "b", int), dt, (n,), structural=True)
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
    index = dec.field(col, "b", int)
    lengths[key] = counts
    if stream and 0 <= index < len(dec.reader.buffers):
        entry = dec.reader.buffers[index]
        if entry.codec == "raw" and entry.length >= STREAM_FROM:
            most = int(counts.max()) if n else 0
            return _Streamed(dec.stream(index, dt, (total, *tail)), dt, tuple(tail), most)
    # structural: validators check these arrays in memory, and the objects must
    # keep exactly what was checked (never a mapped page)
    whole = dec.array(index, dt, (total, *tail), structural=True)
    if whole.base is None:
        dec.row_sources[id(whole)] = whole
    return whole


#: array columns at least this large are read object by object when they can be
STREAM_FROM = 1 << 20


#: how much larger than an object's rows a reused scratch buffer may be
_SLACK = 1 << 16


#: a table validator runs only for tables whose array columns hold at most this many
#: rows per object on average; bigger objects are checked one by one. Measured: a
#: 300-tree forest of ~4,200 nodes per tree loaded in 2.4x the time and 2x the memory
#: with the one-pass check, which pays for forests of small trees (~100 nodes each)
TABLE_VALIDATOR_MAX_ROWS = 1000


def _rows_per_object(cols: list[Any], n: int) -> float:
    """The most rows per object of any array column (its declared lengths, not yet
    checked: this only chooses between two complete ways of checking)."""
    most = 0.0
    for col in cols:
        counts = col.get("l") if type(col) is dict else None
        if type(counts) is list and n:
            most = max(most, sum(c for c in counts if type(c) is int and c > 0) / n)
    return most


class _Streamed:
    """An array column read object by object.

    Each ``take`` reads the next object's rows into a scratch buffer that is
    reused when the previous object let go of its rows: a class that copies its
    arrays (a ``Tree`` copies nodes and values into memory of its own) then
    reads every object into the same warm pages, instead of faulting in fresh
    memory for each and freeing it right after. Whether anything still holds
    the rows is read off the buffer's reference count: every array, view or
    memoryview of it holds a reference, so a class that keeps its rows keeps the
    buffer, and the next object gets a new one.
    """

    def __init__(
        self, stream: BufferStream, dtype: np.dtype[Any], tail: tuple[int, ...], most: int
    ) -> None:
        self.stream = stream
        self.dtype = dtype
        self.tail = tail
        self._row_bytes = dtype.itemsize * math.prod(tail)
        #: the largest object's rows (known from the lengths): one size fits all
        self._most = most
        self._scratch: np.ndarray[Any, Any] | None = None
        self._free = 0

    def _new_scratch(self, size: int) -> np.ndarray[Any, Any]:
        self._scratch = buf = np.empty(max(size, 1), dtype=np.uint8)
        # references now: self._scratch, buf, getrefcount's argument (as in take)
        self._free = sys.getrefcount(buf)
        return buf

    def take(self, rows: int) -> np.ndarray[Any, Any]:
        nbytes = rows * self._row_bytes
        buf = self._scratch
        # any reference beyond those counted when the buffer was new is a holder (the
        # count is compared with one taken the same way, not with a constant: what
        # getrefcount counts differs between Python versions)
        if buf is None or sys.getrefcount(buf) > self._free or buf.nbytes > 2 * nbytes + _SLACK:
            # the first object, the last one kept its rows, or this one is much
            # smaller (were it to keep its rows, it would keep the whole buffer):
            # exactly what this one needs
            buf = self._new_scratch(nbytes)
        elif buf.nbytes < nbytes:
            # released but too small: grow geometrically, never past the largest
            # object nor twice this one, so that reuse stays cheap and an object
            # that keeps its rows never holds more than twice their size
            size = min(max(nbytes, 2 * buf.nbytes), self._most * self._row_bytes, 2 * nbytes)
            buf = self._new_scratch(max(size, nbytes))
        flat: Any = buf[:nbytes]
        if nbytes:
            self.stream.read_into(memoryview(flat))
        return flat.view(self.dtype).reshape((rows, *self.tail))
