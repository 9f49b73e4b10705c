"""Stable digests of the things a search result depends on.

A resumable search may only reuse a stored (candidate, fold) result when the estimator,
the parameter grid, the scoring, the cross-validation splits and the data are the same
as when the result was computed. These helpers turn each of those into a short hex
digest that is stable across processes and machines (no ``id()``, no ``hash()``, no
pickle), fast on large arrays (xxh3 over the raw bytes) and sensitive to every value
that changes a fit.

>>> from safepoint.workflows._fingerprint import fingerprint
>>> fingerprint({"C": [0.1, 1.0]}) == fingerprint({"C": [0.1, 1.0]})
True
>>> fingerprint({"C": [0.1, 1.0]}) == fingerprint({"C": [0.1, 2.0]})
False
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xxhash

__all__ = ["data_digest", "fingerprint", "splits_digest"]

_MAX_DEPTH = 64


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class _Hasher:
    """Feeds a canonical, type-tagged encoding of an object tree into xxh3-128."""

    def __init__(self) -> None:
        self.h = xxhash.xxh3_128()
        self._active: set[int] = set()

    def tag(self, text: str) -> None:
        raw = text.encode("utf-8", "surrogatepass")
        self.h.update(len(raw).to_bytes(8, "little"))
        self.h.update(raw)

    def array(self, arr: np.ndarray) -> None:
        if arr.dtype.hasobject:
            self.tag(f"objarray{arr.shape}")
            for item in arr.ravel(order="C"):
                self.add(item)
            return
        self.tag(f"ndarray|{arr.dtype.str}|{arr.shape}")
        # Hash in place when possible: big data sets must not be copied just to be digested.
        contiguous = np.ascontiguousarray(arr)
        self.h.update(contiguous.reshape(-1).view(np.uint8).data)

    def add(self, obj: Any, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            self.tag(f"deep:{_qualname(obj)}")
            return
        # Exact-type checks first: bool is an int, np.float64 is a float.
        if obj is None or isinstance(obj, bool):
            self.tag(repr(obj))
        elif isinstance(obj, np.generic):
            # numpy scalars digest like the Python value they stand for, so a grid written
            # as np.arange(1, 4) and one written as [1, 2, 3] are the same search.
            self.add(obj.item(), depth)
        elif isinstance(obj, int):
            self.tag(f"int:{obj}")
        elif isinstance(obj, float):
            self.tag("float:nan" if math.isnan(obj) else f"float:{obj!r}")
        elif isinstance(obj, complex):
            self.tag(f"complex:{obj!r}")
        elif isinstance(obj, str):
            self.tag("str")
            self.tag(obj)
        elif isinstance(obj, bytes | bytearray | memoryview):
            self.tag(f"bytes:{len(obj)}")
            self.h.update(bytes(obj))
        elif isinstance(obj, np.ndarray):
            self.array(obj)
        elif isinstance(obj, np.dtype):
            self.tag(f"dtype:{obj.str}")
        elif isinstance(obj, type):
            self.tag(f"type:{_qualname(obj)}")
        else:
            self._container(obj, depth)

    def _container(self, obj: Any, depth: int) -> None:
        key = id(obj)
        if key in self._active:  # a cycle: name it instead of recursing forever
            self.tag(f"cycle:{_qualname(obj)}")
            return
        self._active.add(key)
        try:
            self._dispatch(obj, depth + 1)
        finally:
            self._active.discard(key)

    def _dispatch(self, obj: Any, depth: int) -> None:
        if isinstance(obj, list | tuple):
            self.tag(f"{type(obj).__name__}:{len(obj)}")
            for item in obj:
                self.add(item, depth)
        elif isinstance(obj, Mapping):
            self.tag(f"map:{len(obj)}")
            for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0])):
                self.add(k, depth)
                self.add(v, depth)
        elif isinstance(obj, set | frozenset):
            self.tag(f"set:{len(obj)}")
            for digest in sorted(fingerprint(item) for item in obj):
                self.tag(digest)
        elif _is_pandas(obj):
            self._pandas(obj)
        elif _is_sparse(obj):
            csr = obj.tocsr()
            self.tag(f"sparse:{csr.shape}")
            csr.sort_indices()
            for part in (csr.data, csr.indices, csr.indptr):
                self.array(np.asarray(part))
        elif isinstance(obj, np.random.RandomState):
            self.tag("RandomState")
            self.add(obj.get_state(legacy=False), depth)
        elif isinstance(obj, np.random.Generator):
            self.tag("Generator")
            self.add(obj.bit_generator.state, depth)
        elif hasattr(obj, "get_params") and callable(obj.get_params):
            # scikit-learn estimators (and anything following the protocol): the class and
            # the constructor parameters define the unfitted model completely.
            self.tag(f"estimator:{_qualname(obj)}")
            try:
                params = obj.get_params(deep=False)
            except Exception:
                params = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
            self.add(params, depth)
        elif _is_frozen_distribution(obj):
            self.tag(f"distribution:{_qualname(obj)}:{getattr(obj.dist, 'name', '')}")
            self.add(tuple(obj.args), depth)
            self.add(dict(obj.kwds), depth)
        elif isinstance(obj, functools.partial):
            self.tag("partial")
            self.add(obj.func, depth)
            self.add(obj.args, depth)
            self.add(obj.keywords, depth)
        elif isinstance(obj, types.FunctionType | types.MethodType | types.BuiltinFunctionType):
            self._function(obj, depth)
        elif hasattr(obj, "__dict__"):
            # Scorers, splitters and other plain objects: their class and attributes.
            self.tag(f"object:{_qualname(obj)}")
            self.add(
                {k: v for k, v in vars(obj).items() if not k.startswith("__")},
                depth,
            )
        else:
            text = repr(obj)
            # A default repr carries a memory address, which would differ in every run.
            self.tag(_qualname(obj) if " at 0x" in text else f"{_qualname(obj)}:{text}")

    def _function(self, fn: Callable[..., Any], depth: int) -> None:
        self.tag(f"function:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}")
        if isinstance(fn, types.MethodType):
            self.add(fn.__self__, depth)
            fn = fn.__func__
        code = getattr(fn, "__code__", None)
        if code is not None:
            # Editing a lambda or a local scoring function changes its code: that is a
            # different search, even though its name stayed the same.
            self._code(code)
            self.add(getattr(fn, "__defaults__", None), depth)

    def _code(self, code: types.CodeType) -> None:
        self.h.update(code.co_code)
        self.tag(repr(code.co_names))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self.tag(repr(const))

    def _pandas(self, obj: Any) -> None:
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            self.tag(f"DataFrame:{obj.shape}")
            for name in obj.columns:
                self.add(name)
                self._series(obj[name])
        elif isinstance(obj, pd.Series):
            self.tag("Series")
            self.add(obj.name)
            self._series(obj)
        else:
            self.tag(f"pandas:{_qualname(obj)}:{obj!r}")

    def _series(self, col: Any) -> None:
        import pandas as pd

        self.tag(str(col.dtype))
        values = col.to_numpy()
        if isinstance(values, np.ndarray) and not values.dtype.hasobject:
            self.array(values)
        else:
            # Strings, categoricals, nullable dtypes: pandas' vectorised row hash.
            self.array(pd.util.hash_pandas_object(col, index=False).to_numpy())


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas.")


def _is_sparse(obj: Any) -> bool:
    return type(obj).__module__.startswith("scipy.sparse") and hasattr(obj, "tocsr")


def _is_frozen_distribution(obj: Any) -> bool:
    return hasattr(obj, "dist") and hasattr(obj, "rvs") and hasattr(obj, "kwds")


def fingerprint(obj: Any) -> str:
    """A 32-hex-digit digest of ``obj`` that is stable across processes.

    >>> from sklearn.linear_model import LogisticRegression
    >>> fingerprint(LogisticRegression(C=1.0)) == fingerprint(LogisticRegression(C=1.0))
    True
    >>> fingerprint(LogisticRegression(C=1.0)) == fingerprint(LogisticRegression(C=2.0))
    False
    """
    hasher = _Hasher()
    hasher.add(obj)
    return hasher.h.hexdigest()


def data_digest(*parts: Any) -> str:
    """Digest of data sets (arrays, DataFrames, sparse matrices, lists), xxh3 over raw bytes.

    >>> import numpy as np
    >>> X = np.arange(12.0).reshape(4, 3)
    >>> data_digest(X, None) == data_digest(X.copy(), None)
    True
    """
    hasher = _Hasher()
    for part in parts:
        if isinstance(part, list | tuple) and part and not isinstance(part[0], str):
            # Plain nested lists of numbers: digest the array sklearn will see.
            try:
                part = np.asarray(part)
            except (ValueError, TypeError):
                pass
        hasher.add(part)
    return hasher.h.hexdigest()


def splits_digest(splits: list[tuple[Any, Any]]) -> str:
    """Digest of cross-validation splits (the train and test indices of every fold)."""
    hasher = _Hasher()
    hasher.tag(f"splits:{len(splits)}")
    for train, test in splits:
        hasher.array(np.asarray(train, dtype=np.int64))
        hasher.array(np.asarray(test, dtype=np.int64))
    return hasher.h.hexdigest()
