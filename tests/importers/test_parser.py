"""The opcode interpreter and the constructor rebuild what pickle would, for the
data safepoint imports, at every protocol (compared with ``pickle.loads`` of the
same bytes, which is safe here: the data is our own)."""

from __future__ import annotations

import collections
import math
import pickle
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sps
from hypothesis import given, settings
from hypothesis import strategies as st

from safepoint.importers.audit import audit
from safepoint.importers.construct import Constructor
from safepoint.importers.numpy_build import build_dtype
from safepoint.importers.pickle_parser import PickleParser
from safepoint.importers.skops_ import dtype_to_node

PROTOCOLS = range(6)


def rebuild(data: bytes, trusted: tuple[str, ...] = ()) -> Any:
    root = PickleParser(data).parse()
    res = audit(root, trusted)
    assert res.safe, (res.untrusted, res.problems)
    return Constructor(res).build(root)


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.flags.f_contiguous == b.flags.f_contiguous
            and (
                np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
                if a.dtype.kind != "O"
                else all(same(x, y) for x, y in zip(a.ravel(), b.ravel(), strict=True))
            )
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (a != a and b != b))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if sps.issparse(a):
        return a.format == b.format and a.dtype == b.dtype and (a != b).nnz == 0
    return bool(a == b)


BUILTINS = [
    None,
    True,
    False,
    0,
    -1,
    255,
    256,
    65535,
    65536,
    -(2**31),
    2**31,
    2**64,
    -(2**200),
    1.5,
    float("nan"),
    float("-inf"),
    "",
    "héllo\n\u1234 \U0001f600 'quotes' \"dq\" \\",
    b"",
    bytes(range(256)),
    bytearray(b"ab\x00"),
    (),
    (1,),
    (1, 2),
    (1, 2, 3),
    (1, 2, 3, 4),
    [],
    [1, [2, [3]]],
    {},
    {"a": 1, 2: "b", (1, 2): None, 1.5: [1]},
    set(),
    {1, 2, "x"},
    frozenset({1, (2, 3)}),
    complex(1, -2),
    slice(1, None, 2),
    range(0, 10, 3),
    collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.defaultdict(list, {"k": [1]}),
    collections.Counter("abracadabra"),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("obj", BUILTINS, ids=lambda o: type(o).__name__)
def test_builtins(obj: Any, protocol: int) -> None:
    data = pickle.dumps(obj, protocol=protocol)
    got = rebuild(data)
    assert same(got, pickle.loads(data))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_references_are_kept(protocol: int) -> None:
    inner = [1, 2]
    d = {"x": inner}
    got = rebuild(pickle.dumps([inner, inner, d, d], protocol=protocol))
    assert got[0] is got[1] and got[2] is got[3] and got[2]["x"] is got[0]


DTYPES = [
    "?",
    "i1",
    "i2",
    "i4",
    "i8",
    "u1",
    "u2",
    "u4",
    "u8",
    "f2",
    "f4",
    "f8",
    "c8",
    "c16",
    ">i4",
    ">f8",
    "<U5",
    ">U3",
    "S3",
    "V4",
    "M8[ns]",
    "M8[D]",
    "m8[s]",
    "M8[10ms]",
    [("a", "<i8"), ("b", "<f8", (2,))],
    np.dtype([("x", "u1"), ("y", "<i4")], align=True),
    np.dtype({"names": ["p", "q"], "formats": ["<i2", "<f4"], "offsets": [0, 8], "itemsize": 16}),
    ("<f4", (2, 3)),
]


@pytest.mark.parametrize("spec", DTYPES, ids=str)
def test_dtypes_from_their_state(spec: Any) -> None:
    dt = np.dtype(spec)
    for protocol in PROTOCOLS:
        assert rebuild(pickle.dumps(dt, protocol=protocol)) == dt
    assert build_dtype(dtype_to_node(dt)) == dt


def _arrays() -> list[np.ndarray[Any, Any]]:
    rng = np.random.RandomState(1)
    out = []
    for spec in DTYPES[:-1]:
        dt = np.dtype(spec)
        raw = rng.bytes(dt.itemsize * 6)
        out.append(np.frombuffer(raw, dtype=dt).reshape(2, 3).copy())
    out += [
        np.asfortranarray(rng.rand(3, 4)),
        np.array(3.5),
        np.zeros((0, 3)),
        np.arange(24, dtype="<i4").reshape(2, 3, 4)[:, ::2],
        np.array(["a", None, 1.5, ("t",)], dtype=object),
        np.asfortranarray(np.array([["a", "b"], ["c", "d"], ["e", None]], dtype=object)),
        np.array([["x", "y"]], dtype=object),
    ]
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_arrays(protocol: int) -> None:
    for arr in _arrays():
        data = pickle.dumps(arr, protocol=protocol)
        got = rebuild(data)
        # compared with the original: the byte order is kept (numpy's own unpickler
        # turns some big-endian arrays of protocol 0 into native ones)
        assert same(got, arr), arr.dtype
        assert got.flags.writeable


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_masked_arrays_and_matrices(protocol: int) -> None:
    cases = [
        np.ma.MaskedArray(np.array(["a", None, 3], dtype=object), mask=[0, 1, 0]),
        np.ma.MaskedArray(np.asfortranarray(np.arange(6.0).reshape(2, 3)), mask=np.eye(2, 3)),
        np.ma.MaskedArray([1, 2], mask=[0, 0], fill_value=-7),
        np.ma.MaskedArray(np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]), mask=[(0, 1), (1, 0)]),
    ]
    for m in cases:
        got = rebuild(pickle.dumps(m, protocol=protocol))
        assert type(got) is np.ma.MaskedArray
        assert same(got.data, m.data)
        np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(m))
        assert got.fill_value == m.fill_value
    assert rebuild(pickle.dumps(np.ma.masked, protocol=protocol)) is np.ma.masked
    mat = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    got = rebuild(pickle.dumps(mat, protocol=protocol))
    assert type(got) is np.matrix and (got == mat).all()


SCALARS = [
    np.float64(1.5),
    np.float32(-2),
    np.int32(3),
    np.uint8(200),
    np.bool_(True),
    np.str_("xyz"),
    np.bytes_(b"ab"),
    np.datetime64("2020-01-02T03:04"),
    np.timedelta64(5, "h"),
    np.complex64(1 + 2j),
    np.float64("nan"),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("value", SCALARS, ids=lambda v: type(v).__name__)
def test_numpy_scalars(value: Any, protocol: int) -> None:
    data = pickle.dumps(value, protocol=protocol)
    assert same(rebuild(data), pickle.loads(data))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "dia"])
@pytest.mark.parametrize("kind", ["matrix", "array"])
def test_sparse(fmt: str, kind: str, protocol: int) -> None:
    dense = np.array([[0, 1.5, 0, 0], [2, 0, 0, 3], [0, 0, 0, 0], [4, 0, 5, 0]])
    m = getattr(sps, f"{fmt}_{kind}")(dense)
    data = pickle.dumps(m, protocol=protocol)
    got = rebuild(data)
    assert type(got) is type(m)
    np.testing.assert_array_equal(got.toarray(), dense)


def test_sparse_indices_are_checked() -> None:
    m = sps.csr_matrix(np.eye(3))
    m.indices[1] = 7  # out of range: scipy would read past the row
    root = PickleParser(pickle.dumps(m, protocol=4)).parse()
    from safepoint.errors import FormatError

    with pytest.raises(FormatError):
        Constructor(audit(root)).build(root)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_random_generators(protocol: int) -> None:
    for rng in (np.random.default_rng(1), np.random.RandomState(2)):
        data = pickle.dumps(rng, protocol=protocol)
        got = rebuild(data)
        want = pickle.loads(data)
        assert type(got) is type(want)
        np.testing.assert_array_equal(got.random(4), want.random(4))


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
trees = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.tuples(kids, kids)
        | st.dictionaries(st.text(max_size=5) | st.integers(), kids, max_size=4)
        | st.frozensets(st.integers(), max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(trees, st.integers(0, 5))
def test_random_structures(obj: Any, protocol: int) -> None:
    data = pickle.dumps(obj, protocol=protocol)
    assert rebuild(data) == pickle.loads(data)
