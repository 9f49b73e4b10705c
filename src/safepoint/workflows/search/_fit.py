"""The fit loop of the resumable searches: scikit-learn's ``BaseSearchCV.fit``, with
every (candidate, fold) taken from the ledger or fitted and committed to it.

Every private scikit-learn name it needs comes from :mod:`._sklearn_compat`.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import indexable

from ...errors import SafepointWarning, SearchError, UntrustedTypesError
from .._fingerprint import data_digest, fingerprint, splits_digest
from . import _sklearn_compat as compat
from ._interrupt import report_interrupt
from ._ledger import LEGACY, Ledger, LedgerStore, LedgerWriter

_ON_MISMATCH = ("error", "restart")
#: the checkpointer a path or URL given as ``checkpoint=`` opens in its store
DEFAULT_CHECKPOINTER = "search"


# -- the checkpoint argument ---------------------------------------------------------------
def _resolve_checkpoint(checkpoint: Any) -> tuple[LedgerStore, str, Any, bool]:
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
        from ...stores.opening import open_store

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
    return task, compat.fit_and_score(*args, **kwargs)


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
        if callback_ctx is None or callback_ctx is compat.NULL_CALLBACK_CONTEXT:
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
        cv = compat.checked_cv(est)
        if not compat.constant_splits(cv):
            hint = (
                f" Note: the cv ({type(cv).__name__}) shuffles without a "
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
        return compat.uses_callbacks(self)

    def _fit_kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if compat.FIT_AND_SCORE_TAKES_CALLER and self._uses_callbacks():
            extra["caller"] = self
        return extra

    @compat.fit_context(prefer_skip_nested_validation=False)
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
        scorers, refit_metric = compat.get_scorers(est)

        X, y = indexable(X, y)
        params = compat.check_method_params(X, params=params)
        routed_params = compat.routed_fit_params(est, params)

        metadata_callbacks = None
        if (sample_weight := params.get("sample_weight")) is not None:
            metadata_callbacks = {"sample_weight": sample_weight}
        root_ctx = None
        if self._uses_callbacks():
            root_ctx = compat.init_callback_context(
                est, max_subtasks=1 + (est.refit is not False)
            ).call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata_callbacks)

        checked_cv = compat.set_checked_cv(est, y)
        split_params = routed_params.splitter.split
        compat.check_input_parameters(est, X, y, split_params)
        est.n_splits_ = checked_cv.get_n_splits(X, y, **split_params)
        # Split once: the digest and the fits must see the very same folds, even when the
        # splitter is randomised.
        state.splits = list(checked_cv.split(X, y, **split_params))
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
            if callback_ctx is compat.NULL_CALLBACK_CONTEXT:
                callback_ctx = None
            candidate_params = list(candidate_params)
            n_splits = est.n_splits_
            if cv is None or cv is checked_cv:
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
            compat.warn_or_raise_about_fit_failures(out, est.error_score)
            if callable(est.scoring):
                compat.insert_error_scores(out, est.error_score)
            all_candidate_params.extend(candidate_params)
            all_out.extend(out)
            if more_results is not None:
                for key, value in more_results.items():
                    all_more_results[key].extend(value)
            results = compat.format_results(
                est, all_candidate_params, n_splits, all_out, all_more_results
            )
            return results

        try:
            compat.run_search(est, evaluate_candidates, root_ctx)
        except BaseException as exc:
            state.reporter.failed(exc)
            raise

        first_test_score = all_out[0]["test_scores"]
        est.multimetric_ = isinstance(first_test_score, dict)
        if callable(est.scoring) and est.multimetric_:
            compat.check_refit_for_multimetric(est, first_test_score)
            refit_metric = est.refit

        if est.refit or not est.multimetric_:
            est.best_index_ = compat.select_best_index(est, est.refit, refit_metric, results)
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

        est.scorer_ = compat.scorer_attribute(scorers)
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
        with compat.maybe_propagate(refit_ctx, est.best_estimator_):
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
        if callback_ctx is not None and compat.FIT_AND_SCORE_TAKES_CALLBACK_CTX:
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
        from ...errors import SafepointError

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
