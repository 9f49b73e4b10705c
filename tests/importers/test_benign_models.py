"""Benign scikit-learn models pickled every usual way convert and predict identically."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

import safepoint as sp


def _models() -> dict[str, tuple[Any, Any, str]]:
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    rng = np.random.RandomState(0)
    X = rng.rand(120, 4)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    y3 = (X[:, 2] * 3).astype(int)
    yr = X @ [1.0, 2.0, 3.0, 4.0]
    df = pd.DataFrame(
        {
            "num": rng.rand(120),
            "cat": rng.choice(["red", "green", "blue"], 120),
            "city": rng.choice(["Paris", "Zürich", None], 120),
            "num2": rng.rand(120),
        }
    )
    docs = ["the cat sat on the mat", "the dog ran", "a cat and a dog", "birds fly high"] * 30
    yd = np.array([0, 1, 1, 0] * 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "logreg": (LogisticRegression().fit(X, y3), X, "predict_proba"),
            "ridge": (Ridge().fit(X, yr), X, "predict"),
            "tree": (DecisionTreeClassifier(max_depth=5).fit(X, y3), X, "predict_proba"),
            "tree_reg": (DecisionTreeRegressor(max_depth=5).fit(X, yr), X, "predict"),
            "forest": (
                RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(X, y),
                X,
                "predict_proba",
            ),
            "hgb": (
                HistGradientBoostingClassifier(max_iter=8, random_state=0).fit(X, y3),
                X,
                "predict_proba",
            ),
            "hgb_quantile": (
                HistGradientBoostingRegressor(max_iter=8, loss="quantile", quantile=0.3).fit(X, yr),
                X,
                "predict",
            ),
            "knn_kd": (KNeighborsClassifier(3).fit(X, y), X, "predict_proba"),
            "knn_ball": (KNeighborsRegressor(4, algorithm="ball_tree").fit(X, yr), X, "predict"),
            "column_transformer": (
                make_pipeline(
                    ColumnTransformer(
                        [
                            ("oh", OneHotEncoder(handle_unknown="ignore"), ["cat", "city"]),
                            ("sc", StandardScaler(), ["num", "num2"]),
                        ]
                    ),
                    LogisticRegression(),
                ).fit(df, y),
                df,
                "predict_proba",
            ),
            "tfidf": (
                make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()).fit(
                    docs, yd
                ),
                docs,
                "predict_proba",
            ),
            "svc": (SVC(random_state=0).fit(X, y3), X, "decision_function"),
            "scalers": (make_pipeline(StandardScaler(), MinMaxScaler()).fit(X), X, "transform"),
            "kmeans": (KMeans(3, n_init=2, random_state=0).fit(X), X, "predict"),
            "pca": (PCA(2).fit(X), X, "transform"),
            # cv_results_ holds numpy masked arrays
            "grid_search": (
                GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3).fit(X, y),
                X,
                "predict_proba",
            ),
        }


MODELS = _models()


def _pickle(protocol: int) -> Callable[[Any, Path], None]:
    def write(model: Any, path: Path) -> None:
        with open(path, "wb") as f:
            pickle.dump(model, f, protocol=protocol)

    return write


WRITERS: dict[str, Callable[[Any, Path], None]] = {
    "pickle2": _pickle(2),
    "pickle3": _pickle(3),
    "pickle4": _pickle(4),
    "pickle5": _pickle(5),
    "joblib": lambda m, p: joblib.dump(m, p),
    "joblib_compress3": lambda m, p: joblib.dump(m, p, compress=3),
}


def _check(model_name: str, src: Path, tmp: Path, expect_format: str) -> None:
    model, X, method = MODELS[model_name]
    dst = tmp / "model.sp"
    report = sp.convert(src, dst)
    assert report.verdict == "converted"
    assert report.format == expect_format
    assert report.untrusted == []
    assert report.root_type == f"{type(model).__module__}.{type(model).__qualname__}"
    [scan] = sp.scan([src])
    assert scan.verdict == "safe" and scan.format == expect_format
    loaded = sp.load(dst)
    assert type(loaded) is type(model)
    want = getattr(model, method)(X)
    got = getattr(loaded, method)(X)
    np.testing.assert_array_equal(got, want)
    # provenance is recorded in the written file
    meta = sp.inspect(dst).metadata["converted_from"]
    assert meta["format"] == expect_format and meta["sha256"] == report.source_sha256


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_converts_with_identical_predictions(tmp: Path, model_name: str, writer: str) -> None:
    src = tmp / f"model.{writer}"
    WRITERS[writer](MODELS[model_name][0], src)
    if writer == "joblib_compress3":
        expect = "joblib+zlib"
    elif writer == "joblib":
        expect = "joblib"
    else:
        expect = "pickle"
    _check(model_name, src, tmp, expect)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.slow
def test_skops_files_convert(tmp: Path, model_name: str) -> None:
    sio = pytest.importorskip("skops.io")
    src = tmp / "model.skops"
    sio.dump(MODELS[model_name][0], src)
    _check(model_name, src, tmp, "skops")


@pytest.mark.parametrize("compress", ["gzip", "bz2", "lzma", "xz"])
def test_other_joblib_compressions(tmp: Path, compress: str) -> None:
    src = tmp / "model.joblib"
    joblib.dump(MODELS["forest"][0], src, compress=(compress, 3))
    _check("forest", src, tmp, f"joblib+{compress}")


def test_pickle_inside_a_zip(tmp: Path) -> None:
    import zipfile

    src = tmp / "bundle.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("model/model.pkl", pickle.dumps(MODELS["tree"][0], protocol=5))
        zf.writestr("model/README.txt", "a decision tree")
    report = sp.convert(src, tmp / "tree.sp")
    assert report.format == "zip[pickle]" and report.member == "model/model.pkl"
    model, X, method = MODELS["tree"]
    got = getattr(sp.load(tmp / "tree.sp"), method)(X)
    np.testing.assert_array_equal(got, model.predict_proba(X))


def test_compressed_output(tmp: Path) -> None:
    src = tmp / "m.joblib"
    joblib.dump({"model": MODELS["forest"][0], "zeros": np.zeros(200_000)}, src)
    report = sp.convert(src, tmp / "m.sp", compress="zstd")
    assert sp.inspect(tmp / "m.sp").compressed_buffers >= 1
    assert report.size == (tmp / "m.sp").stat().st_size < src.stat().st_size // 10
    loaded = sp.load(tmp / "m.sp")
    model, X, _ = MODELS["forest"]
    np.testing.assert_array_equal(loaded["model"].predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded["zeros"], np.zeros(200_000))
