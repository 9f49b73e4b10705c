"""Seed 002's search, as a program that the kill tests run (and SIGKILL) in a subprocess.

A pipeline whose ``mmc`` step is swapped over four model types (KNN, random forest,
naive Bayes, logistic regression), each with its own grid, on a small data set.

Run as ``python -c "import search_seed002; search_seed002.main()" CHECKPOINT OUT N_JOBS``
(so that the scoring function lives in module ``search_seed002`` in every process and
its digest is the same in each run). The scorer appends one line per scored fit to
``$SEED002_LOG`` and sleeps ``$SEED002_SLOW`` seconds, so that a test can count the fits
each killed run really performed and has time to kill it mid-search.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=240, n_features=8, n_informative=5, random_state=2, class_sep=0.8
    )


def space() -> tuple[Pipeline, list[dict[str, Any]]]:
    pipeline = Pipeline([("scale", StandardScaler()), ("mmc", KNeighborsClassifier())])
    grid = [
        {"mmc": [KNeighborsClassifier()], "mmc__n_neighbors": [1, 3, 5, 9, 15, 25]},
        {
            "mmc": [RandomForestClassifier(random_state=0)],
            "mmc__n_estimators": [5, 10, 20],
            "mmc__max_depth": [3, None],
        },
        {"mmc": [GaussianNB()], "mmc__var_smoothing": [1e-9, 1e-6, 1e-3]},
        {"mmc": [LogisticRegression(max_iter=500)], "mmc__C": [0.01, 0.1, 1.0, 10.0]},
    ]
    return pipeline, grid


N_CANDIDATES = 6 + 6 + 3 + 4
N_SPLITS = 3


def logged_accuracy(estimator: Any, X: Any, y: Any) -> float:
    """accuracy, plus one line in $SEED002_LOG per call (one call per fit)."""
    score = float(accuracy_score(y, estimator.predict(X)))
    slow = float(os.environ.get("SEED002_SLOW", "0") or 0)
    if slow:
        time.sleep(slow)
    log = os.environ.get("SEED002_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
    return score


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """cv_results_ as JSON: every key, exact float values, params by repr; no timings."""
    out: dict[str, Any] = {"keys": sorted(results)}
    for key, value in results.items():
        if "time" in key:
            continue
        if key == "params":
            out[key] = [{k: repr(v) for k, v in sorted(p.items())} for p in value]
        elif key.startswith("param_"):
            out[key] = [
                None if m else repr(v)
                for v, m in zip(value.data, np.ma.getmaskarray(value), strict=True)
            ]
        else:
            out[key] = np.asarray(value).tolist()
    return out


def main() -> None:
    import safepoint as sp

    checkpoint, out_path, n_jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    X, y = data()
    estimator, grid = space()
    search = sp.ResumableGridSearchCV(
        estimator,
        grid,
        cv=N_SPLITS,
        scoring=logged_accuracy,
        n_jobs=n_jobs,
        checkpoint=checkpoint,
    )
    search.fit(X, y)
    with open(out_path, "w") as fh:
        json.dump(
            {
                "cv_results": summary(search.cv_results_),
                "resumed": search.n_fits_resumed_,
                "run": search.n_fits_run_,
                "best_params": {k: repr(v) for k, v in search.best_params_.items()},
            },
            fh,
        )


if __name__ == "__main__":
    main()
