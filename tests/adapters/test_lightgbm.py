"""LightGBM adapter: native text model inside the container, identical predictions, audit."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import safepoint as sp
from safepoint.adapters.lightgbm import check_model_text
from safepoint.format.reader import open_reader

lgb = pytest.importorskip("lightgbm")
pd = pytest.importorskip("pandas")

PARAMS = {"verbose": -1, "n_jobs": 1}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 5)), columns=[f"f{i}" for i in range(5)])
    X["cat"] = pd.Categorical(rng.choice(["a", "b", "c"], size=400))
    y = ((X["f0"] + (X["cat"] == "b") * 1.5) > 0.5).astype(int)
    return X, y


def _text_buffer(data: bytes) -> str:
    r = open_reader(data)
    try:
        return r.read_bytes(0).decode()
    finally:
        r.close()


def test_booster_round_trip_is_the_native_text(data):
    X, y = data
    booster = lgb.train({**PARAMS, "num_leaves": 7}, lgb.Dataset(X, y), 15)
    blob = sp.dumps(booster)
    assert _text_buffer(blob) == booster.model_to_string(num_iteration=-1)
    back = sp.loads(blob)
    assert type(back) is lgb.Booster
    np.testing.assert_array_equal(back.predict(X), booster.predict(X))
    assert back.pandas_categorical == booster.pandas_categorical
    info = sp.inspect(blob)
    assert info.types == [{"name": "lightgbm.basic.Booster", "kind": "adapter", "trusted": True}]
    assert info.environment["packages"]["lightgbm"] == lgb.__version__


@pytest.mark.filterwarnings("ignore:The argument 'eval_set' is deprecated")
def test_classifier_with_categorical_and_early_stopping(data):
    X, y = data
    model = lgb.LGBMClassifier(n_estimators=300, num_leaves=7, **PARAMS)
    model.fit(
        X[:300],
        y[:300],
        eval_set=[(X[300:], y[300:])],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert 0 < model.best_iteration_ < 300
    back = sp.loads(sp.dumps(model))
    assert type(back) is lgb.LGBMClassifier
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert back.best_iteration_ == model.best_iteration_
    assert back.best_score_ == model.best_score_
    assert back.get_params() == model.get_params()
    np.testing.assert_array_equal(back.classes_, model.classes_)
    assert list(back.feature_names_in_) == list(model.feature_names_in_)


def test_multiclass_with_string_labels_and_regressor_in_store(tmp_path, data):
    X, _y = data
    level = (X["f1"].to_numpy() > 0).astype(int) + (X["f2"].to_numpy() > 1).astype(int)
    labels = np.array(["low", "mid", "high"])[level]
    clf = lgb.LGBMClassifier(n_estimators=20, **PARAMS).fit(X, labels)
    reg = lgb.LGBMRegressor(n_estimators=20, **PARAMS).fit(X, X["f0"] * 2)
    store = sp.Store(str(tmp_path / "store"))
    store.put("demo/clf", clf)
    store.put("demo/reg", reg, golden=X.head(5))
    clf2, reg2 = store.get("demo/clf"), store.get("demo/reg")
    np.testing.assert_array_equal(clf2.predict(X), clf.predict(X))
    np.testing.assert_array_equal(clf2.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(reg2.predict(X), reg.predict(X))
    assert store.verify("demo/reg").ok


def test_unfitted_wrapper():
    model = lgb.LGBMRegressor(n_estimators=9, learning_rate=0.2)
    back = sp.loads(sp.dumps(model))
    assert back.get_params() == model.get_params()


def _booster_text() -> str:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    return lgb.train({**PARAMS, "num_leaves": 4}, lgb.Dataset(X, y), 3).model_to_string()


@pytest.mark.parametrize(
    "pattern, replacement",
    [
        (r"split_feature=\d+", "split_feature=100000"),
        (r"left_child=-?\d+", "left_child=5000"),
        (r"right_child=-?\d+", "right_child=0"),
        (r"leaf_value=[^\n]*", "leaf_value=1"),
        (r"num_leaves=\d+", "num_leaves=zz"),
        (r"end of trees", "the end"),
    ],
    ids=["split-feature", "child-out-of-range", "cycle", "leaf-count", "not-a-number", "truncated"],
)
def test_crafted_text_is_refused_before_lightgbm_sees_it(pattern, replacement):
    text = re.sub(pattern, replacement, _booster_text(), count=1)
    with pytest.raises(sp.FormatError, match="lightgbm model"):
        check_model_text(text)


@pytest.mark.slow
def test_crafted_file_is_refused_in_a_fresh_process():
    """End to end, in a subprocess: a crafted model must raise, not crash the interpreter
    (unchecked, LightGBM aborts or reads out of bounds on this text)."""
    booster = lgb.Booster(model_str=_booster_text())
    crafted = re.sub(r"left_child=-?\d+", "left_child=9", _booster_text(), count=1)
    # the file is valid in every other way (checksums included): what an attacker can write
    booster.model_to_string = lambda num_iteration=-1: crafted
    data = sp.dumps(booster)
    script = (
        "import sys, safepoint as sp\n"
        "try:\n"
        "    sp.loads(sys.stdin.buffer.read()).predict([[0.0, 0.0, 0.0, 0.0]])\n"
        "except sp.SafepointError as e:\n"
        "    print('refused:', type(e).__name__, e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b"refused: FormatError lightgbm model" in proc.stdout
