"""The best fitted model of each model type: refit on request, put in the store with its
metrics and lineage, and taken from the store instead of refitted on a rerun."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

import safepoint as sp
from safepoint.workflows._fingerprint import data_digest

X, Y = make_classification(n_samples=200, n_features=6, n_informative=4, random_state=0)


def make_space() -> Any:
    return sp.search_spaces(
        {
            "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 9]}),
            "nb": GaussianNB(),
            "lr": (LogisticRegression(max_iter=500), {"C": [0.01, 1.0]}),
        },
        steps=[("scale", StandardScaler())],
    )


@pytest.mark.slow
def test_best_model_of_each_type_goes_to_the_store(tmp_path: Any) -> None:
    space = make_space()
    ckpt = tmp_path / "store"
    search = sp.ResumableGridSearchCV(*space, cv=3, checkpoint=ckpt).fit(X, Y)
    best = space.refit_best(search, X, Y)
    assert list(best) == ["knn", "nb", "lr"]
    by_label = space.best_by_label(search)
    store = sp.Store(ckpt)
    (run,) = store.runs.list(kind="search")
    overall = space.label_of(search.best_params_)
    for label, b in best.items():
        assert b.params == by_label[label]["params"] and b.score == by_label[label]["score"]
        # the same model as a fit of that candidate on the whole data
        expected = clone(search.estimator).set_params(**clone(b.params, safe=False)).fit(X, Y)
        np.testing.assert_array_equal(b.estimator.predict(X), expected.predict(X))
        # the best overall is the search's own refit, not fitted a second time
        assert b.refitted is (label != overall)
        if label == overall:
            assert b.estimator is search.best_estimator_
        mv = store.info(f"search/best/{label}")
        assert b.ref == mv.ref == f"search/best/{label}@1"
        i = by_label[label]["index"]
        assert mv.metrics["mean_test_score"] == search.cv_results_["mean_test_score"][i]
        assert mv.metrics["std_test_score"] == search.cv_results_["std_test_score"][i]
        assert mv.tags["label"] == label
        assert mv.data_digest == data_digest(X, Y, {})
        assert mv.run_id == run.id  # lineage: the search run that chose it
        loaded = store.get(mv.name)
        np.testing.assert_array_equal(loaded.predict(X), b.estimator.predict(X))

    # a rerun takes every model from the store: no fit, no new version
    again = sp.ResumableGridSearchCV(*space, cv=3, checkpoint=ckpt).fit(X, Y)
    assert (again.n_fits_run_, again.n_refits_resumed_) == (0, 1)
    second = space.refit_best(again, X, Y)
    assert not any(b.refitted for b in second.values())
    assert [b.ref for b in second.values()] == [b.ref for b in best.values()]
    for label in best:
        assert len(store.versions(f"search/best/{label}")) == 1
        np.testing.assert_array_equal(
            second[label].estimator.predict(X), best[label].estimator.predict(X)
        )
    # other data: every model is fitted again, as new versions
    third = space.refit_best(again, X[:150], Y[:150])
    assert all(b.refitted for b in third.values())
    assert store.info("search/best/lr").version == 2


def test_refit_best_without_a_store_or_into_another(tmp_path: Any) -> None:
    space = make_space()
    search = sp.ResumableGridSearchCV(*space, cv=3).fit(X, Y)
    best = space.refit_best(search, X, Y)
    assert all(b.refitted and b.ref is None for b in best.values())
    other = sp.Store(tmp_path / "models")
    kept = space.refit_best(search, X, Y, store=other, name="team/best")
    assert sorted(other.models()) == ["team/best/knn", "team/best/lr", "team/best/nb"]
    assert kept["nb"].ref == "team/best/nb@1"
    with pytest.raises(sp.SearchError, match="fitted search"):
        space.refit_best(sp.ResumableGridSearchCV(*space, cv=3), X, Y)


def test_refit_best_by_a_chosen_metric(tmp_path: Any) -> None:
    space = make_space()
    search = sp.ResumableGridSearchCV(
        *space, cv=3, scoring=["accuracy", "f1"], refit="f1", checkpoint=tmp_path / "s"
    ).fit(X, Y)
    best = space.refit_best(search, X, Y, metric="accuracy")
    for label, b in best.items():
        assert b.score == space.best_by_label(search, "accuracy")[label]["score"]
        assert "mean_test_f1" in b.metrics and "mean_test_accuracy" in b.metrics
