"""A resumable search distributed on a real Dask cluster through joblib's dask backend."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier
from test_search import assert_same_results, commit_keys, recorded

import safepoint as sp
from safepoint.workflows.search._fit import _resolve_checkpoint

distributed = pytest.importorskip("distributed")

# The cluster runs in this process (processes=False), so the scorer can note here which
# Dask worker scored each fit.
WORKERS: list[str] = []
_lock = threading.Lock()


def accuracy_on_worker(estimator: Any, X: Any, y: Any) -> float:
    """accuracy, noting the address of the Dask worker that computed it (if any)."""
    try:
        address = distributed.get_worker().address
    except ValueError:
        address = "not-a-worker"
    with _lock:
        WORKERS.append(address)
    return float(accuracy_score(y, estimator.predict(X)))


@pytest.fixture(scope="module")
def client() -> Any:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.mark.timeout(300)
def test_search_on_a_dask_cluster_checkpoints_and_resumes(client: Any, tmp_path: Path) -> None:
    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    space = sp.search_spaces(
        {
            "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 5, 11]}),
            "tree": (DecisionTreeClassifier(random_state=0), {"max_depth": [2, 4, None]}),
        }
    )
    reference = GridSearchCV(*space, cv=4, scoring=accuracy_on_worker).fit(X, y)
    ckpt = str(tmp_path / "ck")
    workers = set(client.scheduler_info()["workers"])

    WORKERS.clear()
    with joblib.parallel_backend("dask"):
        first = sp.ResumableGridSearchCV(
            *space, cv=4, scoring=accuracy_on_worker, n_jobs=-1, checkpoint=ckpt
        ).fit(X, y)
    assert first.n_fits_run_ == 24
    # Every cross-validation fit ran on the cluster (the refit runs here, in fit's caller).
    on_cluster = [w for w in WORKERS if w != "not-a-worker"]
    assert len(on_cluster) == 24 and set(on_cluster) <= workers
    assert_same_results(first, reference)
    assert len(recorded(ckpt)) == 24

    # Lose some results (as if the client had died with them in flight) and resume.
    cp = _resolve_checkpoint(ckpt)[0]
    for key in commit_keys(ckpt)[::2]:
        cp.delete(key)
    lost = 24 - len(recorded(ckpt))
    assert lost > 0
    WORKERS.clear()
    with joblib.parallel_backend("dask"):
        resumed = sp.ResumableGridSearchCV(
            *space, cv=4, scoring=accuracy_on_worker, n_jobs=-1, checkpoint=ckpt
        ).fit(X, y)
    assert (resumed.n_fits_run_, resumed.n_fits_resumed_) == (lost, 24 - lost)
    assert len([w for w in WORKERS if w != "not-a-worker"]) == lost
    assert_same_results(resumed, reference)
    np.testing.assert_array_equal(
        resumed.cv_results_["mean_test_score"], first.cv_results_["mean_test_score"]
    )
