"""skops files (``.skops``: a zip with ``schema.json`` and ``.npy``/``.npz`` members),
read by safepoint itself: skops is not needed and ``skops.io.load`` is never called.

``schema.json`` is translated node by node into the same inert graph a pickle
is parsed into (``ObjectNode`` -> ``cls.__new__`` + state, ``TreeNode`` /
``ReduceNode`` / ``LossNode`` -> ``cls(*args)`` + state, ``NdArrayNode`` ->
numpy's array reconstruction from the ``.npy`` bytes, ``SparseMatrixNode`` ->
a scipy.sparse state from the ``.npz`` members, ``TypeNode`` / ``FunctionNode``
-> a name kept as a value, containers and JSON scalars as themselves). The
graph then goes through the same audit and constructor as pickles. Node kinds
whose meaning depends on strings hidden in their content (``MethodNode``,
``OperatorFuncNode``, ``PartialNode``, random generators) are refused.

``.npy`` headers are parsed by numpy's header reader (a bounded literal, never
``allow_pickle``); object arrays cannot come from ``.npy`` members.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from .._types import Trusted
from ..errors import FormatError, LimitExceededError
from .audit import AuditResult, audit
from .containers import zip_members
from .limits import ConvertLimits
from .nodes import BytesNode, Call, DictNode, GlobalRef, ListNode, SetNode, TupleNode
from .numpy_build import build_dtype, plain

__all__ = ["audit_skops", "dtype_to_node", "read_npy"]

#: the skops protocol versions whose schema this reader knows
KNOWN_PROTOCOLS = frozenset({0, 1, 2})
_KEY_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_REFUSED = {
    "MethodNode": "a bound method (named by a string inside the file)",
    "OperatorFuncNode": "an operator function (named by a string inside the file)",
    "PartialNode": "a functools.partial",
    "_DictWithDeprecatedKeysNode": "a scikit-learn < 1.2 internal dict",
}


_MASKED_CLASSES = (("numpy.ma", "MaskedArray"), ("numpy.ma.core", "MaskedArray"))


def _fail(msg: str) -> FormatError:
    return FormatError(f"malformed skops file: {msg}")


def read_npy(raw: bytes) -> tuple[np.dtype[Any], tuple[int, ...], bool, memoryview]:
    """(dtype, shape, fortran_order, data) of a ``.npy`` member, sizes checked."""
    from numpy.lib import format as npf

    fp = io.BytesIO(raw)
    try:
        version = npf.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npf.read_array_header_2_0(fp)
        else:
            raise _fail(f".npy format version {version} is not supported")
    except (ValueError, SyntaxError, TypeError) as exc:
        raise _fail(f"a .npy header is invalid: {exc}") from None
    if dtype.hasobject:
        raise _fail("a .npy member holds Python objects (they would need pickle)")
    count = 1
    for s in shape:
        count *= s
    start = fp.tell()
    if count * dtype.itemsize != len(raw) - start:
        raise _fail(f"a .npy member of shape {shape} and {dtype} has {len(raw) - start} data bytes")
    return dtype, tuple(shape), bool(fortran), memoryview(raw)[start:]


def _plain_to_node(value: Any) -> Any:
    if isinstance(value, list):
        return ListNode([_plain_to_node(v) for v in value])
    if isinstance(value, tuple):
        return TupleNode([_plain_to_node(v) for v in value])
    if isinstance(value, dict):
        return DictNode([(_plain_to_node(k), _plain_to_node(v)) for k, v in value.items()])
    if isinstance(value, bytes):
        return BytesNode(memoryview(value))
    if isinstance(value, np.dtype):
        return dtype_to_node(value)
    return value


def dtype_to_node(dt: np.dtype[Any]) -> Call:
    """The inert node numpy's pickling of ``dt`` would produce (``numpy.dtype`` + state)."""
    reduced: Any = dt.__reduce__()
    _, args, state = reduced
    call = Call(GlobalRef("numpy", "dtype"), TupleNode(list(args)), "reduce")
    call.ops.append(("build", _plain_to_node(state)))
    return call


def array_node(dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool, raw: Any) -> Call:
    """numpy's own pickle of an array, as inert nodes: ``_reconstruct`` + state."""
    call = Call(
        GlobalRef("numpy._core.multiarray", "_reconstruct"),
        TupleNode([GlobalRef("numpy", "ndarray"), TupleNode([0]), BytesNode(memoryview(b"b"))]),
        "reduce",
    )
    state = TupleNode([1, TupleNode(list(shape)), dtype_to_node(dtype), fortran, raw])
    call.ops.append(("build", state))
    return call


class _Reader:
    def __init__(self, members: dict[str, bytes], limits: ConvertLimits) -> None:
        self.members = members
        self.limits = limits
        self.memo: dict[Any, Any] = {}
        self.problems: list[str] = []

    def member(self, name: Any) -> bytes:
        if not isinstance(name, str) or name not in self.members:
            raise _fail(f"the schema names a missing member {name!r}")
        return self.members[name]

    def node(self, state: Any, depth: int = 0) -> Any:
        if depth > self.limits.max_depth:
            raise LimitExceededError(f"the skops schema nests deeper than {self.limits.max_depth}")
        if not isinstance(state, dict):
            raise _fail(f"a node must be an object, not {type(state).__name__}")
        loader = state.get("__loader__")
        module = state.get("__module__")
        cls = state.get("__class__")
        if not (
            isinstance(loader, str)
            and isinstance(module, str)
            and isinstance(cls, str)
            and loader
            and module
            and cls
        ):
            raise _fail("a node lacks __loader__, __module__ or __class__")
        key = state.get("__id__")
        if not (key is None or type(key) in (int, str)):
            raise _fail("a node id must be a number")
        if loader != "JsonNode" and key is not None and key in self.memo:
            return self.memo[key]
        out = self._convert(state, loader, module, cls, depth + 1)
        if loader != "JsonNode" and key is not None:
            self.memo[key] = out
        return out

    def _children(self, content: Any, depth: int) -> list[Any]:
        if not isinstance(content, list):
            raise _fail("a container's content must be a list")
        return [self.node(c, depth) for c in content]

    def _convert(
        self, state: dict[str, Any], loader: str, module: str, cls: str, depth: int
    ) -> Any:
        content = state.get("content")
        ref = GlobalRef(module, cls)
        if loader in _REFUSED:
            self.problems.append(
                f"skops node {loader} ({module}.{cls}): {_REFUSED[loader]} is not imported"
            )
            return None
        if loader == "JsonNode":
            if not isinstance(content, str):
                raise _fail("a JSON node's content must be a string")
            try:
                return _plain_to_node(json.loads(content))
            except (ValueError, RecursionError):
                raise _fail("a JSON node's content is not valid JSON") from None
        if loader == "ListNode":
            items = self._children(content, depth)
            if (module, cls) == ("builtins", "list"):
                return ListNode(items)
            obj = Call(ref, TupleNode(), "newobj")
            obj.ops.append(("appends", items))
            return obj
        if loader == "TupleNode":
            items = self._children(content, depth)
            if (module, cls) == ("builtins", "tuple"):
                return TupleNode(items)
            return Call(ref, TupleNode(items), "reduce")  # a namedtuple: cls(*items)
        if loader == "SetNode":
            items = self._children(content, depth)
            if module != "builtins" or cls not in ("set", "frozenset"):
                raise _fail(f"a set node of class {module}.{cls}")
            return SetNode(items, frozen=cls == "frozenset")
        if loader == "DictNode":
            return self._dict(state, ref, depth)
        if loader == "DefaultDictNode":
            if not isinstance(content, dict):
                raise _fail("a defaultdict node needs its content")
            main = self.node(content.get("main"), depth)
            factory = self.node(content.get("default_factory"), depth)
            if not isinstance(main, DictNode):
                raise _fail("a defaultdict's items must be a dict")
            call = Call(GlobalRef("collections", "defaultdict"), TupleNode([factory]), "reduce")
            call.ops.append(("setitems", list(main.pairs)))
            return call
        if loader == "SliceNode":
            if not isinstance(content, dict):
                raise _fail("a slice node needs its content")
            parts = [content.get(k) for k in ("start", "stop", "step")]
            return Call(GlobalRef("builtins", "slice"), TupleNode(parts), "reduce")
        if loader in ("BytesNode", "BytearrayNode"):
            return BytesNode(memoryview(self.member(state.get("file"))), loader == "BytearrayNode")
        if loader in ("TypeNode", "FunctionNode"):
            return ref
        if loader == "ObjectNode":
            call = Call(ref, TupleNode(), "newobj")
            if content is not None:
                call.ops.append(("build", self.node(content, depth)))
            return call
        if loader in ("ReduceNode", "TreeNode", "LossNode"):
            return self._reduce(state, loader, ref, depth)
        if loader == "ConstructorFromReduceNode":
            args = self.node(content, depth)
            if not isinstance(args, TupleNode):
                raise _fail("constructor arguments must be a tuple")
            return Call(ref, args, "reduce")
        if loader == "NdArrayNode":
            return self._array(state, ref, depth)
        if loader == "DTypeNode":
            arr = self.node(content, depth)
            if not (
                isinstance(arr, Call)
                and isinstance(arr.callee, GlobalRef)
                and arr.callee.name == "_reconstruct"
                and len(arr.ops) == 1
                and isinstance(arr.ops[0][1], TupleNode)
                and len(arr.ops[0][1].items) == 5
            ):
                raise _fail("a dtype node must hold an array")
            return arr.ops[0][1].items[2]
        if loader == "SparseMatrixNode":
            return self._sparse(state, ref)
        if loader == "MaskedArrayNode":
            return self._masked(ref, content, depth)
        if loader in ("RandomGeneratorNode", "RandomStateNode"):
            return self._random(loader, ref, content, depth)
        self.problems.append(f"skops node {loader} ({module}.{cls}) is not known to safepoint")
        return None

    def _dict(self, state: dict[str, Any], ref: GlobalRef, depth: int) -> Any:
        content = state.get("content")
        if not isinstance(content, dict):
            raise _fail("a dict node's content must be an object")
        key_types = self.node(state["key_types"], depth) if "key_types" in state else None
        if key_types is None:
            types: list[Any] = [GlobalRef("builtins", "str")] * len(content)
        elif isinstance(key_types, ListNode) and len(key_types.items) == len(content):
            types = key_types.items
        else:
            raise _fail("a dict node's key types do not match its keys")
        pairs = []
        for (k, v), t in zip(content.items(), types, strict=True):
            if not (isinstance(t, GlobalRef) and t.module == "builtins" and t.name in _KEY_TYPES):
                raise _fail(f"unsupported dict key type {t!r}")
            try:
                key = _KEY_TYPES[t.name](k) if t.name != "bool" else k == "True"
            except ValueError:
                raise _fail(f"dict key {k!r} is not a {t.name}") from None
            pairs.append((key, self.node(v, depth)))
        if (ref.module, ref.name) == ("builtins", "dict"):
            return DictNode(pairs)
        call = Call(ref, TupleNode(), "newobj")
        call.ops.append(("setitems", pairs))
        return call

    def _reduce(self, state: dict[str, Any], loader: str, ref: GlobalRef, depth: int) -> Any:
        reduce = state.get("__reduce__")
        if not isinstance(reduce, dict) or "args" not in reduce:
            raise _fail(f"a {loader} lacks its constructor arguments")
        args = self.node(reduce["args"], depth)
        if not isinstance(args, TupleNode):
            raise _fail("constructor arguments must be a tuple")
        ctor = GlobalRef("sklearn.tree._tree", "Tree") if loader == "TreeNode" else ref
        call = Call(ctor, args, "reduce")
        attrs = self.node(state["content"], depth) if "content" in state else None
        if attrs is not None and not (isinstance(attrs, DictNode) and not attrs.pairs):
            call.ops.append(("build", attrs))
        return call

    def _array(self, state: dict[str, Any], ref: GlobalRef, depth: int) -> Any:
        kind = state.get("type")
        if kind == "numpy":
            dtype, shape, fortran, data = read_npy(self.member(state.get("file")))
            if ref.module == "numpy" and ref.name == "ndarray":
                return array_node(dtype, shape, fortran, BytesNode(data))
            # a numpy scalar stored as a 0-d array: numpy's scalar(dtype, bytes)
            if shape != () or ref.module != "numpy" or dtype.type.__name__ != ref.name:
                raise _fail(f"an array node of class {ref.qualified} holds {dtype} {shape}")
            return Call(
                GlobalRef("numpy._core.multiarray", "scalar"),
                TupleNode([dtype_to_node(dtype), BytesNode(data)]),
                "reduce",
            )
        if kind == "json":
            if (ref.module, ref.name) != ("numpy", "ndarray"):
                raise _fail(f"an object array of class {ref.qualified}")
            items = self._children(state.get("content"), depth)
            shape_node = self.node(state.get("shape"), depth)
            if not isinstance(shape_node, TupleNode) or not all(
                type(s) is int and s >= 0 for s in shape_node.items
            ):
                raise _fail("an object array needs its shape")
            shape = tuple(shape_node.items)
            flat = _flatten(items, len(shape))
            return array_node(np.dtype(object), shape, False, ListNode(flat))
        raise _fail(f"unknown array storage {kind!r}")

    def _masked(self, ref: GlobalRef, content: Any, depth: int) -> Any:
        """A masked array as numpy's own pickle of it (``_mareconstruct`` + state)."""
        if (ref.module, ref.name) not in _MASKED_CLASSES:
            raise _fail(f"a masked array node of class {ref.qualified}")
        if not isinstance(content, dict):
            raise _fail("a masked array node needs data and mask")
        data = _array_parts(self.node(content.get("data"), depth))
        mask_node = self.node(content.get("mask"), depth)
        shape_node, dtype_node, fortran, raw = data
        dtype = build_dtype(dtype_node)
        mdtype = np.ma.make_mask_descr(dtype)
        shape = plain(shape_node)
        count = 1
        for n in shape:
            count *= n
        if isinstance(mask_node, Call) and mask_node.ops:
            m_shape, _, m_fortran, m_raw = _array_parts(mask_node)
            if plain(m_shape) != shape or m_fortran != fortran:
                raise _fail("a masked array's mask does not match its data")
        else:  # numpy.ma.nomask, stored as a numpy bool scalar
            m_raw = BytesNode(memoryview(bytes(count * mdtype.itemsize)))
        call = Call(
            GlobalRef("numpy.ma.core", "_mareconstruct"),
            TupleNode(
                [
                    GlobalRef("numpy.ma", "MaskedArray"),
                    GlobalRef("numpy", "ndarray"),
                    TupleNode([0]),
                    "b",
                ]
            ),
            "reduce",
        )
        state = TupleNode([1, shape_node, dtype_node, fortran, raw, m_raw, None])
        call.ops.append(("build", state))
        return call

    def _random(self, loader: str, ref: GlobalRef, content: Any, depth: int) -> Any:
        """numpy random generators, rebuilt as numpy's own pickle helpers would: the
        bit generator's name is checked against numpy's list by the audit."""
        pickle_mod = "numpy.random._pickle"
        if loader == "RandomStateNode":
            if (ref.module, ref.name) not in (
                ("numpy.random.mtrand", "RandomState"),
                ("numpy.random", "RandomState"),
            ):
                raise _fail(f"a RandomState node of class {ref.qualified}")
            state = self.node(content, depth)
            if not isinstance(state, DictNode):
                raise _fail("a RandomState state must be a dict")
            name = dict(state.pairs).get("bit_generator", "MT19937")
            call = Call(GlobalRef(pickle_mod, "__randomstate_ctor"), TupleNode([name]), "reduce")
            call.ops.append(("build", state))
            return call
        if (ref.module, ref.name) not in (
            ("numpy.random._generator", "Generator"),
            ("numpy.random", "Generator"),
        ):
            raise _fail(f"a Generator node of class {ref.qualified}")
        if not isinstance(content, dict):
            raise _fail("a Generator node needs its bit generator state")
        state = self.node(content.get("bit_generator"), depth)
        if not isinstance(state, DictNode):
            raise _fail("a bit generator state must be a dict")
        name = dict(state.pairs).get("bit_generator")
        bitgen = Call(GlobalRef(pickle_mod, "__bit_generator_ctor"), TupleNode([name]), "reduce")
        # the seed sequence only matters for spawn(); the stream continues from the state
        bitgen.ops.append(("build", state))
        return Call(GlobalRef(pickle_mod, "__generator_ctor"), TupleNode([bitgen]), "reduce")

    def _sparse(self, state: dict[str, Any], ref: GlobalRef) -> Any:
        if state.get("type") != "scipy":
            raise _fail("a sparse node must be stored as .npz")
        arrays = {}
        for name, raw in zip_members(self.member(state.get("file")), self.limits):
            if not name.endswith(".npy"):
                raise _fail(f"unexpected member {name!r} in a sparse .npz")
            arrays[name[:-4]] = read_npy(raw)
        fmt_arr = arrays.pop("format", None)
        shape_arr = arrays.pop("shape", None)
        if fmt_arr is None or shape_arr is None:
            raise _fail("a sparse .npz lacks its format or shape")
        fmt_val = _small(fmt_arr)
        fmt = fmt_val.item() if fmt_val.shape == () else None
        if isinstance(fmt, bytes):
            fmt = fmt.decode("ascii", "replace")
        shp = _small(shape_arr)
        if shp.shape != (2,) or shp.dtype.kind not in "iu" or shp.min() < 0:
            raise _fail("a sparse shape must be two non-negative integers")
        names: dict[str, tuple[str, ...]] = {
            "csr": ("data", "indices", "indptr"),
            "csc": ("data", "indices", "indptr"),
            "bsr": ("data", "indices", "indptr"),
            "coo": ("data", "row", "col"),
            "dia": ("data", "offsets"),
        }
        if fmt not in names or set(arrays) != set(names[fmt]):
            raise _fail(f"a sparse .npz of format {fmt!r} holds {sorted(arrays)}")
        is_array = ref.name.endswith("_array")
        cls = GlobalRef(f"scipy.sparse._{fmt}", f"{fmt}_{'array' if is_array else 'matrix'}")
        pairs: list[tuple[Any, Any]] = [("_shape", TupleNode([int(s) for s in shp]))]
        for n in names[fmt]:
            dt, shape, fortran, data = arrays[n]
            pairs.append((n, array_node(dt, shape, fortran, BytesNode(data))))
        call = Call(cls, TupleNode(), "newobj")
        call.ops.append(("build", DictNode(pairs)))
        return call


def _array_parts(node: Any) -> list[Any]:
    """(shape, dtype, fortran, raw) nodes of an array node built by :func:`array_node`."""
    if not (
        isinstance(node, Call)
        and len(node.ops) == 1
        and isinstance(node.ops[0][1], TupleNode)
        and len(node.ops[0][1].items) == 5
    ):
        raise _fail("expected an array")
    return list(node.ops[0][1].items[1:])


def _small(info: tuple[np.dtype[Any], tuple[int, ...], bool, memoryview]) -> Any:
    dt, shape, _, data = info
    if len(data) > 4096:
        raise _fail("a sparse matrix's format or shape is too large")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _flatten(items: list[Any], ndim: int) -> list[Any]:
    if ndim <= 1:
        return items
    out: list[Any] = []
    for it in items:
        if not isinstance(it, ListNode):
            raise _fail("a nested object array is ragged")
        out.extend(_flatten(it.items, ndim - 1))
    return out


def audit_skops(
    members: dict[str, bytes],
    trusted: Trusted,
    limits: ConvertLimits,
) -> tuple[Any, AuditResult, list[str]]:
    """Translate ``schema.json`` into an inert graph; return it with its audit and the
    members the schema does not refer to (each one a problem of the audit: skops never
    writes them, and nothing here reads them)."""
    try:
        schema = json.loads(members["schema.json"])
    except (ValueError, RecursionError):
        raise _fail("schema.json is not valid JSON") from None
    if not isinstance(schema, dict):
        raise _fail("schema.json must hold an object")
    protocol = schema.get("protocol")
    if protocol not in KNOWN_PROTOCOLS:
        raise FormatError(
            f"skops protocol {protocol!r} is not known to this safepoint version "
            f"(known: {sorted(KNOWN_PROTOCOLS)})"
        )
    reader = _Reader(members, limits)
    try:
        root = reader.node(schema)
    except RecursionError:
        raise LimitExceededError("the skops schema nests too deeply") from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise _fail(f"unexpected schema content ({type(exc).__name__}: {exc})") from None
    result = audit(root, trusted)
    named = _files_named(schema)
    unused = [name for name in members if name != "schema.json" and name not in named]
    for name in unused:
        reader.problems.append(
            f"the skops file holds a member that schema.json does not refer to ({name!r}): "
            "skops never writes one; refused"
        )
    result.problems = reader.problems + result.problems
    result.checked["skops_members"] = len(members) - len(unused)
    return root, result, unused


def _files_named(schema: Any) -> set[str]:
    """Every member a schema refers to (the ``file`` of its nodes, read or not)."""
    out: set[str] = set()
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            name = node.get("file")
            if isinstance(name, str):
                out.add(name)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return out
