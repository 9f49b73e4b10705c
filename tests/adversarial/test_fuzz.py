"""Property-based fuzzing of the reader: whatever the bytes, only a SafepointError
may escape ``load``, ``inspect`` and ``verify``; nothing hangs (pytest-timeout) and
nothing crashes.

Two families of inputs:

* mutations of valid files (byte flips, insertions, deletions, truncations,
  overwrites with random bytes), which mostly exercise the container checks;
* random manifests (random JSON, and valid manifests with random values planted in
  random node fields) inside files with correct checksums, which exercise the
  decoder and every type handler.

``SAFEPOINT_FULL=1`` runs many more examples. For coverage-guided fuzzing of the
same target see ``fuzz_reader.py`` (atheris).
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spcraft import Crafted

import safepoint as sp
from safepoint.errors import SafepointError
from safepoint.format import registry

FULL = os.environ.get("SAFEPOINT_FULL") == "1"

pytestmark = [pytest.mark.timeout(6000 if FULL else 300), pytest.mark.filterwarnings("ignore")]


def _settings(n: int) -> Any:
    return settings(
        max_examples=n * 20 if FULL else n,
        deadline=None,
        database=None,  # no .hypothesis folder in the checkout
        derandomize=not FULL,  # the same examples on every CI run
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def _base_files() -> list[bytes]:
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
    small = {"a": np.arange(6), "s": ["x", None], "b": b"\x00\x01", "t": (1.5, 2**70)}
    return [
        sp.dumps(small),
        sp.dumps(tree),
        sp.dumps({"z": np.zeros(50_000), "w": np.arange(5000)}, compress="zstd"),
        sp.dumps(small, key=b"k" * 32),
        sp.dumps({f"k{i}": i for i in range(100)}),
    ]


BASES = _base_files()


def _check(data: bytes) -> None:
    """The property: any outcome but an exception that is not a SafepointError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sp.loads(data)
        except SafepointError as exc:
            assert str(exc)
        try:
            sp.inspect(data)
        except SafepointError:
            pass
        try:
            sp.verify(data)
        except SafepointError:
            pass


# -- byte-level mutations of valid files -------------------------------------------------
_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**31), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 2**31), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**31), st.integers(1, 64)),
    st.tuples(st.just("overwrite"), st.integers(0, 2**31), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), st.integers(0, 2**31), st.just(0)),
)


def _apply(data: bytes, ops: list[tuple[str, int, Any]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in ops:
        if not buf:
            break
        # bias positions towards the interesting ends: header, footer, manifest
        pos = pos % len(buf) if pos % 3 else len(buf) - 1 - (pos // 3) % min(len(buf), 4096)
        if kind == "flip":
            buf[pos] ^= arg
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "delete":
            del buf[pos : pos + arg]
        elif kind == "overwrite":
            buf[pos : pos + len(arg)] = arg
        else:
            del buf[pos:]
    return bytes(buf)


@_settings(150)
@given(base=st.sampled_from(range(len(BASES))), ops=st.lists(_op, min_size=1, max_size=4))
@pytest.mark.slow
def test_mutated_files(base: int, ops: list[tuple[str, int, Any]]) -> None:
    _check(_apply(BASES[base], ops))


# -- random manifests with fresh checksums -----------------------------------------------
_TAGS = [*sorted(registry._by_tag), "memo", "nope"]


def _field_names() -> list[str]:
    names: set[str] = set()
    for data in BASES:
        for node in Crafted.from_bytes(data).walk():
            names.update(node)
    return sorted(names - {"@"})


FIELDS = _field_names()

_ints = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([-1, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63)]),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["<i8", "<f8", "|u1", "|O", "<U3", "V8", "M8[s]", "O", "obj", "red", "raw"]),
)


def _node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    tagged = st.builds(
        lambda tag, fields: {"@": tag, **fields},
        st.sampled_from(_TAGS),
        st.dictionaries(st.sampled_from(FIELDS), children, max_size=5),
    )
    return st.one_of(
        tagged,
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
    )


_json = st.recursive(_scalars, _node, max_leaves=30)


def _types_table() -> st.SearchStrategy[list[list[str]]]:
    rows = st.sampled_from(
        [
            ["sklearn.tree._tree", "Tree", "red"],
            ["sklearn.tree._classes", "DecisionTreeClassifier", "obj"],
            ["sklearn.neighbors._kd_tree", "KDTree", "obj"],
            ["sklearn.linear_model._base", "LinearRegression", "obj"],
            ["numpy", "add", "ref"],
            ["builtins", "float", "ref"],
            ["os", "system", "ref"],
        ]
    )
    return st.lists(rows, max_size=4)


@_settings(60)
@given(root=_json, shared=st.lists(_json, max_size=3), types=_types_table(), base=st.integers(0, 4))
@pytest.mark.slow
def test_random_manifests(root: Any, shared: list[Any], types: list[list[str]], base: int) -> None:
    c = Crafted.from_bytes(BASES[base])
    c.manifest = {**c.manifest, "root": root, "shared": shared, "types": types}
    c.auth = None
    _check(c.to_bytes())


@_settings(100)
@given(
    base=st.integers(0, len(BASES) - 1),
    picks=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), _json), min_size=1, max_size=3
    ),
)
def test_random_values_in_valid_manifests(base: int, picks: list[tuple[int, int, Any]]) -> None:
    """Plant random values in random fields of real nodes (deeper than random JSON gets)."""
    c = Crafted.from_bytes(BASES[base])
    c.manifest = copy.deepcopy(c.manifest)
    c.auth = None
    for node_pick, field_pick, value in picks:
        nodes = list(c.walk())
        node = nodes[node_pick % len(nodes)]
        keys = sorted(node) + FIELDS
        node[keys[field_pick % len(keys)]] = value
    _check(c.to_bytes())


@_settings(100)
@given(body=st.binary(max_size=400))
def test_random_manifest_bytes(body: bytes) -> None:
    _check(Crafted({}, [], [], []).to_bytes(manifest_bytes=body))


_TOP = ["format", "root_type", "env", "signature", "metadata", "golden", "signed", "root"]


@_settings(60)
@given(
    base=st.integers(0, len(BASES) - 1),
    key=st.sampled_from(_TOP),
    sub=st.one_of(st.none(), st.sampled_from(["python", "packages", "outputs", "X", "numpy"])),
    value=_json,
)
def test_random_top_level_fields(base: int, key: str, sub: str | None, value: Any) -> None:
    """The environment record, golden data, metadata... are read by load, inspect and
    verify before any type is audited."""
    c = Crafted.from_bytes(BASES[base])
    c.manifest = copy.deepcopy(c.manifest)
    c.auth = None
    if sub is not None and isinstance(c.manifest.get(key), dict):
        c.manifest[key][sub] = value
    else:
        c.manifest[key] = value
    _check(c.to_bytes())
