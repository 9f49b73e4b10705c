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
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import signature
from itertools import product
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, ParameterGrid, ParameterSampler, check_cv
from sklearn.model_selection import RandomizedSearchCV as _SkRandomizedSearchCV
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import indexable

from ..errors import SafepointWarning, SearchError, UntrustedTypesError
from ._fingerprint import data_digest, fingerprint, splits_digest
from ._ledger import LEGACY, Checkpointer, Ledger, LedgerWriter
from ._sklearn_compat import (
    NULL_CALLBACK_CONTEXT,
    _check_method_params,
    _fit_and_score,
    _fit_context,
    _insert_error_scores,
    _MultimetricScorer,
    _warn_or_raise_about_fit_failures,
    _yields_constant_splits,
)
from .search_interrupt import report_interrupt

__all__ = [
    "ResumableGridSearchCV",
    "ResumableRandomizedSearchCV",
    "SearchSpace",
    "search_spaces",
]

_FIT_AND_SCORE_PARAMS = set(signature(_fit_and_score).parameters)
_ON_MISMATCH = ("error", "restart")
#: the checkpointer a path or URL given as ``checkpoint=`` opens in its store
DEFAULT_CHECKPOINTER = "search"


# -- the checkpoint argument ---------------------------------------------------------------
def _resolve_checkpoint(checkpoint: Any) -> tuple[Checkpointer, str, Any, bool]:
    """``checkpoint=`` -> (checkpointer, description for messages, its store, store owned).

    A path or URL opens ``sp.Store(path)`` and its checkpointer ``"search"``; a
    checkpointer object (``store.checkpointer("project/search")`` or anything with
    ``get/set/keys/delete``) is used as it is.
    """
    if isinstance(checkpoint, str | os.PathLike):
        path = os.fspath(checkpoint)
        if not path:
            raise SearchError(
                "checkpoint='' is empty: pass a folder path or URL, a store checkpointer "
                "(sp.Store(path).checkpointer('project/search')), or None for no checkpoint"
            )
        from ..stores.opening import open_store

        store: Any = open_store(path)
        cp = store.checkpointer(DEFAULT_CHECKPOINTER, description="resumable search ledger")
        return cp, f"{path!r} (checkpointer {DEFAULT_CHECKPOINTER!r})", store, True
    methods = ("get", "set", "keys", "delete")
    missing = [m for m in methods if not callable(getattr(checkpoint, m, None))]
    if missing:
        raise SearchError(
            f"checkpoint= must be a folder path or URL, or a checkpointer with get/set/keys/"
            f"delete (sp.Store(path).checkpointer('project/search')); got "
            f"{type(checkpoint).__name__}, which lacks {', '.join(missing)}"
        )
    store = getattr(checkpoint, "store", None)
    name = getattr(checkpoint, "name", None)
    where = f"checkpointer {name!r}" if isinstance(name, str) else type(checkpoint).__name__
    if store is not None and hasattr(store, "url"):
        where += f" in store {store.url!r}"
    return checkpoint, where, store, False


def candidate_key(base_estimator: Any, params: Mapping[str, Any], salt: str = "") -> str:
    """The ledger key of a fit's candidate: the digest of the estimator configured for it.

    The search's estimator with the candidate's parameters set holds everything that
    decides the fit (its class, every fixed and searched parameter), whichever grid
    the candidate came from: ``{"C": 1.0}`` searched with ``SVC()`` and ``{}`` searched
    with ``SVC(C=1.0)`` are the same fit. ``salt`` tells apart fits on other splits
    (a halving search's subsamples).
    """
    try:
        configured = clone(base_estimator).set_params(**clone(dict(params), safe=False))
        key = fingerprint(("configured", configured))
    except Exception:
        # parameters the estimator rejects: the fit fails the same way wherever it runs
        key = fingerprint(("parameters", fingerprint(base_estimator), dict(params)))
    return fingerprint((key, salt)) if salt else key


# -- what a worker runs ------------------------------------------------------------------
def _evaluate(task: int, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """``_fit_and_score`` tagged with its task index, so results can arrive in any order."""
    return task, _fit_and_score(*args, **kwargs)


def _storable(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a fit result worth keeping (never a fitted estimator)."""
    return {k: v for k, v in result.items() if k not in ("estimator", "parameters")}


# -- progress ------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar over fits: done / total, with elapsed time and time left."""

    def __init__(self, enabled: bool, total: int, done: int, label: str) -> None:
        self.bar: Any = None
        if not enabled or total == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("fits"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task(label, total=total, completed=done)
        self.bar.start()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _show_progress(progress: bool | None, verbose: int) -> bool:
    if progress is not None:
        return bool(progress)
    if os.environ.get("SAFEPOINT_QUIET"):
        return False
    stream = sys.stderr
    return bool(verbose) and hasattr(stream, "isatty") and stream.isatty()


# -- the search ------------------------------------------------------------------------------
@dataclass
class _FitState:
    """What one ``fit`` call holds: the ledger, its store, the run row, the folds."""

    ledger: Ledger | None = None
    store: Any = None
    owned: bool = False  # the store was opened from a path: close it when fit returns
    reporter: _RunReporter = field(default_factory=lambda: _RunReporter(None, None, None))
    splits: list[tuple[Any, Any]] = field(default_factory=list)
    splits_digest: str = ""
    estimator_digest: str = ""
    estimator_checked: bool = False
    mismatch_hint: str = ""
    where: str = ""


class _ResumableSearchMixin:
    """Replaces ``BaseSearchCV.fit`` with a version that checkpoints each (candidate, fold).

    The flow follows scikit-learn's ``fit`` step by step (scorers, routing, splits, the
    ``_run_search`` hook, ``_format_results``, best index, refit), so that the attributes
    and results are scikit-learn's own; only the evaluation of a batch of candidates
    differs: results already in the ledger are taken from it, the others are fitted
    through joblib and committed one by one as they arrive.
    """

    # Filled in by the concrete classes' __init__.
    checkpoint: Any
    on_mismatch: str
    progress: bool | None

    #: Save the final refit (``best_estimator_``) in the checkpoint, so that a rerun of
    #: the same search takes it instead of fitting it again (one more commit, the size
    #: of the fitted model).
    checkpoint_refit: bool = True

    #: Seconds between two ledger commits. A fit finishing later than this after the
    #: previous commit is committed at once; quicker fits are grouped, so that their
    #: commits (an fsync each) stay a negligible cost. A kill loses at most the fits in
    #: flight and those finished within this interval.
    commit_interval: float = 0.2

    def _check_resume_params(self) -> None:
        if self.on_mismatch not in _ON_MISMATCH:
            raise SearchError(
                f"on_mismatch={self.on_mismatch!r} is not one of {_ON_MISMATCH}: 'error' stops "
                "when the checkpoint belongs to another search, 'restart' discards it"
            )
        if self.progress is not None and not isinstance(self.progress, bool | np.bool_):
            raise SearchError(f"progress= must be True, False or None, not {self.progress!r}")

    def _search_candidates(
        self, evaluate_candidates: Callable[..., Any], candidate_params: Any, callback_ctx: Any
    ) -> None:
        """Evaluate the candidates, inside a "search" task of scikit-learn's callback
        machinery when callbacks are set (``callback_ctx``)."""
        if callback_ctx is None or callback_ctx is NULL_CALLBACK_CONTEXT:
            evaluate_candidates(candidate_params)
            return
        search_ctx = callback_ctx.subcontext(
            task_name="search",
            max_subtasks=len(candidate_params) * self.n_splits_,  # type: ignore[attr-defined]
            sequential_subtasks=False,
        ).call_on_fit_task_begin(estimator=self)
        evaluate_candidates(candidate_params, callback_ctx=search_ctx)
        search_ctx.call_on_fit_task_end(estimator=self)

    #: The search samples at random (candidates, subsamples) from ``random_state``: with
    #: ``random_state=None`` and a checkpoint, the seed is drawn once and kept in the
    #: ledger, so that a resumed run samples the same.
    _samples: bool = False

    def _ledger_info(self) -> dict[str, Any]:
        """Extra fields of a new ledger's meta (written with it: no extra commit)."""
        est: Any = self
        if self._samples and est.random_state is None:
            return {"sampler_seed": self._new_seed()}
        return {}

    def _new_seed(self) -> int:
        # Drawn from numpy's global generator, like scikit-learn's own sampling.
        return int(np.random.randint(np.iinfo(np.int32).max))

    def _sampling_seed(self, ledger: Ledger | None, meta: dict[str, Any]) -> None:
        """Set ``_sampler_state``: the ``random_state`` the search samples with."""
        if not self._samples:
            return
        est: Any = self
        self._sampler_state: Any = est.random_state
        if ledger is not None and est.random_state is None:
            seed = meta.get("sampler_seed")
            if not isinstance(seed, numbers.Integral):  # a ledger this search did not write
                seed = self._new_seed()
                ledger.update_meta(sampler_seed=seed)
            self._sampler_state = int(seed)

    def _open_ledger(
        self, state: _FitState, X: Any, y: Any, routed_params: Any, n_splits: int
    ) -> tuple[Ledger | None, dict[str, Any]]:
        if self.checkpoint is None:
            return None, {}
        checkpointer, where, store, owned = _resolve_checkpoint(self.checkpoint)
        state.store, state.owned, state.where = store, owned, where
        est = self  # type: Any
        # The context of every fit: what a fit depends on besides its own estimator
        # and fold. The grid is not part of it: fits are found by their own keys.
        parts = {
            "scoring": fingerprint(est.scoring),
            "options": fingerprint((est.return_train_score, est.error_score)),
            "data": data_digest(X, y, dict(routed_params)),
            "splits": state.splits_digest,
        }
        digest = fingerprint(parts)
        state.estimator_digest = fingerprint(est.estimator)
        hint = ""
        if not _yields_constant_splits(est._checked_cv_orig):
            hint = (
                f" Note: the cv ({type(est._checked_cv_orig).__name__}) shuffles without a "
                "fixed integer random_state, so its splits differ in every run and the search "
                "cannot resume; give it random_state=<int>."
            )
        state.mismatch_hint = hint
        ledger = Ledger(checkpointer, where)
        meta = ledger.open(
            digest,
            parts,
            state.estimator_digest,
            self.on_mismatch,
            {"n_splits": n_splits, "search": type(self).__name__, **self._ledger_info()},
            hint=hint,
        )
        return ledger, meta

    def _uses_callbacks(self) -> bool:
        """scikit-learn >= 1.9 callbacks are set on this search.

        Only then does the search run scikit-learn's callback machinery, which sends the
        search itself (``caller=``) to every worker: without callbacks the search's
        parameters, including an open store's checkpointer, never need to be pickled.
        """
        return hasattr(self, "_init_callback_context") and bool(
            getattr(self, "_skl_callbacks", None)
        )

    def _fit_kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if "caller" in _FIT_AND_SCORE_PARAMS and self._uses_callbacks():
            extra["caller"] = self
        return extra

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run fit with all sets of parameters, resuming from the checkpoint if any.

        Same arguments and result as scikit-learn's ``GridSearchCV.fit``. With
        ``checkpoint=``, fits recorded by an earlier (interrupted) run of the same
        search are taken from the ledger; ``n_fits_resumed_`` and ``n_fits_run_``
        count both kinds.
        """
        self._check_resume_params()
        # Kept out of `self`: scikit-learn sends the search itself (caller=) to the
        # workers, and an open store cannot travel.
        state = _FitState()
        try:
            return self._fit(state, X, y, **params)
        except KeyboardInterrupt as exc:
            if state.ledger is not None:
                try:
                    saved = len(state.ledger.results())
                except BaseException:  # a second Ctrl-C, or the store is gone
                    saved = state.reporter.done
                report_interrupt(exc, saved, state.where)
            raise
        finally:
            if state.owned:
                state.store.close()

    def _fit(self, state: _FitState, X: Any, y: Any = None, **params: Any) -> Any:
        est: Any = self
        scorers, refit_metric = est._get_scorers()

        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed_params = est._get_routed_params_for_fit(params)

        metadata_callbacks = None
        if (sample_weight := params.get("sample_weight")) is not None:
            metadata_callbacks = {"sample_weight": sample_weight}
        root_ctx = None
        if self._uses_callbacks():
            root_ctx = est._init_callback_context(
                max_subtasks=1 + (est.refit is not False)
            ).call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata_callbacks)

        est._checked_cv_orig = check_cv(est.cv, y, classifier=is_classifier(est.estimator))
        split_params = routed_params.splitter.split
        if hasattr(self, "_check_input_parameters"):
            est._check_input_parameters(X=X, y=y, split_params=split_params)
        est.n_splits_ = est._checked_cv_orig.get_n_splits(X, y, **split_params)
        # Split once: the digest and the fits must see the very same folds, even when the
        # splitter is randomised.
        state.splits = list(est._checked_cv_orig.split(X, y, **split_params))
        state.splits_digest = splits_digest(state.splits)

        ledger, meta = self._open_ledger(state, X, y, routed_params, est.n_splits_)
        self._sampling_seed(ledger, meta)
        state.ledger = ledger
        if ledger is not None:
            # lets SearchSpace.refit_best take best_estimator_ for the same data
            est._sp_data_digest = data_digest(X, y, dict(routed_params.estimator.fit))
        est.n_fits_resumed_ = 0
        est.n_refits_resumed_ = 0
        est.n_fits_run_ = 0
        state.reporter = _RunReporter(state.store, ledger, self)

        base_estimator = clone(est.estimator)
        fit_and_score_kwargs = dict(
            scorer=scorers,
            fit_params=routed_params.estimator.fit,
            score_params=routed_params.scorer.score,
            return_train_score=est.return_train_score,
            return_n_test_samples=True,
            return_times=True,
            return_parameters=False,
            error_score=est.error_score,
            verbose=est.verbose,
            **self._fit_kwargs(),
        )
        results: dict[str, Any] = {}
        all_candidate_params: list[dict[str, Any]] = []
        all_out: list[dict[str, Any]] = []
        all_more_results: dict[str, list[Any]] = defaultdict(list)

        def evaluate_candidates(
            candidate_params: Iterable[dict[str, Any]],
            cv: Any = None,
            more_results: dict[str, list[Any]] | None = None,
            callback_ctx: Any = None,
        ) -> dict[str, Any]:
            nonlocal results
            if callback_ctx is NULL_CALLBACK_CONTEXT:
                callback_ctx = None
            candidate_params = list(candidate_params)
            n_splits = est.n_splits_
            if cv is None or cv is est._checked_cv_orig:
                cv_splits, salt = state.splits, ""
            else:  # a subclass evaluating on other splits: key its fits apart
                cv_splits = list(cv.split(X, y, **split_params))
                salt = splits_digest(cv_splits)
            if len(cv_splits) != n_splits:
                raise ValueError(
                    f"cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {n_splits} splits, got {len(cv_splits)}"
                )
            out = self._evaluate(
                state,
                candidate_params,
                cv_splits,
                salt,
                X,
                y,
                base_estimator,
                fit_and_score_kwargs,
                callback_ctx,
            )
            if len(out) < 1:
                raise ValueError(
                    "No fits were performed. Was the CV iterator empty? Were there no candidates?"
                )
            _warn_or_raise_about_fit_failures(out, est.error_score)
            if callable(est.scoring):
                _insert_error_scores(out, est.error_score)
            all_candidate_params.extend(candidate_params)
            all_out.extend(out)
            if more_results is not None:
                for key, value in more_results.items():
                    all_more_results[key].extend(value)
            results = est._format_results(all_candidate_params, n_splits, all_out, all_more_results)
            return results

        try:
            if "callback_ctx" in signature(est._run_search).parameters:
                # scikit-learn >= 1.9 (some searches need a context even without callbacks)
                ctx = root_ctx if root_ctx is not None else NULL_CALLBACK_CONTEXT
                est._run_search(evaluate_candidates, callback_ctx=ctx)
            else:
                est._run_search(evaluate_candidates)
        except BaseException as exc:
            state.reporter.failed(exc)
            raise

        first_test_score = all_out[0]["test_scores"]
        est.multimetric_ = isinstance(first_test_score, dict)
        if callable(est.scoring) and est.multimetric_:
            est._check_refit_for_multimetric(first_test_score)
            refit_metric = est.refit

        if est.refit or not est.multimetric_:
            est.best_index_ = est._select_best_index(est.refit, refit_metric, results)
            if not callable(est.refit):
                est.best_score_ = results[f"mean_test_{refit_metric}"][est.best_index_]
            est.best_params_ = results["params"][est.best_index_]

        if est.refit:
            try:
                self._refit(
                    state, base_estimator, X, y, routed_params, root_ctx, metadata_callbacks
                )
            except BaseException as exc:
                state.reporter.failed(exc)
                raise
            if hasattr(est.best_estimator_, "feature_names_in_"):
                est.feature_names_in_ = est.best_estimator_.feature_names_in_

        est.scorer_ = scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers
        est.cv_results_ = results
        state.reporter.finish(getattr(est, "best_score_", None), getattr(est, "best_params_", None))
        # lineage: store.put(name, search.best_estimator_, run_id=search.run_id_) links the
        # model to this run (the console navigates between them)
        est.run_id_ = state.reporter.run.id if state.reporter.run is not None else None
        if root_ctx is not None:
            root_ctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata_callbacks)
        return self

    def _refit(
        self,
        state: _FitState,
        base_estimator: Any,
        X: Any,
        y: Any,
        routed_params: Any,
        root_ctx: Any,
        metadata_callbacks: Any,
    ) -> None:
        """Fit the best candidate on the whole data, or take it from the checkpoint."""
        est: Any = self
        # Clone the parameters too: they may be estimators (a pipeline step searched
        # over several model types), which must not be fitted in place.
        est.best_estimator_ = clone(base_estimator).set_params(
            **clone(est.best_params_, safe=False)
        )
        ledger = state.ledger
        key = candidate_key(base_estimator, est.best_params_)
        saved = None
        if ledger is not None:
            try:
                saved = ledger.get_refit("best", key)
            except UntrustedTypesError as exc:
                warnings.warn(
                    SafepointWarning(
                        f"the refit model in the checkpoint holds types outside the trust set "
                        f"({', '.join(exc.types)}): it was fitted again. To have it restored, "
                        f"pass checkpoint=sp.Store(path).checkpointer(name, trusted={exc.types!r})"
                    ),
                    stacklevel=4,
                )
        if saved is not None and saved.get("estimator") is not None and root_ctx is None:
            est.best_estimator_ = saved["estimator"]
            est.refit_time_ = float(saved.get("refit_time", 0.0))
            est.n_refits_resumed_ = 1
            return
        refit_ctx = None
        if root_ctx is not None:
            refit_ctx = root_ctx.subcontext(task_name="refit-with-best-params")
        with _maybe_propagate(refit_ctx, est.best_estimator_):
            if refit_ctx is not None:
                refit_ctx.call_on_fit_task_begin(
                    estimator=self, X=X, y=y, metadata=metadata_callbacks
                )
            refit_start_time = time.time()
            if y is not None:
                est.best_estimator_.fit(X, y, **routed_params.estimator.fit)
            else:
                est.best_estimator_.fit(X, **routed_params.estimator.fit)
            refit_end_time = time.time()
        est.refit_time_ = refit_end_time - refit_start_time
        if refit_ctx is not None:
            refit_ctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata_callbacks)
        if ledger is not None and self.checkpoint_refit:
            # One more commit, so that a rerun (the same script after a crash further
            # on) takes the refit model instead of fitting it again.
            ledger.set_refit("best", key, estimator=est.best_estimator_, refit_time=est.refit_time_)

    def _evaluate(
        self,
        state: _FitState,
        candidate_params: list[dict[str, Any]],
        cv_splits: list[tuple[Any, Any]],
        salt: str,
        X: Any,
        y: Any,
        base_estimator: Any,
        fit_and_score_kwargs: dict[str, Any],
        callback_ctx: Any,
    ) -> list[dict[str, Any]]:
        """Results for every (candidate, fold) in scikit-learn's order: ledger first, then fits."""
        est: Any = self
        ledger = state.ledger
        n_candidates, n_splits = len(candidate_params), len(cv_splits)
        total = n_candidates * n_splits
        keys = [candidate_key(base_estimator, params, salt) for params in candidate_params]
        recorded = ledger.results() if ledger is not None else {}
        legacy: list[str | None] = [None] * n_candidates
        if ledger is not None and ledger.meta.get("legacy"):
            # fits of a ledger written by an earlier safepoint, keyed by the parameters
            legacy = [
                LEGACY + fingerprint((params, salt) if salt else params)
                for params in candidate_params
            ]
        out: list[dict[str, Any] | None] = [None] * total
        todo: list[tuple[int, int, int]] = []

        def lookup(ci: int, si: int) -> dict[str, Any] | None:
            hit = recorded.get((keys[ci], si))
            if hit is None and legacy[ci] is not None:
                hit = recorded.get((legacy[ci], si))  # type: ignore[arg-type]
            return hit

        if ledger is not None and not state.estimator_checked:
            state.estimator_checked = True
            pairs = product(range(n_candidates), range(n_splits))
            shared = sum(lookup(ci, si) is not None for ci, si in pairs)
            if ledger.check_estimator(
                state.estimator_digest, shared, self.on_mismatch, state.mismatch_hint
            ):
                recorded = {}
        for ci, si in product(range(n_candidates), range(n_splits)):
            task = ci * n_splits + si
            hit = lookup(ci, si)
            if hit is not None:
                out[task] = dict(hit)
            else:
                todo.append((task, ci, si))
        resumed = total - len(todo)
        est.n_fits_resumed_ += resumed
        resumed_before = resumed

        if est.verbose > 0:
            print(
                f"Fitting {n_splits} folds for each of {n_candidates} candidates, "
                f"totalling {total} fits"
                + (f" ({resumed} taken from the checkpoint)" if resumed else "")
            )

        contexts: dict[int, Any] = {}
        if callback_ctx is not None and "callback_ctx" in _FIT_AND_SCORE_PARAMS:
            # Created ahead of the parallel loop, as scikit-learn does: creating them inside
            # would mutate objects while they are being pickled for the workers.
            for task, _, _ in todo:
                contexts[task] = callback_ctx.subcontext(
                    task_name="candidate-split-evaluation", task_id=task
                )

        def tasks() -> Iterator[Any]:
            for task, ci, si in todo:
                train, test = cv_splits[si]
                extra = {"callback_ctx": contexts[task]} if task in contexts else {}
                yield delayed(_evaluate)(
                    task,
                    clone(base_estimator),
                    X,
                    y,
                    train=train,
                    test=test,
                    parameters=candidate_params[ci],
                    split_progress=(si, n_splits),
                    candidate_progress=(ci, n_candidates),
                    **fit_and_score_kwargs,
                    **extra,
                )

        progress = _Progress(
            _show_progress(self.progress, est.verbose),
            total,
            resumed,
            f"{n_candidates} candidates x {n_splits} folds"
            + (f" ({resumed} from the checkpoint)" if resumed else ""),
        )
        # Results are committed by a background thread as they arrive, so the next fit
        # runs while the previous one is made durable; a kill loses only the fits in
        # flight (running, or finished within the last commit interval). The run row is
        # opened by that thread too, while the first fits run.
        writer = None
        if ledger is not None and todo:
            writer = LedgerWriter(
                ledger,
                on_start=lambda: state.reporter.start(
                    n_candidates, n_splits, resumed, _labels(keys, candidate_params)
                ),
                after_commit=lambda n: state.reporter.advance(resumed_before + n),
                min_interval=self.commit_interval,
            )
        else:
            state.reporter.start(n_candidates, n_splits, resumed, _labels(keys, candidate_params))
        try:
            if todo:
                parallel = Parallel(
                    n_jobs=est.n_jobs,
                    pre_dispatch=est.pre_dispatch,
                    return_as="generator_unordered",
                )
                for task, result in parallel(tasks()):
                    out[task] = result
                    if writer is not None:
                        writer.put(keys[task // n_splits], task % n_splits, _storable(result))
                    est.n_fits_run_ += 1
                    progress.advance()
        except BaseException:
            if writer is not None:
                # Keep what finished before the failure; the failure is what to report.
                with contextlib.suppress(BaseException):
                    writer.close()
            raise
        else:
            if writer is not None:
                writer.close()  # every result durable before the search reports them
        finally:
            progress.close()
        return [r for r in out if r is not None]


class _maybe_propagate:
    """scikit-learn's ``propagate_callback_context`` when callbacks exist, else nothing."""

    def __init__(self, ctx: Any, sub_estimator: Any) -> None:
        self.cm = ctx.propagate_callback_context(sub_estimator) if ctx is not None else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*exc)


class _RunReporter:
    """Mirrors a search's progress into its store's runs table (kind ``"search"``).

    A resumed search continues the run of the same search (same checkpointer name and
    digest; status back to ``running``), so the CLI and the console show one run per
    search, whatever the number of crashes. Progress updates come from the ledger's
    writer thread, throttled (``INTERVAL``): the ledger, not this row, is what must be
    durable after every fit. Each of start and finish is a single catalog write.
    """

    INTERVAL = 2.0

    def __init__(self, store: Any, ledger: Ledger | None, search: Any) -> None:
        self.run: Any = None
        self.store, self.ledger, self.search = store, ledger, search
        self.enabled = ledger is not None and store is not None and hasattr(store, "runs")
        self.total = self.done = 0
        self.last = 0.0

    def _guard(self, action: Callable[[], None]) -> None:
        # The runs table is a view for people; a failure to update it must not cost the
        # search (the ledger itself is written without this guard).
        from ..errors import SafepointError

        try:
            action()
        except SafepointError as exc:
            warnings.warn(f"could not update the runs table: {exc}", stacklevel=3)
            self.run, self.enabled = None, False

    def start(
        self, n_candidates: int, n_splits: int, resumed: int, labels: dict[str, str] | None = None
    ) -> None:
        self.total, self.done = n_candidates * n_splits, resumed
        if not self.enabled or self.ledger is None:
            return
        ledger = self.ledger
        name = str(getattr(ledger.cp, "name", "search"))
        state = {
            "checkpointer": name,
            "digest": ledger.digest[:16],
            "search": type(self.search).__name__,
            "estimator": _short_repr(self.search.estimator),
            "candidates": n_candidates,
            "folds": n_splits,
            "total": self.total,
            "done": resumed,
            "resumed": resumed,
            # candidate digest (16 hex) -> its parameters, for the console's labels
            "candidate_labels": labels or {},
        }
        self._guard(lambda: self._open(name, state))
        self.last = time.monotonic()

    def _open(self, name: str, state: dict[str, Any]) -> None:
        runs = self.store.runs
        for info in runs.list(kind="search", name=name, limit=20):
            if info.state.get("digest") == state["digest"]:
                self.run = runs.attach(info.id)
                message = f"resumed: {state['resumed']} of {state['total']} fits from the ledger"
                self.run.update(
                    status="running", message=message, progress=self._fraction(), state=state
                )
                return
        self.run = runs.start("search", name, state=state)

    def _fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def advance(self, done: int) -> None:
        """``done`` fits are durable (called from the ledger's writer thread)."""
        self.done = done
        run = self.run
        if run is not None and time.monotonic() - self.last >= self.INTERVAL:
            self.last = time.monotonic()
            self._guard(lambda: run.update(progress=self._fraction(), state={"done": done}))

    def finish(self, best_score: Any, best_params: Any) -> None:
        run = self.run
        if run is None:
            return
        state: dict[str, Any] = {"done": self.done}
        if best_score is not None:
            state["best_score"] = float(best_score)
        if best_params is not None:
            state["best_params"] = {k: _short_repr(v) for k, v in best_params.items()}
        self._guard(lambda: run.update(status="succeeded", progress=1.0, message="", state=state))

    def failed(self, exc: BaseException) -> None:
        run = self.run
        if run is None:
            return
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        message = f"{type(exc).__name__}: {exc}"[:2000]
        self._guard(
            lambda: run.update(
                status=status, message=message, progress=self._fraction(), state={"done": self.done}
            )
        )


#: candidates whose parameters the run's state records (the console labels these)
MAX_LABELS = 500


def _labels(keys: list[str], candidate_params: Any) -> dict[str, str]:
    """``{digest[:16]: "C=0.1, penalty='l2'"}`` for the first :data:`MAX_LABELS` candidates."""
    out = {}
    for key, params in list(zip(keys, candidate_params, strict=False))[:MAX_LABELS]:
        out[key[:16]] = ", ".join(f"{k}={_short_repr(v, 60)}" for k, v in params.items())[:200]
    return out


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        from .search_refit import refit_best

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
