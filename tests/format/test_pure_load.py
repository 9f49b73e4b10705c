"""Pure loading, observed: no method of an object built from the file runs during a load.

A profiler (``sys.setprofile``) watches every Python call while ``sp.loads`` runs.
A call whose ``self`` is an object the load has built is a violation, unless it
runs inside a reviewed ``__setstate__``/``__new__`` (``sklearn_trust.REVIEWED``),
which is where scikit-learn's own state handling happens. Any call of a
scikit-learn function outside those methods is a violation too, except the few
the format calls on purpose (listed, with why).

The quick test covers a zoo of models with every internal type the trust table
names; the slow one every configuration ``tools/trace_model_types.py`` fits.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint.format.decoder import Decoder
from safepoint.format.sklearn import trust_table as sklearn_trust

ROOT = Path(__file__).resolve().parents[2]

#: scikit-learn functions the format itself calls during a load, and why
FORMAT_CALLS = {
    # the thread count a loaded k-means / bin mapper gets (sklearn_models._thread_count)
    "_openmp_effective_n_threads",
    # scikit-learn's lazy module attributes (sklearn/__init__.py __getattr__), used when
    # an audited name is resolved: module code, not an object from the file
    "__getattr__",
    "__dir__",
}


def _reviewed_code() -> set[Any]:
    codes = set()
    for method, owner in sklearn_trust.REVIEWED:
        if method not in ("__setstate__", "__new__"):
            continue
        module, _, qualname = owner.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), qualname)
        except (ImportError, AttributeError):
            continue
        fn = vars(cls).get(method)
        fn = getattr(fn, "__func__", fn)
        # a decorated __new__ (scikit-learn's deprecation wrapper) is a closure
        if isinstance(fn, types.FunctionType):
            codes.add(fn.__code__)
    return codes


class _Watch:
    """Records violations while a load runs on this thread."""

    def __init__(self) -> None:
        self.built: dict[int, Any] = {}
        self.allowed = _reviewed_code()
        self.inside = 0
        self.frames: list[Any] = []
        self.violations: list[str] = []
        import sklearn

        self.sklearn_dir = str(Path(sklearn.__file__).parent)

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        if event == "return":
            if self.frames and self.frames[-1] is frame:
                self.frames.pop()
                self.inside -= 1
            return
        if event != "call":
            return
        code = frame.f_code
        if code in self.allowed:
            self.frames.append(frame)
            self.inside += 1
            return
        if self.inside:
            return
        if code.co_argcount and "." in code.co_qualname:
            first = frame.f_locals.get(code.co_varnames[0])
            owner = code.co_qualname.partition(".")[0]
            if (
                first is not None
                and self.built.get(id(first)) is first
                and any(k.__qualname__ == owner for k in type(first).__mro__)
            ):
                self.violations.append(
                    f"{type(first).__qualname__}.{code.co_name} ({code.co_filename}:"
                    f"{code.co_firstlineno})"
                )
                return
        if code.co_filename.startswith(self.sklearn_dir) and code.co_name not in FORMAT_CALLS:
            self.violations.append(f"scikit-learn {code.co_qualname} ({code.co_filename})")


def load_watched(data: bytes, **kw: Any) -> tuple[Any, list[str]]:
    watch = _Watch()
    original = Decoder.record

    def record(self: Decoder, obj: Any, plan: Any, args: Any, state: Any) -> None:
        watch.built[id(obj)] = obj
        original(self, obj, plan, args, state)

    Decoder.record = record  # type: ignore[method-assign]
    sys.setprofile(watch)
    try:
        loaded = sp.loads(data, **kw)
    finally:
        sys.setprofile(None)
        Decoder.record = original  # type: ignore[method-assign]
    return loaded, watch.violations


def _zoo() -> Iterator[tuple[str, Callable[[], Any]]]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.cluster import Birch, BisectingKMeans, KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_blobs
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
        StackingClassifier,
        VotingClassifier,
    )
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.metrics import make_scorer, recall_score
    from sklearn.model_selection import GridSearchCV, TunedThresholdClassifierCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    X, y = make_blobs(n_samples=80, n_features=4, centers=3, random_state=0)
    yb = (y == 0).astype(int)
    docs = ["the cat sat", "a dog ran", "the dog sat", "a cat ran"] * 5
    yield "forest", lambda: RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    yield "gb", lambda: GradientBoostingClassifier(n_estimators=5).fit(X, y)
    yield "gb-binary", lambda: GradientBoostingClassifier(n_estimators=5).fit(X, yb)
    yield "hgb", lambda: HistGradientBoostingClassifier(max_iter=20).fit(X, y)
    yield "knn-kd", lambda: KNeighborsClassifier(algorithm="kd_tree").fit(X, y)
    yield (
        "knn-ball",
        lambda: KNeighborsClassifier(
            algorithm="ball_tree", metric="mahalanobis", metric_params={"VI": np.eye(4)}
        ).fit(X, y),
    )
    yield "svc", lambda: SVC(probability=True).fit(X, y)
    yield "sgd", lambda: SGDClassifier(loss="modified_huber").fit(X, y)
    yield "mlp", lambda: MLPClassifier(max_iter=30).fit(X, y)
    yield "isotonic", lambda: IsotonicRegression().fit(X[:, 0], X[:, 1])
    yield "birch", lambda: Birch(n_clusters=3).fit(X)
    yield "bisecting", lambda: BisectingKMeans(n_clusters=3, random_state=0).fit(X)
    yield "kmeans", lambda: KMeans(n_clusters=3, n_init=1).fit(X)
    yield "gpc", lambda: GaussianProcessClassifier(RBF() + WhiteKernel()).fit(X[:30], yb[:30])
    yield "calibrated", lambda: CalibratedClassifierCV(LogisticRegression(), cv=2).fit(X, y)
    yield "tuned", lambda: TunedThresholdClassifierCV(LogisticRegression(), cv=2).fit(X, yb)
    yield "voting", lambda: VotingClassifier([("lr", LogisticRegression())]).fit(X, y)
    yield (
        "stacking",
        lambda: StackingClassifier(
            [("lr", LogisticRegression()), ("rf", RandomForestClassifier(n_estimators=3))]
        ).fit(X, y),
    )
    yield (
        "grid",
        lambda: GridSearchCV(
            LogisticRegression(),
            {"C": [0.1, 1]},
            scoring=make_scorer(recall_score, average="macro"),
        ).fit(X, y),
    )
    yield (
        "text",
        lambda: make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, [0, 1] * 10),
    )
    yield (
        "columns",
        lambda: make_pipeline(
            FunctionTransformer(np.log1p, validate=False),
            ColumnTransformer(
                [
                    ("n", StandardScaler(), [0, 1]),
                    ("o", OneHotEncoder(handle_unknown="ignore"), [2]),
                ]
            ),
            LogisticRegression(),
        ).fit(np.abs(X.round()), y),
    )


@pytest.mark.parametrize(("name", "fit"), list(_zoo()), ids=[n for n, _ in _zoo()])
@pytest.mark.slow
def test_only_reviewed_methods_run_during_a_load(name: str, fit: Callable[[], Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit()
        data = sp.dumps(model)
    loaded, violations = load_watched(data)
    assert not violations, violations
    assert type(loaded) is type(model)


def test_the_watch_sees_a_method_call() -> None:
    """The check can fail: a method of a built object called during the load is seen."""
    from sklearn.preprocessing import StandardScaler

    data = sp.dumps(StandardScaler().fit(np.ones((3, 2))))
    original = Decoder.finish

    def finish(self: Decoder) -> None:
        for obj, *_ in list(self.built.values()):
            obj.get_params()  # what a careless validator might do
        original(self)

    Decoder.finish = finish  # type: ignore[method-assign]
    try:
        _, violations = load_watched(data)
    finally:
        Decoder.finish = original  # type: ignore[method-assign]
    assert any("get_params" in v for v in violations), violations


@pytest.mark.slow
def test_no_method_runs_during_any_traced_load() -> None:
    """Every configuration of tools/trace_model_types.py loads without a violation."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        trace = importlib.import_module("trace_model_types")
    finally:
        sys.path.pop(0)
    bad = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, fit in [*trace._cases(), *trace._composites()]:
            try:
                model = fit()
            except Exception:
                continue
            _, violations = load_watched(sp.dumps(model))
            if violations:
                bad.append(f"{label}: {violations[:3]}")
    assert not bad, bad
