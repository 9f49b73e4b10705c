"""numpy: arrays of every non-object dtype, string and object arrays, scalars, dtypes, RNGs."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ..registry import register, register_fallback
from .strings import decode_strings, encode_strings, null_code, strings_only

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

_DTYPE_STR = re.compile(r"^[<>|=]?[biufcmMUSV]\d{1,9}(\[\d{0,4}[a-zA-Z]{1,3}\])?$")
_SAFE_KINDS = set("biufcmMUSV")


# -- dtypes ---------------------------------------------------------------------
# dtypes repeat across thousands of arrays (every tree of a forest has the same
# structured node dtype): their JSON form and their parsed form are cached. The
# cached JSON is shared by the nodes that use it and never mutated.
_CACHE_MAX = 4096
_TO_JSON: dict[Any, Any] = {}
_FROM_JSON: dict[str, np.dtype[Any]] = {}
_FROM_JSON_NESTED: dict[str, np.dtype[Any]] = {}


def dtype_to_json(dt: np.dtype[Any], enc: Encoder | None = None) -> Any:
    key = (dt, dt.isalignedstruct)
    out = _TO_JSON.get(key)
    if out is None:
        out = _dtype_to_json(dt, enc)
        if len(_TO_JSON) >= _CACHE_MAX:
            _TO_JSON.clear()
        _TO_JSON[key] = out
    return out


def _dtype_to_json(dt: np.dtype[Any], enc: Encoder | None = None) -> Any:
    if dt.hasobject:
        raise (enc.fail if enc else ValueError)(
            f"dtype {dt} holds Python objects; safepoint stores no pickles"
        )
    if dt.fields is not None:
        names = dt.names or ()
        fields = []
        for name in names:
            fdt, off, *title = dt.fields[name]
            field = [name, dtype_to_json(fdt, enc), off]
            if title and title[0] is not None:
                if not isinstance(title[0], str):
                    raise (enc.fail if enc else ValueError)(
                        f"structured dtype field {name!r} has a non-str title"
                    )
                field.append(title[0])  # numpy's (title, name) field alias
            fields.append(field)
        out: dict[str, Any] = {"fields": fields, "size": dt.itemsize}
        if dt.isalignedstruct:
            out["al"] = True
        return out
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return {"sub": dtype_to_json(base, enc), "shape": list(shape)}
    if dt.kind not in _SAFE_KINDS:
        raise (enc.fail if enc else ValueError)(f"dtype {dt} is not supported")
    return dt.str


def dtype_from_json(spec: Any, dec: Decoder, depth: int = 0) -> np.dtype[Any]:
    if type(spec) is str:
        dt = _FROM_JSON.get(spec)
        if dt is None:
            dt = _dtype_from_json(spec, dec, depth)
            if len(_FROM_JSON) >= _CACHE_MAX:
                _FROM_JSON.clear()
            _FROM_JSON[spec] = dt
        return dt
    if depth:
        return _dtype_from_json(spec, dec, depth)
    # structured and sub-array specs: keyed by their repr, which tells apart any two
    # JSON values (and costs less than json.dumps); a table of their own, so that no
    # str spec can name one. Only valid specs are cached
    try:
        key = repr(spec)
    except RecursionError:
        raise dec.fail("dtype nests too deeply") from None
    dt = _FROM_JSON_NESTED.get(key)
    if dt is None:
        dt = _dtype_from_json(spec, dec, depth)
        if len(_FROM_JSON_NESTED) >= _CACHE_MAX:
            _FROM_JSON_NESTED.clear()
        _FROM_JSON_NESTED[key] = dt
    return dt


def _dtype_from_json(spec: Any, dec: Decoder, depth: int = 0) -> np.dtype[Any]:
    if depth > 8:
        raise dec.fail("dtype nests too deeply")
    if isinstance(spec, str):
        if not _DTYPE_STR.match(spec):
            raise dec.fail(f"invalid dtype {spec!r}")
        try:
            dt = np.dtype(spec)
        except (TypeError, ValueError):
            raise dec.fail(f"invalid dtype {spec!r}") from None
    elif isinstance(spec, dict) and "fields" in spec:
        fields = spec["fields"]
        size = spec.get("size")
        if not isinstance(fields, list) or not isinstance(size, int) or not 0 <= size < 2**31:
            raise dec.fail("invalid structured dtype")
        if len(fields) > 4096:
            raise dec.fail("a structured dtype with too many fields")
        names, formats, offsets, titles = [], [], [], []
        for f in fields:
            if not (
                isinstance(f, list)
                and len(f) in (3, 4)
                and isinstance(f[0], str)
                and isinstance(f[2], int)
                and (len(f) == 3 or isinstance(f[3], str))
            ):
                raise dec.fail("invalid structured dtype field")
            names.append(f[0])
            formats.append(dtype_from_json(f[1], dec, depth + 1))
            offsets.append(f[2])
            titles.append(f[3] if len(f) == 4 else None)
        layout: dict[str, Any] = {
            "names": names,
            "formats": formats,
            "offsets": offsets,
            "itemsize": size,
        }
        if any(t is not None for t in titles):
            layout["titles"] = titles
        try:
            dt = np.dtype(layout, align=spec.get("al") is True)  # type: ignore[call-overload]
        except (TypeError, ValueError) as exc:
            raise dec.fail(f"invalid structured dtype: {exc}") from None
    elif isinstance(spec, dict) and "sub" in spec:
        shape = spec.get("shape")
        if not (
            isinstance(shape, list)
            and len(shape) <= 32
            and all(isinstance(s, int) and 0 <= s < 2**31 for s in shape)
        ):
            raise dec.fail("invalid sub-array dtype shape")
        base = dtype_from_json(spec["sub"], dec, depth + 1)
        try:
            dt = np.dtype((base, tuple(shape)))
        except (TypeError, ValueError) as exc:
            raise dec.fail(f"invalid sub-array dtype: {exc}") from None
    else:
        raise dec.fail(f"invalid dtype {spec!r}")
    if dt.hasobject:
        raise dec.fail("object dtypes are refused")
    return dt


def shape_from_json(node: dict[str, Any], dec: Decoder, key: str = "s") -> tuple[int, ...]:
    shape = node.get(key) if type(node) is dict else None
    if type(shape) is not list:
        shape = dec.field(node, key, list)
    if len(shape) > dec.reader.limits.max_ndim:
        raise dec.fail(f"an array declares {len(shape)} dimensions")
    for s in shape:
        # exactly int: JSON gives no other (a bool is not a size)
        if type(s) is not int or not 0 <= s < 2**62:
            raise dec.fail("an array shape must hold non-negative integers")
    return tuple(shape)


# -- arrays ---------------------------------------------------------------------
def encode_array(arr: np.ndarray[Any, Any], enc: Encoder) -> dict[str, Any]:
    dt = arr.dtype
    kind = dt.kind
    if kind == "O":
        return _encode_object_array(arr, enc)
    if kind == "T":
        return _encode_stringdtype(arr, enc)
    node: dict[str, Any] = {"@": "nd", "d": dtype_to_json(dt, enc), "s": list(arr.shape)}
    flags = arr.flags
    if flags.c_contiguous:
        data = arr
    else:
        flipped = [i for i, st in enumerate(arr.strides) if st < 0 and arr.shape[i] > 1]
        if flipped and arr.size and not flags.f_contiguous:
            # a reversed view of a contiguous array (PCA's components_ after its sign
            # flip): stored forward and reversed again on load, so that the loaded array
            # has the same strides; BLAS results can depend on them in the last bit
            forward = arr[
                tuple(
                    slice(None, None, -1) if i in flipped else slice(None) for i in range(arr.ndim)
                )
            ]
            if forward.flags.c_contiguous or forward.flags.f_contiguous:
                arr = forward
                node["r"] = flipped
        if arr.flags.c_contiguous:
            data = arr
        elif arr.flags.f_contiguous:
            data = arr.T
            node["f"] = True
        else:
            data = np.ascontiguousarray(arr)
    if not data.size:
        node["b"] = enc.buffer(b"")
    elif kind in _BUFFER_KINDS:
        # numbers export their bytes to memoryview as they are
        node["b"] = enc.buffer(memoryview(data).cast("B"))  # type: ignore[arg-type]
    else:
        # a view as bytes avoids memoryview's format checks (structured dtypes) and
        # its refusal of datetimes
        node["b"] = enc.buffer(data.reshape(-1).view(np.uint8))
    return node


#: dtype kinds whose arrays memoryview takes (datetimes, structs and strings not)
_BUFFER_KINDS = frozenset("biufc")


_OBJARR_ITEMS = (str, bytes, int, float, complex, bool, np.generic, np.ndarray, tuple)


def _is_estimator(x: Any) -> bool:
    """scikit-learn estimators (GradientBoosting's ``estimators_`` is an object array
    of trees; search results hold candidate estimators): audited by exact type like
    every object node, so they may sit in an object array."""
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(x, base.BaseEstimator)


def _estimator_table(flat: list[Any], enc: Encoder) -> dict[str, Any] | None:
    """An object table (``objtab`` node) of the estimators of an object array
    (GradientBoosting's ``estimators_``: a tree per stage and class), or None.

    Only estimators of one class, each held by nothing but the array (and ``flat``,
    the list of its items: one reference more than a list's own items have)."""
    if not (enc.tables and flat and _is_estimator(flat[0])):
        return None
    from .tables import encode_items

    table = encode_items(flat, enc, held=1)
    return None if table is None else {"@": "objtab", **table}


def _encode_object_array(arr: np.ndarray[Any, Any], enc: Encoder) -> dict[str, Any]:
    flat = arr.reshape(-1).tolist() if arr.flags.c_contiguous else arr.ravel().tolist()
    if strings_only(flat) or (flat and all(null_code(x) for x in flat)):
        return {"@": "strs", "k": "O", "s": list(arr.shape), **encode_strings(flat, enc)}
    table = _estimator_table(flat, enc)
    if table is not None:
        return {"@": "objarr", "s": list(arr.shape), "tab": table}
    # arrays of arrays or of scalars (KBinsDiscretizer.bin_edges_): each item is a
    # typed node of its own; never a pickle, and never an arbitrary object
    for i, x in enumerate(flat):
        if not isinstance(x, _OBJARR_ITEMS) and null_code(x) == 0 and not _is_estimator(x):
            raise enc.fail(
                f"an object array holds a {type(x).__module__}.{type(x).__qualname__} at "
                f"index {i}; object arrays may hold only strings, numbers, missing values, "
                "arrays and scikit-learn estimators. Store such objects in a list instead."
            )
    items = [enc.encode_child(x, f"[{i}]") for i, x in enumerate(flat)]
    return {"@": "objarr", "s": list(arr.shape), "v": items}


def _encode_stringdtype(arr: np.ndarray[Any, Any], enc: Encoder) -> dict[str, Any]:
    na = getattr(arr.dtype, "na_object", None)
    has_na = hasattr(arr.dtype, "na_object")
    flat = arr.ravel().tolist()
    node = {"@": "strs", "k": "T", "s": list(arr.shape), **encode_strings(flat, enc)}
    if has_na:
        code = null_code(na)
        if code == 0:
            raise enc.fail("StringDType with a custom na_object is not supported")
        node["na"] = code
    if getattr(arr.dtype, "coerce", True) is False:
        node["nc"] = True
    return node


@register("nd", [np.ndarray, np.memmap])
class NDArrayHandler:
    encode = staticmethod(encode_array)

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        spec = node.get("d")
        # a seen dtype string: the cache, without a call
        dt = _FROM_JSON.get(spec) if type(spec) is str else None
        if dt is None:
            dt = dtype_from_json(spec, dec)
        shape = shape_from_json(node, dec)
        fortran = bool(node.get("f"))
        index = node.get("b")
        if type(index) is not int:
            index = dec.field(node, "b", int)
        arr = dec.array(index, dt, shape[::-1] if fortran else shape)
        if fortran:
            arr = arr.T
        if "r" in node:
            axes = dec.field(node, "r", list)
            if not all(type(i) is int and 0 <= i < arr.ndim for i in axes):
                raise dec.fail("reversed axes of an array are out of range")
            arr = arr[
                tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(arr.ndim))
            ]
        return arr


@register("npmat", [np.matrix])
class MatrixHandler:
    """numpy.matrix (the mean of a sparse matrix, e.g. BisectingKMeans centers fitted
    on sparse data): a 2-D array node, viewed as a matrix again."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return {"a": enc.encode_child(np.asarray(obj), ".A")}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        arr = dec.decode(node.get("a"))
        if type(arr) is not np.ndarray or arr.ndim != 2:
            raise dec.fail("a numpy matrix needs a 2-D array")
        return arr.view(np.matrix)


@register("strs")
class StringArrayHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via nd
        return encode_array(obj, enc)

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        shape = shape_from_json(node, dec)
        values = decode_strings(node, dec)
        if len(values) != int(np.prod(shape, dtype=np.int64)):
            raise dec.fail("string array size does not match its shape")
        kind = node.get("k")
        if kind == "O":
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            return arr.reshape(shape)
        if kind == "T":
            from .strings import null_value

            kw: dict[str, Any] = {}
            if "na" in node:
                code = dec.field(node, "na", int)
                if code not in (1, 2, 3, 4):
                    raise dec.fail("unknown na_object code")
                kw["na_object"] = null_value(code)
            if node.get("nc"):
                kw["coerce"] = False
            dt = np.dtypes.StringDType(**kw)
            return np.array(values, dtype=dt).reshape(shape)
        raise dec.fail(f"unknown string array kind {kind!r}")


@register("objarr")
class ObjectArrayHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via nd
        return encode_array(obj, enc)

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        shape = shape_from_json(node, dec)
        size = int(np.prod(shape, dtype=np.int64))
        if "tab" in node:
            # the items as one object table (a flat list of objects of one audited class)
            tab = node["tab"]
            if type(tab) is not dict or tab.get("@") != "objtab" or "r" in tab or "v" in node:
                raise dec.fail("an object array's table must be a flat object table")
            objs = dec.decode(tab)
            if type(objs) is not list or len(objs) != size:
                raise dec.fail("object array size does not match its shape")
            arr = np.empty(size, dtype=object)
            # one item at a time: assigning a sequence would make numpy ask each
            # object whether it is one (a method of an object built from the file)
            for i, x in enumerate(objs):
                arr[i] = x
            return arr.reshape(shape)
        items = dec.items(node)
        if len(items) != size:
            raise dec.fail("object array size does not match its shape")
        arr = np.empty(len(items), dtype=object)
        for i, x in enumerate(items):
            arr[i] = dec.decode(x)
        return arr.reshape(shape)


@register("ma", [np.ma.MaskedArray, np.ma.core.MaskedConstant])
class MaskedArrayHandler:
    """numpy.ma arrays (``cv_results_['param_*']`` of every search): data, mask, fill value."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        if obj is np.ma.masked:
            return {"c": True}
        if type(obj) is not np.ma.MaskedArray:  # pragma: no cover - registered by exact name
            raise enc.fail(f"{type(obj).__qualname__} (a MaskedArray subclass) is not supported")
        mask = np.ma.getmask(obj)
        node: dict[str, Any] = {
            "d": enc.encode_child(obj.data, ".data"),
            "m": None if mask is np.ma.nomask else enc.encode_child(mask, ".mask"),
        }
        fill_value = getattr(obj, "_fill_value", None)  # None: numpy's default for the dtype
        if fill_value is not None:
            node["fv"] = enc.encode_child(fill_value, ".fill_value")
        if obj.hardmask:
            node["h"] = True
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        if node.get("c") is True:
            return np.ma.masked
        data = dec.decode(node.get("d"))
        mask = dec.decode(node.get("m"))
        if not isinstance(data, np.ndarray) or type(data) is not np.ndarray:
            raise dec.fail("a masked array needs a data array")
        if mask is None:
            mask = np.ma.nomask
        elif not (
            isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == data.shape
        ):
            raise dec.fail("a masked array's mask must be booleans shaped like its data")
        out = np.ma.MaskedArray(data, mask=mask, copy=False, hard_mask=bool(node.get("h")))
        if "fv" in node:
            fv = dec.decode(node["fv"])
            try:
                out.fill_value = fv
            except (TypeError, ValueError) as exc:
                raise dec.fail(f"invalid fill value of a masked array: {exc}") from None
        return out


# -- scalars and dtypes ---------------------------------------------------------
def _is_np_scalar(t: type) -> bool:
    return issubclass(t, np.generic)


@register_fallback("npsc", _is_np_scalar)
class ScalarHandler:
    @staticmethod
    def encode(obj: np.generic, enc: Encoder) -> dict[str, Any]:
        if obj.dtype.hasobject or obj.dtype.kind == "T":
            raise enc.fail(f"numpy scalar of dtype {obj.dtype} is not supported")
        arr = np.asarray(obj)  # empty bytes / str scalars report a 0-byte dtype
        return {"d": dtype_to_json(arr.dtype, enc), "h": arr.tobytes().hex()}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        dt = dtype_from_json(node.get("d"), dec)
        h = dec.field(node, "h", str)
        if len(h) != 2 * dt.itemsize:
            raise dec.fail("numpy scalar bytes do not match its dtype")
        try:
            raw = bytes.fromhex(h)
        except ValueError:
            raise dec.fail("numpy scalar bytes are not hex") from None
        return np.frombuffer(raw, dtype=dt)[0]


def _is_dtype(t: type) -> bool:
    return issubclass(t, np.dtype)


@register_fallback("dtype", _is_dtype)
class DTypeHandler:
    @staticmethod
    def encode(obj: np.dtype[Any], enc: Encoder) -> dict[str, Any]:
        return {"d": dtype_to_json(obj, enc)}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        return dtype_from_json(node.get("d"), dec)


@register("rng", [np.random.RandomState, np.random.Generator])
class RandomHandler:
    """RandomState / Generator: the bit generator's name and its state as plain data."""

    _BITGENS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        bg = obj._bit_generator if isinstance(obj, np.random.RandomState) else obj.bit_generator
        name = type(bg).__name__
        if name not in RandomHandler._BITGENS:
            raise enc.fail(f"bit generator {name} is not supported")
        node: dict[str, Any] = {
            "g": isinstance(obj, np.random.Generator),
            "bg": name,
            "st": enc.encode_child(bg.state, ".state"),
        }
        if isinstance(obj, np.random.RandomState):
            # RandomState caches the second of each pair of Gaussian draws outside the
            # bit generator: without it the next normal() after load would differ
            legacy = obj.get_state(legacy=False)
            if legacy.get("has_gauss"):
                node["gs"] = [int(legacy["has_gauss"]), float(legacy["gauss"])]
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        name = dec.field(node, "bg", str)
        if name not in RandomHandler._BITGENS:
            raise dec.fail(f"unknown bit generator {name!r}")
        bg = getattr(np.random, name)()
        try:
            bg.state = dec.decode(node.get("st"))
        except (TypeError, ValueError, KeyError) as exc:
            raise dec.fail(f"invalid random state: {exc}") from None
        if node.get("g"):
            return np.random.Generator(bg)
        rs = np.random.RandomState(bg)
        if "gs" in node:
            gs = dec.field(node, "gs", list)
            if len(gs) != 2 or type(gs[0]) is not int or type(gs[1]) not in (int, float):
                raise dec.fail("invalid cached Gaussian of a RandomState")
            rs.set_state({**bg.state, "has_gauss": gs[0], "gauss": gs[1]})
        return rs
