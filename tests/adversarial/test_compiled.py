"""Crafted compiled structures: scikit-learn's Cython code trusts the arrays inside a
tree, a forest, a KD/Ball tree or a HistGradientBoosting predictor. A file that puts
an index out of range (with valid checksums: an attacker recomputes them) must be
refused at load with a ``FormatError``, before any of it reaches compiled code.

The ``bypass`` tests show, in a child process, what the same state does when it is
handed to scikit-learn directly (as pickle would): a crash or a hang.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from spcraft import Crafted

import safepoint as sp
from safepoint.errors import FormatError

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore")]

FULL = os.environ.get("SAFEPOINT_FULL") == "1"


def _data(n: int = 120, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[Any, bytes]]:
    """Small real models and their files (fitted once for the module)."""
    from sklearn.cluster import BisectingKMeans, KMeans
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.neighbors import KernelDensity, KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    X, y = _data()
    rng = np.random.default_rng(1)
    cat = rng.integers(0, 6, size=len(X))
    Xc = np.c_[X, cat]
    yc = ((cat % 2 == 0) ^ (X[:, 0] > 0)).astype(int)
    out: dict[str, Any] = {
        "tree": DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y),
        "forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y),
        "gb": GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=0).fit(X, y),
        "iforest": IsolationForest(n_estimators=3, max_features=2, random_state=0).fit(X),
        "kd": KNeighborsClassifier(algorithm="kd_tree", leaf_size=4).fit(X, y),
        "ball": KNeighborsClassifier(algorithm="ball_tree", leaf_size=4).fit(X, y),
        "seuclid": KNeighborsClassifier(
            algorithm="ball_tree", metric="seuclidean", metric_params={"V": np.ones(4)}
        ).fit(X, y),
        "mahal": KNeighborsClassifier(
            algorithm="ball_tree", metric="mahalanobis", metric_params={"VI": np.eye(4)}
        ).fit(X, y),
        "minkw": KNeighborsClassifier(
            algorithm="ball_tree", metric="minkowski", p=3, metric_params={"w": np.ones(4)}
        ).fit(X, y),
        "kde": KernelDensity().fit(X, sample_weight=np.ones(len(X))),
        "kmeans": KMeans(n_clusters=3, n_init=1, random_state=0).fit(X),
        "bisect": BisectingKMeans(n_clusters=3, random_state=0).fit(X),
        "hgb": HistGradientBoostingClassifier(
            max_iter=4, categorical_features=[4], min_samples_leaf=5, random_state=0
        ).fit(Xc, yc),
    }
    return {k: (m, sp.dumps(m)) for k, m in out.items()}


def test_the_real_models_load_and_predict(models: dict[str, tuple[Any, bytes]]) -> None:
    X, _ = _data()
    for name, (model, data) in models.items():
        loaded = sp.loads(data)
        Xq = np.c_[X, np.arange(len(X)) % 6] if name == "hgb" else X
        method = "score_samples" if name in ("kde", "iforest") else "predict"
        if name in ("kmeans", "bisect"):
            method = "predict"
        np.testing.assert_array_equal(getattr(loaded, method)(Xq), getattr(model, method)(Xq))


def attack(
    models: dict[str, tuple[Any, bytes]], name: str, mutate: Callable[[Crafted], Any]
) -> FormatError:
    c = Crafted.from_bytes(models[name][1])
    mutate(c)
    with pytest.raises(FormatError) as info:
        sp.loads(c.to_bytes())
    assert len(str(info.value)) > 30, info.value
    return info.value


# -- helpers to reach the arrays --------------------------------------------------
def tree_nodes(c: Crafted, i: int = 0) -> tuple[dict[str, Any], np.ndarray, list[Any]]:
    """(nodes nd-node, decoded node array, constructor args) of the i-th sklearn Tree."""
    tree = c.find("Tree")[i]
    nd = c.deref(tree["s"]["s"]["nodes"])
    return nd, c.array(nd), tree["a"]["v"]


def edit_tree(i: int, fn: Callable[[np.ndarray], Any]) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        nd, nodes, _ = tree_nodes(c, i)
        fn(nodes)
        c.set_array(nd, nodes)

    return mutate


def inner(nodes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(nodes["left_child"] != -1)


def attrs(c: Crafted, node: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attribute dict of an estimator node (the root by default)."""
    node = c.manifest["root"] if node is None else node
    return node["s"]["s"]


# -- DecisionTree ---------------------------------------------------------------------
TREE_ATTACKS: dict[str, Callable[[np.ndarray], Any]] = {
    "left child past the end": lambda n: n["left_child"].__setitem__(0, len(n)),
    "right child far away": lambda n: n["right_child"].__setitem__(0, 10**12),
    "negative child": lambda n: n["left_child"].__setitem__(inner(n)[-1], -7),
    "self loop": lambda n: n["left_child"].__setitem__(inner(n)[1], inner(n)[1]),
    "back to the root": lambda n: n["right_child"].__setitem__(inner(n)[-1], 0),
    "leaf with a child": lambda n: n["right_child"].__setitem__(
        np.flatnonzero(n["left_child"] == -1)[0], 1
    ),
    "feature past the end": lambda n: n["feature"].__setitem__(0, 4),
    "negative feature": lambda n: n["feature"].__setitem__(inner(n)[-1], -2),
    "huge feature": lambda n: n["feature"].__setitem__(0, 2**40),
}


@pytest.mark.parametrize("what", list(TREE_ATTACKS))
def test_decision_tree_node_attacks(models: Any, what: str) -> None:
    attack(models, "tree", edit_tree(0, TREE_ATTACKS[what]))


@pytest.mark.parametrize("what", ["feature past the end", "self loop", "left child past the end"])
def test_forest_node_attacks_in_the_last_tree(models: Any, what: str) -> None:
    attack(models, "forest", edit_tree(2, TREE_ATTACKS[what]))


def test_tree_shape_attacks(models: Any) -> None:
    def shallow(c: Crafted) -> None:
        # decision_path sizes its buffer from max_depth and writes the whole path
        c.find("Tree")[0]["s"]["s"]["max_depth"] = 1

    def shared_child(c: Crafted) -> None:
        # two parents for one node: a graph, not a tree (paths multiply)
        nd, nodes, _ = tree_nodes(c)
        i = inner(nodes)
        nodes["right_child"][i[0]] = nodes["left_child"][i[0]]
        c.set_array(nd, nodes)

    def empty(c: Crafted) -> None:
        tree = c.find("Tree")[0]
        nd, nodes, _ = tree_nodes(c)
        c.set_array(nd, nodes[:0])
        values = tree["s"]["s"]["values"]
        c.set_array(values, c.array(values)[:0])
        tree["s"]["s"]["node_count"] = 0

    # each refused by the check meant for it, not by a later one that happens to trip
    for fn, why in (
        (shallow, "max_depth is less"),
        (shared_child, "do not form a tree"),
        (empty, "no nodes"),
    ):
        assert why in str(attack(models, "tree", fn)), fn.__name__


class _Fails:
    """What a validator uses of the decoder: ``fail``, which makes the error it raises."""

    def fail(self, message: str) -> FormatError:
        return FormatError(message)


def _node_layouts(nodes: np.ndarray) -> dict[str, np.ndarray]:
    """The same nodes in scikit-learn's record layout (which ``_tree`` reads in one
    strided copy) and in layouts it must read field by field: the fields in reverse
    order, and the children as uint64 (-1 wraps to 2**64 - 1)."""
    names = nodes.dtype.names
    assert names is not None
    out = {"sklearn": nodes.copy()}
    forms = {
        "reversed": [(k, nodes.dtype[k].str) for k in reversed(names)],
        "uint64 children": [
            (k, "<u8" if k.endswith("child") else nodes.dtype[k].str) for k in names
        ],
    }
    for label, form in forms.items():
        other = np.empty(len(nodes), dtype=form)
        for k in names:
            other[k] = nodes[k].astype(other.dtype[k], casting="unsafe")
        out[label] = other
    return out


@pytest.mark.parametrize("what", [*TREE_ATTACKS, "shared child", "shallow", None])
def test_every_node_layout_gets_every_tree_check(what: str | None) -> None:
    """``_tree`` reads scikit-learn's own node records by a fast path and any other
    layout field by field: each attack is refused, and the genuine tree accepted,
    whichever way its nodes were read."""
    from sklearn.tree import DecisionTreeClassifier

    from safepoint.format.sklearn.validators import _tree

    X, y = _data(400)
    y = (y + (X[:, 2] > 0.5)) % 2
    tree = DecisionTreeClassifier(random_state=0).fit(X, y).tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    if what == "shared child":
        i = inner(nodes)
        nodes["right_child"][i[0]] = nodes["left_child"][i[0]]
    elif what == "shallow":
        state["max_depth"] -= 1
    elif what is not None:
        TREE_ATTACKS[what](nodes)
    args = [tree.n_features, np.asarray(tree.n_classes), tree.n_outputs]
    assert tree.n_features == 4 and state["max_depth"] >= 4  # what the attacks assume
    for layout, form in _node_layouts(nodes).items():
        given = {**state, "nodes": form, "values": state["values"].copy()}
        if what is None:
            checked = _tree(args, given, _Fails())  # type: ignore[arg-type]
            assert checked["nodes"] is form, layout
        else:
            with pytest.raises(FormatError, match=r"crafted|leaf|tree"):
                _tree(args, given, _Fails())  # type: ignore[arg-type]


@pytest.mark.parametrize("n_outputs", [1, 64, 65, 300])
def test_a_class_count_below_one_is_refused_however_many_outputs(n_outputs: int) -> None:
    """``_tree`` reads a few class counts as Python ints and many with numpy: a zero
    count is refused either way, before the node arrays are looked at."""
    from safepoint.format.sklearn.validators import _tree

    for dtype in (np.int64, np.uint8):
        n_classes = np.full(n_outputs, 2, dtype=dtype)
        n_classes[-1] = 0
        with pytest.raises(FormatError, match="inconsistent n_features / n_classes"):
            _tree([4, n_classes, n_outputs], {}, _Fails())  # type: ignore[arg-type]
        # the largest count sets the values' expected shape
        n_classes[-1] = 7
        state = {
            "nodes": np.zeros(1, dtype=[("left_child", "<i8"), ("right_child", "<i8"),
                                        ("feature", "<i8")]),
            "values": np.zeros((1, n_outputs, 2)),
            "node_count": 1,
            "max_depth": 0,
        }  # fmt: skip
        with pytest.raises(FormatError, match=r"expected \(1, \d+, 7\)"):
            _tree([4, n_classes, n_outputs], state, _Fails())  # type: ignore[arg-type]


def test_the_fast_node_read_matches_the_field_by_field_one() -> None:
    from sklearn.tree._tree import NODE_DTYPE

    from safepoint.format.sklearn.validators import _TREE_FIELDS, _index_rows

    rng = np.random.default_rng(3)
    nodes = np.zeros(1000, dtype=NODE_DTYPE)
    for k in _TREE_FIELDS:
        nodes[k] = rng.integers(-(2**62), 2**62, size=len(nodes))
    for form in _node_layouts(nodes).values():
        got = _index_rows(form)
        assert got.dtype == np.intp and got.flags.c_contiguous
        for row, k in zip(got, _TREE_FIELDS, strict=True):
            np.testing.assert_array_equal(row, nodes[k])
    # a view that skips records is not read as if it were contiguous
    every_other = nodes[::2]
    got = _index_rows(every_other)
    np.testing.assert_array_equal(got[0], every_other["left_child"])


def test_tree_wider_than_the_estimator(models: Any) -> None:
    """The Tree claims 50 features and splits on feature 40; the estimator checks X
    against n_features_in_=4, so predict would read X[i, 40]."""

    def mutate(c: Crafted) -> None:
        nd, nodes, args = tree_nodes(c)
        args[0] = 50
        nodes["feature"][0] = 40
        c.set_array(nd, nodes)

    attack(models, "tree", mutate)


def test_tree_estimator_without_n_features_in(models: Any) -> None:
    """Without n_features_in_, scikit-learn skips its check of X's width."""

    def mutate(c: Crafted) -> None:
        del attrs(c)["n_features_in_"]
        nd, nodes, args = tree_nodes(c)
        args[0] = 50
        nodes["feature"][0] = 40
        c.set_array(nd, nodes)

    attack(models, "tree", mutate)


def test_forest_tree_wider_than_the_forest(models: Any) -> None:
    """A consistent 50-feature tree inside a 4-feature forest: the forest checks X,
    then calls its trees with check_input=False."""

    def mutate(c: Crafted) -> None:
        nd, nodes, args = tree_nodes(c, 1)
        args[0] = 50
        nodes["feature"][0] = 40
        c.set_array(nd, nodes)
        for est in c.find("DecisionTreeClassifier"):
            if est.get("s", {}).get("s", {}).get("tree_") is c.find("Tree")[1]:
                attrs(c, est)["n_features_in_"] = 50

    attack(models, "forest", mutate)


def test_tree_arrays_of_the_wrong_shape_or_dtype(models: Any) -> None:
    def fewer_values(c: Crafted) -> None:
        tree = c.find("Tree")[0]
        nd = tree["s"]["s"]["values"]
        c.set_array(nd, c.array(nd)[:-1])

    def node_count(c: Crafted) -> None:
        c.find("Tree")[0]["s"]["s"]["node_count"] += 1

    def int32_children(c: Crafted) -> None:
        nd, nodes, _ = tree_nodes(c)
        dt = [(k, "<i4" if k.endswith("child") else nodes.dtype[k].str) for k in nodes.dtype.names]
        c.set_array(nd, nodes.astype(dt))

    def classes(c: Crafted) -> None:
        _, _, args = tree_nodes(c)
        c.set_array(args[1], np.array([5]))  # values hold 2 classes

    def outputs(c: Crafted) -> None:
        _, _, args = tree_nodes(c)
        args[2] = 0

    for fn in (fewer_values, node_count, int32_children, classes, outputs):
        attack(models, "tree", fn)


# -- GradientBoosting and IsolationForest ----------------------------------------------
def test_gradient_boosting_more_outputs_than_predictions(models: Any) -> None:
    """estimators_ reshaped from (4, 1) to (2, 2): predict_stages would write to
    column 1 of a one-column array."""

    def mutate(c: Crafted) -> None:
        est = c.deref(attrs(c)["estimators_"])
        assert est["@"] == "objarr" and est["s"] == [4, 1]
        est["s"] = [2, 2]

    attack(models, "gb", mutate)


def test_gradient_boosting_loss_and_trees_disagree(models: Any) -> None:
    """Two trees per iteration, but the binomial loss gives one column of initial
    predictions: tree (i, 1) would be added past the end of each row."""

    def mutate(c: Crafted) -> None:
        est = c.deref(attrs(c)["estimators_"])
        est["s"] = [2, 2]
        attrs(c)["n_trees_per_iteration_"] = 2

    attack(models, "gb", mutate)


def test_gradient_boosting_wide_tree(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        nd, nodes, args = tree_nodes(c, 3)
        args[0] = 50
        nodes["feature"][0] = 40
        c.set_array(nd, nodes)
        for est in c.find("DecisionTreeRegressor"):
            attrs(c, est)["n_features_in_"] = 50

    attack(models, "gb", mutate)


def test_isolation_forest_tree_wider_than_its_feature_subset(models: Any) -> None:
    """IsolationForest feeds each tree X[:, features_i] with check_input=False."""

    def mutate(c: Crafted) -> None:
        nd, nodes, args = tree_nodes(c, 0)
        args[0] = 4
        nodes["feature"][0] = 3
        c.set_array(nd, nodes)
        for est in c.find("ExtraTreeRegressor"):
            attrs(c, est)["n_features_in_"] = 4

    attack(models, "iforest", mutate)


# -- KD-tree and Ball-tree -----------------------------------------------------------
def binary_tree(c: Crafted) -> list[Any]:
    kind = "KDTree" if c.find("KDTree") else "BallTree"
    return c.find(kind)[0]["s"]["v"]


def edit_binary(slot: int, fn: Callable[[np.ndarray], Any]) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        nd = c.deref(binary_tree(c)[slot])
        arr = c.array(nd)
        out = fn(arr)
        c.set_array(nd, arr if out is None else out)

    return mutate


BINARY_ATTACKS: dict[str, Callable[[Crafted], None]] = {
    "idx_array past the data": edit_binary(1, lambda a: a.__setitem__(0, len(a))),
    "negative idx_array": edit_binary(1, lambda a: a.__setitem__(-1, -1)),
    "short idx_array": edit_binary(1, lambda a: a[:-1]),
    "node range past the data": edit_binary(2, lambda a: a["idx_end"].__setitem__(-1, 10**6)),
    "negative node range": edit_binary(2, lambda a: a["idx_start"].__setitem__(0, -5)),
    "inverted node range": edit_binary(
        2, lambda a: (a["idx_start"].__setitem__(0, 5), a["idx_end"].__setitem__(0, 2))
    ),
    "inner node without children": edit_binary(2, lambda a: a["is_leaf"].__setitem__(-1, 0)),
    "node_bounds of the wrong kind": edit_binary(3, lambda a: np.concatenate([a, a])),
    "node_bounds too narrow": edit_binary(3, lambda a: a[:, :, :2]),
    "fewer node_bounds": edit_binary(3, lambda a: a[:, :-1]),
    "fewer nodes": edit_binary(2, lambda a: a[:-1]),
    "no nodes": lambda c: (edit_binary(2, lambda a: a[:0])(c), binary_tree(c).__setitem__(6, 0)),
}


@pytest.mark.parametrize("kind", ["kd", "ball"])
@pytest.mark.parametrize("what", list(BINARY_ATTACKS))
def test_binary_tree_attacks(models: Any, kind: str, what: str) -> None:
    attack(models, kind, BINARY_ATTACKS[what])


def test_binary_tree_counts(models: Any) -> None:
    def n_nodes(c: Crafted) -> None:
        binary_tree(c)[6] += 2

    def state_too_short(c: Crafted) -> None:
        del binary_tree(c)[6:]

    for fn in (n_nodes, state_too_short):
        attack(models, "kd", fn)


def metric_state(c: Crafted) -> list[Any]:
    return binary_tree(c)[11]["s"]["v"]


@pytest.mark.parametrize(
    "name, slot, shape",
    [
        ("seuclid", 1, (2,)),
        ("seuclid", 1, (40,)),
        ("mahal", 2, (2, 2)),
        ("mahal", 2, (4, 2)),
        ("mahal", 2, (2, 4)),
        ("minkw", 1, (2,)),
    ],
)
def test_distance_metric_parameters_of_the_wrong_size(
    models: Any, name: str, slot: int, shape: tuple[int, ...]
) -> None:
    """V, VI and w are read for every feature of the data, at C speed."""

    def mutate(c: Crafted) -> None:
        nd = c.deref(metric_state(c)[slot])
        c.set_array(nd, np.ones(shape))

    attack(models, name, mutate)


def test_kernel_density_sample_weight(models: Any) -> None:
    for n in (0, 1, 119, 121):
        attack(models, "kde", edit_binary(12, lambda a, n=n: np.ones(n)))


# -- HistGradientBoosting -------------------------------------------------------------
def predictors(c: Crafted) -> list[dict[str, Any]]:
    return [c.deref(p["s"]["s"]["nodes"]) for p in c.find("TreePredictor")]


def edit_hgb(fn: Callable[[np.ndarray], Any], which: int = -1) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        nd = predictors(c)[which]
        arr = c.array(nd)
        fn(arr)
        c.set_array(nd, arr)

    return mutate


def hgb_inner(a: np.ndarray) -> np.ndarray:
    return np.flatnonzero(a["is_leaf"] == 0)


HGB_ATTACKS: dict[str, Callable[[np.ndarray], Any]] = {
    "child past the end": lambda a: a["left"].__setitem__(0, len(a)),
    "child far away": lambda a: a["right"].__setitem__(0, 2**32 - 1),
    "child back to the root": lambda a: a["left"].__setitem__(hgb_inner(a)[-1], 0),
    "self loop": lambda a: a["right"].__setitem__(hgb_inner(a)[-1], hgb_inner(a)[-1]),
    "back edge": lambda a: a["left"].__setitem__(hgb_inner(a)[-1], hgb_inner(a)[0]),
    "feature past the end": lambda a: a["feature_idx"].__setitem__(0, 5),
    "negative feature": lambda a: a["feature_idx"].__setitem__(0, -1),
    "bitset index past the end": lambda a: (
        a["is_categorical"].__setitem__(0, 1),
        a["bitset_idx"].__setitem__(0, 1000),
    ),
}


@pytest.mark.parametrize("what", list(HGB_ATTACKS))
def test_hist_gradient_boosting_node_attacks(models: Any, what: str) -> None:
    attack(models, "hgb", edit_hgb(HGB_ATTACKS[what]))


def test_hgb_predictor_without_nodes(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        nd = predictors(c)[0]
        c.set_array(nd, c.array(nd)[:0])

    attack(models, "hgb", mutate)


def test_hgb_without_n_features_in(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        del attrs(c)["n_features_in_"]
        attrs(c).pop("_n_features", None)
        edit_hgb(lambda a: a["feature_idx"].__setitem__(0, 1000))(c)

    attack(models, "hgb", mutate)


def test_hgb_categorical_split_on_a_numeric_feature(models: Any) -> None:
    """known_cat_bitsets has one row per categorical feature; a categorical split on
    a numeric feature would index it through f_idx_map."""

    def mutate(c: Crafted) -> None:
        # mark no feature categorical in the bin mapper: known_cat_bitsets gets no row
        mapper = attrs(c, c.find("_BinMapper")[0])
        nd = c.deref(mapper["is_categorical_"])
        c.set_array(nd, np.zeros_like(c.array(nd)))

        def fn(a: np.ndarray) -> None:
            i = hgb_inner(a)[0]
            a["is_categorical"][i] = 1
            a["bitset_idx"][i] = 0

        for k in range(len(predictors(c))):
            edit_hgb(fn, k)(c)
        for p in c.find("TreePredictor"):
            for key in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
                bnd = c.deref(p["s"]["s"][key])
                c.set_array(bnd, np.zeros((1, 8), dtype=np.uint32))

    attack(models, "hgb", mutate)


def test_hgb_preprocessor_that_drops_columns(models: Any) -> None:
    """The predictors index the preprocessor's output: dropping the numerical columns
    would leave X narrower than the features the trees split on."""

    def mutate(c: Crafted) -> None:
        ct = attrs(c, c.find("ColumnTransformer")[0])
        steps = c.deref(ct["transformers_"])
        numerical = next(s for s in steps["v"] if s["v"][0] == "numerical")
        numerical["v"][1] = "drop"

    attack(models, "hgb", mutate)


def test_hgb_preprocessor_with_another_function(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        row = c.manifest["types"].index(["sklearn.utils.validation", "check_array", "ref"])
        c.manifest["types"][row] = ["numpy", "transpose", "ref"]

    attack(models, "hgb", mutate)


def test_hgb_bin_mapper_of_the_wrong_width(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        mapper = attrs(c, c.find("_BinMapper")[0])
        nd = c.deref(mapper["is_categorical_"])
        c.set_array(nd, np.zeros(2, dtype=np.uint8))

    attack(models, "hgb", mutate)


def test_hgb_bitsets_of_the_wrong_shape(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        p = c.find("TreePredictor")[0]
        nd = c.deref(p["s"]["s"]["raw_left_cat_bitsets"])
        c.set_array(nd, np.zeros((1, 4), dtype=np.uint32))

    attack(models, "hgb", mutate)


# -- k-means ------------------------------------------------------------------------------
def test_kmeans_centers_narrower_than_the_data(models: Any) -> None:
    """predict hands the centers to BLAS with the width of X: a narrow center array
    is read past its end (no crash, just other memory: silently wrong labels)."""

    def mutate(c: Crafted) -> None:
        nd = c.deref(attrs(c)["cluster_centers_"])
        c.set_array(nd, c.array(nd)[:, :1].copy())

    attack(models, "kmeans", mutate)

    def no_width(c: Crafted) -> None:
        del attrs(c)["n_features_in_"]

    attack(models, "kmeans", no_width)


def test_bisecting_kmeans_node_center(models: Any) -> None:
    def mutate(c: Crafted) -> None:
        node = c.find("_BisectingTree")[-1]
        nd = c.deref(attrs(c, node)["center"])
        c.set_array(nd, c.array(nd)[:2].copy())

    attack(models, "bisect", mutate)


# -- mmap: the checks run on private copies --------------------------------------------
def test_structural_arrays_are_copied_under_mmap(models: Any, tmp_path: Any) -> None:
    """Large tree node arrays would be mapped; the validator must own what it checked."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12_000, 2))
    y = rng.normal(size=len(X))
    model = DecisionTreeRegressor(random_state=0).fit(X, y)
    assert model.tree_.node_count * 64 > 2**20  # big enough to be mapped
    path = tmp_path / "big.sp"
    sp.dump(model, path)
    loaded = sp.load(path, mmap=True)
    np.testing.assert_array_equal(loaded.predict(X[:50]), model.predict(X[:50]))
    # a file changed after the load cannot reach the tree: overwrite the node buffer
    c = Crafted.from_bytes(path.read_bytes())
    nd = c.find("Tree")[0]["s"]["s"]["nodes"]
    table = {}
    c.to_bytes(table_hook=lambda t: table.update(row=t[nd["b"]]))
    with open(path, "r+b") as f:
        f.seek(table["row"][0])
        f.write(b"\xff" * 4096)
    np.testing.assert_array_equal(loaded.predict(X[:50]), model.predict(X[:50]))


# -- the same states handed to scikit-learn directly -----------------------------------
_CHILD = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    model = pickle.loads(sys.stdin.buffer.read())
    X = np.random.default_rng(0).normal(size=(200, {d}))
    print(model.predict(X)[:3], flush=True)
    """
)


def _bypass(model: Any, d: int, timeout: float) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(
            [sys.executable, "-c", _CHILD.format(d=d)],
            input=pickle.dumps(model),
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None  # the child hung; subprocess.run killed it


@pytest.mark.slow
def test_bypass_tree_child_out_of_range_crashes_sklearn(models: Any) -> None:
    """The crafted tree that safepoint refuses, given to scikit-learn via pickle."""
    model = copy.deepcopy(models["tree"][0])
    state = model.tree_.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 10**12
    model.tree_.__setstate__({**state, "nodes": nodes})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _bypass(model, 4, timeout=60)
    assert res is not None and res.returncode < 0, res  # killed by a signal (SIGSEGV)
    attack(models, "tree", edit_tree(0, lambda n: n["left_child"].__setitem__(0, 10**12)))


@pytest.mark.skipif(not FULL, reason="waits for a hang: SAFEPOINT_FULL=1")
def test_bypass_hgb_cycle_hangs_sklearn(models: Any) -> None:
    """A predictor node that points back to itself: predict never returns."""
    model = copy.deepcopy(models["hgb"][0])
    pred = model._predictors[0][0]
    pred.nodes["left"][0] = pred.nodes["right"][0] = 0  # every row loops at the root
    res = _bypass(model, 5, timeout=15 if FULL else 8)
    assert res is None, res  # killed after the timeout
    attack(models, "hgb", edit_hgb(HGB_ATTACKS["self loop"]))
