"""Crafted files in the table forms of issue 19: a short forest (fewer trees than
``tables.TABLE_MIN``) stored as a table, GradientBoosting's object array of trees
stored as one table (``objarr`` with ``tab``), and a column shared by every object of
a table (``x``). Each must refuse what the node-by-node form refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from spcraft import Crafted
from test_compiled import TREE_ATTACKS

import safepoint as sp
from safepoint.errors import FormatError, SafepointError


def refused(data: bytes, mutate: Callable[[Crafted], Any]) -> SafepointError:
    c = Crafted.from_bytes(data)
    mutate(c)
    with pytest.raises(SafepointError) as info:
        sp.loads(c.to_bytes())
    assert len(str(info.value)) > 30, info.value
    return info.value


def tables(c: Crafted) -> list[dict[str, Any]]:
    """The outermost object tables of the file (not the ones they nest)."""
    return [n for n in c.walk() if n.get("@") == "objtab"]


def col(t: dict[str, Any], key: str) -> dict[str, Any]:
    return t["c"][t["k"].index(key)]


def trees_of(c: Crafted) -> dict[str, Any]:
    """The table of Trees nested in the (only) table of tree estimators."""
    (outer,) = tables(c)
    return col(outer, "tree_")["o"]


def edit_tree(k: int, fn: Callable[[np.ndarray], Any]) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        c.edit_rows(col(trees_of(c), "nodes"), k, fn)

    return mutate


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


# -- a forest of 6 trees: a table, short as it is ----------------------------------------
@pytest.fixture(scope="module")
def forest6() -> tuple[Any, bytes]:
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0).fit(*_data())
    return model, sp.dumps(model)


def test_a_short_forest_is_a_table_and_predicts(forest6: tuple[Any, bytes]) -> None:
    from safepoint.format.handlers.tables import TABLE_MIN

    model, data = forest6
    c = Crafted.from_bytes(data)
    assert TABLE_MIN > 6 and trees_of(c)["n"] == 6
    X = _data()[0]
    np.testing.assert_array_equal(sp.loads(data).predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("k", [0, 5])
@pytest.mark.parametrize("what", list(TREE_ATTACKS))
def test_tree_attacks_in_a_short_forest(forest6: tuple[Any, bytes], what: str, k: int) -> None:
    assert isinstance(refused(forest6[1], edit_tree(k, TREE_ATTACKS[what])), FormatError)


def test_a_short_table_without_a_table_validator_is_checked_object_by_object(
    forest6: tuple[Any, bytes],
) -> None:
    """The decision trees themselves have no table validator: their per-object ones
    (the Tree must be as wide as the estimator's input) still run on each of them."""

    def wider(c: Crafted) -> None:
        (outer,) = tables(c)
        col(outer, "n_features_in_")["v"][3] = 3

    err = refused(forest6[1], wider)
    assert "wider" in str(err) or "width" in str(err), err


def test_a_max_depth_shared_by_every_tree_is_checked(forest6: tuple[Any, bytes]) -> None:
    """An ``x`` column (one value every object holds) goes through the table validator
    like any other: a max_depth of 1 for trees 5 deep is refused."""

    def shallow(c: Crafted) -> None:
        t = trees_of(c)
        t["c"][t["k"].index("max_depth")] = {"x": 1}

    err = refused(forest6[1], shallow)
    assert "max_depth" in str(err), err


# -- gradient boosting: the object array of trees is one table ---------------------------
@pytest.fixture(scope="module")
def gb() -> tuple[Any, bytes]:
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = _data()
    y = y + (X[:, 2] > 0.5)  # 3 classes: estimators_ is (stages, 3)
    model = GradientBoostingClassifier(n_estimators=6, max_depth=3, random_state=0).fit(X, y)
    return model, sp.dumps(model)


def objarr(c: Crafted) -> dict[str, Any]:
    (node,) = [n for n in c.walk() if n.get("@") == "objarr"]
    return node


def gb_trees(c: Crafted) -> dict[str, Any]:
    return col(objarr(c)["tab"], "tree_")["o"]


def test_gradient_boostings_trees_are_one_table_and_predict(gb: tuple[Any, bytes]) -> None:
    model, data = gb
    c = Crafted.from_bytes(data)
    node = objarr(c)
    assert node["s"] == [6, 3] and "v" not in node and node["tab"]["n"] == 18
    # the trees share one RandomState: stored once, shared again on load
    assert "x" in col(node["tab"], "random_state")
    loaded = sp.loads(data)
    X = _data()[0]
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    states = [e.random_state for e in loaded.estimators_.ravel()]
    assert all(s is states[0] for s in states)


def _edit_gb_tree(k: int, fn: Callable[[np.ndarray], Any]) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        c.edit_rows(col(gb_trees(c), "nodes"), k, fn)

    return mutate


@pytest.mark.parametrize("k", [0, 17])
@pytest.mark.parametrize("what", list(TREE_ATTACKS))
def test_tree_attacks_in_gradient_boostings_table(gb: tuple[Any, bytes], what: str, k: int) -> None:
    assert isinstance(refused(gb[1], _edit_gb_tree(k, TREE_ATTACKS[what])), FormatError)


def _set_type(row: list[Any]) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        c.type_row(objarr(c)["tab"])[:] = row

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        # the array's shape does not hold the table's objects
        lambda c: objarr(c).__setitem__("s", [6, 2]),
        lambda c: objarr(c).__setitem__("s", [7, 3]),
        # the table is not an inline flat table of objects
        lambda c: objarr(c)["tab"].__setitem__("@", "list"),
        lambda c: objarr(c).__setitem__("tab", [1, 2, 3]),
        lambda c: objarr(c).__setitem__("tab", {"@": "memo", "i": 0}),
        lambda c: objarr(c)["tab"].__setitem__("r", [9, 9]),
        lambda c: objarr(c).__setitem__("v", []),
        # a tree of the table narrower than the model's input
        lambda c: col(objarr(c)["tab"], "n_features_in_")["v"].__setitem__(4, 2),
        # the class of the table: one the audit does not trust, or a restricted one
        _set_type(["subprocess", "Popen", "obj"]),
        _set_type(["sklearn.utils._bunch", "Bunch", "obj"]),
        # a count the columns do not have
        lambda c: objarr(c)["tab"].__setitem__("n", 17),
    ],
)
def test_malformed_object_array_tables(
    gb: tuple[Any, bytes], mutate: Callable[[Crafted], Any]
) -> None:
    refused(gb[1], mutate)


def test_a_shared_column_must_not_share_a_restricted_object() -> None:
    """A Bunch in an ``x`` column would sit in every object of the table: refused, as
    a memo reference to it is (not only because no allowed slot holds it)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.utils import Bunch

    X, y = _data()
    model = GradientBoostingClassifier(n_estimators=6, max_depth=2, random_state=0).fit(X, y)
    data = sp.dumps({"model": model, "extra": Bunch(a=1)})

    def splice(c: Crafted) -> None:
        root = c.manifest["root"]["s"]
        col(objarr(c)["tab"], "random_state")["x"] = root.pop("extra")

    err = refused(data, splice)
    assert "shared" in str(err), err


def test_the_tree_table_agrees_with_the_per_tree_check_on_depths_and_children() -> None:
    """Random edits of a deep forest's max_depth values and child indices: the
    vectorised check (bounded pointer jumping) and ``_tree`` give the same verdict."""
    from sklearn.ensemble import RandomForestClassifier
    from test_object_table_attacks import _per_object_verdict, _table_verdict

    X, y = _data()
    y = (y + (X[:, 3] > 0.3)) % 2
    data = sp.dumps(RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y))
    depths = trees_of(Crafted.from_bytes(data))
    truth = list(col(depths, "max_depth")["v"])
    rng = np.random.default_rng(5)
    outcomes = set()
    for _ in range(40):
        c = Crafted.from_bytes(data)
        k = int(rng.integers(0, 8))
        if rng.integers(0, 2):
            col(trees_of(c), "max_depth")["v"][k] = truth[k] + int(rng.integers(-3, 2))
        else:

            def fn(a: np.ndarray) -> None:
                field = ("left_child", "right_child")[int(rng.integers(0, 2))]
                i = int(rng.integers(0, len(a)))
                a[field][i] = int(rng.integers(-2, len(a) + 2))

            edit_tree(k, fn)(c)
        crafted = c.to_bytes()
        verdict = _table_verdict(crafted)
        assert verdict == _per_object_verdict(crafted)
        outcomes.add(verdict)
    assert outcomes == {True, False}
