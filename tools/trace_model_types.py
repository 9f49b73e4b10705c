"""Fit every scikit-learn estimator in common configurations and record every type
its fitted state names, as a safepoint file would name it.

    python tools/trace_model_types.py            # compare with the trust table
    python tools/trace_model_types.py --json     # the reached types, as JSON

This is how the default trust set's *internal* types (everything that is not a
public estimator) are found: not "every class in scikit-learn", but the classes
fitted models really hold. Each configuration is fitted, written with
``safepoint.dumps`` and the manifest's types table read back with
``safepoint.inspect``; nothing is loaded.

Configurations: every estimator of ``sklearn.utils.all_estimators()`` built the way
scikit-learn's common tests build it, fitted on data shaped by its tags, then on
binary, multiclass, regression and multi-output targets, sparse and DataFrame
input where the estimator accepts them, plus the parameter variants in
``VARIANTS`` (solvers, losses, kernels, metrics, tree algorithms, calibration
methods, ...), which reach internal types the defaults do not.

``tests/format/test_trust_set.py`` runs :func:`reached_types` (marked slow) and
fails when a new scikit-learn makes it reach a type the table lacks.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

#: estimator name -> extra constructor keyword sets to fit (beyond the defaults)
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "LogisticRegression": [{"solver": s} for s in ("lbfgs", "liblinear", "newton-cg", "sag")],
    "SGDClassifier": [
        {"loss": loss}
        for loss in ("hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron")
    ]
    + [{"average": True}],
    "SGDRegressor": [
        {"loss": loss}
        for loss in ("squared_error", "huber", "epsilon_insensitive", "squared_epsilon_insensitive")
    ],
    "SGDOneClassSVM": [{"average": True}],
    "MLPClassifier": [{"solver": s, "max_iter": 20} for s in ("adam", "sgd", "lbfgs")]
    + [{"early_stopping": True, "max_iter": 20}],
    "MLPRegressor": [{"solver": s, "max_iter": 20} for s in ("adam", "sgd", "lbfgs")]
    + [{"early_stopping": True, "max_iter": 20}],
    "GradientBoostingClassifier": [
        {"n_estimators": 5, "init": "zero"},
        {"n_estimators": 5, "loss": "exponential"},
        {"n_estimators": 5, "n_iter_no_change": 2, "validation_fraction": 0.2},
    ],
    "GradientBoostingRegressor": [
        {"n_estimators": 5, "loss": loss} for loss in ("absolute_error", "huber", "quantile")
    ]
    + [{"n_estimators": 5, "init": "zero"}],
    "HistGradientBoostingClassifier": [
        {"max_iter": 5, "early_stopping": True, "validation_fraction": 0.2},
        {"max_iter": 5, "categorical_features": [0]},
        {"max_iter": 5, "scoring": "roc_auc", "early_stopping": True},
    ],
    "HistGradientBoostingRegressor": [
        {"max_iter": 5, "loss": loss} for loss in ("absolute_error", "poisson", "gamma", "quantile")
    ]
    + [{"max_iter": 5, "categorical_features": [0]}],
    "KNeighborsClassifier": [
        {"algorithm": a, "n_neighbors": 3} for a in ("kd_tree", "ball_tree", "brute")
    ]
    + [
        {"algorithm": "ball_tree", "metric": m, "n_neighbors": 3}
        for m in ("manhattan", "chebyshev", "canberra", "braycurtis", "hamming", "cosine")
    ]
    + [
        {"algorithm": "ball_tree", "metric": "minkowski", "p": 3, "n_neighbors": 3},
        {
            "algorithm": "ball_tree",
            "metric": "seuclidean",
            "metric_params": {"V": np.ones(4)},
            "n_neighbors": 3,
        },
        {
            "algorithm": "ball_tree",
            "metric": "mahalanobis",
            "metric_params": {"VI": np.eye(4)},
            "n_neighbors": 3,
        },
        {
            "algorithm": "ball_tree",
            "metric": "minkowski",
            "metric_params": {"w": np.ones(4)},
            "n_neighbors": 3,
        },
        {"algorithm": "brute", "metric": "cosine", "n_neighbors": 3},
    ],
    "KNeighborsRegressor": [
        {"algorithm": a, "n_neighbors": 3, "weights": "distance"}
        for a in ("kd_tree", "ball_tree", "brute")
    ],
    "NearestNeighbors": [{"algorithm": a} for a in ("kd_tree", "ball_tree", "brute")],
    "KernelDensity": [
        {"kernel": k, "algorithm": a}
        for k in ("gaussian", "tophat", "epanechnikov")
        for a in ("kd_tree", "ball_tree")
    ],
    "LocalOutlierFactor": [{"novelty": True}],
    "SVC": [{"kernel": k} for k in ("linear", "poly", "sigmoid")] + [{"probability": True}],
    "SVR": [{"kernel": k} for k in ("linear", "poly")],
    "GaussianProcessClassifier": [{"multi_class": "one_vs_one"}],
    "CalibratedClassifierCV": [{"method": m} for m in ("isotonic", "sigmoid", "temperature")],
    "TransformedTargetRegressor": [{"func": np.log1p, "inverse_func": np.expm1}],
    "Birch": [{"n_clusters": None}],
    "BisectingKMeans": [{"bisecting_strategy": "largest_cluster", "n_clusters": 3}],
    "KMeans": [{"algorithm": "elkan", "n_clusters": 2}],
    "QuantileTransformer": [{"n_quantiles": 10, "output_distribution": "normal"}],
    "SplineTransformer": [{"extrapolation": e} for e in ("periodic", "linear")],
    "IsotonicRegression": [{"out_of_bounds": "clip"}],
    "RandomTreesEmbedding": [{"n_estimators": 3}],
    "IsolationForest": [{"n_estimators": 3}],
    "PassiveAggressiveClassifier": [{"average": True}],
    "Perceptron": [{"penalty": "elasticnet"}],
    "RidgeCV": [{"store_cv_results": True}],
    "LinearSVC": [{"penalty": "l1", "dual": False}],
}


def _datasets() -> dict[str, tuple[Any, Any]]:
    from sklearn.datasets import make_blobs, make_regression

    rng = np.random.RandomState(0)
    Xb, yb = make_blobs(n_samples=60, n_features=4, centers=2, random_state=0)
    Xm, ym = make_blobs(n_samples=60, n_features=4, centers=3, random_state=1)
    Xr, yr = make_regression(n_samples=60, n_features=4, random_state=0)
    Xmo, ymo = make_regression(n_samples=60, n_features=4, n_targets=2, random_state=0)
    return {
        "binary": (np.abs(Xb), yb),
        "multiclass": (np.abs(Xm), ym),
        "regression": (np.abs(Xr), np.abs(yr) + 1.0),
        "multioutput-regression": (np.abs(Xmo), np.abs(ymo) + 1.0),
        "multilabel": (np.abs(Xm), np.column_stack([ym == 0, ym == 1, rng.rand(60) > 0.5])),
    }


def _cases() -> Iterator[tuple[str, Callable[[], Any]]]:
    """(label, fit) pairs: each ``fit()`` returns a fitted estimator (or raises)."""
    from unittest import SkipTest

    import scipy.sparse as sps
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.utils import all_estimators

    try:
        from sklearn.utils._tags import get_tags
    except ImportError:  # scikit-learn < 1.6: tags are a dict from _safe_tags
        from types import SimpleNamespace

        from sklearn.utils._tags import _safe_tags

        def get_tags(est: Any) -> Any:
            t = _safe_tags(est)
            return SimpleNamespace(
                target_tags=SimpleNamespace(
                    multi_output=bool(t.get("multioutput") or t.get("multioutput_only")),
                    required=bool(t.get("requires_y")),
                ),
                # no "accepts sparse" tag before 1.6: try sparse input, fit() rejects it
                input_tags=SimpleNamespace(sparse=True),
            )

    try:  # the instance table of scikit-learn's common tests (private, 1.6+)
        from sklearn.utils._test_common.instance_generator import _construct_instances
    except ImportError:
        try:  # scikit-learn < 1.6: one instance per class (SkipTest when it cannot)
            from sklearn.utils.estimator_checks import _construct_instance

            def _construct_instances(Estimator: type) -> Iterator[Any]:
                yield _construct_instance(Estimator)

        except ImportError:  # pragma: no cover - other scikit-learn layouts

            def _construct_instances(Estimator: type) -> Iterator[Any]:
                yield Estimator()

    data = _datasets()
    docs = ["the cat sat", "the dog ate my homework", "a cat and a dog", "the red mat"] * 5
    labels = ["spam", "ham"] * 10

    def fitter(est: Any, X: Any, y: Any) -> Callable[[], Any]:
        def fit() -> Any:
            e = clone(est)
            return e.fit(X) if y is None else e.fit(X, y)

        return fit

    for name, Est in all_estimators():
        if name in ("FrozenEstimator",):
            continue
        if name in ("HashingVectorizer", "CountVectorizer", "TfidfVectorizer"):
            yield name, fitter(Est(), docs, None)
            yield f"{name}-bigrams", fitter(Est(ngram_range=(1, 2)), docs, None)
            continue
        if name in ("DictVectorizer", "FeatureHasher"):
            X = [{"city": c, "temp": float(i)} for i, c in enumerate("abcabc")]
            yield name, fitter(Est(), X, None)
            continue
        if name in ("LabelEncoder", "LabelBinarizer", "MultiLabelBinarizer"):
            y = [{"a", "b"}, {"c"}] if name == "MultiLabelBinarizer" else labels
            yield name, lambda Est=Est, y=y: Est().fit(y)
            continue
        if name == "TfidfTransformer":
            yield name, fitter(Est(), sps.csr_matrix(np.abs(data["binary"][0])), None)
            continue
        if name == "IsotonicRegression":
            X, y = data["regression"]
            yield name, fitter(Est(), X[:, 0], y)
            continue
        if name == "KernelCenterer":
            X = data["binary"][0]
            yield name, fitter(Est(), X @ X.T, None)
            continue
        try:
            instances = list(_construct_instances(Est))
        except SkipTest as exc:  # the common tests cannot build it (SparseCoder < 1.8, ...)
            print(f"not constructed {name}: {exc}", file=sys.stderr)
            continue
        for kw in VARIANTS.get(name, []):
            with contextlib.suppress(TypeError, ValueError):
                instances.append(clone(instances[0]).set_params(**kw))
        for i, est in enumerate(instances):
            tags = get_tags(est)
            if is_classifier(est):
                kinds = ["binary", "multiclass"]
                if tags.target_tags.multi_output:
                    kinds.append("multilabel")
            elif is_regressor(est):
                kinds = ["regression"]
                if tags.target_tags.multi_output:
                    kinds.append("multioutput-regression")
            else:
                kinds = ["multiclass"]
            for kind in kinds:
                X, y = data[kind]
                # transformers that use y when given it (feature selectors, PLSSVD)
                # are fitted with it; the others without
                supervised = is_classifier(est) or is_regressor(est) or tags.target_tags.required
                yield f"{name}-{i}-{kind}", fitter(est, X, y if supervised else None)
                if not supervised and "y" in inspect.signature(type(est).fit).parameters:
                    yield f"{name}-{i}-{kind}-y", fitter(est, X, y)
                if getattr(tags.input_tags, "sparse", False) and kind in ("binary", "regression"):
                    yield f"{name}-{i}-{kind}-sparse", fitter(est, sps.csr_matrix(X), y)
            # a DataFrame input (feature names kept in the fitted state)
            import pandas as pd

            X, y = data[kinds[0]]
            frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
            yield f"{name}-{i}-frame", fitter(est, frame, y if supervised else None)


def _composites() -> Iterator[tuple[str, Callable[[], Any]]]:
    """Meta-estimators and composites in the shapes users build them."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        StackingClassifier,
        VotingClassifier,
    )
    from sklearn.feature_selection import SelectKBest, chi2
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process import kernels as K
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import make_scorer, recall_score
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
    from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
        TargetEncoder,
    )

    X, y = _datasets()["binary"]
    Xr, yr = _datasets()["regression"]
    rng = np.random.RandomState(0)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=60),
            "c": pd.Categorical(rng.choice(["a", "b", "c"], 60)),
            "s": rng.choice(["u", "v", None], 60).astype(object),
        }
    )
    yf = (frame["x"] > 0).to_numpy().astype(int)
    kernels = [
        K.RBF() + K.WhiteKernel(),
        K.ConstantKernel() * K.Matern(nu=1.5),
        K.RationalQuadratic() ** 2,
        K.ExpSineSquared() + K.DotProduct(),
        K.PairwiseKernel(metric="laplacian"),
        K.RBF(length_scale=[1.0] * 4),
    ]
    for i, kern in enumerate(kernels):
        yield f"GPR-kernel-{i}", lambda kern=kern: GaussianProcessRegressor(kern).fit(Xr, yr)
    yield (
        "grid-scorer",
        lambda: GridSearchCV(
            LogisticRegression(), {"C": [0.1, 1]}, scoring=make_scorer(recall_score), cv=2
        ).fit(X, y),
    )
    yield (
        "grid-multimetric",
        lambda: GridSearchCV(
            LogisticRegression(), {"C": [0.1, 1]}, scoring=["accuracy", "roc_auc"], refit="roc_auc"
        ).fit(X, y),
    )
    yield (
        "random-search",
        lambda: RandomizedSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression()),
            {"logisticregression__C": [0.1, 1, 10]},
            n_iter=2,
            cv=2,
            random_state=0,
        ).fit(X, y),
    )
    yield (
        "column-transformer",
        lambda: Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("num", StandardScaler(), ["x"]),
                            ("ohe", OneHotEncoder(handle_unknown="ignore"), ["c", "s"]),
                            ("ord", OrdinalEncoder(), ["c"]),
                            ("te", TargetEncoder(), ["c"]),
                        ],
                        remainder="passthrough",
                    ),
                ),
                ("clf", LogisticRegression()),
            ]
        ).fit(frame, yf),
    )
    yield (
        "hgb-from-dtype",
        lambda: HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype").fit(
            frame[["x", "c"]], yf
        ),
    )
    yield (
        "union",
        lambda: FeatureUnion(
            [("k", SelectKBest(chi2, k=2)), ("f", FunctionTransformer(np.log1p))]
        ).fit(X, y),
    )
    yield (
        "stacking",
        lambda: StackingClassifier(
            [("rf", RandomForestClassifier(n_estimators=3)), ("lr", LogisticRegression())]
        ).fit(X, y),
    )
    yield (
        "voting-soft",
        lambda: VotingClassifier(
            [("rf", RandomForestClassifier(n_estimators=3)), ("lr", LogisticRegression())],
            voting="soft",
        ).fit(X, y),
    )
    yield "pandas-output", lambda: StandardScaler().set_output(transform="pandas").fit(frame[["x"]])


def function_attributes(model: Any) -> set[tuple[str, str]]:
    """(class, attribute) pairs of every object in ``model`` whose attribute holds a
    function (or a partial of one): attributes the model will call, which the trust
    table must list as callable slots."""
    import functools
    import types

    out: set[tuple[str, str]] = set()
    seen: set[int] = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | np.ndarray):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if isinstance(obj, list | tuple | set):
            stack.extend(obj)
            continue
        attrs = getattr(obj, "__dict__", None)
        if not isinstance(attrs, dict) or not type(obj).__module__.startswith("sklearn"):
            continue
        for name, value in attrs.items():
            func = value.func if isinstance(value, functools.partial) else value
            if isinstance(func, types.FunctionType | types.BuiltinFunctionType | np.ufunc) or (
                type(func).__name__ in ("cython_function_or_method", "_ArrayFunctionDispatcher")
            ):
                t = type(obj)
                out.add((f"{t.__module__}.{t.__qualname__}", name))
            else:
                stack.append(value)
    return out


def unlisted_function_attributes(pairs: set[tuple[str, str]]) -> list[str]:
    """The pairs of :func:`function_attributes` that no callable slot of the class's
    MRO covers."""
    import importlib

    from safepoint.format.sklearn import trust_table as sklearn_trust

    out = []
    for cls_name, attr in sorted(pairs):
        module, _, qualname = cls_name.rpartition(".")
        cls = getattr(importlib.import_module(module), qualname)
        slots = {
            s
            for k in cls.__mro__
            for s in sklearn_trust.CALLABLE_SLOTS.get(f"{k.__module__}.{k.__qualname__}", ())
        }
        if attr not in slots:
            out.append(f"{cls_name}.{attr}")
    return out


def reached_types(
    verbose: bool = False, functions: set[tuple[str, str]] | None = None
) -> tuple[dict[str, set[str]], list[str]]:
    """Every (name -> node kinds) that fitted models reach, and the cases that failed
    to fit or to save (reported, not hidden). ``functions`` collects the
    :func:`function_attributes` of every fitted model."""
    import safepoint as sp

    found: dict[str, set[str]] = {}
    failed: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, fit in [*_cases(), *_composites()]:
            try:
                model = fit()
            except Exception as exc:  # a configuration the estimator rejects
                if verbose:
                    print(f"skip {label}: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
                continue
            if functions is not None:
                functions |= function_attributes(model)
            try:
                info = sp.inspect(sp.dumps(model))
            except Exception as exc:
                failed.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                continue
            for row in info.types:
                found.setdefault(row["name"], set()).add(row["kind"])
    return found, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the reached types as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    functions: set[tuple[str, str]] = set()
    found, failed = reached_types(verbose=args.verbose, functions=functions)
    if args.json:
        print(json.dumps({k: sorted(v) for k, v in sorted(found.items())}, indent=1))
        return
    from safepoint.format.sklearn import trust_table as sklearn_trust

    missing = sklearn_trust.missing_from_table(found)
    for name in missing:
        print("NOT IN THE TABLE:", name, sorted(found[name]))
    for line in failed:
        print("FAILED:", line)
    unlisted = unlisted_function_attributes(functions)
    for line in unlisted:
        print("FUNCTION IN AN ATTRIBUTE THAT IS NOT A CALLABLE SLOT:", line)
    print(f"{len(found)} types reached, {len(missing)} missing from the table")
    sys.exit(1 if missing or failed or unlisted else 0)


if __name__ == "__main__":
    main()
