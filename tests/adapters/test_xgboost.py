"""XGBoost adapter: native UBJSON inside the container, identical predictions, audit."""

from __future__ import annotations

import json

import numpy as np
import pytest

import safepoint as sp
from safepoint.format.reader import open_reader

xgb = pytest.importorskip("xgboost")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


def same_params(a: dict, b: dict) -> bool:
    """get_params() equality where NaN (XGBoost's default ``missing``) equals NaN."""
    return a.keys() == b.keys() and all(
        (isinstance(v, float) and np.isnan(v) and isinstance(b[k], float) and np.isnan(b[k]))
        or v == b[k]
        for k, v in a.items()
    )


def _buffers(data: bytes) -> list[bytes]:
    r = open_reader(data)
    try:
        return [r.read_bytes(i) for i in range(len(r.buffers))]
    finally:
        r.close()


def test_booster_round_trip_is_the_native_ubj_bytes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int)
    booster = xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, y), 20
    )
    data = sp.dumps(booster)
    # the file holds XGBoost's own model bytes, not a pickle
    assert bytes(booster.save_raw("ubj")) in _buffers(data)
    back = sp.loads(data)
    assert type(back) is xgb.Booster
    d = xgb.DMatrix(X)
    np.testing.assert_array_equal(back.predict(d), booster.predict(d))
    info = sp.inspect(data)
    assert info.types == [{"name": "xgboost.core.Booster", "kind": "adapter", "trusted": True}]
    assert info.environment["packages"]["xgboost"] == xgb.__version__


def test_classifier_with_dataframe_round_trip(iris):
    X, y = iris
    model = xgb.XGBClassifier(n_estimators=15, max_depth=3, learning_rate=0.3, n_jobs=1).fit(X, y)
    back = sp.loads(sp.dumps(model))
    assert type(back) is xgb.XGBClassifier
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert same_params(back.get_params(), model.get_params())
    assert list(back.feature_names_in_) == list(X.columns)
    np.testing.assert_array_equal(back.classes_, model.classes_)


def test_regressor_with_early_stopping_and_golden_verify(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5))
    y = X @ np.arange(5.0) + rng.normal(size=400)
    model = xgb.XGBRegressor(n_estimators=200, early_stopping_rounds=5, max_depth=2, n_jobs=1)
    model.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    path = tmp_path / "reg.sp"
    sp.dump(model, path, golden=X[:10])
    back = sp.load(path)
    assert back.best_iteration == model.best_iteration
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    report = sp.verify(path)
    assert report.ok, report.problems
    assert report.golden["predict"] == "identical"


def test_unfitted_wrapper_keeps_params():
    model = xgb.XGBRegressor(n_estimators=7, max_depth=4, reg_lambda=0.5)
    back = sp.loads(sp.dumps(model))
    assert same_params(back.get_params(), model.get_params())
    assert not hasattr(back, "_Booster")


def test_store_put_get(tmp_path, iris):
    X, y = iris
    model = xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(X, y)
    store = sp.Store(str(tmp_path / "store"))
    mv = store.put("iris/xgb", model, alias="production")
    back = store.get("iris/xgb", "production")
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    assert store.info("iris/xgb", mv.version).digest == mv.digest


class MyXGB(xgb.XGBClassifier):  # a subclass is not one of the listed classes
    pass


def test_subclass_is_not_trusted_by_default(iris):
    X, y = iris
    model = MyXGB(n_estimators=3, n_jobs=1).fit(X, y)
    data = sp.dumps(model)
    with pytest.raises(sp.UntrustedTypesError) as ei:
        sp.loads(data)
    assert ei.value.types == [f"{__name__}.MyXGB"]
    back = sp.loads(data, trusted=[MyXGB])
    np.testing.assert_array_equal(back.predict(X), model.predict(X))


def _crafted(mutate) -> bytes:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 4))
    y = (X[:, 0] > 0).astype(int)
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(X, y), 3)
    model = json.loads(bytes(booster.save_raw("json")))
    mutate(model["learner"]["gradient_booster"]["model"]["trees"][0])
    crafted = xgb.Booster()
    # XGBoost itself accepts these trees; predicting with them reads out of bounds
    crafted.load_model(bytearray(json.dumps(model).encode()))
    return sp.dumps(crafted)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t["split_indices"].__setitem__(0, 10**6),
        lambda t: t["left_children"].__setitem__(0, 10**5),
        lambda t: t["right_children"].__setitem__(0, 0),
    ],
    ids=["split-feature", "child-out-of-range", "cycle"],
)
def test_crafted_trees_are_refused_before_predict(mutate):
    data = _crafted(mutate)
    with pytest.raises(sp.FormatError, match="xgboost model"):
        sp.loads(data)
