"""pandas: DataFrame, Series, Index (range, multi, datetime, categorical), extension arrays.

A DataFrame is stored column by column, each column's values as a typed node
(numpy buffer, categorical, tz-aware datetime, string, masked numeric), so
that mixed dtypes need no pickle and each column can be memory-mapped.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..registry import register, register_fallback
from .strings import decode_strings, decode_strings_arrow, encode_arrow_strings, encode_strings

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

_MASKED = {
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Float32",
    "Float64",
    "boolean",
}


def _pd() -> Any:
    import pandas as pd

    return pd


def _pandas_type(attr: str) -> Any:
    """A predicate matching subclasses of ``pandas.<attr>`` (pandas' own types only).

    pandas reports public module names (``pandas.DataFrame``) in some versions and
    private ones (``pandas.core.frame``) in others, so match by class, not by name.
    """

    def pred(t: type) -> bool:
        if t.__module__.partition(".")[0] != "pandas":
            return False
        pd = _pd()
        base = pd
        for part in attr.split("."):
            base = getattr(base, part)
        return issubclass(t, base)

    return pred


# -- column values ----------------------------------------------------------------
def encode_values(values: Any, enc: Encoder, label: str) -> Any:
    """Values of a column or index (numpy array or extension array) as a node."""
    pd = _pd()
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        return enc.encode_child(np.asarray(values), label)
    if isinstance(dtype, pd.CategoricalDtype):
        return {
            "@": "pd.cat",
            "c": enc.encode_child(dtype.categories, label + ".categories"),
            "k": enc.encode_child(np.asarray(values.codes), label + ".codes"),
            "o": bool(dtype.ordered),
        }
    if isinstance(dtype, pd.DatetimeTZDtype):
        return {
            "@": "pd.dt",
            "v": enc.encode_child(np.asarray(values.asi8), label),
            "tz": str(dtype.tz),
            "u": dtype.unit,
        }
    if isinstance(dtype, pd.StringDtype):
        na_value = dtype.na_value
        na = "nan" if isinstance(na_value, float) and math.isnan(na_value) else "NA"
        pa_array = getattr(values, "_pa_array", None)
        if dtype.storage == "pyarrow" and pa_array is not None:
            # straight from Arrow's buffers: no Python str per value
            body = encode_arrow_strings(pa_array, enc)
        else:
            body = encode_strings(values.to_numpy(dtype=object, na_value=None).tolist(), enc)
        return {"@": "pd.str", "st": dtype.storage, "na": na, **body}
    if isinstance(dtype, pd.PeriodDtype):
        return {
            "@": "pd.per",
            "d": dtype.name,
            "v": enc.encode_child(np.asarray(values.asi8), label),
        }
    if isinstance(dtype, pd.IntervalDtype):
        return {
            "@": "pd.ivl",
            "c": str(values.closed),
            "l": encode_values(_index_values(values.left), enc, label + ".left"),
            "r": encode_values(_index_values(values.right), enc, label + ".right"),
        }
    if dtype.name in _MASKED:
        return {
            "@": "pd.mask",
            "d": dtype.name,
            "v": enc.encode_child(np.asarray(values._data), label),
            "m": enc.encode_child(np.asarray(values._mask), label + ".mask"),
        }
    raise enc.fail(
        f"pandas dtype {dtype} is not supported yet; convert the column "
        "(e.g. .astype(str) or .astype(float)) before saving"
    )


def _index_values(idx: Any) -> Any:
    """An index's values: a numpy array, or the extension array for pandas dtypes."""
    return idx.array if not isinstance(idx.dtype, np.dtype) else idx.to_numpy()


def decode_values(node: Any, dec: Decoder) -> Any:
    values = dec.decode(node)
    if not isinstance(values, np.ndarray) and not _is_ext(values):
        raise dec.fail("column values must be an array")
    return values


def _is_ext(values: Any) -> bool:
    from pandas.api.extensions import ExtensionArray

    return isinstance(values, ExtensionArray)


def _codes_below(codes: np.ndarray[Any, Any], bound: int) -> bool:
    """True if every (signed integer) code is in ``0..bound - 1``, in one pass: seen
    as unsigned, a negative code is at least 2**(bits - 1), so at least ``bound``
    whenever ``bound`` is at most that. False means: check the slow way."""
    if bound > 1 << (8 * codes.itemsize - 1):
        return False
    return int(codes.view(codes.dtype.str.replace("i", "u")).max()) < bound


class _ExtensionArrayHandler:
    """Extension arrays are encoded by :func:`encode_values` (which writes each kind's
    node); each subclass decodes its own kind."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return encode_values(obj, enc, "")


@register_fallback("pd.cat", _pandas_type("Categorical"))
class CategoricalHandler(_ExtensionArrayHandler):
    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        cats = dec.decode(node.get("c"))
        codes = dec.decode_structural(node.get("k"))
        if not isinstance(cats, pd.Index) or not isinstance(codes, np.ndarray):
            raise dec.fail("categorical needs an index of categories and integer codes")
        if codes.dtype.kind != "i" or codes.ndim != 1:
            raise dec.fail("categorical codes must be a 1-D integer array")
        if (
            codes.size
            and not _codes_below(codes, len(cats))
            and (codes.min() < -1 or codes.max() >= len(cats))
        ):
            raise dec.fail("categorical codes out of range (crafted file?)")
        dtype = pd.CategoricalDtype(cats, ordered=bool(node.get("o")))
        return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


@register_fallback("pd.dt", _pandas_type("arrays.DatetimeArray"))
class DatetimeTZHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        if obj.tz is None:
            return {"@": "pd.dta", "v": enc.encode_child(np.asarray(obj), "")}
        return encode_values(obj, enc, "")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        v = dec.decode(node.get("v"))
        unit = dec.field(node, "u", str)
        if unit not in ("s", "ms", "us", "ns"):
            raise dec.fail(f"unknown datetime unit {unit!r}")
        if not isinstance(v, np.ndarray) or v.dtype != np.dtype("<i8") or v.ndim != 1:
            raise dec.fail("tz-aware datetimes need int64 values")
        try:
            dtype = pd.DatetimeTZDtype(unit=unit, tz=dec.field(node, "tz", str))
        except Exception as exc:
            raise dec.fail(f"unknown time zone: {exc}") from None
        return (
            pd.array(v.view(f"M8[{unit}]"), dtype=f"M8[{unit}]")
            .tz_localize("UTC")
            .tz_convert(dtype.tz)
        )


@register("pd.dta")
class NaiveDatetimeArrayHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via pd.dt
        return DatetimeTZHandler.encode(obj, enc)

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        v = dec.decode(node.get("v"))
        if not isinstance(v, np.ndarray) or v.dtype.kind != "M":
            raise dec.fail("a datetime array needs datetime64 values")
        return _pd().array(v)


@register_fallback("pd.str", _pandas_type("arrays.ArrowStringArray"))
@register_fallback("pd.str", _pandas_type("arrays.StringArray"))
class StringArrayHandler(_ExtensionArrayHandler):
    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        storage = dec.field(node, "st", str)
        if storage not in ("python", "pyarrow"):
            raise dec.fail(f"unknown string storage {storage!r}")
        na = node.get("na")
        if na not in ("nan", "NA"):
            raise dec.fail("unknown string missing value")
        try:
            dtype = pd.StringDtype(storage, na_value=np.nan if na == "nan" else pd.NA)
        except ImportError:
            dtype = pd.StringDtype("python", na_value=np.nan if na == "nan" else pd.NA)
        if dtype.storage == "pyarrow":
            # Arrow buffers built directly from the file's: no Python str per value
            return pd.array(decode_strings_arrow(node, dec), dtype=dtype)
        return pd.array(decode_strings(node, dec), dtype=dtype)


@register_fallback("pd.mask", _pandas_type("arrays.BooleanArray"))
@register_fallback("pd.mask", _pandas_type("arrays.IntegerArray"))
@register_fallback("pd.mask", _pandas_type("arrays.FloatingArray"))
class MaskedHandler(_ExtensionArrayHandler):
    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        name = dec.field(node, "d", str)
        if name not in _MASKED:
            raise dec.fail(f"unknown masked dtype {name!r}")
        data = dec.decode(node.get("v"))
        mask = dec.decode(node.get("m"))
        if not (isinstance(data, np.ndarray) and isinstance(mask, np.ndarray)):
            raise dec.fail("masked arrays need data and mask arrays")
        if mask.dtype != np.bool_ or mask.shape != data.shape or data.ndim != 1:
            raise dec.fail("masked array mask does not match its data")
        dtype = pd.api.types.pandas_dtype(name)
        if data.dtype != dtype.numpy_dtype:
            raise dec.fail(f"masked {name} data has dtype {data.dtype}")
        return dtype.construct_array_type()(data, mask)


_PERIOD_DTYPE = re.compile(r"^period\[[A-Za-z0-9-]{1,24}\]$")


@register_fallback("pd.per", _pandas_type("arrays.PeriodArray"))
class PeriodHandler(_ExtensionArrayHandler):
    """Periods: int64 ordinals (NaT as the minimum int64) and the dtype's frequency."""

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        name = dec.field(node, "d", str)
        if not _PERIOD_DTYPE.match(name):
            raise dec.fail(f"invalid period dtype {name!r}")
        try:
            dtype = pd.api.types.pandas_dtype(name)
        except (TypeError, ValueError) as exc:
            raise dec.fail(f"invalid period dtype {name!r}: {exc}") from None
        ordinals = dec.decode(node.get("v"))
        if not isinstance(ordinals, np.ndarray) or ordinals.dtype != np.int64 or ordinals.ndim != 1:
            raise dec.fail("periods need 1-D int64 ordinals")
        return pd.arrays.PeriodArray(ordinals, dtype=dtype)


@register_fallback("pd.ivl", _pandas_type("arrays.IntervalArray"))
class IntervalHandler(_ExtensionArrayHandler):
    """Intervals: the arrays of left and right ends and which sides are closed."""

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        closed = dec.field(node, "c", str)
        if closed not in ("left", "right", "both", "neither"):
            raise dec.fail(f"invalid interval closed side {closed!r}")
        left = decode_values(node.get("l"), dec)
        right = decode_values(node.get("r"), dec)
        try:
            # from_arrays checks lengths, dtypes and left <= right
            return pd.arrays.IntervalArray.from_arrays(left, right, closed=closed)
        except (TypeError, ValueError) as exc:
            raise dec.fail(f"invalid intervals: {exc}") from None


# -- indexes ------------------------------------------------------------------------
def encode_index(idx: Any, enc: Encoder, label: str) -> dict[str, Any]:
    pd = _pd()
    name = (
        enc.encode_child(idx.name, label + ".name") if not isinstance(idx, pd.MultiIndex) else None
    )
    if isinstance(idx, pd.RangeIndex):
        return {"@": "pd.range", "v": [idx.start, idx.stop, idx.step], "n": name}
    if isinstance(idx, pd.MultiIndex):
        return {
            "@": "pd.mi",
            "lv": [
                encode_index(lv, enc, f"{label}.levels[{i}]") for i, lv in enumerate(idx.levels)
            ],
            "cd": [enc.encode_child(np.asarray(c), f"{label}.codes") for c in idx.codes],
            "nm": enc.encode_child(list(idx.names), label + ".names"),
        }
    node: dict[str, Any] = {
        "@": "pd.idx",
        "v": encode_values(
            idx.array if not isinstance(idx.dtype, np.dtype) else idx.to_numpy(), enc, label
        ),
        "n": name,
    }
    if isinstance(idx, pd.DatetimeIndex | pd.TimedeltaIndex) and idx.freq is not None:
        node["fq"] = idx.freqstr
    return node


def _keep_dtype(values: Any) -> dict[str, Any]:
    """Constructor keywords that keep an object array an object array: pandas >= 3
    would infer its ``str`` dtype and turn None into NaN."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return {"dtype": object}
    return {}


@register_fallback("pd.idx", _pandas_type("Index"))
class IndexHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return encode_index(obj, enc, "")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        values = decode_values(node.get("v"), dec)
        name = dec.decode(node.get("n"))
        try:
            index = pd.Index(values, name=name, copy=False, **_keep_dtype(values))
        except (TypeError, ValueError) as exc:
            raise dec.fail(f"invalid index: {exc}") from None
        if "fq" in node:
            freq = dec.field(node, "fq", str)
            if not isinstance(index, pd.DatetimeIndex | pd.TimedeltaIndex) or len(freq) > 64:
                raise dec.fail("only datetime and timedelta indexes have a frequency")
            try:
                # the constructor checks that the values follow the frequency
                index = type(index)(index, freq=freq, name=name)
            except (TypeError, ValueError) as exc:
                raise dec.fail(f"invalid index frequency {freq!r}: {exc}") from None
        return index


@register("pd.range")
class RangeIndexHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via pd.idx
        return encode_index(obj, enc, "")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        v = dec.field(node, "v", list)
        if len(v) != 3 or not all(type(x) is int for x in v) or v[2] == 0:
            raise dec.fail("a range index needs integer start, stop, non-zero step")
        return _pd().RangeIndex(v[0], v[1], v[2], name=dec.decode(node.get("n")))


@register("pd.mi")
class MultiIndexHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:  # pragma: no cover - via pd.idx
        return encode_index(obj, enc, "")

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        levels = [dec.decode(x) for x in dec.items(node, "lv")]
        codes = [dec.decode_structural(x) for x in dec.items(node, "cd")]
        names = dec.decode(node.get("nm"))
        if len(levels) != len(codes) or not isinstance(names, list) or len(names) != len(levels):
            raise dec.fail("a MultiIndex needs as many codes and names as levels")
        for lv, cd in zip(levels, codes, strict=True):
            if not isinstance(lv, pd.Index) or not isinstance(cd, np.ndarray):
                raise dec.fail("MultiIndex levels must be indexes and codes arrays")
            if cd.dtype.kind not in "iu" or (cd.size and (cd.min() < -1 or cd.max() >= len(lv))):
                raise dec.fail("MultiIndex codes out of range (crafted file?)")
        if len({c.shape for c in codes}) > 1:
            raise dec.fail("MultiIndex codes differ in length")
        return pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=False)


def _encode_meta(obj: Any, node: dict[str, Any], enc: Encoder) -> dict[str, Any]:
    """``attrs`` and the ``allows_duplicate_labels`` flag of a Series or DataFrame."""
    if obj.attrs:
        node["at"] = enc.encode_child(dict(obj.attrs), ".attrs")
    if not obj.flags.allows_duplicate_labels:
        node["nd"] = True
    return node


def _decode_meta(obj: Any, node: dict[str, Any], dec: Decoder) -> Any:
    if "at" in node:
        attrs = dec.decode(node["at"])
        if not isinstance(attrs, dict):
            raise dec.fail("attrs must be a dict")
        obj.attrs.update(attrs)
    if node.get("nd"):
        try:
            obj = obj.set_flags(allows_duplicate_labels=False)
        except ValueError as exc:  # DuplicateLabelError
            raise dec.fail(f"duplicate labels where the flag forbids them: {exc}") from None
    return obj


# -- Series and DataFrame -------------------------------------------------------------
@register_fallback("pd.series", _pandas_type("Series"))
class SeriesHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        node = {
            "i": encode_index(obj.index, enc, ".index"),
            "v": encode_values(
                obj.array if not isinstance(obj.dtype, np.dtype) else obj.to_numpy(), enc, ".values"
            ),
            "n": enc.encode_child(obj.name, ".name"),
        }
        return _encode_meta(obj, node, enc)

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        index = dec.decode(node.get("i"))
        values = decode_values(node.get("v"), dec)
        if not isinstance(index, pd.Index) or len(index) != len(values):
            raise dec.fail("a Series' index does not match its values")
        name = dec.decode(node.get("n"))
        out = pd.Series(values, index=index, name=name, copy=False, **_keep_dtype(values))
        return _decode_meta(out, node, dec)


@register_fallback("pd.df", _pandas_type("DataFrame"))
class DataFrameHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        cols = []
        for i in range(obj.shape[1]):
            ser = obj.iloc[:, i]
            values = ser.array if not isinstance(ser.dtype, np.dtype) else ser.to_numpy()
            cols.append(encode_values(values, enc, f"[{obj.columns[i]!r}]"))
        node = {
            "c": encode_index(obj.columns, enc, ".columns"),
            "i": encode_index(obj.index, enc, ".index"),
            "v": cols,
        }
        _encode_meta(obj, node, enc)
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        columns = dec.decode(node.get("c"))
        index = dec.decode(node.get("i"))
        cols = [decode_values(x, dec) for x in dec.items(node)]
        if not isinstance(columns, pd.Index) or not isinstance(index, pd.Index):
            raise dec.fail("a DataFrame needs column and row indexes")
        if len(columns) != len(cols) or any(len(c) != len(index) for c in cols):
            raise dec.fail("a DataFrame's columns do not match its indexes")
        data = {
            i: pd.Series(c, copy=False, **_keep_dtype(c)) if _keep_dtype(c) else c
            for i, c in enumerate(cols)
        }
        # the index is attached afterwards: Series columns would be aligned to it
        df = pd.DataFrame(data, copy=False)
        if len(cols) == 0:
            df = pd.DataFrame(index=index)
        df.index = index
        df.columns = columns
        df = _decode_meta(df, node, dec)
        return df


# -- scalars ---------------------------------------------------------------------------
def _is_pd_scalar(t: type) -> bool:
    return t.__module__.startswith("pandas") and t.__name__ in (
        "Timestamp",
        "Timedelta",
        "NAType",
        "NaTType",
    )


@register_fallback("pd.scalar", _is_pd_scalar)
class ScalarHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        name = type(obj).__name__
        if name == "NAType":
            return {"k": "NA"}
        if name == "NaTType":
            return {"k": "NaT"}
        if name == "Timestamp":
            return {
                "k": "ts",
                "v": int(obj.value),
                "u": obj.unit,
                "tz": None if obj.tz is None else str(obj.tz),
            }
        return {"k": "td", "v": int(obj.value), "u": obj.unit}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        pd = _pd()
        k = node.get("k")
        if k == "NA":
            return pd.NA
        if k == "NaT":
            return pd.NaT
        v = dec.field(node, "v", int)
        unit = dec.field(node, "u", str)
        if unit not in ("s", "ms", "us", "ns"):
            raise dec.fail(f"unknown time unit {unit!r}")
        if k == "ts":
            ts = pd.Timestamp(v, unit="ns").as_unit(unit)
            tz = node.get("tz")
            return ts if tz is None else ts.tz_localize("UTC").tz_convert(str(tz))
        if k == "td":
            return pd.Timedelta(v, unit="ns").as_unit(unit)
        raise dec.fail(f"unknown pandas scalar {k!r}")
