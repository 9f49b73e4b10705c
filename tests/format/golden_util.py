"""A canonical, JSON-able description of a loaded value, for golden-file tests.

``describe(value)`` captures type, dtype, shape and the exact contents (array bytes
as hex, floats by ``repr``, so NaN, -0.0 and infinities compare exactly). The
golden-file generator stores the description of every value it writes; the test
describes what the *current* code loads and compares. It is shared by
``tools/make_golden_files.py`` and ``tests/format/test_golden_files.py``.

Example:
    >>> describe([1, "a", None])
    {'t': 'list', 'v': [{'t': 'int', 'v': '1'}, {'t': 'str', 'v': 'a'}, {'t': 'None'}]}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

__all__ = ["describe", "jsonable_output"]


def _qual(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _array(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": "ndarray",
        "dtype": str(arr.dtype),
        "descr": str(arr.dtype.descr) if arr.dtype.kind not in "OT" else arr.dtype.kind,
        "shape": list(arr.shape),
        "fortran": bool(arr.flags.f_contiguous and not arr.flags.c_contiguous),
    }
    if arr.dtype.kind in "OT":
        out["v"] = [describe(x) for x in arr.ravel(order="K").tolist()]
    else:
        raw = np.ascontiguousarray(arr).tobytes()
        # big arrays by digest: exact, and keeps expected.json small
        out["v" if len(raw) <= 1024 else "sha256"] = (
            raw.hex() if len(raw) <= 1024 else hashlib.sha256(raw).hexdigest()
        )
    return out


def _pandas(obj: Any) -> dict[str, Any] | None:
    import sys

    pd = sys.modules.get("pandas")
    if pd is None:
        return None
    if isinstance(obj, pd.DataFrame):
        return {
            "t": "DataFrame",
            "columns": describe(obj.columns),
            "index": describe(obj.index),
            "data": [describe(obj.iloc[:, i]) for i in range(obj.shape[1])],
        }
    if isinstance(obj, pd.Series):
        return {
            "t": "Series",
            "name": describe(obj.name),
            "index": describe(obj.index),
            "values": describe(obj.array),
        }
    if isinstance(obj, pd.MultiIndex):
        return {
            "t": "MultiIndex",
            "names": [describe(n) for n in obj.names],
            "levels": [describe(lv) for lv in obj.levels],
            "codes": [describe(np.asarray(c)) for c in obj.codes],
        }
    if isinstance(obj, pd.RangeIndex):
        return {"t": "RangeIndex", "v": [obj.start, obj.stop, obj.step], "name": describe(obj.name)}
    if isinstance(obj, pd.Index):
        return {
            "t": _qual(obj),
            "dtype": str(obj.dtype),
            "name": describe(obj.name),
            "values": describe(obj.array),
        }
    if isinstance(obj, pd.Categorical):
        return {
            "t": "Categorical",
            "ordered": bool(obj.ordered),
            "categories": describe(obj.categories),
            "codes": describe(np.asarray(obj.codes)),
        }
    if isinstance(obj, pd.api.extensions.ExtensionArray):
        if isinstance(obj, pd.arrays.NumpyExtensionArray):
            return {"t": "NumpyExtensionArray", "v": describe(obj.to_numpy())}
        # masked, string, datetime-tz arrays: dtype + element-wise values, missing as None
        mask = np.asarray(obj.isna())
        vals = obj.astype(object)
        return {
            "t": "ExtensionArray",
            "dtype": str(obj.dtype),
            "v": [None if m else describe(v) for v, m in zip(vals, mask, strict=True)],
        }
    if obj is pd.NA:
        return {"t": "pd.NA"}
    if isinstance(obj, pd.Timestamp | pd.Timedelta | pd.Period | pd.Interval):
        return {"t": _qual(obj), "v": repr(obj)}
    return None


def describe(obj: Any) -> Any:
    """A JSON-able canonical description of ``obj`` (see the module docstring)."""
    if obj is None:
        return {"t": "None"}
    t = type(obj)
    if t is bool:
        return {"t": "bool", "v": obj}
    if t is int:
        return {"t": "int", "v": str(obj)}
    if t is float:
        return {"t": "float", "v": repr(obj)}
    if t is complex:
        return {"t": "complex", "v": repr(obj)}
    if t is str:
        return {"t": "str", "v": obj}
    if t in (bytes, bytearray):
        return {"t": t.__name__, "v": bytes(obj).hex()}
    if t in (list, tuple):
        return {"t": t.__name__, "v": [describe(x) for x in obj]}
    if t in (set, frozenset):
        items = [describe(x) for x in obj]
        return {"t": t.__name__, "v": sorted(items, key=lambda d: json.dumps(d, sort_keys=True))}
    if t is dict:
        return {"t": "dict", "v": [[describe(k), describe(v)] for k, v in obj.items()]}
    if t in (slice, range):
        return {"t": t.__name__, "v": [obj.start, obj.stop, obj.step]}
    if isinstance(obj, np.ndarray):
        return _array(obj)
    if isinstance(obj, np.generic):
        return {"t": "np.scalar", "dtype": str(obj.dtype), "v": np.asarray(obj).tobytes().hex()}
    if isinstance(obj, np.dtype):
        return {"t": "dtype", "v": str(obj.descr) if obj.fields else str(obj)}
    if type(obj).__module__.startswith("scipy.sparse"):
        return {
            "t": _qual(obj),
            "format": obj.format,
            "shape": list(obj.shape),
            "dense": _array(obj.toarray()),
        }
    pd_desc = _pandas(obj)
    if pd_desc is not None:
        return pd_desc
    raise TypeError(f"describe() does not know {_qual(obj)}")


def jsonable_output(value: Any) -> dict[str, Any]:
    """A model output (array, sparse matrix, list) as dtype + shape + plain values."""
    if hasattr(value, "toarray"):
        value = value.toarray()
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        return {
            "dtype": "object",
            "shape": list(arr.shape),
            "values": [str(v) for v in arr.ravel()],
        }
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "values": arr.ravel().tolist()}
