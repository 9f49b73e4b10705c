"""The one typed columnar codec for sequences of strings with missing values.

Used for object arrays of str (OneHotEncoder's ``categories_``), numpy
StringDType arrays, pandas string arrays, large lists of str and the keys of
large str->number dicts (a TfidfVectorizer vocabulary). Strings are joined by
NUL into one UTF-8 buffer (split back at C speed); if a string contains NUL,
an offsets buffer is stored instead. Missing values are kept by kind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

__all__ = ["NULL_KINDS", "decode_strings", "encode_strings", "null_code", "strings_only"]

#: code -> kind of missing value; the code is what the nulls buffer stores
NULL_KINDS = {1: "None", 2: "nan", 3: "pd.NA", 4: "pd.NaT"}


def null_code(x: Any) -> int:
    """The missing-value code of ``x``, or 0 if it is not a missing value we keep."""
    if x is None:
        return 1
    if type(x) is float and math.isnan(x):
        return 2
    t = type(x)
    if t.__module__.startswith("pandas"):
        name = t.__name__
        if name == "NAType":
            return 3
        if name == "NaTType":
            return 4
    if isinstance(x, np.floating) and np.isnan(x):
        return 2
    return 0


def null_value(code: int) -> Any:
    if code == 1:
        return None
    if code == 2:
        return float("nan")
    import pandas as pd

    return pd.NA if code == 3 else pd.NaT


def strings_only(values: list[Any]) -> bool:
    """True if every item is a str (exactly) or a missing value, and at least one is a str."""
    any_str = False
    for x in values:
        if type(x) is str:
            any_str = True
        elif null_code(x) == 0:
            return False
    return any_str


def encode_strings(values: list[Any], enc: Encoder) -> dict[str, Any]:
    """Encode a list of str / missing values. Caller checked :func:`strings_only`."""
    n = len(values)
    nulls: np.ndarray[Any, Any] | None = None
    strs = values
    if not all(type(x) is str for x in values):
        nulls = np.zeros(n, dtype=np.uint8)
        strs = list(values)
        for i, x in enumerate(values):
            if type(x) is not str:
                nulls[i] = null_code(x)
                strs[i] = ""
    text = "\x00".join(strs)
    node: dict[str, Any] = {"n": n}
    if n and text.count("\x00") != n - 1:
        lengths = np.fromiter((len(s) for s in strs), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        text = "".join(strs)
        node["o"] = enc.buffer(offsets)
    node["b"] = enc.buffer(text.encode("utf-8", "surrogatepass"))
    if nulls is not None:
        node["z"] = enc.buffer(nulls)
    return node


def decode_strings(node: dict[str, Any], dec: Decoder) -> list[Any]:
    n = dec.field(node, "n", int)
    if n < 0 or n > dec.max_items:
        raise dec.fail(f"string column declares {n} items")
    try:
        text = dec.raw(dec.field(node, "b", int)).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise dec.fail(f"string column is not valid UTF-8: {exc}") from None
    if "o" in node:
        offsets = dec.array(dec.field(node, "o", int), np.dtype("<i8"), (n + 1,), structural=True)
        if n and (offsets[0] != 0 or offsets[-1] != len(text) or np.any(np.diff(offsets) < 0)):
            raise dec.fail("string offsets are not increasing within the text")
        bounds = offsets.tolist()
        out: list[Any] = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    else:
        out = text.split("\x00") if n else []
        if len(out) != n and not (n == 0 and text == ""):
            raise dec.fail(f"string column holds {len(out)} items, declares {n}")
    if "z" in node:
        nulls = dec.array(dec.field(node, "z", int), np.dtype("u1"), (n,), structural=True)
        idx = np.flatnonzero(nulls)
        if idx.size:
            codes = nulls[idx]
            if codes.max() > max(NULL_KINDS):
                raise dec.fail("unknown missing-value code in a string column")
            for i, c in zip(idx.tolist(), codes.tolist(), strict=True):
                out[i] = null_value(c)
    return out
