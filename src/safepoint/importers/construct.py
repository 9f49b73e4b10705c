"""The construct step: an audited inert graph -> real objects.

Runs only after :func:`~safepoint.importers.audit.audit` passed. Each call node
is built by the code of its :class:`~safepoint.importers.semantics.Plan`:
arrays from their bytes with ``np.frombuffer``, dtypes from their validated
parts, builtins from checked arguments, and every instance of an audited class
by :func:`safepoint.format.construction.build`, the same pure path a load of a
safepoint file takes: migrations, bounds validators, callable slots, no state
that shadows a method, a reviewed ``__setstate__`` only, restricted types only
in their slots. No callable named by the file is ever called except a trusted
class (``cls(*args)`` for REDUCE on a class, as scikit-learn's ``Tree`` needs)
and a reviewed Cython unpickler of a trusted class.
"""

from __future__ import annotations

import collections
import importlib
from typing import Any

import numpy as np

from ..errors import FormatError, LimitExceededError, SafepointError
from ..format.construction import BuildRecord, build
from ..format.trust import TrustPolicy, resolve
from .audit import AuditResult
from .limits import DEFAULT_CONVERT_LIMITS, ConvertLimits
from .nodes import BytesNode, Call, DictNode, GlobalRef, ListNode, SetNode, TupleNode
from .numpy_build import array_from_bytes, fail, plain_bytes
from .semantics import _SEED_SEQUENCE, Plan

__all__ = ["Constructor"]

_IN_PROGRESS = object()
_PLAIN = frozenset({type(None), bool, int, float, str})
_MAX_BYTES_ARG = 1 << 40


class _Context(BuildRecord):
    """What construction, the format's validators and migrations expect of a decoder:
    ``fail``, the record of built objects, and ``row_sources`` (arrays whose views are
    rows of an object table: none here)."""

    row_sources: dict[int, Any] = {}

    def fail(self, msg: str) -> FormatError:
        return FormatError(f"the imported object is invalid: {msg}")


class Constructor:
    """Builds the objects of an audited graph (each node once, sharing preserved)."""

    def __init__(
        self,
        audited: AuditResult,
        limits: ConvertLimits = DEFAULT_CONVERT_LIMITS,
        trusted: Any = (),
    ):
        if not audited.safe:
            raise FormatError("refusing to build a graph that did not pass the audit")
        self.plans = audited.plans
        self.limits = limits
        self.done: dict[int, Any] = {}
        self.depth = 0
        self.ctx = _Context(TrustPolicy(trusted))
        self._classes: dict[tuple[str, str, str], Any] = {}

    def build(self, node: Any) -> Any:
        try:
            value = self._build(node)
            self.ctx.finish()
            return value
        except SafepointError:
            raise
        except RecursionError:
            raise LimitExceededError("the object graph nests too deeply") from None
        except MemoryError:
            raise LimitExceededError("the object graph does not fit in memory") from None
        except Exception as e:  # from audited classes' own code (__setstate__, __init__)
            raise FormatError(
                f"the file's contents do not rebuild a valid object ({type(e).__name__}: {e}); "
                "it is corrupt, crafted, or was written by an incompatible library version"
            ) from None

    # -- the walk ------------------------------------------------------------------
    def _build(self, node: Any) -> Any:
        if node is None or type(node) in (bool, int, float, str):
            return node
        if isinstance(node, GlobalRef):
            return self._resolve(node, "ref")
        key = id(node)
        have = self.done.get(key, None)
        if have is _IN_PROGRESS:
            raise FormatError(
                "the pickle has a reference cycle through a container or object: safepoint "
                "files hold trees with shared parts, not cycles (refused)"
            )
        if key in self.done:
            self.ctx.shared(have)
            return have
        if self.depth >= self.limits.max_depth:
            raise LimitExceededError(
                f"the object graph nests deeper than {self.limits.max_depth} levels "
                "(raise ConvertLimits.max_depth if the file is trusted)"
            )
        self.done[key] = _IN_PROGRESS
        self.depth += 1
        try:
            value = self._make(node)
        except BaseException:
            del self.done[key]
            raise
        finally:
            self.depth -= 1
        self.done[key] = value
        return value

    def _make(self, node: Any) -> Any:
        b = self._build
        # scalars are kept as they are without a call: big vocabularies are dicts of them
        if isinstance(node, ListNode):
            return [x if type(x) in _PLAIN else b(x) for x in node.items]
        if isinstance(node, TupleNode):
            return tuple(x if type(x) in _PLAIN else b(x) for x in node.items)
        if isinstance(node, DictNode):
            out = {}
            for k, v in node.pairs:
                if type(k) not in _PLAIN:
                    k = b(k)
                    check_key(k)
                out[k] = v if type(v) in _PLAIN else b(v)
            return out
        if isinstance(node, SetNode):
            items = [self._build(x) for x in node.items]
            for x in items:
                check_key(x)
            return frozenset(items) if node.frozen else set(items)
        if isinstance(node, BytesNode):
            return bytearray(node.data) if node.mutable else bytes(node.data)
        if isinstance(node, Call):
            plan = self.plans.get(id(node))
            if plan is None:
                raise FormatError("internal: a call node was not audited")
            return getattr(self, f"_k_{plan.kind}")(node, plan)
        raise FormatError(f"internal: unexpected node {type(node).__name__}")

    def _resolve(self, ref: GlobalRef, kind: str) -> Any:
        """Import an audited name; ``kind`` other than ``"ref"`` demands a class.

        Resolved as a plain reference (exact module and qualname checked by the
        format's resolver), without the format's type migrations, which apply to
        safepoint files of older library versions, not to pickles.
        """
        key = (ref.module, ref.name, kind)
        if key not in self._classes:
            obj = resolve(ref.module, ref.name, "ref")
            if kind != "ref" and not isinstance(obj, type):
                raise FormatError(
                    f"{ref.qualified} is not a class: safepoint never calls functions named "
                    "by a file (refused; nothing was executed)"
                )
            self._classes[key] = obj
        return self._classes[key]

    # -- numpy ---------------------------------------------------------------------
    def _k_joblib(self, node: Call, plan: Plan) -> Any:
        ja = plan.parts["array"]
        if ja.nested is not None:
            arr = self._build(ja.nested)
            if not isinstance(arr, np.ndarray) or arr.shape != ja.shape or arr.dtype != ja.dtype:
                raise fail("a joblib object array does not match its wrapper")
        else:
            arr = array_from_bytes(ja.data, ja.dtype, ja.shape, ja.order)
        return arr.view(np.matrix) if ja.matrix else arr

    def _k_ndarray(self, node: Call, plan: Plan) -> Any:
        arr = self._array(plan.parts)
        return arr.view(np.matrix) if plan.parts.get("matrix") else arr

    def _array(self, p: dict[str, Any]) -> Any:
        shape, dtype, fortran = p["shape"], p["dtype"], p["fortran"]
        order = "F" if fortran else "C"
        if dtype.hasobject:
            items = [self._build(x) for x in p["raw"].items]
            count = 1
            for s in shape:
                count *= s
            if len(items) != count:
                raise fail(f"an object array of shape {shape} has {len(items)} items")
            flat = np.empty(count, dtype=object)
            for i, v in enumerate(items):
                flat[i] = v
            # numpy lists object items in C order whatever the memory order
            arr = flat.reshape(shape)
            return np.asfortranarray(arr) if fortran and arr.ndim > 1 else arr
        raw = p["raw"]
        data = raw.encode("latin-1") if type(raw) is str else plain_bytes(raw)
        if data is None:
            raise fail("an array's data must be bytes")
        return array_from_bytes(data, dtype, shape, order)

    def _k_masked(self, node: Call, plan: Plan) -> Any:
        p = plan.parts
        data = self._array(p)
        order = "F" if p["fortran"] else "C"
        mask = array_from_bytes(p["mask"], p["mask_dtype"], p["shape"], order)
        fill = self._build(p["fill"])
        out = np.ma.MaskedArray(data, mask=mask)
        if fill is not None:
            out.fill_value = fill
        return out

    def _k_masked_constant(self, node: Call, plan: Plan) -> Any:
        return np.ma.masked

    def _k_frombuffer(self, node: Call, plan: Plan) -> Any:
        p = plan.parts
        return array_from_bytes(p["data"], p["dtype"], p["shape"], p["order"])

    def _k_dtype(self, node: Call, plan: Plan) -> Any:
        return plan.parts["dtype"]

    def _k_scalar(self, node: Call, plan: Plan) -> Any:
        p = plan.parts
        if "value" in p:
            return self._build(p["value"])
        return np.frombuffer(p["data"], dtype=p["dtype"], count=1)[0].copy()

    def _k_bytes(self, node: Call, plan: Plan) -> Any:
        return bytes(plan.parts["data"])

    # -- builtins and collections ---------------------------------------------------
    def _k_builtin(self, node: Call, plan: Plan) -> Any:
        name = plan.parts["name"]
        args = [self._build(a) for a in plan.parts["args"]]
        value = _call_builtin(name, args)
        self._apply_container_ops(value, node)
        return value

    def _apply_container_ops(self, value: Any, node: Call) -> None:
        for op, payload in node.ops:
            if op == "setitems" and isinstance(value, dict):
                for k, v in payload:
                    key = self._build(k)
                    check_key(key)
                    value[key] = self._build(v)
            elif op == "appends" and isinstance(value, list):
                value.extend(self._build(x) for x in payload)
            elif op == "appends" and isinstance(value, set):
                items = [self._build(x) for x in payload]
                for x in items:
                    check_key(x)
                value.update(items)
            elif op == "build" and payload is None:
                continue
            else:
                raise fail(f"{op.upper()} on a {type(value).__name__}")

    def _k_ordereddict(self, node: Call, plan: Plan) -> Any:
        value: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        for k, v in self._pairs(plan.parts["args"]):
            value[k] = v
        self._apply_container_ops(value, node)
        return value

    def _k_counter(self, node: Call, plan: Plan) -> Any:
        value: collections.Counter[Any] = collections.Counter()
        args = plan.parts["args"]
        if args:
            init = self._build(args[0])
            if not isinstance(init, dict):
                raise fail("collections.Counter takes a dict")
            value.update(init)
        self._apply_container_ops(value, node)
        return value

    def _k_defaultdict(self, node: Call, plan: Plan) -> Any:
        f = plan.parts["args"][0]
        factory = None if f is None else _SAFE_FACTORIES[f.name]
        value: collections.defaultdict[Any, Any] = collections.defaultdict(factory)
        self._apply_container_ops(value, node)
        return value

    def _pairs(self, args: list[Any]) -> list[tuple[Any, Any]]:
        if not args:
            return []
        items = self._build(args[0])
        if isinstance(items, dict):
            return list(items.items())
        if not isinstance(items, list | tuple) or not all(
            isinstance(p, list | tuple) and len(p) == 2 for p in items
        ):
            raise fail("a mapping needs a list of (key, value) pairs")
        return [(k, v) for k, v in items]

    # -- numpy.random ---------------------------------------------------------------
    def _k_random(self, node: Call, plan: Plan) -> Any:
        p = plan.parts
        if p["inner"] is not None:
            bitgen = self._build(p["inner"])
            if not isinstance(bitgen, np.random.BitGenerator):
                raise fail("a numpy random generator needs a bit generator")
        else:
            module, name = p["bitgen"]
            bitgen = self._resolve(GlobalRef(module, name), "obj")()
        if p["what"] == "bitgen":
            obj = bitgen
        elif p["what"] == "generator":
            obj = np.random.Generator(bitgen)
        else:
            obj = np.random.RandomState(bitgen)
        for _, state in node.ops:
            # numpy's own classes (chosen by the plan, not by the file), which check
            # their state themselves
            type(obj).__setstate__(obj, self._build(state))
        return obj

    # -- scipy.sparse -------------------------------------------------------------
    def _k_sparse(self, node: Call, plan: Plan) -> Any:
        state = self._build(node.ops[0][1])
        return _sparse_from_state(plan.parts["format"], plan.parts["array"], state)

    # -- XGBoost / LightGBM, through their adapters ---------------------------------
    def _k_adapted(self, node: Call, plan: Plan) -> Any:
        from ..adapters.registry import adapter, guard_for
        from .adapters_ import rebuild

        p = plan.parts
        cls = self._resolve(p["cls"], "obj")
        state = self._build(p["state"]) if p["state"] is not None else None
        with guard_for(adapter(p["framework"])):
            return rebuild(p["framework"], p["what"], cls, state)

    # -- audited classes ----------------------------------------------------------
    def _k_instance(self, node: Call, plan: Plan) -> Any:
        ref: GlobalRef = plan.parts["cls"]
        cls = self._resolve(ref, "obj")
        args = [self._build(a) for a in plan.parts["args"]]
        if plan.parts["kwargs"] is not None and self._build(plan.parts["kwargs"]):
            raise fail(f"{ref.qualified} is built from its state only, not with keywords")
        return self._instance(cls, "obj", args, node)

    def _k_class_call(self, node: Call, plan: Plan) -> Any:
        ref: GlobalRef = plan.parts["cls"]
        cls = self._resolve(ref, "red")
        args = [self._build(a) for a in plan.parts["args"]]
        return self._instance(cls, "red", args, node)

    def _k_pyx(self, node: Call, plan: Plan) -> Any:
        ref: GlobalRef = plan.parts["cls"]
        checksum = plan.parts["checksum"]
        state = self._build(plan.parts["state"])
        builds = [payload for op, payload in node.ops if op == "build"]
        if len(builds) > 1 or (builds and state is not None) or len(builds) != len(node.ops):
            raise fail(f"{ref.qualified} is given its state twice, or items")
        if builds:
            # Cython pickles a large state as (unpickler, (cls, checksum, None), state):
            # the generated unpickler sets the same state either way
            state = self._build(builds[0])
        if (ref.module, ref.name) == _SEED_SEQUENCE:
            # numpy's own SeedSequence (a plan the importer knows, not a class the
            # file chose): its generated unpickler checks the state itself
            cls = self._resolve(ref, "ref")
            unpickle = getattr(importlib.import_module(ref.module), f"__pyx_unpickle_{ref.name}")
            return unpickle(cls, checksum, state)
        cls = self._resolve(ref, "pyx")
        return build(self.ctx, cls, "pyx", [checksum], state)

    def _instance(
        self, cls: type, kind: str, args: list[Any], node: Call, *, state: Any = None
    ) -> Any:
        """An audited class's instance, through the format's one construction path:
        the pickle's BUILD state and its SETITEMS/APPENDS items become the state and
        the dict/list items of :func:`~safepoint.format.construction.build`."""
        builds = [payload for op, payload in node.ops if op == "build"]
        if len(builds) > 1:
            raise fail(f"{cls.__qualname__} is given {len(builds)} states")
        if builds:
            state = self._build(builds[0])
        list_items: list[Any] | None = None
        dict_items: dict[Any, Any] | None = None
        for op, payload in node.ops:
            if op == "setitems":
                dict_items = dict_items if dict_items is not None else {}
                for k, v in payload:
                    key = self._build(k)
                    check_key(key)
                    dict_items[key] = self._build(v)
            elif op == "appends":
                list_items = list_items if list_items is not None else []
                list_items.extend(self._build(x) for x in payload)
        return build(self.ctx, cls, kind, args, state, list_items=list_items, dict_items=dict_items)


def check_key(key: Any) -> None:
    """Dict keys are plain values (hashing an object would run its methods)."""
    from ..format.handlers.builtins import check_keys

    check_keys((key,), _Context(TrustPolicy()), "a dict key")


_SAFE_FACTORIES: dict[str, Any] = {
    "list": list,
    "dict": dict,
    "set": set,
    "int": int,
    "float": float,
    "str": str,
    "tuple": tuple,
    "frozenset": frozenset,
    "OrderedDict": collections.OrderedDict,  # collections.OrderedDict (LightGBM's best scores)
}
_ITERABLE = (list, tuple, set, frozenset, dict, str, bytes, bytearray)


def _call_builtin(name: str, args: list[Any]) -> Any:
    """The builtins a stream may call, each only with arguments that cannot be abused
    (``bytes(10**12)`` would allocate a terabyte: integers are refused there)."""
    n = len(args)
    if name in ("set", "frozenset", "list", "tuple"):
        if n == 0:
            return {"set": set, "frozenset": frozenset, "list": list, "tuple": tuple}[name]()
        if n == 1 and isinstance(args[0], _ITERABLE):
            return {"set": set, "frozenset": frozenset, "list": list, "tuple": tuple}[name](args[0])
    elif name == "dict":
        if n == 0:
            return {}
        if n == 1 and isinstance(args[0], dict | list | tuple):
            return dict(args[0])
    elif name in ("bytes", "bytearray"):
        cast = bytes if name == "bytes" else bytearray
        if n == 0:
            return cast()
        if n == 1 and isinstance(args[0], bytes | bytearray):
            return cast(args[0])
        if n == 2 and isinstance(args[0], str) and args[1] in ("latin-1", "latin1"):
            return cast(args[0], "latin-1")
    elif name == "slice":
        if 1 <= n <= 3 and all(a is None or type(a) is int for a in args):
            return slice(*args)
    elif name == "range":
        if 1 <= n <= 3 and all(type(a) is int for a in args):
            return range(*args)
    elif name == "complex":
        if n <= 2 and all(type(a) in (int, float) for a in args):
            return complex(*args)
    elif name in ("int", "float", "bool"):
        cast2 = {"int": int, "float": float, "bool": bool}[name]
        if n == 0:
            return cast2()
        if (
            n == 1
            and type(args[0]) in (int, float, bool, str)
            and (type(args[0]) is not str or len(args[0]) <= 4300)
        ):
            return cast2(args[0])
    elif name == "str":
        if n == 0:
            return ""
        if n == 1 and type(args[0]) is str:
            return args[0]
    elif name == "object" and n == 0:
        return object()
    raise fail(f"builtins.{name} called with unsupported arguments")


def _sparse_from_state(fmt: str, is_array: bool, state: Any) -> Any:
    """A scipy.sparse matrix/array from its pickled ``__dict__``, through scipy's public
    constructors, with every index checked (scipy's ``check_format(full_check=True)``)."""
    import scipy.sparse as sps

    if not isinstance(state, dict):
        raise fail("a sparse matrix state must be a dict")
    shape = state.get("_shape")
    if not (
        isinstance(shape, tuple)
        and len(shape) == 2
        and all(type(s) is int and 0 <= s < 2**62 for s in shape)
    ):
        raise fail("a sparse matrix needs a 2-D shape")
    cls = getattr(sps, f"{fmt}_{'array' if is_array else 'matrix'}")
    data = state.get("data")
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biufc":
        raise fail("sparse data must be a numeric array")

    def index(name: str) -> np.ndarray[Any, Any]:
        arr = state.get(name)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise fail(f"sparse {name} must be a 1-D integer array")
        return arr

    if fmt in ("csr", "csc", "bsr"):
        m = cls((data, index("indices"), index("indptr")), shape=shape, copy=False)
        m.check_format(full_check=True)
    elif fmt == "coo":
        coords = state.get("coords")
        if coords is None:
            coords = (index("row"), index("col"))
        if not isinstance(coords, tuple) or len(coords) != 2:
            raise fail("coo coordinates must be two arrays")
        for axis, c in enumerate(coords):
            if not isinstance(c, np.ndarray) or c.dtype.kind not in "iu" or c.shape != data.shape:
                raise fail("coo coordinates must be integer arrays as long as the data")
            if c.size and (c.min() < 0 or c.max() >= shape[axis]):
                raise fail("a coo coordinate lies outside the matrix")
        m = cls((data, coords), shape=shape)
    else:  # dia
        m = cls((data, index("offsets")), shape=shape)
    return m
