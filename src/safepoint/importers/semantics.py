"""What each allowlisted call of a pickle stream means, decided from the inert graph.

:func:`plan_call` classifies one :class:`Call` node into a :class:`Plan`: which
names it needs and in which role, which child nodes hold values, and the
already-validated structural parts (shapes, dtypes) the constructor will use.
Anything that is not one of these shapes is refused; there is no generic
"call this callable" plan.

Roles of a name:

``known``  a callable whose meaning safepoint implements itself (numpy's array
           and dtype reconstructors, ``copyreg`` helpers, a few builtins);
``class``  a class instantiated with ``cls.__new__(cls)`` then given its state,
           trusted through :class:`~safepoint.format.trust.TrustPolicy` (kind ``obj``);
``call``   a class called with arguments, ``cls(*args)`` (REDUCE on a class such
           as ``sklearn.tree._tree.Tree``), trusted as kind ``red``;
``ref``    a function or class kept as a value, trusted as kind ``ref``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError
from .adapters_ import ADAPTED
from .nodes import BytesNode, Call, DictNode, GlobalRef, ListNode, TupleNode
from .numpy_build import build_dtype, check_shape, fail, is_global, plain, plain_bytes

__all__ = ["KNOWN_FUNCTIONS", "SPARSE_CLASSES", "Plan", "plan_call", "sparse_format"]

KNOWN_FUNCTIONS: dict[tuple[str, str], str] = {
    ("numpy.core.multiarray", "_reconstruct"): "ndarray",
    ("numpy._core.multiarray", "_reconstruct"): "ndarray",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "dtype"): "dtype",
    ("numpy.ma.core", "_mareconstruct"): "masked",
    ("numpy.ma.core", "MaskedConstant"): "masked_constant",
    ("copyreg", "_reconstructor"): "reconstructor",
    ("copyreg", "__newobj__"): "newobj",
    ("copyreg", "__newobj_ex__"): "newobj_ex",
    ("_codecs", "encode"): "bytes",
    ("collections", "OrderedDict"): "ordereddict",
    ("collections", "defaultdict"): "defaultdict",
    ("collections", "Counter"): "counter",
    ("numpy.random._pickle", "__bit_generator_ctor"): "bitgen",
    ("numpy.random._pickle", "__generator_ctor"): "generator",
    ("numpy.random._pickle", "__randomstate_ctor"): "randomstate",
}
#: numpy's bit generators, by class name; created empty, then given their state
BIT_GENERATORS: dict[str, tuple[str, str]] = {
    "MT19937": ("numpy.random._mt19937", "MT19937"),
    "PCG64": ("numpy.random._pcg64", "PCG64"),
    "PCG64DXSM": ("numpy.random._pcg64", "PCG64DXSM"),
    "Philox": ("numpy.random._philox", "Philox"),
    "SFC64": ("numpy.random._sfc64", "SFC64"),
}
_SEED_SEQUENCE = ("numpy.random.bit_generator", "SeedSequence")
#: builtins a stream may call, each with its own argument check in the constructor
BUILTIN_CALLS = frozenset(
    {
        "set",
        "frozenset",
        "bytearray",
        "bytes",
        "slice",
        "complex",
        "range",
        "list",
        "tuple",
        "dict",
        "int",
        "float",
        "str",
        "bool",
        "object",
    }
)
#: dimensions of an array (numpy itself allows 64; safepoint files allow 32)
MAX_NDIM = 32
_SPARSE_FORMATS = ("csr", "csc", "coo", "bsr", "dia")
#: scipy.sparse classes, under their module paths of scipy >= 1.8 and before
SPARSE_CLASSES: dict[tuple[str, str], tuple[str, bool]] = {}
for _fmt in _SPARSE_FORMATS:
    for _kind in ("matrix", "array"):
        SPARSE_CLASSES[(f"scipy.sparse._{_fmt}", f"{_fmt}_{_kind}")] = (_fmt, _kind == "array")
    SPARSE_CLASSES[(f"scipy.sparse.{_fmt}", f"{_fmt}_matrix")] = (_fmt, False)
#: default-dict factories that may be named
_FACTORIES = frozenset({"list", "dict", "set", "int", "float", "str", "tuple", "frozenset"})


def sparse_format(ref: Any) -> tuple[str, bool] | None:
    if isinstance(ref, GlobalRef):
        return SPARSE_CLASSES.get((ref.module, ref.name))
    return None


class _DtypeCache(threading.local):
    cache: dict[int, Any] | None = None


_DTYPES = _DtypeCache()


@dataclass
class Plan:
    """How one call node will be built (see the module docstring for roles)."""

    kind: str
    names: list[tuple[GlobalRef, str]] = field(default_factory=list)
    children: list[Any] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)


def _args(call: Call) -> list[Any]:
    return list(call.args.items)


def _no_ops(call: Call, what: str) -> None:
    if call.ops:
        raise fail(f"{what} is followed by {call.ops[0][0].upper()}, which it does not take")


def _no_container_ops(call: Call, name: str) -> None:
    """SETITEMS / APPENDS on an object: pickle would call the object's own
    ``__setitem__`` / ``extend`` / ``append``, methods of a class chosen by the file."""
    for op, _ in call.ops:
        if op != "build":
            raise FormatError(
                f"the pickle applies {op.upper()} to an instance of {name}: unpickling would "
                "call that object's own methods (__setitem__, extend, append); refused (only "
                "builtin and collections containers take items; a dict or list subclass must "
                "be converted to a plain dict or list first)"
            )


def _op_children(call: Call) -> list[Any]:
    out: list[Any] = []
    for op, payload in call.ops:
        if op == "build":
            out.append(payload)
        elif op == "appends":
            out.extend(payload)
        else:
            for k, v in payload:
                out.append(k)
                out.append(v)
    return out


def _instance(call: Call, cls: Any, args: list[Any], kwargs: Any = None) -> Plan:
    """``cls.__new__(cls, *args)``, then the call's operations."""
    if not isinstance(cls, GlobalRef):
        raise fail("an object is created from something that is not a class name")
    sp = sparse_format(cls)
    if sp is not None:
        return _sparse(call, cls, sp, args)
    if cls.module == "builtins" and cls.name in BUILTIN_CALLS:
        return _builtin(call, cls, args, kwargs)
    adapted = ADAPTED.get((cls.module, cls.name))
    if adapted is not None:
        return _adapted(call, cls, adapted, args, kwargs)
    known = KNOWN_FUNCTIONS.get((cls.module, cls.name))
    if known in ("ordereddict", "counter") and not args and kwargs is None:
        return _collection(call, cls, known, [])
    _no_container_ops(call, cls.qualified)
    children = [*args, *_op_children(call)]
    if kwargs is not None:
        children.append(kwargs)
    return Plan(
        "instance",
        [(cls, "class")],
        children,
        {"cls": cls, "args": args, "kwargs": kwargs},
    )


def _adapted(
    call: Call, cls: GlobalRef, adapted: tuple[str, str], args: list[Any], kwargs: Any
) -> Plan:
    """An XGBoost / LightGBM booster or wrapper: created empty, given one state, and
    rebuilt through safepoint's adapter (see :mod:`safepoint.importers.adapters_`)."""
    _no_container_ops(call, cls.qualified)
    if args or kwargs is not None or len(call.ops) > 1:
        raise fail(f"{cls.qualified} must be created empty and given one state")
    state = call.ops[0][1] if call.ops else None
    if state is not None and not isinstance(state, DictNode):
        raise fail(f"the state of {cls.qualified} must be a dict")
    return Plan(
        "adapted",
        [(cls, "known")],
        [state] if state is not None else [],
        {"cls": cls, "framework": adapted[0], "what": adapted[1], "state": state},
    )


def _sparse(call: Call, cls: GlobalRef, sp: tuple[str, bool], args: list[Any]) -> Plan:
    if args or len(call.ops) != 1 or call.ops[0][0] != "build":
        raise fail(f"{cls.qualified} must be created empty and given one state")
    state = call.ops[0][1]
    if not isinstance(state, DictNode):
        raise fail(f"the state of {cls.qualified} must be a dict")
    return Plan("sparse", [(cls, "known")], [state], {"format": sp[0], "array": sp[1]})


def _builtin(call: Call, cls: GlobalRef, args: list[Any], kwargs: Any) -> Plan:
    if kwargs is not None:
        raise fail(f"builtins.{cls.name} is called with keyword arguments")
    if call.ops and not (
        cls.name in ("list", "dict", "set")
        and all(op in ("appends", "setitems") for op, _ in call.ops)
    ):
        ops = ", ".join(sorted({op.upper() for op, _ in call.ops}))
        raise fail(f"builtins.{cls.name} is followed by {ops}, which it does not take")
    return Plan(
        "builtin",
        [(cls, "known")],
        [*args, *_op_children(call)],
        {"name": cls.name, "args": args},
    )


_MATRIX = ("numpy", "matrix")
_MASKED = (("numpy.ma", "MaskedArray"), ("numpy.ma.core", "MaskedArray"))


def _array_state(
    call: Call, items: list[Any], names: list[tuple[GlobalRef, str]]
) -> tuple[dict[str, Any], list[Any]]:
    """(shape, dtype, fortran, raw) of an array state: parts and child nodes (object items)."""
    shape_node, dtype_node, fortran, raw = items
    shape = check_shape(plain(shape_node), MAX_NDIM)
    dtype = build_dtype(dtype_node, _DTYPES.cache)
    if type(fortran) is not bool:
        raise fail("the array order flag must be a bool")
    names.append((dtype_node.callee, "known"))
    parts = {"shape": shape, "dtype": dtype, "fortran": fortran, "raw": raw}
    if dtype.hasobject:
        if dtype.kind != "O":
            raise FormatError("structured arrays with object fields are not imported")
        if not isinstance(raw, ListNode):
            raise fail("an object array's data must be a list")
        return parts, list(raw.items)
    if plain_bytes(raw) is None and type(raw) is not str:
        raise fail("an array's data must be bytes")
    if isinstance(raw, Call):
        names.append((raw.callee, "known"))
    return parts, []


def _ndarray(call: Call, args: list[Any]) -> Plan:
    if len(args) != 3 or not is_global(args[0], ("numpy", "ndarray"), _MATRIX):
        sub = args[0].qualified if args and isinstance(args[0], GlobalRef) else "?"
        raise FormatError(
            f"the pickle holds an array of class {sub}: only numpy.ndarray, numpy.matrix "
            "and numpy.ma.MaskedArray are imported (convert other subclasses to ndarray first)"
        )
    if len(call.ops) != 1 or call.ops[0][0] != "build":
        raise fail("a numpy array needs exactly one state")
    state = call.ops[0][1]
    if not isinstance(state, TupleNode) or len(state.items) not in (4, 5):
        raise fail("a numpy array state must be a tuple of 4 or 5 items")
    items = state.items if len(state.items) == 4 else state.items[1:]
    if len(state.items) == 5 and state.items[0] != 1:
        raise fail(f"unknown numpy array state version {state.items[0]!r}")
    names = [(call.callee, "known"), (args[0], "known")]
    parts, children = _array_state(call, list(items), names)
    parts["matrix"] = is_global(args[0], _MATRIX)
    if parts["matrix"] and len(parts["shape"]) != 2:
        raise fail("a numpy matrix must be 2-D")
    return Plan("ndarray", names, children, parts)


def _masked(call: Call, args: list[Any]) -> Plan:
    """numpy.ma's ``_mareconstruct(MaskedArray, ndarray, (0,), 'b')`` + its 7-item state."""
    if (
        len(args) != 4
        or not is_global(args[0], *_MASKED)
        or not is_global(args[1], ("numpy", "ndarray"))
    ):
        raise FormatError("only plain numpy.ma.MaskedArray masked arrays are imported")
    if len(call.ops) != 1 or call.ops[0][0] != "build":
        raise fail("a masked array needs exactly one state")
    state = call.ops[0][1]
    if not isinstance(state, TupleNode) or len(state.items) != 7 or state.items[0] != 1:
        raise fail("a masked array state must be (1, shape, dtype, fortran, data, mask, fill)")
    names = [(call.callee, "known"), (args[0], "known"), (args[1], "known")]
    parts, children = _array_state(call, list(state.items[1:5]), names)
    mask = plain_bytes(state.items[5])
    if mask is None:
        raise fail("a masked array's mask must be bytes")
    if isinstance(state.items[5], Call):
        names.append((state.items[5].callee, "known"))
    mdtype = np.ma.make_mask_descr(parts["dtype"])
    count = 1
    for n in parts["shape"]:
        count *= n
    if len(mask) != count * mdtype.itemsize:
        raise fail("a masked array's mask does not match its shape")
    parts.update(mask=mask, mask_dtype=mdtype, fill=state.items[6])
    return Plan("masked", names, [*children, state.items[6]], parts)


def _frombuffer(call: Call, args: list[Any]) -> Plan:
    _no_ops(call, "numpy's _frombuffer")
    if len(args) != 4 or not isinstance(args[0], BytesNode):
        raise fail("numpy's _frombuffer needs (buffer, dtype, shape, order)")
    dtype = build_dtype(args[1], _DTYPES.cache)
    shape = check_shape(plain(args[2]), MAX_NDIM)
    order = args[3]
    if order not in ("C", "F"):
        raise fail(f"unknown array order {order!r}")
    return Plan(
        "frombuffer",
        [(call.callee, "known"), (args[1].callee, "known")],
        [],
        {"data": args[0].data, "dtype": dtype, "shape": shape, "order": order},
    )


def _scalar(call: Call, args: list[Any]) -> Plan:
    _no_ops(call, "a numpy scalar")
    if len(args) not in (1, 2):
        raise fail("a numpy scalar needs (dtype, data)")
    dtype = build_dtype(args[0], _DTYPES.cache)
    names = [(call.callee, "known"), (args[0].callee, "known")]
    if dtype.hasobject:
        if dtype.kind != "O" or len(args) != 2:
            raise fail("an object scalar needs its value")
        return Plan("scalar", names, [args[1]], {"dtype": dtype, "value": args[1]})
    data = plain_bytes(args[1]) if len(args) == 2 else b""
    if data is None and len(args) == 2 and type(args[1]) is str:
        data = args[1].encode("latin-1", "strict") if args[1].isascii() else None
    if data is None or len(data) != dtype.itemsize:
        raise fail(f"a numpy scalar of {dtype} needs {dtype.itemsize} bytes")
    return Plan("scalar", names, [], {"dtype": dtype, "data": bytes(data)})


def _sklearn_helper(call: Call, callee: GlobalRef, args: list[Any]) -> Plan | None:
    """scikit-learn's Cython pickling helpers, accepted only for a class of their own module."""
    if not callee.module.startswith("sklearn."):
        return None
    if callee.name == "newObj":
        # sklearn's binary trees and distance metrics: newObj(cls) is cls.__new__(cls)
        if len(args) == 1 and isinstance(args[0], GlobalRef) and args[0].module == callee.module:
            plan = _instance(call, args[0], [])
            plan.names.append((callee, "known"))
            return plan
        raise fail(f"{callee.qualified} may only create a class of its own module")
    prefix = "__pyx_unpickle_"
    if callee.name.startswith(prefix):
        _no_container_ops(call, callee.qualified)
        cls_name = callee.name[len(prefix) :]
        if (
            len(args) == 3
            and is_global(args[0], (callee.module, cls_name))
            and type(args[1]) is int
        ):
            return Plan(
                "pyx",
                [(args[0], "pyx"), (callee, "known")],
                [args[2], *_op_children(call)],
                {"cls": args[0], "checksum": args[1], "state": args[2]},
            )
        raise fail(f"{callee.qualified} may only rebuild {callee.module}.{cls_name}")
    return None


def plan_call(call: Call, dtypes: dict[int, Any] | None = None) -> Plan:
    """Classify ``call``; raises FormatError for shapes safepoint does not build.

    ``dtypes`` caches the dtypes already built from shared nodes (numpy scalars
    of one dtype all refer to the same memoized dtype node).
    """
    _DTYPES.cache = dtypes
    if call.joblib is not None:
        ja = call.joblib
        return Plan("joblib", [], [ja.nested] if ja.nested is not None else [], {"array": ja})
    callee = call.callee
    if not isinstance(callee, GlobalRef):
        raise FormatError(
            "the pickle calls something that is not a named global (the result of another "
            f"call, e.g. a getattr chain; found {type(callee).__name__}): refused"
        )
    args = _args(call)
    if call.how == "newobj":
        return _instance(call, callee, args, call.kwargs)
    if call.how == "inst":
        if args:
            return _class_call(call, callee, args)
        return _instance(call, callee, [])
    known = KNOWN_FUNCTIONS.get((callee.module, callee.name))
    if known == "reconstructor":
        # copyreg._reconstructor(cls, object, None): protocols 0-1 spelling of cls.__new__(cls)
        if len(args) != 3 or not is_global(args[1], ("builtins", "object")) or args[2] is not None:
            raise fail("copyreg._reconstructor is only accepted as (cls, object, None)")
        plan = _instance(call, args[0], [])
        plan.names += [(callee, "known"), (args[1], "known")]
        return plan
    if known in ("newobj", "newobj_ex"):
        if not args:
            raise fail(f"copyreg.{callee.name} needs a class")
        kwargs = None
        rest = args[1:]
        if known == "newobj_ex":
            if len(args) != 3 or not isinstance(args[1], TupleNode):
                raise fail("copyreg.__newobj_ex__ needs (cls, args, kwargs)")
            rest, kwargs = list(args[1].items), args[2]
        plan = _instance(call, args[0], rest, kwargs)
        plan.names.append((callee, "known"))
        return plan
    if known == "ndarray":
        return _ndarray(call, args)
    if known == "masked":
        return _masked(call, args)
    if known == "masked_constant":
        _no_ops(call, "numpy.ma.masked")
        if args:
            raise fail("numpy.ma.masked takes no arguments")
        return Plan("masked_constant", [(callee, "known")])
    if known == "frombuffer":
        return _frombuffer(call, args)
    if known == "scalar":
        return _scalar(call, args)
    if known == "dtype":
        dt = build_dtype(call, _DTYPES.cache)
        return Plan("dtype", [(callee, "known")], [], {"dtype": dt})
    if known == "bytes":
        _no_ops(call, "_codecs.encode")
        if plain_bytes(call) is None:
            raise fail("_codecs.encode is only accepted as (str, 'latin1')")
        return Plan("bytes", [(callee, "known")], [], {"data": plain_bytes(call)})
    if known in ("ordereddict", "defaultdict", "counter"):
        return _collection(call, callee, known, args)
    if known in ("bitgen", "generator", "randomstate"):
        return _random(call, callee, known, args)
    if callee.module == "builtins" and callee.name in BUILTIN_CALLS:
        return _builtin(call, callee, args, None)
    if (callee.module, callee.name) == (_SEED_SEQUENCE[0], "__pyx_unpickle_SeedSequence"):
        _no_container_ops(call, callee.qualified)
        if len(args) != 3 or not is_global(args[0], _SEED_SEQUENCE) or type(args[1]) is not int:
            raise fail("numpy's SeedSequence unpickler needs (SeedSequence, checksum, state)")
        return Plan(
            "pyx",
            [(args[0], "known"), (callee, "known")],
            [args[2], *_op_children(call)],
            {"cls": args[0], "checksum": args[1], "state": args[2]},
        )
    helper = _sklearn_helper(call, callee, args)
    if helper is not None:
        return helper
    return _class_call(call, callee, args)


def _collection(call: Call, callee: GlobalRef, known: str, args: list[Any]) -> Plan:
    """collections.OrderedDict / defaultdict / Counter, filled by SETITEMS."""
    for op, payload in call.ops:
        # pickle writes BUILD only for a state; these have none (a subclass with
        # attributes is another class)
        if op not in ("setitems", "build") or (op == "build" and payload is not None):
            raise fail(
                f"collections.{callee.name} is followed by {op.upper()}, which it does not take"
            )
    names = [(callee, "known")]
    if known == "defaultdict":
        if len(args) != 1:
            raise fail("collections.defaultdict needs its factory")
        f = args[0]
        if f is not None and not (
            isinstance(f, GlobalRef)
            and (
                (f.module == "builtins" and f.name in _FACTORIES)
                or (f.module, f.name) == ("collections", "OrderedDict")
            )
        ):
            raise FormatError(
                "collections.defaultdict with factory "
                f"{getattr(f, 'qualified', type(f).__name__)}: only builtin containers, "
                "numbers and collections.OrderedDict are accepted as factories"
            )
        if f is not None:
            names.append((f, "known"))
        children = _op_children(call)
    else:
        if len(args) > 1:
            raise fail(f"collections.{callee.name} takes at most one argument")
        children = [*args, *_op_children(call)]
    return Plan(known, names, children, {"args": args})


def _bit_generator(node: Any) -> tuple[str, str] | None:
    if isinstance(node, GlobalRef) and (node.module, node.name) in BIT_GENERATORS.values():
        return node.module, node.name
    if isinstance(node, str) and node in BIT_GENERATORS:
        return BIT_GENERATORS[node]
    return None


def _random(call: Call, callee: GlobalRef, known: str, args: list[Any]) -> Plan:
    """numpy.random's pickle helpers: a bit generator class from a fixed list, or a
    Generator/RandomState around a bit generator, each then given its state."""
    if any(op != "build" for op, _ in call.ops):
        raise fail(f"{callee.qualified} is followed by operations it does not take")
    names: list[tuple[GlobalRef, str]] = [(callee, "known")]
    children = _op_children(call)
    parts: dict[str, Any] = {"bitgen": None, "inner": None}
    if known == "bitgen":
        target = _bit_generator(args[0]) if len(args) == 1 else None
        if target is None:
            raise FormatError(
                f"{callee.qualified} of {args!r}: only numpy's own bit generators "
                f"({', '.join(BIT_GENERATORS)}) are imported"
            )
        parts["bitgen"] = target
        if isinstance(args[0], GlobalRef):
            names.append((args[0], "known"))
        return Plan("random", names, children, {**parts, "what": known})
    if len(args) > 2:
        raise fail(f"{callee.qualified} takes at most two arguments")
    if len(args) == 2 and not is_global(args[1], ("numpy.random._pickle", "__bit_generator_ctor")):
        raise fail(f"{callee.qualified}'s constructor argument must be numpy's own")
    if args:
        target = _bit_generator(args[0])
        if target is not None:
            parts["bitgen"] = target
            if isinstance(args[0], GlobalRef):
                names.append((args[0], "known"))
        elif isinstance(args[0], Call):
            parts["inner"] = args[0]
            children.append(args[0])
        else:
            raise fail(f"{callee.qualified} needs a bit generator")
    else:
        parts["bitgen"] = BIT_GENERATORS["MT19937" if known == "randomstate" else "PCG64"]
    return Plan("random", names, children, {**parts, "what": known})


def _class_call(call: Call, callee: GlobalRef, args: list[Any]) -> Plan:
    """``cls(*args)`` of a trusted class (Tree, or names the caller trusts); the audit
    decides trust, the constructor refuses anything that is not a class."""
    if sparse_format(callee) is not None:
        raise fail(f"{callee.qualified} is called with arguments")
    _no_container_ops(call, callee.qualified)
    return Plan(
        "class_call",
        [(callee, "call")],
        [*args, *_op_children(call)],
        {"cls": callee, "args": args},
    )
