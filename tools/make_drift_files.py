#!/usr/bin/env python
"""Write safepoint files under *older* scikit-learn versions (library-drift fixtures).

Pickled models break when scikit-learn changes under them; safepoint promises that a
file written under an older scikit-learn either loads with identical predictions
(through migrations for known attribute changes) or fails with an explanation. This
script produces the evidence for that promise: for each older scikit-learn minor
version it creates a throwaway virtual environment with that release and a numpy /
scipy / pandas of the same era, makes the *current* safepoint source importable in
it (a ``.pth`` file pointing at ``src/``, which is what ``pip install -e`` does,
without writing build metadata into the shared checkout), fits a set of models on
fixed synthetic data, and writes one ``.sp`` file per model (with ``golden=`` inputs)
plus ``expected.json`` (the outputs computed under the old version) into
``tests/data/drift/sklearn-X.Y/``. ``tests/format/test_drift.py`` loads them with
the installed scikit-learn.

Usage (a few minutes per version, mostly pip)::

    python tools/make_drift_files.py                     # 1.5, 1.6, 1.7
    python tools/make_drift_files.py --versions 1.6      # one version
    python tools/make_drift_files.py --keep /tmp/venvs   # reuse venvs between runs

The venvs are never committed; the small generated files are (deliberate fixtures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "drift"

#: scikit-learn minor version -> a package set of its era (all have cp311 wheels)
STACKS: dict[str, list[str]] = {
    "1.5": ["scikit-learn==1.5.2", "numpy==1.26.4", "scipy==1.13.1", "pandas==2.2.2"],
    "1.6": ["scikit-learn==1.6.1", "numpy==2.2.2", "scipy==1.15.1", "pandas==2.2.3"],
    "1.7": ["scikit-learn==1.7.2", "numpy==2.3.2", "scipy==1.16.1", "pandas==2.3.1"],
}
#: safepoint's own runtime dependencies (pyproject.toml), left for pip to resolve
SAFEPOINT_DEPS = [
    "pyarrow",
    "zstandard",
    "xxhash",
    "click",
    "rich",
    "fsspec",
    "SQLAlchemy",
]


# -- outer: venvs ----------------------------------------------------------------------
def _run(cmd: list[str], **kw: Any) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def make_venv(venv: Path, version: str) -> Path:
    """Create (or reuse) a venv with scikit-learn ``version`` and the current safepoint."""
    py = _venv_python(venv)
    marker = venv / ".safepoint-drift-ready"
    if marker.exists():
        return py
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    _run(
        [str(py), "-m", "pip", "install", "-q", "--only-binary=:all:"]
        + STACKS[version]
        + SAFEPOINT_DEPS
    )
    # an editable install of the checkout, minus the build metadata it would write
    # into the shared work tree: the interpreter reads src/ through a .pth file
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "safepoint-src.pth").write_text(str(ROOT / "src") + "\n")
    marker.write_text("ok\n")
    return py


def outer(args: argparse.Namespace) -> int:
    keep = Path(args.keep) if args.keep else None
    tmp = None if keep else tempfile.mkdtemp(prefix="sp-drift-")
    base = keep or Path(tmp or ".")
    failed = []
    try:
        for version in args.versions:
            if version not in STACKS:
                print(f"unknown version {version}; known: {sorted(STACKS)}", file=sys.stderr)
                return 2
            py = make_venv(base / f"sklearn-{version}", version)
            out = Path(args.out) / f"sklearn-{version}"
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
            env["SAFEPOINT_QUIET"] = "1"
            try:
                _run([str(py), str(Path(__file__).resolve()), "--inner", str(out)], env=env)
            except subprocess.CalledProcessError:
                # the files that could be written are kept; expected.json lists the rest
                failed.append(version)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        print(f"some models could not be written under {failed}: see expected.json 'failed'")
    return 1 if failed else 0


# -- inner: runs inside an old venv --------------------------------------------------
def _data() -> dict[str, Any]:
    """Fixed synthetic data from numpy's legacy RandomState (stable across versions)."""
    import numpy as np
    import pandas as pd

    rs = np.random.RandomState(20240501)
    n, d = 240, 6
    X = rs.normal(size=(n, d))
    w = rs.normal(size=d)
    score = X @ w + 0.3 * rs.normal(size=n)
    y3 = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))  # 3 classes 0/1/2
    y2 = (score > np.median(score)).astype(np.int64)
    yr = score + 0.1 * X[:, 0] ** 2
    labels = np.array(["low", "mid", "high"], dtype=object)[y3]
    colors = np.array(["red", "green", "blue", "violet"], dtype=object)[rs.randint(0, 4, n)]
    sizes = np.array(["S", "M", "L"], dtype=object)[rs.randint(0, 3, n)]
    frame = pd.DataFrame(
        {
            "age": rs.randint(18, 80, n).astype(np.int64),
            "income": np.round(rs.lognormal(10, 0.5, n), 2),
            "color": colors,
            "size": sizes,
        }
    )
    frame.loc[rs.rand(n) < 0.05, "income"] = np.nan
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"]
    texts = [" ".join(rs.choice(words, size=rs.randint(3, 9))) for _ in range(n)]
    ytext = np.array([int("omega" in t) for t in texts], dtype=np.int64)
    return {
        "X": X,
        "y3": y3,
        "y2": y2,
        "yr": yr,
        "labels": labels,
        "frame": frame,
        "texts": texts,
        "ytext": ytext,
    }


def _models(D: dict[str, Any]) -> dict[str, tuple[Any, Any, Any]]:
    """name -> (fitted model, golden input, what the input is)."""
    import numpy as np
    import scipy.sparse as sps
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        IsolationForest,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
    from sklearn.svm import SVC, SVR, LinearSVC
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    X, y3, y2, yr = D["X"], D["y3"], D["y2"], D["yr"]
    Xg = X[:12]
    frame = D["frame"]
    fg = frame.iloc[:12].copy()
    # an unseen category in the golden rows: handle_unknown="ignore" must keep working
    fg.loc[fg.index[0], "color"] = "unseen"
    y_f = D["labels"]

    def fit(model: Any, *xy: Any) -> Any:
        return model.fit(*xy)

    ohe_pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        (
                            "num",
                            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                            ["age", "income"],
                        ),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["color", "size"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    ord_hgb = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        (
                            "cat",
                            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                            ["color", "size"],
                        )
                    ],
                    remainder="passthrough",
                ),
            ),
            ("hgb", HistGradientBoostingClassifier(max_iter=15, random_state=0)),
        ]
    )
    Xh = X.copy()
    Xh[::17, 2] = np.nan
    Xs = np.where(
        np.abs(X) > 0.8, X, 0.0
    )  # sparse-ish copy for a sparse-trained SVC  # missing values: HGB learns where they go
    models: dict[str, tuple[Any, Any, Any]] = {
        "logistic_regression": (fit(LogisticRegression(max_iter=500), X, y3), Xg, "X"),
        "logistic_regression_binary": (fit(LogisticRegression(C=0.5), X, y2), Xg, "X"),
        # state that scikit-learn 1.8 cannot map (multi_class removed): must fail clearly
        "logistic_regression_ovr": (
            fit(LogisticRegression(multi_class="ovr", max_iter=500), X, y3),
            Xg,
            "X",
        ),
        "logistic_regression_multinomial_binary": (
            fit(LogisticRegression(multi_class="multinomial"), X, y2),
            Xg,
            "X",
        ),
        "ridge": (fit(Ridge(alpha=0.7), X, yr), Xg, "X"),
        "sgd_classifier": (
            fit(SGDClassifier(max_iter=50, tol=None, random_state=0), X, y3),
            Xg,
            "X",
        ),
        "random_forest": (
            fit(RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0), X, y3),
            Xg,
            "X",
        ),
        "random_forest_regressor": (
            fit(RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0), X, yr),
            Xg,
            "X",
        ),
        "extra_trees_regressor": (
            fit(ExtraTreesRegressor(n_estimators=5, max_depth=4, random_state=0), X, yr),
            Xg,
            "X",
        ),
        "decision_tree": (fit(DecisionTreeClassifier(max_depth=6, random_state=0), X, y3), Xg, "X"),
        "decision_tree_regressor": (
            fit(DecisionTreeRegressor(max_depth=5, random_state=0), X, yr),
            Xg,
            "X",
        ),
        "gradient_boosting": (
            fit(GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0), X, y3),
            Xg,
            "X",
        ),
        "gradient_boosting_regressor": (
            fit(GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=0), X, yr),
            Xg,
            "X",
        ),
        "hist_gradient_boosting": (
            fit(
                HistGradientBoostingClassifier(max_iter=15, max_leaf_nodes=8, random_state=0),
                Xh,
                y3,
            ),
            Xh[:12],
            "X",
        ),
        "hist_gradient_boosting_regressor": (
            fit(HistGradientBoostingRegressor(max_iter=15, random_state=0), Xh, yr),
            Xh[:12],
            "X",
        ),
        "hgb_ordinal_pipeline": (fit(ord_hgb, frame, y_f), fg, "frame"),
        "knn_kd_tree": (fit(KNeighborsClassifier(5, algorithm="kd_tree"), X, y3), Xg, "X"),
        "knn_ball_tree_regressor": (
            fit(KNeighborsRegressor(4, algorithm="ball_tree", weights="distance"), X, yr),
            Xg,
            "X",
        ),
        "ohe_pipeline": (fit(ohe_pipe, frame, y_f), fg, "frame"),
        "standard_scaler": (fit(StandardScaler(), X), Xg, "X"),
        "pca": (fit(PCA(n_components=3, random_state=0), X), Xg, "X"),
        "kmeans": (fit(KMeans(n_clusters=3, n_init=3, random_state=0), X), Xg, "X"),
        "svc": (fit(SVC(C=1.0, gamma="scale"), X, y3), Xg, "X"),
        # trained on sparse data: predict goes through libsvm's sparse entry points
        "svc_sparse": (fit(SVC(C=1.0), sps.csr_matrix(Xs), y3), sps.csr_matrix(Xs[:12]), "sparse"),
        "svr": (fit(SVR(C=2.0), X, yr), Xg, "X"),
        "linear_svc": (fit(LinearSVC(C=0.5, random_state=0), X, y2), Xg, "X"),
        "gaussian_nb": (fit(GaussianNB(), X, y3), Xg, "X"),
        "mlp": (
            fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0), X, y3),
            Xg,
            "X",
        ),
        "isolation_forest": (
            fit(IsolationForest(n_estimators=10, max_samples=64, random_state=0), X),
            Xg,
            "X",
        ),
        "tfidf_logreg": (
            fit(
                make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression()),
                D["texts"],
                D["ytext"],
            ),
            D["texts"][:12],
            "texts",
        ),
    }
    return models


def _jsonable(value: Any) -> Any:
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        return {
            "dtype": "object",
            "shape": list(arr.shape),
            "values": [str(v) for v in arr.ravel().tolist()],
        }
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "values": arr.ravel().tolist()}


def _extras(model: Any) -> dict[str, Any]:
    """Fitted state beyond predictions that a migration must keep (checked on load)."""
    out: dict[str, Any] = {}
    if hasattr(model, "estimators_samples_"):
        # the bootstrap draws, recomputed from the seeds: OOB analyses depend on them
        out["estimators_samples_"] = [s[:40].tolist() for s in model.estimators_samples_[:3]]
    # a pipeline's preprocessing names its outputs (one-hot columns...)
    named = model[:-1] if hasattr(model, "steps") else model
    if hasattr(named, "get_feature_names_out") and hasattr(model, "n_features_in_"):
        try:
            out["get_feature_names_out"] = [str(x) for x in named.get_feature_names_out()]
        except Exception:  # not every fitted model names its outputs
            pass
    return out


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    a = a.toarray() if hasattr(a, "toarray") else a
    b = b.toarray() if hasattr(b, "toarray") else b
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def inner(out: Path) -> int:
    import warnings

    import numpy as np
    import pandas as pd
    import scipy
    import sklearn

    import safepoint as sp
    from safepoint.format.api import golden_outputs

    warnings.simplefilter("ignore")
    D = _data()
    record: dict[str, Any] = {
        "versions": {
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
            "python": sys.version.split()[0],
            "platform": sysconfig.get_platform(),
        },
        "models": {},
        "failed": {},
    }
    inputs: dict[str, Any] = {}
    for name, (model, xg, kind) in _models(D).items():
        path = out / f"{name}.sp"
        try:
            sp.dump(model, path, golden=xg, metadata={"drift_fixture": name})
        except Exception as exc:  # recorded: the writer must be fixed, not hidden
            record["failed"][name] = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
            continue
        outs = golden_outputs(model, xg)
        # the file must also load under the version that wrote it
        try:
            again = golden_outputs(sp.load(path, env="ignore"), xg)
            same = all(_same(outs[k], again.get(k)) for k in outs)
            roundtrip = "identical" if same else "DIFFERENT outputs"
        except Exception as exc:
            roundtrip = f"{type(exc).__name__}: {exc}"
        record["models"][name] = {
            "file": path.name,
            "type": f"{type(model).__module__}.{type(model).__qualname__}",
            "input": name,
            "input_kind": kind,
            "outputs": {k: _jsonable(v) for k, v in outs.items()},
            "extras": _extras(model),
            "same_version_roundtrip": roundtrip,
        }
        inputs[name] = xg
        print(f"  wrote {path.name} ({path.stat().st_size} bytes): {roundtrip}", flush=True)
    sp.dump(inputs, out / "inputs.sp")
    (out / "expected.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    bad = [n for n, m in record["models"].items() if m["same_version_roundtrip"] != "identical"]
    return 1 if record["failed"] or bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", nargs="+", default=sorted(STACKS))
    ap.add_argument("--out", default=str(OUT), help="folder of the sklearn-X.Y folders")
    ap.add_argument("--keep", help="keep (and reuse) the venvs in this folder")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(Path(args.inner))
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
