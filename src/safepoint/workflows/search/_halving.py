"""Resumable successive-halving searches: scikit-learn's ``HalvingGridSearchCV`` and
``HalvingRandomSearchCV`` (experimental in scikit-learn) with ``checkpoint=``.

Successive halving evaluates every candidate on a small budget (a subsample of the
rows, or a few iterations / trees), keeps the best third, and so on. Every fit of
every round goes to the ledger like a grid search's: fits on a subsample are keyed
by the subsample's indices too, so a resumed run takes each round's recorded fits
and fits only what is missing; the rounds it has not reached yet run as usual.

>>> import safepoint as sp
>>> from sklearn.datasets import load_iris
>>> from sklearn.tree import DecisionTreeClassifier
>>> X, y = load_iris(return_X_y=True)
>>> search = sp.ResumableHalvingGridSearchCV(
...     DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3, 4]},
...     cv=3, random_state=0, checkpoint="halving")                     # doctest: +SKIP
>>> search.fit(X, y).best_params_                                      # doctest: +SKIP
{'max_depth': 3}

With ``random_state=None`` the seed of the subsampling (and of the candidates of the
random search) is drawn once and kept in the checkpoint, so a resumed run draws the
same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# scikit-learn's halving searches are experimental: this import makes them importable
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import HalvingGridSearchCV as _SkHalvingGridSearchCV
from sklearn.model_selection import HalvingRandomSearchCV as _SkHalvingRandomSearchCV

from . import _sklearn_compat as compat
from ._fit import _ResumableSearchMixin

__all__ = ["ResumableHalvingGridSearchCV", "ResumableHalvingRandomSearchCV"]


class _ResumableHalvingMixin(_ResumableSearchMixin):
    """What successive halving adds to the resumable ``fit``."""

    _samples = True

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run successive halving, resuming from the checkpoint if any.

        Same arguments and result as scikit-learn's ``HalvingGridSearchCV.fit``.
        """
        est: Any = self
        compat.set_n_samples_orig(est, X)
        super().fit(X, y, **params)
        # scikit-learn's own step: its refit is a callable, so the base sets no best_score_
        est.best_score_ = est.cv_results_["mean_test_score"][est.best_index_]
        return self

    def _run_search(
        self, evaluate_candidates: Callable[..., Any], *, callback_ctx: Any = None
    ) -> None:
        est: Any = self
        parent = super()._run_search  # type: ignore[misc]  # scikit-learn's halving
        # scikit-learn reads self.random_state for the subsamples (and the random
        # search's candidates): the seed kept in the ledger stands in for None
        user_state = est.random_state
        est.random_state = getattr(self, "_sampler_state", user_state)
        try:
            compat.parent_run_search(parent, evaluate_candidates, callback_ctx)
        finally:
            est.random_state = user_state


class ResumableHalvingGridSearchCV(_ResumableHalvingMixin, _SkHalvingGridSearchCV):
    """scikit-learn's ``HalvingGridSearchCV`` that checkpoints every fit and resumes.

    Same parameters, attributes and results as
    :class:`sklearn.model_selection.HalvingGridSearchCV` (``n_resources_``,
    ``n_candidates_``, ``n_iterations_``, ``cv_results_`` with ``iter`` and
    ``n_resources``, ...), plus ``checkpoint``, ``on_mismatch`` and ``progress`` as in
    :class:`~safepoint.ResumableGridSearchCV`.

    >>> import safepoint as sp
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> X, y = load_iris(return_X_y=True)
    >>> search = sp.ResumableHalvingGridSearchCV(SVC(), {"C": [0.1, 1, 10]}, cv=3,
    ...                                          random_state=0)
    >>> search.fit(X, y).n_iterations_
    2
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
        *,
        factor: int | float = 3,
        resource: str = "n_samples",
        max_resources: int | str = "auto",
        min_resources: int | str = "exhaust",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: float | str = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        checkpoint: Any = None,
        on_mismatch: str = "error",
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            estimator,
            param_grid,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.checkpoint = checkpoint
        self.on_mismatch = on_mismatch
        self.progress = progress


class ResumableHalvingRandomSearchCV(_ResumableHalvingMixin, _SkHalvingRandomSearchCV):
    """scikit-learn's ``HalvingRandomSearchCV`` that checkpoints every fit and resumes.

    Same parameters, attributes and results as
    :class:`sklearn.model_selection.HalvingRandomSearchCV`, plus ``checkpoint``,
    ``on_mismatch`` and ``progress`` as in :class:`~safepoint.ResumableGridSearchCV`.

    >>> import safepoint as sp
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> X, y = load_iris(return_X_y=True)
    >>> search = sp.ResumableHalvingRandomSearchCV(
    ...     SVC(), {"C": loguniform(1e-2, 1e2)}, n_candidates=6, cv=3, random_state=0)
    >>> len(search.fit(X, y).n_candidates_)
    2
    """

    def __init__(
        self,
        estimator: Any,
        param_distributions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        n_candidates: int | str = "exhaust",
        factor: int | float = 3,
        resource: str = "n_samples",
        max_resources: int | str = "auto",
        min_resources: int | str = "smallest",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: float | str = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        checkpoint: Any = None,
        on_mismatch: str = "error",
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            estimator,
            param_distributions,
            n_candidates=n_candidates,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.checkpoint = checkpoint
        self.on_mismatch = on_mismatch
        self.progress = progress


# Saved files record a fitted halving search by this name (format/trust.py lists it):
# the classes keep the module they had before the search package, which re-exports them.
ResumableHalvingGridSearchCV.__module__ = "safepoint.workflows.search_halving"
ResumableHalvingRandomSearchCV.__module__ = "safepoint.workflows.search_halving"
