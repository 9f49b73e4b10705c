"""Crafted object tables (``objtab`` nodes): the table validator of HistGradientBoosting's
predictors must refuse everything the per-predictor validator refuses, and the table
itself must be well formed (lengths, rows, columns) before anything is built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from spcraft import Crafted
from test_compiled import HGB_ATTACKS, TREE_ATTACKS

import safepoint as sp
from safepoint.errors import FormatError, SafepointError


@pytest.fixture(scope="module")
def hgb() -> tuple[Any, bytes]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    cat = rng.integers(0, 6, size=len(X))
    Xc = np.c_[X, cat]
    y = ((cat % 2 == 0) ^ (X[:, 0] > 0)).astype(int)
    model = HistGradientBoostingClassifier(
        max_iter=20, categorical_features=[4], min_samples_leaf=5, random_state=0
    ).fit(Xc, y)
    return model, sp.dumps(model)


def table(c: Crafted) -> dict[str, Any]:
    found = [n for n in c.walk() if n.get("@") == "objtab"]
    assert len(found) == 1
    return found[0]


def column(c: Crafted, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the column node, an ``nd``-like view of it for Crafted.array/set_array)."""
    t = table(c)
    col = t["c"][t["k"].index(key)]
    return col, {"d": col["d"], "s": [sum(col["l"]), *col["s"]], "b": col["b"]}


def edit_predictor(k: int, fn: Callable[[np.ndarray], Any]) -> Callable[[Crafted], None]:
    """Apply ``fn`` to predictor ``k``'s nodes (indices local to the predictor)."""

    def mutate(c: Crafted) -> None:
        col, nd = column(c, "nodes")
        whole = c.array(nd)
        start = sum(col["l"][:k])
        part = whole[start : start + col["l"][k]]
        fn(part)
        whole[start : start + col["l"][k]] = part
        c.set_array(nd, whole)

    return mutate


def refused(data: bytes, mutate: Callable[[Crafted], Any]) -> SafepointError:
    c = Crafted.from_bytes(data)
    mutate(c)
    with pytest.raises(SafepointError) as info:
        sp.loads(c.to_bytes())
    assert len(str(info.value)) > 30, info.value
    return info.value


@pytest.mark.slow
def test_the_model_is_a_table_and_predicts(hgb: tuple[Any, bytes]) -> None:
    model, data = hgb
    c = Crafted.from_bytes(data)
    assert table(c)["n"] == 20
    X = np.c_[np.random.default_rng(1).normal(size=(50, 4)), np.arange(50) % 6]
    np.testing.assert_array_equal(sp.loads(data).predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("k", [0, 7, 19])
@pytest.mark.parametrize("what", list(HGB_ATTACKS))
def test_node_attacks_on_any_predictor_of_the_table(
    hgb: tuple[Any, bytes], what: str, k: int
) -> None:
    err = refused(hgb[1], edit_predictor(k, HGB_ATTACKS[what]))
    assert isinstance(err, FormatError)


def test_a_child_pointing_into_the_next_predictor(hgb: tuple[Any, bytes]) -> None:
    """Local indices: a child index valid for the whole column but not for its own
    predictor is out of range."""

    def fn(a: np.ndarray) -> None:
        i = np.flatnonzero(a["is_leaf"] == 0)[-1]
        a["right"][i] = len(a)

    refused(hgb[1], edit_predictor(3, fn))


def test_a_predictor_without_nodes(hgb: tuple[Any, bytes]) -> None:
    def mutate(c: Crafted) -> None:
        col, nd = column(c, "nodes")
        whole = c.array(nd)
        n0 = col["l"][0]
        c.set_array(nd, whole[n0:])
        col["l"][0] = 0

    refused(hgb[1], mutate)


def test_a_bitset_index_past_its_own_predictor(hgb: tuple[Any, bytes]) -> None:
    """Bitsets are per predictor too: an index valid in the whole column is not."""

    def mutate(c: Crafted) -> None:
        col, _ = column(c, "raw_left_cat_bitsets")
        total = sum(col["l"])
        assert total > 0
        owner = next(i for i, n in enumerate(col["l"]) if n)

        def fn(a: np.ndarray) -> None:
            i = np.flatnonzero((a["is_leaf"] == 0) & (a["is_categorical"] == 1))[0]
            a["bitset_idx"][i] = col["l"][owner]

        edit_predictor(owner, fn)(c)

    refused(hgb[1], mutate)


@pytest.mark.parametrize(
    "mutate",
    [
        # lengths that do not add up to the column, or are not counts
        lambda c: column(c, "nodes")[0]["l"].__setitem__(0, column(c, "nodes")[0]["l"][0] + 1),
        lambda c: column(c, "nodes")[0]["l"].__setitem__(0, -1),
        lambda c: column(c, "nodes")[0]["l"].__setitem__(0, True),
        lambda c: column(c, "nodes")[0]["l"].pop(),
        # the object count, the rows
        lambda c: table(c).__setitem__("n", 21),
        lambda c: table(c).__setitem__("n", 10**12),
        lambda c: table(c)["r"].__setitem__(0, table(c)["r"][0] + 1),
        lambda c: table(c).__setitem__("r", "rows"),
        # attribute names and columns
        lambda c: table(c)["k"].__setitem__(1, table(c)["k"][0]),
        lambda c: table(c)["k"].pop(),
        lambda c: table(c)["c"].__setitem__(0, [1, 2]),
        lambda c: table(c)["c"].__setitem__(0, {"v": [{"@": "dict", "s": {}}] * 20}),
        lambda c: table(c)["c"].__setitem__(0, {"v": [1] * 19}),
        lambda c: column(c, "nodes")[0].__setitem__("s", [2**40]),
        lambda c: column(c, "nodes")[0].__setitem__("d", "|O"),
        lambda c: column(c, "raw_left_cat_bitsets")[0].__setitem__("s", [4]),
        # a column the validator needs, missing
        lambda c: (table(c)["k"].pop(0), table(c)["c"].pop(0)),
        # the class: a function, not a class
        lambda c: c.manifest["types"].__setitem__(table(c)["t"], ["numpy", "add", "ref"]),
    ],
)
def test_malformed_tables(hgb: tuple[Any, bytes], mutate: Callable[[Crafted], Any]) -> None:
    refused(hgb[1], mutate)


def test_a_table_of_an_untrusted_class_is_refused_before_anything_is_built(
    hgb: tuple[Any, bytes],
) -> None:
    def mutate(c: Crafted) -> None:
        c.manifest["types"][table(c)["t"]] = ["os", "_wrap_close", "obj"]

    err = refused(hgb[1], mutate)
    assert isinstance(err, sp.UntrustedTypesError)


# -- a forest: a table of trees, each holding a table row of a Tree (a nested table) ----
@pytest.fixture(scope="module")
def forest() -> tuple[Any, bytes]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0).fit(X, y)
    return model, sp.dumps(model)


def tree_table(c: Crafted) -> dict[str, Any]:
    outer = table(c)
    return outer["c"][outer["k"].index("tree_")]["o"]


def edit_tree_in_table(k: int, fn: Callable[[np.ndarray], Any]) -> Callable[[Crafted], None]:
    def mutate(c: Crafted) -> None:
        t = tree_table(c)
        c.edit_rows(t["c"][t["k"].index("nodes")], k, fn)

    return mutate


def test_a_forest_is_a_table_of_trees_and_predicts(forest: tuple[Any, bytes]) -> None:
    model, data = forest
    c = Crafted.from_bytes(data)
    assert table(c)["n"] == 20 and tree_table(c)["n"] == 20
    assert c.type_row(tree_table(c)) == ["sklearn.tree._tree", "Tree", "red"]
    X = np.random.default_rng(2).normal(size=(40, 4))
    loaded = sp.loads(data)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert type(loaded.estimators_[3].n_classes_) is type(model.estimators_[3].n_classes_)


@pytest.mark.parametrize("k", [0, 19])
@pytest.mark.parametrize("what", list(TREE_ATTACKS))
def test_tree_attacks_inside_a_table(forest: tuple[Any, bytes], what: str, k: int) -> None:
    err = refused(forest[1], edit_tree_in_table(k, TREE_ATTACKS[what]))
    assert isinstance(err, FormatError)


def nested(t: int, depth: int) -> dict[str, Any]:
    """Tables of tables, ``depth`` deep, of 20 objects of types row ``t``."""
    node: dict[str, Any] = {"t": t, "n": 20, "k": [], "c": []}
    for _ in range(depth):
        node = {"t": t, "n": 20, "k": ["x"], "c": [{"o": node}]}
    return node


@pytest.mark.parametrize(
    "mutate",
    [
        # a Tree built without its constructor arguments, or with the wrong ones
        lambda c: tree_table(c).pop("a"),
        lambda c: tree_table(c)["a"].pop(),
        lambda c: tree_table(c)["a"][0].__setitem__("v", [10**6] * 20),
        # a row of the types table of another kind than the table's objects need
        lambda c: c.type_row(tree_table(c)).__setitem__(2, "obj"),
        lambda c: c.type_row(tree_table(c)).__setitem__(2, "pyx"),
        # numpy scalars of an object or foreign-order dtype
        lambda c: next(col for col in table(c)["c"] if "sc" in col).__setitem__("sc", "|O"),
        lambda c: next(col for col in table(c)["c"] if "sc" in col).__setitem__("sc", ">i8"),
        # nesting without end
        lambda c: tree_table(c)["c"].__setitem__(0, {"o": nested(table(c)["t"], 10)}),
    ],
)
def test_malformed_nested_tables(
    forest: tuple[Any, bytes], mutate: Callable[[Crafted], Any]
) -> None:
    refused(forest[1], mutate)


# -- the table validators refuse exactly what the per-object validators refuse ---------
def _per_object_verdict(data: bytes) -> bool:
    """Whether the file loads when its tables are validated object by object."""
    from safepoint.format import registry as validators

    saved = dict(validators._table_validators)
    validators._table_validators.clear()
    try:
        sp.loads(data)
        return True
    except FormatError:
        return False
    finally:
        validators._table_validators.update(saved)


def _table_verdict(data: bytes) -> bool:
    try:
        sp.loads(data)
        return True
    except FormatError:
        return False


def test_table_validators_agree_with_the_per_object_ones(hgb: tuple[Any, bytes]) -> None:
    data = hgb[1]
    fields = ("left", "right", "feature_idx", "bitset_idx", "is_categorical", "is_leaf")
    rng = np.random.default_rng(7)
    outcomes = set()
    for _ in range(60):
        k = int(rng.integers(0, 20))
        field = fields[int(rng.integers(0, len(fields)))]

        def fn(a: np.ndarray, field: str = field) -> None:
            i = int(rng.integers(0, len(a)))
            lo = -2 if a[field].dtype.kind == "i" else 0
            a[field][i] = int(rng.integers(lo, len(a) + 3))

        c = Crafted.from_bytes(data)
        edit_predictor(k, fn)(c)
        crafted = c.to_bytes()
        verdict = _table_verdict(crafted)
        assert verdict == _per_object_verdict(crafted)
        outcomes.add(verdict)
    assert outcomes == {True, False}  # both kinds of mutation were met


# -- large columns of a class without a table validator are read object by object ------
@pytest.fixture
def streamed(monkeypatch: Any) -> None:
    from safepoint.format.handlers import tables

    monkeypatch.setattr(tables, "STREAM_FROM", 1)


@pytest.mark.usefixtures("streamed")
def test_a_streamed_forest_loads_and_predicts(forest: tuple[Any, bytes]) -> None:
    model, data = forest
    X = np.random.default_rng(3).normal(size=(40, 4))
    loaded = sp.loads(data)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    # each Tree got arrays of its own, not views of one column
    signed = sp.dumps(model, key=b"k" * 16)
    np.testing.assert_array_equal(sp.loads(signed, key=b"k" * 16).predict(X), model.predict(X))


@pytest.mark.usefixtures("streamed")
@pytest.mark.parametrize("what", ["left child past the end", "self loop", "feature past the end"])
def test_tree_attacks_on_a_streamed_column(forest: tuple[Any, bytes], what: str) -> None:
    refused(forest[1], edit_tree_in_table(11, TREE_ATTACKS[what]))


@pytest.mark.usefixtures("streamed")
def test_a_streamed_column_is_checksummed(forest: tuple[Any, bytes]) -> None:
    c = Crafted.from_bytes(forest[1])
    t = tree_table(c)
    col = t["c"][t["k"].index("values")]
    data = bytearray(c.to_bytes())
    raw = c.to_bytes()
    # flip a bit of the stored values column without fixing its checksum
    from safepoint.format.reader import open_reader

    r = open_reader(raw)
    offset = r.buffers[col["b"]].offset
    r.close()
    data[offset + 100] ^= 0x04
    with pytest.raises(sp.IntegrityError, match="checksum"):
        sp.loads(bytes(data))


@pytest.mark.usefixtures("streamed")
@pytest.mark.parametrize("delta", [-1, 1])
def test_streamed_lengths_must_cover_the_column(forest: tuple[Any, bytes], delta: int) -> None:
    def mutate(c: Crafted) -> None:
        t = tree_table(c)
        col = t["c"][t["k"].index("values")]
        col["l"][-1] += delta

    refused(forest[1], mutate)


# -- a forest of 100 trees: the vectorised Tree check names the tree at fault -----------
@pytest.fixture(scope="module")
def forest100() -> tuple[Any, bytes]:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0).fit(X, y)
    return model, sp.dumps(model)


@pytest.mark.parametrize("what", list(TREE_ATTACKS))
def test_a_bad_node_in_tree_57_of_100_is_refused_and_named(
    forest100: tuple[Any, bytes], what: str
) -> None:
    err = refused(forest100[1], edit_tree_in_table(57, TREE_ATTACKS[what]))
    assert isinstance(err, FormatError)
    assert "tree 57 of 100" in str(err), err


def _tree_column(c: Crafted, key: str) -> dict[str, Any]:
    t = tree_table(c)
    return t["c"][t["k"].index(key)]


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        # decision_path sizes its output from max_depth
        (lambda c: _tree_column(c, "max_depth")["v"].__setitem__(57, 1), "max_depth is less"),
        (lambda c: _tree_column(c, "max_depth")["v"].__setitem__(57, -1), "max_depth is less"),
        (lambda c: _tree_column(c, "max_depth")["v"].__setitem__(57, "6"), "max_depth"),
        (lambda c: _tree_column(c, "node_count")["v"].__setitem__(57, 3), "node_count"),
        # one more feature than the estimator has: the Tree's own width (arg 0)
        (lambda c: tree_table(c)["a"][0]["v"].__setitem__(57, -1), "inconsistent n_features"),
        (lambda c: tree_table(c)["a"][2]["v"].__setitem__(57, 0), "inconsistent n_features"),
    ],
)
def test_tree_table_state_attacks_are_named(
    forest100: tuple[Any, bytes], mutate: Callable[[Crafted], Any], why: str
) -> None:
    err = refused(forest100[1], mutate)
    assert why in str(err) and "tree 57 of 100" in str(err), err


def test_two_parents_for_one_node_in_tree_57(forest100: tuple[Any, bytes]) -> None:
    def shared_child(n: np.ndarray) -> None:
        i = np.flatnonzero(n["left_child"] != -1)
        n["right_child"][i[0]] = n["left_child"][i[0]]

    err = refused(forest100[1], edit_tree_in_table(57, shared_child))
    assert "tree 57 of 100" in str(err), err


def test_a_child_pointing_into_the_next_tree(forest100: tuple[Any, bytes]) -> None:
    """Child indices are local to their tree: one that is valid in the column as a
    whole, but past the end of its own tree, is refused."""

    def mutate(c: Crafted) -> None:
        col = _tree_column(c, "nodes")
        edit_tree_in_table(57, lambda n: n["left_child"].__setitem__(0, len(n) + 1))(c)
        assert col["l"][58] > 2

    err = refused(forest100[1], mutate)
    assert "outside the node array" in str(err) and "tree 57 of 100" in str(err), err


def test_the_tree_table_agrees_with_the_per_tree_check(forest: tuple[Any, bytes]) -> None:
    data = forest[1]
    fields = ("left_child", "right_child", "feature")
    rng = np.random.default_rng(11)
    outcomes = set()
    for _ in range(60):
        k = int(rng.integers(0, 20))
        field = fields[int(rng.integers(0, len(fields)))]

        def fn(a: np.ndarray, field: str = field) -> None:
            i = int(rng.integers(0, len(a)))
            a[field][i] = int(rng.integers(-2, len(a) + 3))

        c = Crafted.from_bytes(data)
        edit_tree_in_table(k, fn)(c)
        crafted = c.to_bytes()
        verdict = _table_verdict(crafted)
        assert verdict == _per_object_verdict(crafted)
        outcomes.add(verdict)
    assert outcomes == {True, False}  # both kinds of mutation were met


def test_a_forests_trees_are_checked_by_the_table_validator(
    forest: tuple[Any, bytes],
) -> None:
    """The Trees of a forest go through the vectorised check, once for all of them,
    with the constructor arguments as columns."""
    from safepoint.format import registry as validators

    calls = []
    fn, replaces = validators._table_validators["sklearn.tree._tree.Tree"]

    def spy(columns: Any, lengths: Any, n: int, dec: Any) -> None:
        calls.append(sorted(columns))
        fn(columns, lengths, n, dec)

    validators._table_validators["sklearn.tree._tree.Tree"] = (spy, replaces)
    try:
        model = sp.loads(forest[1])
    finally:
        validators._table_validators["sklearn.tree._tree.Tree"] = (fn, replaces)
    assert len(calls) == 1 and "<arg 1>" in calls[0] and "nodes" in calls[0]
    X = np.random.default_rng(4).normal(size=(10, 4))
    np.testing.assert_array_equal(model.predict(X), forest[0].predict(X))


# -- big trees are checked one by one (tables.TABLE_VALIDATOR_MAX_ROWS) ------------------
@pytest.mark.parametrize("what", list(TREE_ATTACKS))
def test_trees_checked_one_by_one_refuse_the_same_attacks(
    forest100: tuple[Any, bytes], what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safepoint.format.handlers import tables

    monkeypatch.setattr(tables, "TABLE_VALIDATOR_MAX_ROWS", 0)  # every tree counts as big
    err = refused(forest100[1], edit_tree_in_table(57, TREE_ATTACKS[what]))
    assert isinstance(err, FormatError)


def test_a_forest_of_big_trees_skips_the_table_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from safepoint.format.handlers import tables

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5))
    y = rng.integers(0, 2, 3000)  # noise: trees grow until their leaves are pure
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    nodes = np.mean([e.tree_.node_count for e in model.estimators_])
    assert nodes > tables.TABLE_VALIDATOR_MAX_ROWS
    called: list[type] = []
    real = tables.table_validator_of

    def spy(cls: type) -> Any:
        fn = real(cls)
        if fn is None:
            return None

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            called.append(cls)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(tables, "table_validator_of", spy)
    data = sp.dumps(model)
    loaded = sp.loads(data)
    assert called == []  # checked one by one, by _tree
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # the trees are one table: its check does run when they count as small
    monkeypatch.setattr(tables, "TABLE_VALIDATOR_MAX_ROWS", 10**9)
    sp.loads(data)
    assert called, "the table validator was not used for small trees"
