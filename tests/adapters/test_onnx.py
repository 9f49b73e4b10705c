"""ONNX export through skl2onnx with an onnxruntime parity check."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import safepoint as sp

pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")


def test_classifier_pipeline_export_matches(tmp_path, new_file_mode):
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    path = tmp_path / "iris.onnx"
    assert sp.export_onnx(model, X[:30], path) is None
    # the mode of a new file, not the temporary file's 0600
    assert path.stat().st_mode & 0o777 == new_file_mode
    sess = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"X": X.astype(np.float32)})
    np.testing.assert_array_equal(label, model.predict(X))
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_regressor_export_returns_bytes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X[:, 0] * 2 + rng.normal(size=200)
    model = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(X, y)
    data = sp.export_onnx(model, X[:20])
    assert isinstance(data, bytes) and data
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (pred,) = sess.run(None, {"X": X.astype(np.float32)})
    np.testing.assert_allclose(pred.ravel(), model.predict(X), rtol=1e-4, atol=1e-4)


class Custom(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_unsupported_model_raises_export_error(tmp_path):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(sp.ExportError, match="cannot convert Custom"):
        sp.export_onnx(Custom().fit(X, y), X[:5], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_raises_export_error():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)) * 1e4
    model = LinearRegression().fit(X, X @ np.array([1e3, -2e3, 5e2]) + 1e7)
    with pytest.raises(sp.ExportError, match="differs from the original"):
        sp.export_onnx(model, X, rtol=0, atol=0)


def test_bad_sample_is_explained():
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with pytest.raises(sp.ExportError, match="2-D"):
        sp.export_onnx(model, X[0])
    with pytest.raises(sp.ExportError, match="numeric"):
        sp.export_onnx(model, np.array([["a", "b", "c", "d"]], dtype=object))
