"""Seed 002's search, then the best fitted model of each type kept in the store: a
program that the kill tests run (and SIGKILL, SIGINT) in a subprocess.

Run as ``python -c "import search_refit_seed; search_refit_seed.main()" STORE OUT``.
The pipeline starts with :class:`Logged`, which passes the data through and, when fit
on the whole data set (a refit, not a cross-validation fold), appends a line to
``$REFIT_LOG`` and sleeps ``$REFIT_SLOW`` seconds: the test counts the refits each run
really did and has time to kill one mid-refit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

N_SAMPLES = 240
LABELS = ["knn", "rf", "nb", "lr"]
TRUSTED = ["search_refit_seed.Logged"]


class Logged(TransformerMixin, BaseEstimator):
    """The identity, which logs (and slows down) every fit on the whole data."""

    def fit(self, X: Any, y: Any = None) -> Logged:
        if len(X) == N_SAMPLES:
            log = os.environ.get("REFIT_LOG")
            if log:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, f"{os.getpid()}\n".encode())
                finally:
                    os.close(fd)
            time.sleep(float(os.environ.get("REFIT_SLOW", "0") or 0))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> Any:
        return X


def data() -> tuple[Any, Any]:
    return make_classification(
        n_samples=N_SAMPLES, n_features=8, n_informative=5, random_state=2, class_sep=0.8
    )


def space() -> Any:
    import safepoint as sp

    return sp.search_spaces(
        {
            "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 5, 15]}),
            "rf": (RandomForestClassifier(random_state=0), {"n_estimators": [5, 20]}),
            "nb": (GaussianNB(), {"var_smoothing": [1e-9, 1e-3]}),
            "lr": (LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}),
        },
        steps=[("log", Logged()), ("scale", StandardScaler())],
    )


def main() -> None:
    import safepoint as sp

    store_path, out_path = sys.argv[1], sys.argv[2]
    X, y = data()
    store = sp.Store(store_path)
    checkpoint = store.checkpointer("seed002", trusted=TRUSTED)
    s = space()
    search = sp.ResumableGridSearchCV(*s, cv=3, checkpoint=checkpoint).fit(X, y)
    best = s.refit_best(search, X, y, trusted=TRUSTED)
    with open(out_path, "w") as fh:
        json.dump(
            {
                "resumed": search.n_fits_resumed_,
                "refit_resumed": search.n_refits_resumed_,
                "best": {
                    label: {"ref": b.ref, "refitted": b.refitted, "score": b.score}
                    for label, b in best.items()
                },
                "best_label": s.label_of(search.best_params_),
            },
            fh,
        )


if __name__ == "__main__":
    main()
