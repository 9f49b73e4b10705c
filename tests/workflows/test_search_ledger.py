"""The ledger is keyed by what decides a fit: grids grow, shrink and reorder without
refitting, only a real change is a mismatch, older ledgers are read, and the final
refit is checkpointed too."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from test_search import assert_same_results, commit_keys, recorded

import safepoint as sp
from safepoint.workflows._fingerprint import fingerprint
from safepoint.workflows.search import candidate_key
from safepoint.workflows.search._fit import _resolve_checkpoint
from safepoint.workflows.search._ledger import META_KEY, recorded_fits

IRIS = load_iris(return_X_y=True)
CLF = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)


def knn(grid: dict[str, list[Any]], ckpt: Any, **kw: Any) -> Any:
    return sp.ResumableGridSearchCV(KNeighborsClassifier(), grid, cv=3, checkpoint=ckpt, **kw)


def test_a_grown_shrunk_or_reordered_grid_reuses_every_shared_fit(tmp_path: Any) -> None:
    X, y = IRIS
    ckpt = tmp_path / "ck"
    first = knn({"n_neighbors": [1, 3]}, ckpt).fit(X, y)
    assert (first.n_fits_run_, first.n_fits_resumed_) == (6, 0)

    grid = {"n_neighbors": [1, 3, 5, 7], "weights": ["uniform", "distance"]}
    grown = knn(grid, ckpt).fit(X, y)
    # (1, uniform) and (3, uniform) are the fits of the first run: weights="uniform" is
    # KNeighborsClassifier's default, so the configured estimators are the same
    assert (grown.n_fits_resumed_, grown.n_fits_run_) == (6, 18)
    assert_same_results(grown, GridSearchCV(KNeighborsClassifier(), grid, cv=3).fit(X, y))
    assert len(recorded(ckpt)) == 24

    shrunk = knn({"n_neighbors": [7, 3]}, ckpt).fit(X, y)  # fewer, and reordered
    assert (shrunk.n_fits_resumed_, shrunk.n_fits_run_) == (6, 0)
    assert_same_results(
        shrunk, GridSearchCV(KNeighborsClassifier(), {"n_neighbors": [7, 3]}, cv=3).fit(X, y)
    )
    # a list of grids: (5, uniform) is shared, the two with 9 neighbours are new
    both = [{"n_neighbors": [5, 9]}, {"n_neighbors": [9], "weights": ["distance"]}]
    again = knn(both, ckpt).fit(X, y)
    assert (again.n_fits_resumed_, again.n_fits_run_) == (3, 6)
    assert_same_results(again, GridSearchCV(KNeighborsClassifier(), both, cv=3).fit(X, y))


def test_a_parameter_fixed_or_searched_is_the_same_fit(tmp_path: Any) -> None:
    X, y = IRIS
    ckpt = tmp_path / "ck"
    sp.ResumableGridSearchCV(SVC(C=10.0), {"kernel": ["rbf"]}, cv=3, checkpoint=ckpt).fit(X, y)
    # the estimator changed (C is no longer fixed) but the fit C=10, rbf is shared
    moved = sp.ResumableGridSearchCV(SVC(), {"C": [10.0, 1.0]}, cv=3, checkpoint=ckpt).fit(X, y)
    assert (moved.n_fits_resumed_, moved.n_fits_run_) == (3, 3)
    assert_same_results(moved, GridSearchCV(SVC(), {"C": [10.0, 1.0]}, cv=3).fit(X, y))


def test_several_model_types_grow_without_refitting(tmp_path: Any) -> None:
    X, y = CLF
    ckpt = tmp_path / "ck"
    models: dict[str, Any] = {
        "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 7]}),
        "nb": (GaussianNB(), {"var_smoothing": [1e-9, 1e-6]}),
    }
    space = sp.search_spaces(models, steps=[("scale", StandardScaler())])
    sp.ResumableGridSearchCV(*space, cv=3, checkpoint=ckpt).fit(X, y)
    # a new model type first: the pipeline's default model is now logistic regression,
    # yet every knn and nb fit is shared
    grown_models = {"lr": (LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}), **models}
    grown = sp.search_spaces(grown_models, steps=[("scale", StandardScaler())])
    search = sp.ResumableGridSearchCV(*grown, cv=3, checkpoint=ckpt).fit(X, y)
    assert (search.n_fits_resumed_, search.n_fits_run_) == (12, 6)
    assert_same_results(search, GridSearchCV(*grown, cv=3).fit(X, y))


def test_only_a_real_change_is_a_mismatch_and_it_counts_fits(tmp_path: Any) -> None:
    X, y = IRIS
    ckpt = tmp_path / "ck"
    # quick fits, grouped into one or two commits: the message counts fits
    knn({"n_neighbors": [1, 3, 5, 7]}, ckpt).fit(X, y)
    assert len(commit_keys(ckpt)) < 12
    with pytest.raises(sp.CheckpointMismatchError) as info:
        knn({"n_neighbors": [1, 3]}, ckpt, scoring="balanced_accuracy").fit(X, y)
    assert "holds 12 fit result(s)" in str(info.value) and "the scoring" in str(info.value)
    # a new estimator of which no fit is in the ledger
    with pytest.raises(sp.CheckpointMismatchError, match=r"12 fit result.*the estimator"):
        sp.ResumableGridSearchCV(
            KNeighborsClassifier(p=1), {"n_neighbors": [1, 3]}, cv=3, checkpoint=ckpt
        ).fit(X, y)
    assert recorded_fits(_resolve_checkpoint(ckpt)[0]) == 12  # nothing was touched
    restarted = sp.ResumableGridSearchCV(
        KNeighborsClassifier(p=1),
        {"n_neighbors": [1, 3]},
        cv=3,
        checkpoint=ckpt,
        on_mismatch="restart",
    ).fit(X, y)
    assert (restarted.n_fits_run_, restarted.n_fits_resumed_) == (6, 0)
    assert len(recorded(ckpt)) == 6


def _write_v1_ledger(source: Any, target: Any, grid: dict[str, list[Any]], **change: str) -> int:
    """Rewrite the fits of ``source`` (a ledger of this safepoint) into ``target`` in the
    layout of the first ledger format: meta with the digests of the whole search, entries
    keyed by the digest of each candidate's parameters."""
    from sklearn.model_selection import ParameterGrid

    cp_in = _resolve_checkpoint(source)[0]
    meta = cp_in.get(META_KEY)
    fits = recorded(source)
    parts = {
        "kind": "ResumableGridSearchCV",
        "estimator": fingerprint(KNeighborsClassifier()),
        "grid": fingerprint(("grid", grid)),
        **meta["parts"],
        **change,
    }
    entries = []
    for params in ParameterGrid(grid):
        key = candidate_key(KNeighborsClassifier(), params)
        for fold in range(3):
            entries.append({"c": fingerprint(params), "f": fold, "r": fits[(key, fold)]})
    digest = fingerprint(parts)
    cp_out = _resolve_checkpoint(target)[0]
    cp_out.set(
        META_KEY,
        {
            "format": "safepoint.search-ledger/1",
            "digest": digest,
            "parts": parts,
            "created": "2026-01-01T00:00:00+00:00",
            "n_splits": 3,
            "search": "ResumableGridSearchCV",
        },
    )
    cp_out.set(f"search/{digest[:16]}/0123456789ab-000001", {"fits": entries})
    return len(entries)


def test_ledgers_of_the_first_format_are_read(tmp_path: Any) -> None:
    X, y = IRIS
    grid = {"n_neighbors": [1, 3]}
    knn(grid, tmp_path / "new").fit(X, y)
    old = tmp_path / "old"
    assert _write_v1_ledger(tmp_path / "new", old, grid) == 6
    resumed = knn({"n_neighbors": [1, 3, 5]}, old).fit(X, y)
    assert (resumed.n_fits_resumed_, resumed.n_fits_run_) == (6, 3)
    theirs = GridSearchCV(KNeighborsClassifier(), {"n_neighbors": [1, 3, 5]}, cv=3).fit(X, y)
    assert_same_results(resumed, theirs)
    again = knn({"n_neighbors": [5, 3, 1]}, old).fit(X, y)  # the old fits are still read
    assert (again.n_fits_resumed_, again.n_fits_run_) == (9, 0)
    assert recorded_fits(_resolve_checkpoint(old)[0]) == 9

    # an old ledger of other data is a mismatch, counted in fits
    other = tmp_path / "other"
    _write_v1_ledger(tmp_path / "new", other, grid, data="0" * 32)
    with pytest.raises(sp.CheckpointMismatchError, match=r"holds 6 fit result.*the data"):
        knn(grid, other).fit(X, y)


@pytest.mark.slow
def test_the_final_refit_is_checkpointed(tmp_path: Any) -> None:
    X, y = CLF
    ckpt = tmp_path / "ck"
    grid = {"C": [1e-4, 1e-3]}
    first = sp.ResumableGridSearchCV(LogisticRegression(), grid, cv=3, checkpoint=ckpt).fit(X, y)
    assert first.n_refits_resumed_ == 0
    again = sp.ResumableGridSearchCV(LogisticRegression(), grid, cv=3, checkpoint=ckpt).fit(X, y)
    assert (again.n_fits_run_, again.n_refits_resumed_) == (0, 1)
    assert again.refit_time_ == first.refit_time_
    np.testing.assert_array_equal(again.best_estimator_.coef_, first.best_estimator_.coef_)
    assert again.best_estimator_ is not first.best_estimator_
    np.testing.assert_array_equal(again.predict(X), first.predict(X))
    # another best candidate (a grown grid) is refitted, not taken from the checkpoint
    bigger = {"C": [1e-4, 1e-3, 1.0]}
    grown = sp.ResumableGridSearchCV(LogisticRegression(), bigger, cv=3, checkpoint=ckpt).fit(X, y)
    theirs = GridSearchCV(LogisticRegression(), bigger, cv=3).fit(X, y)
    assert_same_results(grown, theirs)
    assert grown.best_params_ == {"C": 1.0} != first.best_params_
    assert grown.n_refits_resumed_ == 0
    np.testing.assert_array_equal(grown.best_estimator_.coef_, theirs.best_estimator_.coef_)
