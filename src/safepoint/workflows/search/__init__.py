"""Resumable hyper-parameter searches: scikit-learn's GridSearchCV and RandomizedSearchCV,
plus a checkpoint that survives a crash.

A long search (hours over KNN, random forests, naive Bayes and logistic regression,
say) should not start from zero after a crash, a pre-empted node or a Ctrl-C.
:class:`ResumableGridSearchCV` and :class:`ResumableRandomizedSearchCV` take the same
arguments and produce the same attributes and results as scikit-learn's classes, plus
``checkpoint=``: every (candidate, fold) fit is committed to a ledger the moment it
finishes, and a rerun of the same search takes the recorded results and only fits
what is missing. Each fit is keyed by what decides it: the estimator configured for
it (class, fixed and candidate parameters), the fold, and the data, splits and
scoring of the search. So a grid grown, shrunk or reordered reuses every fit it
shares with earlier runs, while a search whose data, folds, scoring or estimator
changed never reuses stale results: it stops with
:class:`~safepoint.CheckpointMismatchError` (or starts afresh with
``on_mismatch="restart"``) and says what changed. The final refit is checkpointed
too, and Ctrl-C says how many fits are saved.

>>> import safepoint as sp
>>> from sklearn.datasets import load_iris
>>> from sklearn.neighbors import KNeighborsClassifier
>>> X, y = load_iris(return_X_y=True)
>>> search = sp.ResumableGridSearchCV(
...     KNeighborsClassifier(), {"n_neighbors": [1, 5, 15]}, cv=3,
...     checkpoint="iris-search")                                    # doctest: +SKIP
>>> search.fit(X, y).best_params_                                    # doctest: +SKIP
{'n_neighbors': 15}

Killed half-way, the same lines run again pick up where it stopped
(``search.n_fits_resumed_`` says how many fits came from the checkpoint).

Several model types in one search, the scikit-learn way (a pipeline step swapped
through a list of grids), built by :func:`search_spaces`::

    space = sp.search_spaces({
        "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 5, 15]}),
        "rf": (RandomForestClassifier(random_state=0), {"n_estimators": [50, 100]}),
    })
    search = sp.ResumableGridSearchCV(*space, checkpoint="search").fit(X, y)
    space.best_by_label(search)   # {"knn": {...}, "rf": {...}}
    space.refit_best(search, X, y)   # the fitted best model of each type, in the store

Parallel fits go through joblib (``n_jobs``), including a Dask cluster with
``with joblib.parallel_backend("dask"):``; the ledger is written by the process that
called ``fit``, so workers need no access to the checkpoint.

Inside the package: ``_api`` (the public classes), ``_fit`` (the fit loop),
``_ledger`` (the checkpoint's layout and its writer thread), ``_halving``,
``_refit`` (:meth:`SearchSpace.refit_best`), ``_interrupt`` (Ctrl-C) and
``_sklearn_compat``, the one module that touches scikit-learn's private names.
"""

from __future__ import annotations

from ._api import ResumableGridSearchCV, ResumableRandomizedSearchCV, SearchSpace, search_spaces
from ._fit import DEFAULT_CHECKPOINTER, candidate_key
from ._halving import ResumableHalvingGridSearchCV, ResumableHalvingRandomSearchCV
from ._ledger import LedgerStore
from ._refit import BestModel

__all__ = [
    "DEFAULT_CHECKPOINTER",
    "BestModel",
    "LedgerStore",
    "ResumableGridSearchCV",
    "ResumableHalvingGridSearchCV",
    "ResumableHalvingRandomSearchCV",
    "ResumableRandomizedSearchCV",
    "SearchSpace",
    "candidate_key",
    "search_spaces",
]
