"""ResumableHalvingGridSearchCV / ResumableHalvingRandomSearchCV: scikit-learn's results,
plus a ledger that a resumed run reads round by round."""

from __future__ import annotations

from typing import Any

import joblib
import numpy as np
import pytest
from scipy.stats import loguniform, randint
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV
from sklearn.tree import DecisionTreeClassifier
from test_search import StopAfter, assert_same_results, recorded, slow_accuracy

import safepoint as sp
from safepoint.workflows.search._fit import _resolve_checkpoint
from safepoint.workflows.search._ledger import META_KEY

X, Y = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=1)
HALVING_ATTRS = (
    "n_resources_",
    "n_candidates_",
    "n_iterations_",
    "n_possible_iterations_",
    "n_required_iterations_",
    "min_resources_",
    "max_resources_",
    "n_remaining_candidates_",
)


def assert_same_halving(ours: Any, theirs: Any) -> None:
    assert_same_results(ours, theirs)
    for attr in HALVING_ATTRS:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


CASES = {
    "grid-n-samples": (
        HalvingGridSearchCV,
        sp.ResumableHalvingGridSearchCV,
        DecisionTreeClassifier(random_state=0),
        {"max_depth": [1, 2, 3, 5, None], "min_samples_leaf": [1, 5, 20]},
        dict(cv=3, factor=2, random_state=0),
    ),
    "grid-n-estimators": (
        HalvingGridSearchCV,
        sp.ResumableHalvingGridSearchCV,
        RandomForestClassifier(random_state=0),
        {"max_depth": [2, 4, None], "max_features": [1, "sqrt"]},
        dict(cv=3, resource="n_estimators", max_resources=30, min_resources=5, random_state=0),
    ),
    "random-n-samples": (
        HalvingRandomSearchCV,
        sp.ResumableHalvingRandomSearchCV,
        LogisticRegression(max_iter=500),
        {"C": loguniform(1e-3, 1e2), "fit_intercept": [True, False]},
        dict(cv=3, n_candidates=8, random_state=2, return_train_score=False),
    ),
    "random-aggressive": (
        HalvingRandomSearchCV,
        sp.ResumableHalvingRandomSearchCV,
        DecisionTreeClassifier(random_state=0),
        {"max_depth": randint(1, 10), "min_samples_split": randint(2, 30)},
        dict(cv=3, n_candidates=12, aggressive_elimination=True, random_state=3),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_halving_equals_scikit_learn_fresh_and_resumed(case: str, tmp_path: Any) -> None:
    sk_cls, our_cls, estimator, params, kwargs = CASES[case]
    theirs = sk_cls(clone(estimator), params, **kwargs).fit(X, Y)
    ckpt = tmp_path / "ck"
    fresh = our_cls(clone(estimator), params, checkpoint=ckpt, **kwargs).fit(X, Y)
    assert_same_halving(fresh, theirs)
    n_fits = len(theirs.cv_results_["params"]) * theirs.n_splits_
    assert (fresh.n_fits_run_, fresh.n_fits_resumed_) == (n_fits, 0)
    assert len(recorded(ckpt)) == n_fits
    again = our_cls(clone(estimator), params, checkpoint=ckpt, **kwargs).fit(X, Y)
    assert (again.n_fits_run_, again.n_fits_resumed_, again.n_refits_resumed_) == (0, n_fits, 1)
    assert_same_halving(again, theirs)


@pytest.mark.slow
def test_interrupted_halving_resumes_with_only_the_missing_fits(tmp_path: Any) -> None:
    grid = {"max_depth": [1, 2, 3, 4, 6, None], "criterion": ["gini", "entropy"]}
    kw: dict[str, Any] = dict(cv=3, factor=2, random_state=0, scoring=slow_accuracy)
    est = DecisionTreeClassifier(random_state=0)
    theirs = HalvingGridSearchCV(est, grid, **kw).fit(X, Y)
    total = len(theirs.cv_results_["params"]) * 3
    ckpt = str(tmp_path / "ck")
    with joblib.parallel_config(backend="threading"), pytest.raises(KeyboardInterrupt):
        sp.ResumableHalvingGridSearchCV(
            est, grid, checkpoint=StopAfter(_resolve_checkpoint(ckpt)[0], n=4), n_jobs=2, **kw
        ).fit(X, Y)
    done = len(recorded(ckpt))
    assert 3 <= done < total
    resumed = sp.ResumableHalvingGridSearchCV(est, grid, checkpoint=ckpt, **kw).fit(X, Y)
    assert (resumed.n_fits_resumed_, resumed.n_fits_run_) == (done, total - done)
    assert_same_halving(resumed, theirs)


def test_halving_without_random_state_resumes_the_same_subsamples(tmp_path: Any) -> None:
    dists = {"max_depth": randint(1, 10), "min_samples_leaf": randint(1, 30)}
    ckpt = tmp_path / "ck"

    def search() -> Any:
        return sp.ResumableHalvingRandomSearchCV(
            DecisionTreeClassifier(random_state=0), dists, n_candidates=6, cv=3, checkpoint=ckpt
        )

    first = search().fit(X, Y)
    np.random.seed(4321)  # a new draw would sample other candidates and subsamples
    second = search().fit(X, Y)
    assert second.n_fits_run_ == 0
    assert second.random_state is None  # the user's parameter is left as it was
    seed = _resolve_checkpoint(ckpt)[0].get(META_KEY)["sampler_seed"]
    theirs = HalvingRandomSearchCV(
        DecisionTreeClassifier(random_state=0), dists, n_candidates=6, cv=3, random_state=seed
    ).fit(X, Y)
    assert_same_halving(second, theirs)
    assert [repr(p) for p in first.cv_results_["params"]] == [
        repr(p) for p in theirs.cv_results_["params"]
    ]


def test_a_fitted_halving_search_saves_and_loads_without_trusting_anything(tmp_path: Any) -> None:
    search = sp.ResumableHalvingGridSearchCV(
        LogisticRegression(max_iter=500), {"C": [0.1, 1.0, 10.0]}, cv=3, random_state=0,
        checkpoint=str(tmp_path / "ck"),
    ).fit(X, Y)  # fmt: skip
    data = sp.dumps(search)
    assert sp.untrusted_types(data) == []
    loaded = sp.loads(data)
    np.testing.assert_array_equal(loaded.predict(X), search.predict(X))
    assert loaded.n_resources_ == search.n_resources_
