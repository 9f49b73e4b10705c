"""Property tests: numpy arrays and pandas objects survive a round trip unchanged.

numpy: every non-object dtype (bool, integers and floats of both byte orders,
complex, datetime64 / timedelta64 of every unit, bytes, unicode, raw void,
structured and sub-array dtypes, StringDType), any shape including empty and
0-d, C / Fortran / strided / reversed layouts; the bytes come back identical
(NaN payloads included).

pandas: data frames of mixed dtypes (numbers, bools, datetimes with and without
a time zone, object and pandas string columns with None / NaN / pd.NA,
categoricals, nullable integers / floats / booleans) over RangeIndex, integer,
string, datetime and multi indexes; equal by ``assert_frame_equal`` with exact
checks, and missing values keep their kind.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra import pandas as hpd

import safepoint as sp

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def rt(obj: Any) -> Any:
    return sp.loads(sp.dumps(obj))


# -- numpy ------------------------------------------------------------------------------
_UNITS = ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps"]

scalar_dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?", max_period="Y", min_period="ps"),
    hnp.timedelta64_dtypes(endianness="?", max_period="Y", min_period="ps"),
    hnp.byte_string_dtypes(endianness="?", min_len=1, max_len=8),
    hnp.unicode_string_dtypes(endianness="?", min_len=1, max_len=8),
)
all_dtypes = st.one_of(
    scalar_dtypes,
    hnp.nested_dtypes(subtype_strategy=scalar_dtypes, max_leaves=4, max_itemsize=128),
)


def _layouts(arr: np.ndarray) -> list[np.ndarray]:
    """The array in several memory layouts (views, not copies, where possible)."""
    out = [arr, np.asfortranarray(arr)]
    if arr.ndim >= 1 and arr.shape[0] > 1:
        out.append(arr[::-1])  # negative stride
        out.append(arr[::2])  # strided
    if arr.ndim >= 2:
        out.append(arr.T)
        out.append(arr[:, ::-2])
    return out


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape
    # bit for bit (NaN payloads, signed zeros, padding-free structured fields)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        assert b.flags.f_contiguous  # Fortran order is kept, not silently converted


@SETTINGS
@given(
    hnp.arrays(
        dtype=all_dtypes,
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
@pytest.mark.slow
def test_numpy_arrays_round_trip(arr: np.ndarray) -> None:
    for view in _layouts(arr):
        assert_same_array(view, rt(view))


@SETTINGS
@given(st.integers(1, 9), st.binary(max_size=60), st.integers(1, 3))
def test_numpy_raw_void_arrays_round_trip(size: int, raw: bytes, rows: int) -> None:
    """Opaque ``V<n>`` items (hypothesis cannot generate them: built from bytes)."""
    n = len(raw) // (size * rows) * rows
    arr = np.frombuffer(raw[: n * size], dtype=f"V{size}").reshape(rows, -1)
    for view in _layouts(arr):
        assert_same_array(view, rt(view))


@SETTINGS
@given(hnp.arrays(dtype=scalar_dtypes, shape=()))
def test_numpy_scalars_and_dtypes_round_trip(arr: np.ndarray) -> None:
    scalar = arr[()]
    out = rt({"s": scalar, "d": arr.dtype})
    assert type(out["s"]) is type(scalar)
    assert out["d"] == arr.dtype
    assert np.asarray(out["s"]).tobytes() == np.asarray(scalar).tobytes()


@SETTINGS
@given(
    st.lists(st.one_of(st.text(max_size=8), st.none()), max_size=30),
    st.sampled_from(["plain", "na_none", "na_nan"]),
)
def test_numpy_stringdtype_round_trip(values: list[str | None], kind: str) -> None:
    if kind == "plain":
        dt = np.dtypes.StringDType()
        values = [v if v is not None else "" for v in values]
    else:
        dt = np.dtypes.StringDType(na_object=None if kind == "na_none" else np.nan)
        values = [v if v is not None else dt.na_object for v in values]
    arr = np.array(values, dtype=dt)
    out = rt(arr)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert [_kind(x) for x in out.tolist()] == [_kind(x) for x in arr.tolist()]


@SETTINGS
@given(
    st.lists(
        st.one_of(st.text(max_size=10), st.none(), st.just(float("nan"))), min_size=0, max_size=60
    )
)
def test_object_string_arrays_keep_missing_kinds(values: list[Any]) -> None:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    out = rt(arr)
    assert out.dtype == object and out.shape == arr.shape
    assert [_kind(x) for x in out.tolist()] == [_kind(x) for x in values]


def _kind(x: Any) -> Any:
    """A value with its missing-value kind made comparable (NaN != NaN otherwise)."""
    if x is None:
        return ("None",)
    if x is pd.NA:
        return ("NA",)
    if x is pd.NaT:
        return ("NaT",)
    if isinstance(x, float) and math.isnan(x):
        return ("nan",)
    return (type(x).__name__, x)


# -- pandas ------------------------------------------------------------------------------
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
_maybe_text = st.one_of(_text, st.none(), st.just(float("nan")))
_times = st.datetimes(
    min_value=pd.Timestamp("1900-01-01").to_pydatetime(),
    max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
)


def _columns() -> list[hpd.column]:
    return [
        hpd.column("i64", dtype=np.int64),
        hpd.column("f64", dtype=np.float64),
        hpd.column("f32", dtype=np.float32),
        hpd.column("u8", dtype=np.uint8),
        hpd.column("flag", dtype=bool),
        hpd.column("when", elements=_times, dtype="datetime64[ns]"),
        hpd.column("delta", dtype="timedelta64[ns]"),
        hpd.column("obj", elements=_maybe_text, dtype=object),
        hpd.column("txt", elements=_text),
        hpd.column("cat", elements=st.sampled_from(["a", "b", "c"])),
        hpd.column("mixed_key", elements=st.integers(-5, 5)),
    ]


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    index = st.one_of(
        hpd.range_indexes(min_size=0, max_size=12),
        hpd.indexes(dtype=np.int64, min_size=0, max_size=12, unique=True),
        hpd.indexes(elements=_text, min_size=0, max_size=12, unique=True),
        hpd.indexes(elements=_times, dtype="datetime64[ns]", max_size=12, unique=True),
    )
    df = draw(hpd.data_frames(columns=_columns(), index=index))
    n = len(df)
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    m = np.array(mask, dtype=bool)
    # extension dtypes, each with missing values where the mask says so
    df["cat"] = pd.Categorical(df["cat"], categories=["c", "a", "b"], ordered=draw(st.booleans()))
    df["nint"] = pd.array(np.where(m, None, df["i64"]).tolist(), dtype="Int64")
    df["nfloat"] = pd.array(np.where(m, None, df["f64"]).tolist(), dtype="Float64")
    df["nbool"] = pd.array(np.where(m, None, df["flag"]).tolist(), dtype="boolean")
    storage = draw(st.sampled_from(["python", "pyarrow"]))
    df["pstr"] = pd.array(
        np.where(m, None, df["txt"].astype(object)).tolist(), dtype=f"string[{storage}]"
    )
    df["tz"] = (
        df["when"]
        .dt.tz_localize("UTC")
        .dt.tz_convert(draw(st.sampled_from(["UTC", "Europe/Paris", "Asia/Tokyo"])))
    )
    if draw(st.booleans()):
        df.index.name = draw(st.one_of(st.none(), _text))
    if draw(st.booleans()) and n:
        # a MultiIndex built from two columns
        df = df.set_index(["mixed_key", "cat"], append=draw(st.booleans()))
    return df


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a,
        b,
        check_exact=True,
        check_dtype=True,
        check_index_type=True,
        check_column_type=True,
        check_categorical=True,
        check_freq=True,
        check_flags=True,
    )
    for col in a.columns:
        if a[col].dtype == object or isinstance(a[col].dtype, pd.StringDtype):
            assert [_kind(x) for x in a[col].tolist()] == [_kind(x) for x in b[col].tolist()]
    assert list(a.index.names) == list(b.index.names)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frames())
@pytest.mark.slow
def test_pandas_frames_round_trip(df: pd.DataFrame) -> None:
    assert_same_frame(df, rt(df))
    for col in ("obj", "pstr", "cat", "nint", "tz"):
        if col not in df.columns:
            continue  # moved into the index
        series = df[col]
        out = rt(series)
        pd.testing.assert_series_equal(series, out, check_exact=True, check_index_type=True)
    if isinstance(df.index, pd.MultiIndex):
        out_index = rt(df.index)
        pd.testing.assert_index_equal(df.index, out_index, exact=True, check_exact=True)


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        hpd.range_indexes(max_size=20),
        hpd.indexes(dtype=np.float64, max_size=20),
        hpd.indexes(dtype=np.uint16, max_size=20),
        hpd.indexes(elements=_text, max_size=20),
        hpd.indexes(elements=_times, dtype="datetime64[ns]", max_size=20),
    ),
    st.one_of(st.none(), _text, st.integers(-3, 3)),
)
def test_pandas_indexes_round_trip(index: pd.Index, name: Any) -> None:
    index = index.rename(name)
    pd.testing.assert_index_equal(index, rt(index), exact=True, check_exact=True)


@pytest.mark.parametrize(
    "index",
    [
        pd.RangeIndex(3, 30, 3, name="r"),
        pd.date_range("2024-01-01", periods=5, freq="D", tz="Europe/Paris", name="t"),
        pd.date_range("2024-01-01", periods=4, freq="h"),
        pd.MultiIndex.from_product([["a", "b"], [1, 2, 3]], names=["k", None]),
        pd.MultiIndex.from_arrays([[None, "x", "x"], [1.5, np.nan, 2.0]]),
        pd.CategoricalIndex(["b", "a", "b"], categories=["a", "b", "z"], ordered=True),
        pd.Index([True, False]),
        pd.Index(["a", None, "c"], dtype=object),
    ],
    ids=lambda i: type(i).__name__,
)
def test_pandas_special_indexes(index: pd.Index) -> None:
    out = rt(index)
    pd.testing.assert_index_equal(index, out, exact=True, check_exact=True)
    if isinstance(index, pd.DatetimeIndex):
        assert out.freq == index.freq


@pytest.mark.parametrize(
    "obj",
    [
        pd.Series(pd.period_range("2024-01", periods=4, freq="M"), name="p"),
        pd.Series(pd.PeriodIndex(["2024-01-01", None, "2024-03-05"], freq="D")),
        pd.DataFrame({"x": [1, 2]}, index=pd.period_range("2020Q1", periods=2, freq="Q")),
        pd.Series(pd.interval_range(0, 3, closed="left")),
        pd.Series(pd.arrays.IntervalArray.from_breaks([0.0, 1.5, 2.0], closed="both")),
        pd.Series(pd.interval_range(pd.Timestamp("2024-01-01", tz="UTC"), periods=3, freq="D")),
        pd.DataFrame({"x": [1, 2]}, index=pd.IntervalIndex.from_breaks([0, 1, 2])),
        pd.Series([1, 2], index=pd.timedelta_range("1D", periods=2, freq="h")),
        pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),
        pd.DataFrame(
            np.arange(6).reshape(2, 3),
            columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["k", "n"]),
        ),
        pd.DataFrame({"a": pd.Series([], dtype="Int64"), "b": pd.Series([], dtype=object)}),
        pd.DataFrame(),
        pd.Series([2**70, "x", None, 2.5, b"b"], dtype=object),
        pd.DataFrame({"a": [1]}).set_flags(allows_duplicate_labels=False),
    ],
    ids=lambda o: f"{type(o).__name__}",
)
def test_pandas_special_frames_and_series(obj: Any) -> None:
    """Periods, intervals, timedelta indexes with a frequency, duplicate and
    multi-level columns, empty frames, mixed object values, flags and attrs."""
    obj.attrs["source"] = "test"
    out = rt(obj)
    if isinstance(obj, pd.DataFrame):
        pd.testing.assert_frame_equal(obj, out, check_exact=True, check_flags=True)
    else:
        pd.testing.assert_series_equal(obj, out, check_exact=True, check_flags=True)
    assert out.attrs == obj.attrs
    if isinstance(obj.index, pd.DatetimeIndex | pd.TimedeltaIndex):
        assert out.index.freq == obj.index.freq
    if isinstance(obj, pd.Series) and obj.dtype == object:
        assert [_kind(x) for x in out.tolist()] == [_kind(x) for x in obj.tolist()]
