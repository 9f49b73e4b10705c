"""The public classes of :mod:`safepoint.workflows.search` (the package re-exports them).

Their ``__module__`` is set to the package's name below: saved files record a fitted
search's class by that name (``safepoint.workflows.search.ResumableGridSearchCV``),
so files written before and after the package split name the same class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, ParameterGrid, ParameterSampler
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV

from ...errors import SearchError
from .._fingerprint import fingerprint
from ._fit import _ResumableSearchMixin

__all__ = [
    "ResumableGridSearchCV",
    "ResumableRandomizedSearchCV",
    "SearchSpace",
    "search_spaces",
]


class ResumableGridSearchCV(_ResumableSearchMixin, GridSearchCV):
    """scikit-learn's ``GridSearchCV`` that checkpoints every fit and resumes after a crash.

    Same parameters, attributes and results as :class:`sklearn.model_selection.GridSearchCV`
    (``cv_results_``, ``best_estimator_``, ``best_params_``, ``best_score_``,
    ``best_index_``, ``scorer_``, ``n_splits_``, ``refit_time_``, multi-metric scoring,
    callable ``refit``), plus:

    checkpoint : str, os.PathLike, checkpointer or None
        Where each (candidate, fold) result is committed as it finishes: a folder path or
        URL, or a checkpointer such as ``sp.Store(path).checkpointer("project/search")``.
        None checkpoints nothing (plain scikit-learn behaviour).
    on_mismatch : {"error", "restart"}
        What to do when the checkpoint holds results of a different search (other data,
        grid, estimator, scoring or splits): raise CheckpointMismatchError saying what
        changed, or discard them and start afresh.
    progress : bool or None
        Show a progress bar (fits done / total, time left) on stderr. None: only when
        ``verbose > 0`` and stderr is a terminal.

    After ``fit``, ``n_fits_resumed_`` counts the fits taken from the checkpoint and
    ``n_fits_run_`` those fitted by this call.

    >>> import safepoint as sp
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.svm import SVC
    >>> X, y = load_iris(return_X_y=True)
    >>> search = sp.ResumableGridSearchCV(SVC(), {"C": [0.1, 1, 10]}, cv=3)
    >>> search.fit(X, y).best_params_
    {'C': 10}
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
        *,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: bool | str | Callable[..., int] = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: int | str = "2*n_jobs",
        error_score: float | str = np.nan,
        return_train_score: bool = False,
        checkpoint: Any = None,
        on_mismatch: str = "error",
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator,
            param_grid=param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.checkpoint = checkpoint
        self.on_mismatch = on_mismatch
        self.progress = progress

    def _run_search(
        self, evaluate_candidates: Callable[..., Any], *, callback_ctx: Any = None
    ) -> None:
        candidate_params = ParameterGrid(self.param_grid)
        self._search_candidates(evaluate_candidates, candidate_params, callback_ctx)


class ResumableRandomizedSearchCV(_ResumableSearchMixin, _SkRandomizedSearchCV):
    """scikit-learn's ``RandomizedSearchCV`` that checkpoints every fit and resumes after a crash.

    Same parameters, attributes and results as
    :class:`sklearn.model_selection.RandomizedSearchCV`, plus ``checkpoint``,
    ``on_mismatch`` and ``progress`` as in :class:`ResumableGridSearchCV`.

    With ``random_state=None`` and a checkpoint, the seed used to sample the candidates is
    drawn once and kept in the checkpoint, so a resumed run evaluates the same candidates.

    >>> import safepoint as sp
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> search = sp.ResumableRandomizedSearchCV(
    ...     LogisticRegression(max_iter=500), {"C": loguniform(1e-2, 1e2)},
    ...     n_iter=4, cv=3, random_state=0)
    >>> len(search.fit(X, y).cv_results_["params"])
    4
    """

    _samples = True

    def __init__(
        self,
        estimator: Any,
        param_distributions: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        n_iter: int = 10,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: bool | str | Callable[..., int] = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: int | str = "2*n_jobs",
        random_state: Any = None,
        error_score: float | str = np.nan,
        return_train_score: bool = False,
        checkpoint: Any = None,
        on_mismatch: str = "error",
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator,
            param_distributions=param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.checkpoint = checkpoint
        self.on_mismatch = on_mismatch
        self.progress = progress

    def _run_search(
        self, evaluate_candidates: Callable[..., Any], *, callback_ctx: Any = None
    ) -> None:
        random_state = getattr(self, "_sampler_state", self.random_state)
        candidate_params = ParameterSampler(
            self.param_distributions, self.n_iter, random_state=random_state
        )
        self._search_candidates(evaluate_candidates, candidate_params, callback_ctx)


# -- several model types ----------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    """A pipeline whose model step is swapped through one grid per model type.

    Unpacks as ``(estimator, param_grid)``, so ``ResumableGridSearchCV(*space, ...)``
    (or scikit-learn's own GridSearchCV) takes it directly.
    """

    estimator: Any
    param_grid: list[dict[str, Any]]
    labels: list[str]
    step: str = "model"
    models: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        yield self.estimator
        yield self.param_grid

    def label_of(self, params: Mapping[str, Any]) -> str:
        """The model-type label (a key given to :func:`search_spaces`) of a candidate."""
        model = params.get(self.step)
        for label, candidate in self.models.items():
            if model is candidate:
                return label
        digest = fingerprint(model)
        for label, candidate in self.models.items():
            if fingerprint(candidate) == digest:
                return label
        raise SearchError(
            f"the parameters {dict(params)!r} do not come from this search space "
            f"(no model of step {self.step!r} matches one of {list(self.models)})"
        )

    def best_by_label(self, search: Any, metric: str | None = None) -> dict[str, dict[str, Any]]:
        """The best candidate of each model type in a fitted search.

        Returns ``{label: {"index": i, "params": {...}, "score": mean test score}}``, the
        "best result for each model type", computed from ``cv_results_``.
        """
        results = search.cv_results_
        if metric is None:
            metric = search.refit if isinstance(search.refit, str) else "score"
        scores = np.asarray(results[f"mean_test_{metric}"], dtype=float)
        best: dict[str, dict[str, Any]] = {}
        for i, params in enumerate(results["params"]):
            label = self.label_of(params)
            score = scores[i]
            if label not in best or (
                not np.isnan(score)
                and (np.isnan(best[label]["score"]) or score > best[label]["score"])
            ):
                best[label] = {"index": i, "params": params, "score": float(score)}
        return best

    def refit_best(
        self,
        search: Any,
        X: Any,
        y: Any = None,
        *,
        store: Any = None,
        name: str | None = None,
        metric: str | None = None,
        trusted: Any = (),
        **fit_params: Any,
    ) -> dict[str, Any]:
        """Fit the best candidate of each model type on the whole data, and keep each.

        Returns ``{label: BestModel}`` (``.estimator`` fitted, ``.params``, ``.score``,
        ``.metrics``, ``.ref``). Each model is put in ``store`` (default: the store of
        the search's checkpoint) as ``<name>/<label>`` with its cross-validation
        metrics, the data digest and the search's run; a rerun loads those already
        there instead of fitting them again (and the best overall is the search's own
        ``best_estimator_``), so a kill during the refits loses only the one in progress.

        Example:
            >>> best = space.refit_best(search, X, y)              # doctest: +SKIP
            >>> best["knn"].estimator.predict(X[:2]), best["knn"].ref  # doctest: +SKIP
            (array([0, 1]), 'search/best/knn@1')
        """
        from ._refit import refit_best

        return refit_best(
            self,
            search,
            X,
            y,
            store=store,
            name=name,
            metric=metric,
            trusted=trusted,
            **fit_params,
        )


def search_spaces(
    models: Mapping[str, Any],
    *,
    steps: Sequence[tuple[str, Any]] = (),
    step: str = "model",
) -> SearchSpace:
    """Build the pipeline and the list of grids for a search over several model types.

    ``models`` maps a label to ``(estimator, grid)`` (grid: a dict or a list of dicts of
    the estimator's own parameter names, values as lists or distributions) or to a
    bare estimator (searched with its parameters as they are). ``steps`` are
    preprocessing steps placed before the model in the pipeline.

    >>> from sklearn.naive_bayes import GaussianNB
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> from sklearn.preprocessing import StandardScaler
    >>> space = search_spaces(
    ...     {"knn": (KNeighborsClassifier(), {"n_neighbors": [1, 5]}), "nb": GaussianNB()},
    ...     steps=[("scale", StandardScaler())])
    >>> [sorted(g) for g in space.param_grid]
    [['model', 'model__n_neighbors'], ['model']]
    >>> estimator, grid = space
    >>> [name for name, _ in estimator.steps]
    ['scale', 'model']
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(models, Mapping) or not models:
        raise SearchError(
            "search_spaces() needs a non-empty dict {label: (estimator, grid)}, e.g. "
            "{'knn': (KNeighborsClassifier(), {'n_neighbors': [1, 5]})}"
        )
    if not isinstance(step, str) or not step or "__" in step:
        raise SearchError(f"step={step!r} must be a non-empty name without '__', e.g. 'model'")
    names = [name for name, _ in steps]
    if step in names:
        raise SearchError(f"step={step!r} is also the name of a preprocessing step; rename one")
    grids: list[dict[str, Any]] = []
    labels: list[str] = []
    found: dict[str, Any] = {}
    for label, spec in models.items():
        if isinstance(spec, tuple) and len(spec) == 2:
            estimator, grid = spec
        else:
            estimator, grid = spec, {}
        if not hasattr(estimator, "fit") or not hasattr(estimator, "get_params"):
            raise SearchError(
                f"models[{label!r}] must be an estimator or (estimator, grid), got "
                f"{type(estimator).__name__}"
            )
        sub_grids = [grid] if isinstance(grid, Mapping) else list(grid)
        if not sub_grids:
            sub_grids = [{}]
        valid = set(estimator.get_params(deep=True))
        for sub in sub_grids:
            if not isinstance(sub, Mapping):
                raise SearchError(f"the grid of {label!r} must be a dict or a list of dicts")
            unknown = [name for name in sub if name not in valid]
            if unknown:
                raise SearchError(
                    f"the grid of {label!r} names {unknown}, which "
                    f"{type(estimator).__name__} does not have; use its own parameter names "
                    f"(e.g. {sorted(valid)[:5]})"
                )
            grids.append({step: [estimator], **{f"{step}__{k}": v for k, v in sub.items()}})
            labels.append(str(label))
        found[str(label)] = estimator
    first = next(iter(found.values()))
    pipeline = Pipeline([*steps, (step, clone(first))])
    return SearchSpace(pipeline, grids, labels, step, found)


# the name saved files record (see the module docstring)
for _public in (ResumableGridSearchCV, ResumableRandomizedSearchCV, SearchSpace, search_spaces):
    _public.__module__ = "safepoint.workflows.search"
