"""Object tables (``objtab`` nodes): many objects of one class, stored column by column.

They must round-trip exactly like the node-by-node form, keep every identity the
node-by-node form keeps (by falling back to it), and run every validator.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint.errors import FormatError
from safepoint.format.handlers.tables import TABLE_MIN
from safepoint.format.reader import open_reader
from safepoint.format.registry import (
    register_migration,
    register_table_validator,
    register_validator,
)

TRUST = [
    "test_object_tables.Point",
    "test_object_tables.Checked",
    "test_object_tables.Migrated",
    "test_object_tables.Copier",
    "test_object_tables.ViewKeeper",
]


class Point:
    """A plain class whose instances hold arrays and scalars."""

    def __init__(self, i: int) -> None:
        self.xy = np.arange(i % 5 + 1, dtype=np.float64) * i
        self.grid = np.full((i % 3, 2), i, dtype=np.int32)
        self.label = f"p{i}"
        self.weight = i / 7
        self.flag = i % 2 == 0
        self.none = None


class Checked(Point):
    """Has a validator and no table validator: checked object by object."""


@register_validator("test_object_tables.Checked")
def _refuse_negative(args: list[Any], state: Any, dec: Any) -> Any:
    if (state["xy"] < 0).any():
        raise dec.fail("Checked: negative coordinates")
    return state


class Migrated(Point):
    """Has a table validator and a migration; ``flip`` makes the migration replace
    ``xy`` by a negative copy, which only the per-object validator can see."""


PER_OBJECT_CALLS: list[int] = []


@register_validator("test_object_tables.Migrated")
def _migrated_per_object(args: list[Any], state: Any, dec: Any) -> Any:
    PER_OBJECT_CALLS.append(1)
    if (state["xy"] < 0).any():
        raise dec.fail("Migrated: negative coordinates")
    return state


@register_table_validator("test_object_tables.Migrated", replaces=(_migrated_per_object,))
def _migrated_table(columns: dict[str, Any], lengths: dict[str, Any], n: int, dec: Any) -> None:
    if (columns["xy"] < 0).any():
        raise dec.fail("Migrated: negative coordinates")


@register_migration("test_object_tables.Migrated")
def _flip(state: Any, dec: Any) -> Any:
    if state.get("label", "").endswith("!"):
        return {**state, "xy": -state["xy"] - 1}
    return state


class Copier(Checked):
    """Copies its arrays on load, as sklearn's Tree does: the rows it was given
    are free again once it is built."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(
            {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()}
        )


class ViewKeeper(Checked):
    """Keeps a view of the rows it was given (the view holds them alive)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tail = state["xy"][1:]


@register_validator("test_object_tables.Copier", "test_object_tables.ViewKeeper")
def _no_table_validator(args: list[Any], state: Any, dec: Any) -> Any:
    return state


def nodes(data: bytes) -> list[dict[str, Any]]:
    r = open_reader(data)
    stack: list[Any] = [r.manifest["root"], r.manifest.get("shared", [])]
    r.close()
    out = []
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            out.append(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return out


def tags(data: bytes) -> list[str]:
    return [n.get("@") for n in nodes(data)]


def same_points(a: list[Point], b: list[Point]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert type(p) is type(q)
        assert vars(p).keys() == vars(q).keys()
        for k, v in vars(p).items():
            w = getattr(q, k)
            if isinstance(v, np.ndarray):
                assert v.dtype == w.dtype and v.shape == w.shape
                np.testing.assert_array_equal(v, w)
            else:
                assert type(v) is type(w) and v == w


def test_a_long_list_of_objects_becomes_a_table_and_round_trips() -> None:
    points = [Point(i) for i in range(40)]
    data = sp.dumps(points)
    assert "objtab" in tags(data) and "obj" not in tags(data)
    loaded = sp.loads(data, trusted=TRUST)
    same_points(points, loaded)
    assert len({id(p) for p in loaded}) == 40
    # each object gets arrays of its own (views of one column), writable like pickle's
    loaded[0].xy[0] = 99
    assert loaded[1].xy[0] != 99


def test_rows_of_objects_keep_their_shape() -> None:
    rows = [[Point(3 * r + k) for k in range(3)] for r in range(10)]
    data = sp.dumps({"rows": rows})
    assert "objtab" in tags(data)
    loaded = sp.loads(data, trusted=TRUST)["rows"]
    assert [len(r) for r in loaded] == [3] * 10
    same_points([p for r in rows for p in r], [p for r in loaded for p in r])


def test_short_lists_stay_node_by_node() -> None:
    data = sp.dumps([Point(i) for i in range(TABLE_MIN - 1)])
    assert "objtab" not in tags(data)


def test_an_object_listed_twice_keeps_its_identity() -> None:
    points = [Point(i) for i in range(30)]
    points.append(points[0])
    data = sp.dumps(points)
    assert "objtab" not in tags(data)
    loaded = sp.loads(data, trusted=TRUST)
    assert loaded[0] is loaded[-1]


def test_an_object_referenced_from_elsewhere_keeps_its_identity() -> None:
    points = [Point(i) for i in range(30)]
    data = sp.dumps({"all": points, "best": points[7]})
    loaded = sp.loads(data, trusted=TRUST)
    assert loaded["best"] is loaded["all"][7]


def test_an_array_shared_by_two_objects_keeps_its_identity() -> None:
    points = [Point(i) for i in range(30)]
    points[4].xy = points[3].xy
    loaded = sp.loads(sp.dumps(points), trusted=TRUST)
    assert loaded[4].xy is loaded[3].xy


def test_a_shared_row_keeps_its_identity() -> None:
    rows = [[Point(3 * r + k) for k in range(3)] for r in range(10)]
    data = sp.dumps({"rows": rows, "first": rows[0]})
    loaded = sp.loads(data, trusted=TRUST)
    assert loaded["first"] is loaded["rows"][0]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: setattr(p, "extra", 1),  # other attribute names
        lambda p: setattr(p, "xy", p.xy.astype(np.float32)),  # another dtype
        lambda p: setattr(p, "grid", np.zeros((1, 3), np.int32)),  # another trailing shape
        lambda p: setattr(p, "label", ["not", "a", "scalar"]),  # a container
        lambda p: setattr(p, "xy", np.float64(1.0)),  # a numpy scalar, not an array
        lambda p: setattr(p, "weight", 2**70),  # an int JSON cannot hold
    ],
)
def test_mixed_lists_fall_back_and_still_round_trip(spoil: Any) -> None:
    points = [Point(i) for i in range(30)]
    spoil(points[11])
    data = sp.dumps(points)
    assert "objtab" not in tags(data)
    same_points(points, sp.loads(data, trusted=TRUST))


def test_objects_of_several_classes_are_not_tabled() -> None:
    points: list[Point] = [Point(i) for i in range(30)]
    points[5] = Checked(5)
    data = sp.dumps(points)
    assert "objtab" not in tags(data)
    same_points(points, sp.loads(data, trusted=TRUST))


def test_a_table_is_audited_like_its_objects() -> None:
    data = sp.dumps([Point(i) for i in range(30)])
    assert sp.untrusted_types(data) == ["test_object_tables.Point"]
    with pytest.raises(sp.UntrustedTypesError):
        sp.loads(data)


def test_per_object_validators_run_when_no_table_validator_covers_them() -> None:
    checked = [Checked(i) for i in range(30)]
    assert len(sp.loads(sp.dumps(checked), trusted=TRUST)) == 30
    checked[9].xy = -checked[9].xy - 1
    data = sp.dumps(checked)
    assert "objtab" in tags(data)
    with pytest.raises(FormatError, match="negative coordinates"):
        sp.loads(data, trusted=TRUST)


def test_a_migration_that_replaces_an_array_sends_the_object_to_its_own_validators() -> None:
    items = [Migrated(i) for i in range(30)]
    data = sp.dumps(items)
    assert "objtab" in tags(data)
    PER_OBJECT_CALLS.clear()
    same_points(sp.loads(data, trusted=TRUST), items)
    # the table validator covered every object: none was checked again
    assert PER_OBJECT_CALLS == []
    items[4].label = "p4!"
    PER_OBJECT_CALLS.clear()
    with pytest.raises(FormatError, match="Migrated: negative coordinates"):
        sp.loads(sp.dumps(items), trusted=TRUST)
    assert len(PER_OBJECT_CALLS) == 1


@pytest.mark.slow
def test_hist_gradient_boosting_predictors_are_one_table() -> None:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_classification(n_samples=300, n_classes=3, n_informative=4, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=12, random_state=0).fit(X, y)
    data = sp.dumps(model)
    tables = [n for n in nodes(data) if n.get("@") == "objtab"]
    assert len(tables) == 1 and tables[0]["n"] == 36 and len(tables[0]["r"]) == 12
    loaded = sp.loads(data)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    for row, row2 in zip(model._predictors, loaded._predictors, strict=True):
        for p, q in zip(row, row2, strict=True):
            assert q.nodes.dtype == p.nodes.dtype
            np.testing.assert_array_equal(q.nodes, p.nodes)
            assert q.raw_left_cat_bitsets.shape == p.raw_left_cat_bitsets.shape
    # a table loads under mmap too: its columns are structural, never mapped
    mapped = sp.loads(data, mmap=True)
    np.testing.assert_array_equal(mapped.predict(X), model.predict(X))


def test_forests_nest_a_table_of_trees_and_keep_shared_trees_shared() -> None:
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = X[:, 0] * 2 + rng.normal(size=100)
    model = RandomForestRegressor(n_estimators=20, max_depth=4, random_state=0).fit(X, y)
    data = sp.dumps(model)
    assert tags(data).count("objtab") == 1
    loaded = sp.loads(data)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # one Tree held by two estimators: stored once, node by node
    model.estimators_[1].tree_ = model.estimators_[0].tree_
    loaded = sp.loads(sp.dumps(model))
    assert loaded.estimators_[1].tree_ is loaded.estimators_[0].tree_
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("key", [None, b"0123456789abcdef0123"])
def test_a_column_written_in_parts_is_the_column_written_whole(key: Any, monkeypatch: Any) -> None:
    """Large columns are written array by array (no joined copy): same file bytes."""
    from safepoint.format import _parallel_io

    points = [Point(i) for i in range(40)]
    whole = sp.dumps(points, key=key)
    monkeypatch.setattr(_parallel_io, "PARALLEL_FROM", 1)
    parts = sp.dumps(points, key=key)
    assert parts == whole
    same_points(points, sp.loads(parts, trusted=TRUST, key=key))


@pytest.mark.parametrize("cls", [Checked, Copier, ViewKeeper])
def test_streamed_columns_never_hand_one_objects_rows_to_another(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed rows land in a reused scratch buffer when the last object let go
    of its rows; an object that keeps them, or a view of them, keeps them intact.
    Sizes vary widely so that the buffer grows, shrinks and is replaced."""
    from safepoint.format.handlers import tables

    monkeypatch.setattr(tables, "STREAM_FROM", 1)
    items = []
    for i in range(40):
        p = cls(i)
        p.xy = np.arange([3, 500, 1, 40, 2000, 7][i % 6], dtype=np.float64) + 1000 * i
        items.append(p)
    del p  # a reference from here would keep the list from becoming a table
    data = sp.dumps(items)
    assert "objtab" in tags(data)
    loaded = sp.loads(data, trusted=TRUST)
    if cls is ViewKeeper:
        for p, q in zip(items, loaded, strict=True):
            np.testing.assert_array_equal(q.tail, p.xy[1:])
            del q.tail
    same_points(loaded, items)
    if cls is not Copier:
        # objects that keep their rows never share memory
        for a, b in itertools.pairwise(loaded):
            assert not np.shares_memory(a.xy, b.xy)


def test_a_table_validator_must_name_the_validators_it_replaces() -> None:
    # a table may be checked object by object instead (big objects): a class must never
    # depend on a table validator alone
    from safepoint.format.registry import register_table_validator

    with pytest.raises(ValueError, match="must name what it replaces"):
        register_table_validator("some.module.Cls", replaces=())


def _tree_array(k: int) -> np.ndarray:
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    arr = np.empty((k, 1), dtype=object)
    for i in range(k):
        arr[i, 0] = DecisionTreeRegressor(max_depth=2, random_state=i).fit(X, X[:, i % 3])
    return arr


def test_an_object_array_of_trees_becomes_one_table() -> None:
    arr = _tree_array(6)
    data = sp.dumps({"a": arr})
    assert next(n for n in nodes(data) if n.get("@") == "objarr").get("tab") is not None
    loaded = sp.loads(data)["a"]
    assert loaded.shape == (6, 1) and loaded.dtype == object
    X = np.random.default_rng(1).normal(size=(5, 3))
    for a, b in zip(arr.ravel(), loaded.ravel(), strict=True):
        np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_trees_of_an_object_array_held_elsewhere_keep_their_identity() -> None:
    arr = _tree_array(6)
    also = arr[2, 0]
    data = sp.dumps({"a": arr, "also": also})
    assert all("tab" not in n for n in nodes(data) if n.get("@") == "objarr")
    loaded = sp.loads(data)
    assert loaded["a"][2, 0] is loaded["also"]


def test_a_short_list_of_a_class_without_a_table_validator_stays_node_by_node() -> None:
    """Only tables a table validator checks pay off below TABLE_MIN."""
    data = sp.dumps([Checked(i) for i in range(TABLE_MIN - 1)])
    assert "objtab" not in tags(data)


def test_one_object_shared_by_every_object_of_a_table_stays_shared() -> None:
    shared = {"w": np.arange(3)}
    points = [Point(i) for i in range(20)]
    for p in points:
        p.shared = shared  # type: ignore[attr-defined]
    del p  # a name holding a point would keep it out of a table
    data = sp.dumps({"points": points, "shared": shared})
    assert "objtab" in tags(data)
    loaded = sp.loads(data, trusted=TRUST)
    assert all(p.shared is loaded["shared"] for p in loaded["points"])
