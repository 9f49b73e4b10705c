"""ResumableGridSearchCV / ResumableRandomizedSearchCV: scikit-learn's results, plus a ledger.

Every search here is compared with scikit-learn's own class on the same inputs: the
same cv_results_ keys and values (timings aside), best_* attributes and refit model.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import joblib
import numpy as np
import pytest
from scipy.stats import loguniform, randint
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, make_scorer, recall_score
from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

import safepoint as sp
from safepoint.workflows.search._fit import _resolve_checkpoint
from safepoint.workflows.search._ledger import META_KEY, Ledger

IRIS = load_iris(return_X_y=True)
CLF = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)
REG = make_regression(n_samples=150, n_features=5, noise=5.0, random_state=0)


def recorded(checkpoint: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """The fit results the ledger in ``checkpoint`` holds for its current search."""
    cp = _resolve_checkpoint(checkpoint)[0]
    ledger = Ledger(cp, "")
    ledger.digest = cp.get(META_KEY)["digest"]
    return ledger.results()


def commit_keys(checkpoint: Any) -> list[str]:
    """The ledger's commit keys, of whatever search (meta excluded)."""
    stored = _resolve_checkpoint(checkpoint)[0].keys()  # a checkpointer, not a dict
    return [k for k in stored if k.startswith("search/") and k != META_KEY]


def slow_accuracy(estimator: Any, X: Any, y: Any) -> float:
    """accuracy, 20 ms late: fits slower than a commit, as in real searches."""
    time.sleep(0.02)
    return float(accuracy_score(y, estimator.predict(X)))


def assert_same_results(ours: Any, theirs: Any) -> None:
    """cv_results_ equal key by key (timings excluded) and the same best_* attributes."""
    a, b = ours.cv_results_, theirs.cv_results_
    assert sorted(a) == sorted(b)
    for key in b:
        if "time" in key:
            assert np.shape(a[key]) == np.shape(b[key])
            continue
        if key == "params":
            assert [repr(p) for p in a[key]] == [repr(p) for p in b[key]]
        elif key.startswith("param_"):
            mask = list(np.ma.getmaskarray(b[key]))
            assert list(np.ma.getmaskarray(a[key])) == mask
            # Masked slots hold arbitrary filler: compare the values that are there.
            assert [repr(v) for v, m in zip(a[key].data, mask, strict=True) if not m] == [
                repr(v) for v, m in zip(b[key].data, mask, strict=True) if not m
            ]
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for attr in ("best_index_", "best_score_", "n_splits_", "multimetric_"):
        assert hasattr(ours, attr) == hasattr(theirs, attr), attr
        if hasattr(theirs, attr):
            assert getattr(ours, attr) == getattr(theirs, attr), attr
    if hasattr(theirs, "best_params_"):
        assert repr(ours.best_params_) == repr(theirs.best_params_)
    if hasattr(theirs, "best_estimator_"):
        assert repr(ours.best_estimator_) == repr(theirs.best_estimator_)
        assert ours.refit_time_ >= 0
        X = IRIS[0] if ours.n_features_in_ == 4 and not hasattr(ours, "feature_names_in_") else None
        if X is not None:
            np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert type(ours.scorer_) is type(theirs.scorer_)


def lowest_fit_time_within_best_rank(results: dict[str, Any]) -> int:
    """A callable refit: among the best-ranked candidates, the first one."""
    return int(np.flatnonzero(results["rank_test_score"] == 1)[0])


GRID_CASES = {
    "svc-default-scoring-train-scores": (
        SVC(),
        {"C": [0.1, 1, 10], "kernel": ["rbf", "linear"]},
        dict(cv=3, return_train_score=True),
        IRIS,
    ),
    "logreg-multimetric-refit-f1": (
        LogisticRegression(max_iter=300),
        [{"C": [0.01, 1.0]}, {"C": [0.1], "fit_intercept": [False]}],
        dict(scoring=["accuracy", "f1_macro"], refit="f1_macro", cv=4),
        CLF,
    ),
    "ridge-regression-neg-mse": (
        Ridge(),
        {"alpha": [0.01, 1.0, 100.0]},
        dict(scoring="neg_mean_squared_error", cv=KFold(4, shuffle=True, random_state=1)),
        REG,
    ),
    "tree-callable-refit": (
        DecisionTreeClassifier(random_state=0),
        {"max_depth": [1, 2, 3, None], "criterion": ["gini", "entropy"]},
        dict(refit=lowest_fit_time_within_best_rank, cv=StratifiedKFold(3)),
        CLF,
    ),
    "forest-dict-scorers-no-refit": (
        RandomForestClassifier(n_estimators=8, random_state=0),
        {"max_depth": [2, 4], "max_features": [1, "sqrt"]},
        dict(
            scoring={"acc": "accuracy", "rec": make_scorer(recall_score)},
            refit=False,
            cv=3,
            return_train_score=True,
        ),
        CLF,
    ),
}


@pytest.mark.parametrize("case", sorted(GRID_CASES))
@pytest.mark.slow
def test_grid_search_equals_scikit_learn_fresh_and_resumed(case: str, tmp_path: Any) -> None:
    estimator, grid, kwargs, (X, y) = GRID_CASES[case]
    theirs = GridSearchCV(clone(estimator), grid, **kwargs).fit(X, y)
    ckpt = str(tmp_path / "ckpt")
    fresh = sp.ResumableGridSearchCV(clone(estimator), grid, checkpoint=ckpt, **kwargs).fit(X, y)
    assert_same_results(fresh, theirs)
    n_fits = len(theirs.cv_results_["params"]) * theirs.n_splits_
    assert (fresh.n_fits_run_, fresh.n_fits_resumed_) == (n_fits, 0)
    assert len(recorded(ckpt)) == n_fits

    # A second run of the same search is all ledger, and still scikit-learn's results.
    again = sp.ResumableGridSearchCV(clone(estimator), grid, checkpoint=ckpt, **kwargs).fit(X, y)
    assert (again.n_fits_run_, again.n_fits_resumed_) == (0, n_fits)
    assert_same_results(again, theirs)
    # Timings come from the fits themselves, not from reading the ledger.
    np.testing.assert_array_equal(
        again.cv_results_["mean_fit_time"], fresh.cv_results_["mean_fit_time"]
    )


def test_no_checkpoint_is_plain_scikit_learn() -> None:
    X, y = IRIS
    grid = {"n_neighbors": [1, 5, 9]}
    ours = sp.ResumableGridSearchCV(KNeighborsClassifier(), grid, cv=3).fit(X, y)
    assert_same_results(ours, GridSearchCV(KNeighborsClassifier(), grid, cv=3).fit(X, y))
    assert ours.n_fits_run_ == 9


@pytest.mark.parametrize(
    ("estimator", "dists", "kwargs"),
    [
        (
            LogisticRegression(max_iter=500),
            {"C": loguniform(1e-3, 1e2), "fit_intercept": [True, False]},
            dict(n_iter=6, cv=3, random_state=0),
        ),
        (
            DecisionTreeClassifier(random_state=0),
            [{"max_depth": randint(1, 8)}, {"min_samples_leaf": randint(1, 20)}],
            dict(
                n_iter=5,
                cv=3,
                random_state=np.random.RandomState(3),
                scoring=["accuracy", "balanced_accuracy"],
                refit="balanced_accuracy",
                return_train_score=True,
            ),
        ),
    ],
    ids=["loguniform-int-seed", "list-of-dists-randomstate-multimetric"],
)
@pytest.mark.slow
def test_randomized_search_equals_scikit_learn(
    estimator: Any, dists: Any, kwargs: dict[str, Any], tmp_path: Any
) -> None:
    X, y = CLF
    theirs = RandomizedSearchCV(clone(estimator), dists, **clone(kwargs, safe=False)).fit(X, y)
    ckpt = tmp_path / "rs"
    ours = sp.ResumableRandomizedSearchCV(
        clone(estimator), dists, checkpoint=ckpt, **clone(kwargs, safe=False)
    ).fit(X, y)
    assert_same_results(ours, theirs)
    again = sp.ResumableRandomizedSearchCV(
        clone(estimator), dists, checkpoint=ckpt, **clone(kwargs, safe=False)
    ).fit(X, y)
    assert again.n_fits_run_ == 0
    assert_same_results(again, theirs)


@pytest.mark.slow
def test_randomized_without_random_state_resumes_the_same_candidates(tmp_path: Any) -> None:
    X, y = CLF
    dists = {"C": loguniform(1e-3, 1e2)}
    ckpt = tmp_path / "rs"

    def search() -> Any:
        return sp.ResumableRandomizedSearchCV(
            LogisticRegression(max_iter=500), dists, n_iter=4, cv=3, checkpoint=ckpt
        )

    first = search().fit(X, y)
    # The seed drawn for sampling is kept in the checkpoint; a new draw would differ.
    np.random.seed(12345)
    second = search().fit(X, y)
    assert second.n_fits_run_ == 0 and second.n_fits_resumed_ == 12
    assert [p["C"] for p in second.cv_results_["params"]] == [
        p["C"] for p in first.cv_results_["params"]
    ]
    # ... and it is exactly scikit-learn's sampling with that seed.
    seed = _resolve_checkpoint(ckpt)[0].get(META_KEY)["sampler_seed"]
    theirs = RandomizedSearchCV(
        LogisticRegression(max_iter=500), dists, n_iter=4, cv=3, random_state=seed
    ).fit(X, y)
    assert_same_results(second, theirs)


class StopAfter:
    """A checkpointer that dies (like a kill) when its ``n``-th fit result is being written."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n, self.writes = inner, n, 0
        # Same store and name as the real checkpointer: progress goes to its runs table.
        self.store, self.name = getattr(inner, "store", None), getattr(inner, "name", None)

    def get(self, key: str, default: Any = None) -> Any:
        return self.inner.get(key, default)

    def keys(self) -> Any:
        return self.inner.keys()

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def set(self, key: str, value: Any) -> None:
        if key != META_KEY:
            self.writes += 1
            if self.writes == self.n:
                raise KeyboardInterrupt("simulated interruption")
        self.inner.set(key, value)


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.slow
def test_interrupted_search_resumes_with_only_the_missing_fits(n_jobs: int, tmp_path: Any) -> None:
    # Threads keep this in-process test quick; process pools and Dask have their own tests.
    with joblib.parallel_config(backend="threading"):
        _interrupt_and_resume(n_jobs, tmp_path)


def _interrupt_and_resume(n_jobs: int, tmp_path: Any) -> None:
    X, y = IRIS
    grid = {"n_neighbors": [1, 4, 9, 16], "weights": ["uniform", "distance"]}
    est = KNeighborsClassifier()
    kw: dict[str, Any] = dict(cv=5, scoring=slow_accuracy, n_jobs=n_jobs)
    theirs = GridSearchCV(est, grid, **kw).fit(X, y)
    ckpt = str(tmp_path / "ck")
    stopper = StopAfter(_resolve_checkpoint(ckpt)[0], n=3)
    with pytest.raises(KeyboardInterrupt):
        sp.ResumableGridSearchCV(est, grid, checkpoint=stopper, **kw).fit(X, y)
    done = len(recorded(ckpt))
    # Two commits of at least one fit each made it (40 fits of >= 20 ms take at least
    # four commit intervals of 0.2 s); the third, and whatever came after the "crash",
    # did not.
    assert 2 <= done < 40
    resumed = sp.ResumableGridSearchCV(est, grid, checkpoint=ckpt, **kw).fit(X, y)
    assert resumed.n_fits_resumed_ == done
    assert resumed.n_fits_run_ == 40 - done
    assert_same_results(resumed, theirs)


def test_changed_search_is_refused_or_restarted(tmp_path: Any) -> None:
    X, y = IRIS
    ckpt = tmp_path / "ck"
    grid = {"n_neighbors": [1, 3]}
    sp.ResumableGridSearchCV(KNeighborsClassifier(), grid, cv=3, checkpoint=ckpt).fit(X, y)
    assert len(recorded(ckpt)) == 6
    old_keys = commit_keys(ckpt)

    changes = {
        "the data": dict(X=X + 1.0),
        "the estimator": dict(estimator=KNeighborsClassifier(weights="distance")),
        "the scoring": dict(scoring="balanced_accuracy"),
        "the cross-validation splits": dict(cv=StratifiedKFold(3, shuffle=True, random_state=0)),
    }
    for what, change in changes.items():
        kw: dict[str, Any] = dict(
            estimator=KNeighborsClassifier(), grid=grid, X=X, scoring=None, cv=3
        )
        kw.update(change)
        search = sp.ResumableGridSearchCV(
            kw["estimator"], kw["grid"], cv=kw["cv"], scoring=kw["scoring"], checkpoint=ckpt
        )
        with pytest.raises(sp.CheckpointMismatchError, match=what) as info:
            search.fit(kw["X"], y)
        assert "on_mismatch='restart'" in str(info.value)
        # it counts fits, not ledger commits (the first run made fewer commits)
        assert "holds 6 fit result(s) of a different search" in str(info.value)
        assert isinstance(info.value, ValueError)
        assert commit_keys(ckpt) == old_keys  # nothing was touched

    restarted = sp.ResumableGridSearchCV(
        KNeighborsClassifier(),
        {"n_neighbors": [1, 5]},
        cv=3,
        checkpoint=ckpt,
        on_mismatch="restart",
    ).fit(X + 1.0, y)
    assert (restarted.n_fits_run_, restarted.n_fits_resumed_) == (6, 0)
    assert len(recorded(ckpt)) == 6
    assert not set(old_keys) & set(commit_keys(ckpt))  # the old search's results are gone
    theirs = GridSearchCV(KNeighborsClassifier(), {"n_neighbors": [1, 5]}, cv=3).fit(X + 1.0, y)
    assert_same_results(restarted, theirs)


def test_what_does_not_change_results_does_not_invalidate(tmp_path: Any) -> None:
    """n_jobs, verbose, refit, pre_dispatch and the grid's spelling are not part of the key."""
    X, y = IRIS
    ckpt = tmp_path / "ck"
    sp.ResumableGridSearchCV(
        KNeighborsClassifier(), {"n_neighbors": [1, 3]}, cv=3, checkpoint=ckpt
    ).fit(X, y)
    again = sp.ResumableGridSearchCV(
        KNeighborsClassifier(),
        {"n_neighbors": np.array([1, 3])},
        cv=3,
        checkpoint=ckpt,
        n_jobs=2,
        refit=False,
        verbose=0,
        pre_dispatch=4,
    ).fit(X, y)
    assert again.n_fits_run_ == 0


def test_shuffling_cv_without_seed_explains_why_it_cannot_resume(tmp_path: Any) -> None:
    X, y = IRIS
    ckpt = tmp_path / "ck"
    cv = KFold(3, shuffle=True)
    sp.ResumableGridSearchCV(GaussianNB(), {"var_smoothing": [1e-9]}, cv=cv, checkpoint=ckpt).fit(
        X, y
    )
    with pytest.raises(sp.CheckpointMismatchError, match="random_state"):
        sp.ResumableGridSearchCV(
            GaussianNB(), {"var_smoothing": [1e-9]}, cv=cv, checkpoint=ckpt
        ).fit(X, y)


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
@pytest.mark.parametrize("error_score", [np.nan, 0.0])
def test_failing_fits_are_recorded_like_error_score(error_score: float, tmp_path: Any) -> None:
    X, y = IRIS
    grid = {"C": [1.0, -1.0, 0.5]}  # C=-1 is invalid: those fits fail
    kwargs = dict(cv=3, error_score=error_score, return_train_score=True)
    with pytest.warns(FitFailedWarning, match="3 fits failed"):
        theirs = GridSearchCV(SVC(), grid, **kwargs).fit(X, y)
    ckpt = tmp_path / "ck"
    with pytest.warns(FitFailedWarning, match="3 fits failed"):
        ours = sp.ResumableGridSearchCV(SVC(), grid, checkpoint=ckpt, **kwargs).fit(X, y)
    assert_same_results(ours, theirs)
    errors = [r["fit_error"] for r in recorded(ckpt).values()]
    assert sum(e is not None for e in errors) == 3
    assert all("C" in e for e in errors if e is not None)
    # On resume the failures come from the ledger, with the same warning and results.
    with pytest.warns(FitFailedWarning, match="3 fits failed"):
        again = sp.ResumableGridSearchCV(SVC(), grid, checkpoint=ckpt, **kwargs).fit(X, y)
    assert again.n_fits_run_ == 0
    assert_same_results(again, theirs)


def test_error_score_raise_keeps_the_fits_done_before_the_failure(tmp_path: Any) -> None:
    X, y = IRIS
    grid = {"C": [1.0, 0.5, -1.0]}
    with pytest.raises(ValueError, match="C"):
        GridSearchCV(SVC(), grid, cv=3, error_score="raise").fit(X, y)
    ckpt = tmp_path / "ck"
    with pytest.raises(ValueError, match="C"):
        sp.ResumableGridSearchCV(SVC(), grid, cv=3, error_score="raise", checkpoint=ckpt).fit(X, y)
    assert len(recorded(ckpt)) == 6  # the two valid candidates, every fold
    with pytest.raises(ValueError, match="C"):
        sp.ResumableGridSearchCV(SVC(), grid, cv=3, error_score="raise", checkpoint=ckpt).fit(X, y)
    assert len(recorded(ckpt)) == 6


@pytest.mark.slow
def test_several_model_types_with_search_spaces(tmp_path: Any) -> None:
    X, y = CLF
    space = sp.search_spaces(
        {
            "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 7]}),
            "rf": (RandomForestClassifier(random_state=0), {"n_estimators": [5, 10]}),
            "nb": GaussianNB(),
            "lr": (LogisticRegression(max_iter=500), [{"C": [0.1]}, {"C": [1.0], "tol": [1e-3]}]),
        },
        steps=[("scale", __import__("sklearn.preprocessing").preprocessing.StandardScaler())],
        step="mmc",
    )
    assert space.labels == ["knn", "rf", "nb", "lr", "lr"]
    theirs = GridSearchCV(*space, cv=3).fit(X, y)
    ours = sp.ResumableGridSearchCV(*space, cv=3, checkpoint=tmp_path / "ck").fit(X, y)
    assert_same_results(ours, theirs)
    best = space.best_by_label(ours)
    assert sorted(best) == ["knn", "lr", "nb", "rf"]
    for label, info in best.items():
        same_type = [
            i for i, p in enumerate(ours.cv_results_["params"]) if space.label_of(p) == label
        ]
        assert info["score"] == max(ours.cv_results_["mean_test_score"][i] for i in same_type)
        assert info["index"] in same_type
    assert max(b["score"] for b in best.values()) == ours.best_score_


def test_search_spaces_bad_input() -> None:
    with pytest.raises(sp.SearchError, match="non-empty dict"):
        sp.search_spaces({})
    with pytest.raises(sp.SearchError, match="n_neigbors"):
        sp.search_spaces({"knn": (KNeighborsClassifier(), {"n_neigbors": [1]})})
    with pytest.raises(sp.SearchError, match="estimator"):
        sp.search_spaces({"x": ("not a model", {})})
    with pytest.raises(sp.SearchError, match="step"):
        sp.search_spaces({"nb": GaussianNB()}, step="a__b")


def test_bad_arguments_raise_search_error(tmp_path: Any) -> None:
    X, y = IRIS
    with pytest.raises(sp.SearchError, match="checkpoint"):
        sp.ResumableGridSearchCV(GaussianNB(), {}, checkpoint=42).fit(X, y)
    with pytest.raises(sp.SearchError, match="on_mismatch"):
        sp.ResumableGridSearchCV(GaussianNB(), {}, checkpoint=tmp_path, on_mismatch="x").fit(X, y)
    # A checkpoint key written by something else is not silently overwritten.
    cp = _resolve_checkpoint(tmp_path / "other")[0]
    cp.set(META_KEY, {"hello": "world"})
    with pytest.raises(sp.CheckpointMismatchError, match="not a search ledger"):
        sp.ResumableGridSearchCV(GaussianNB(), {}, checkpoint=tmp_path / "other").fit(X, y)


def test_progress_bar_counts_fits(tmp_path: Any, capsys: Any) -> None:
    X, y = IRIS
    grid = {"n_neighbors": [1, 3, 5]}
    ckpt = tmp_path / "ck"
    sp.ResumableGridSearchCV(KNeighborsClassifier(), grid, cv=3, checkpoint=ckpt).fit(X, y)
    assert capsys.readouterr().err == ""  # verbose=0 / not a terminal: quiet
    sp.ResumableGridSearchCV(
        KNeighborsClassifier(),
        {"n_neighbors": [1, 3, 5, 7]},
        cv=3,
        checkpoint=ckpt,
        on_mismatch="restart",
        progress=True,
        verbose=1,
    ).fit(X, y)
    captured = capsys.readouterr()
    assert "12/12" in captured.err and "fits" in captured.err
    assert "4 candidates x 3 folds" in captured.err
    assert "Fitting 3 folds for each of 4 candidates, totalling 12 fits" in captured.out


def test_pandas_input_and_fit_params_are_part_of_the_key(tmp_path: Any) -> None:
    pd = pytest.importorskip("pandas")
    X, y = IRIS
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    weights = np.ones(len(y))
    ckpt = tmp_path / "ck"
    grid = {"C": [0.5, 2.0]}
    ours = sp.ResumableGridSearchCV(SVC(), grid, cv=3, checkpoint=ckpt).fit(
        frame, y, sample_weight=weights
    )
    theirs = GridSearchCV(SVC(), grid, cv=3).fit(frame, y, sample_weight=weights)
    assert_same_results(ours, theirs)
    assert list(ours.feature_names_in_) == ["a", "b", "c", "d"]
    weights[:10] = 3.0
    with pytest.raises(sp.CheckpointMismatchError, match="data"):
        sp.ResumableGridSearchCV(SVC(), grid, cv=3, checkpoint=ckpt).fit(
            frame, y, sample_weight=weights
        )


def test_clone_and_get_params_keep_the_resume_arguments(tmp_path: Any) -> None:
    search = sp.ResumableGridSearchCV(
        GaussianNB(), {}, checkpoint=str(tmp_path), on_mismatch="restart", progress=False
    )
    params = clone(search).get_params()
    assert params["checkpoint"] == str(tmp_path)
    assert params["on_mismatch"] == "restart" and params["progress"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from scikit-learn's parameter checks
        clone(search).fit(*IRIS)


def test_progress_and_resume_show_in_the_store_runs_table(tmp_path: Any) -> None:
    X, y = IRIS
    store = sp.Store(tmp_path / "store")
    grid = {"n_neighbors": [1, 3, 5, 7]}
    kw: dict[str, Any] = dict(cv=3, scoring=slow_accuracy)
    with pytest.raises(KeyboardInterrupt):
        sp.ResumableGridSearchCV(
            KNeighborsClassifier(),
            grid,
            checkpoint=StopAfter(store.checkpointer("iris/knn"), n=2),
            **kw,
        ).fit(X, y)
    done = len(recorded(store.checkpointer("iris/knn")))
    assert done > 0
    (run,) = store.runs.list(kind="search")
    assert (run.name, run.status) == ("iris/knn", "interrupted")
    assert run.state["total"] == 12 and run.state["checkpointer"] == "iris/knn"
    assert run.state["done"] == done and run.progress == done / 12

    search = sp.ResumableGridSearchCV(
        KNeighborsClassifier(), grid, checkpoint=store.checkpointer("iris/knn"), **kw
    ).fit(X, y)
    assert search.n_fits_resumed_ == done
    (again,) = store.runs.list(kind="search")  # the same run, continued
    assert again.id == run.id
    assert (again.status, again.progress) == ("succeeded", 1.0)
    assert again.state["resumed"] == done and again.state["done"] == 12
    assert again.state["best_score"] == search.best_score_
    assert again.state["best_params"] == {"n_neighbors": repr(search.best_params_["n_neighbors"])}
    # A fitted search keeps no handle on the store (it can be saved and sent anywhere).
    assert not any(isinstance(v, type(store)) for v in vars(search).values())


@pytest.mark.slow
def test_process_pool_with_a_store_checkpointer(tmp_path: Any) -> None:
    """Workers get the fits, never the search: its open store need not be picklable."""
    X, y = IRIS
    grid = {"n_neighbors": [1, 5, 9], "weights": ["uniform", "distance"]}
    cp = sp.Store(tmp_path / "store").checkpointer("iris/pool")
    with joblib.parallel_config(backend="loky"):
        ours = sp.ResumableGridSearchCV(
            KNeighborsClassifier(), grid, cv=3, n_jobs=2, checkpoint=cp
        ).fit(X, y)
    assert_same_results(ours, GridSearchCV(KNeighborsClassifier(), grid, cv=3).fit(X, y))
    assert len(recorded(cp)) == 18


def test_a_fitted_resumable_search_loads_without_trusting_anything(tmp_path):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import safepoint as sp

    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    y = (X[:, 0] > 0.5).astype(int)
    search = sp.ResumableGridSearchCV(
        LogisticRegression(), {"C": [0.1, 1.0]}, cv=3, checkpoint=str(tmp_path / "store")
    ).fit(X, y)
    data = sp.dumps(search)
    assert sp.untrusted_types(data) == []
    loaded = sp.loads(data)
    np.testing.assert_array_equal(loaded.predict(X), search.predict(X))
