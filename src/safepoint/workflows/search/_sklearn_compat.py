"""Every private scikit-learn name the resumable searches use, in one place.

The searches follow ``BaseSearchCV.fit`` step by step and call scikit-learn's own
helpers and methods, some of them private. They are imported, called and
version-gated here, and nowhere else (``tests/workflows/test_search_compat.py``
checks it on the package's source), so that a scikit-learn release that moves
or changes one of them is a one-file change.

Supported: scikit-learn 1.4 (pyproject's lower bound) to the newest release;
``tools/check_sklearn_versions.py`` runs the search tests against each minor
version (the last table is in docs/search.md). What differs between them:

* ``BaseSearchCV._get_scorers`` takes ``convert_multimetric`` up to 1.4 (the fit
  loop passes ``False``, as 1.4's own ``fit`` does) and nothing from 1.5 on, when
  it returns a ``_MultimetricScorer`` for several metrics;
* 1.9 added callbacks: ``_fit_and_score`` takes ``caller=`` and ``callback_ctx=``,
  ``_run_search`` takes ``callback_ctx=``, the search has
  ``_init_callback_context`` and the context has ``propagate_callback_context``.

The gates test for the feature (a parameter in a signature, an attribute), not
the version number, so that a backport or a pre-release takes the right branch.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import signature
from typing import Any

import sklearn
from sklearn.base import _fit_context
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.model_selection._split import _yields_constant_splits
from sklearn.model_selection._validation import (
    _fit_and_score,
    _insert_error_scores,
    _warn_or_raise_about_fit_failures,
)
from sklearn.utils.validation import _check_method_params, _num_samples

__all__ = [
    "FIT_AND_SCORE_TAKES_CALLBACK_CTX",
    "FIT_AND_SCORE_TAKES_CALLER",
    "NULL_CALLBACK_CONTEXT",
    "OLDEST_SUPPORTED",
    "SKLEARN_VERSION",
    "check_input_parameters",
    "check_method_params",
    "check_refit_for_multimetric",
    "checked_cv",
    "constant_splits",
    "fit_and_score",
    "fit_context",
    "format_results",
    "get_scorers",
    "init_callback_context",
    "insert_error_scores",
    "maybe_propagate",
    "parent_run_search",
    "routed_fit_params",
    "run_search",
    "scorer_attribute",
    "select_best_index",
    "set_checked_cv",
    "set_n_samples_orig",
    "uses_callbacks",
    "warn_or_raise_about_fit_failures",
]


def _version(text: str) -> tuple[int, int]:
    major, minor = [*text.split("."), "0"][:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


#: (major, minor) of the installed scikit-learn
SKLEARN_VERSION = _version(sklearn.__version__)
#: pyproject's lower bound; tools/check_sklearn_versions.py tests from here on
OLDEST_SUPPORTED = (1, 4)

# -- module-level helpers, under names of our own -----------------------------------------
fit_context = _fit_context
fit_and_score = _fit_and_score
insert_error_scores = _insert_error_scores
warn_or_raise_about_fit_failures = _warn_or_raise_about_fit_failures
check_method_params = _check_method_params
constant_splits = _yields_constant_splits

_FIT_AND_SCORE_PARAMS = frozenset(signature(_fit_and_score).parameters)
#: scikit-learn >= 1.9: each fit is told its caller (the search) for the callbacks
FIT_AND_SCORE_TAKES_CALLER = "caller" in _FIT_AND_SCORE_PARAMS
#: scikit-learn >= 1.9: each fit takes a callback sub-context
FIT_AND_SCORE_TAKES_CALLBACK_CTX = "callback_ctx" in _FIT_AND_SCORE_PARAMS


# -- BaseSearchCV's private methods --------------------------------------------------------
def get_scorers(search: Any) -> tuple[Any, Any]:
    """``(scorers, refit_metric)`` as the installed scikit-learn's ``fit`` gets them."""
    method = search._get_scorers
    if "convert_multimetric" in signature(method).parameters:  # scikit-learn 1.4
        return method(convert_multimetric=False)
    return method()


def scorer_attribute(scorers: Any) -> Any:
    """What ``fit`` stores as ``scorer_``: a dict of scorers for several metrics."""
    return scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers


def routed_fit_params(search: Any, params: dict[str, Any]) -> Any:
    return search._get_routed_params_for_fit(params)


def set_checked_cv(search: Any, y: Any) -> Any:
    """The search's cv, checked, where scikit-learn's ``fit`` keeps it (the halving
    searches' ``_check_input_parameters`` and ``_run_search`` read it there)."""
    from sklearn.base import is_classifier
    from sklearn.model_selection import check_cv

    search._checked_cv_orig = check_cv(search.cv, y, classifier=is_classifier(search.estimator))
    return search._checked_cv_orig


def checked_cv(search: Any) -> Any:
    """The cv :func:`set_checked_cv` set."""
    return search._checked_cv_orig


def set_n_samples_orig(search: Any, X: Any) -> None:
    """What the halving searches' ``fit`` records before the base ``fit``."""
    search._n_samples_orig = _num_samples(X)


def check_input_parameters(search: Any, X: Any, y: Any, split_params: Any) -> None:
    """The halving searches' input checks (the other searches have none)."""
    if hasattr(search, "_check_input_parameters"):
        search._check_input_parameters(X=X, y=y, split_params=split_params)


def format_results(
    search: Any, candidate_params: Any, n_splits: int, out: Any, more_results: Any
) -> dict[str, Any]:
    return search._format_results(candidate_params, n_splits, out, more_results)


def check_refit_for_multimetric(search: Any, scores: Any) -> None:
    search._check_refit_for_multimetric(scores)


def select_best_index(search: Any, refit: Any, refit_metric: Any, results: Any) -> int:
    return int(search._select_best_index(refit, refit_metric, results))


def run_search(search: Any, evaluate_candidates: Callable[..., Any], root_ctx: Any) -> None:
    """Call the search's ``_run_search`` hook, with a callback context where it takes one."""
    if "callback_ctx" in signature(search._run_search).parameters:
        # scikit-learn >= 1.9 (some searches need a context even without callbacks)
        ctx = root_ctx if root_ctx is not None else NULL_CALLBACK_CONTEXT
        search._run_search(evaluate_candidates, callback_ctx=ctx)
    else:
        search._run_search(evaluate_candidates)


def parent_run_search(
    parent: Callable[..., Any], evaluate_candidates: Callable[..., Any], callback_ctx: Any
) -> None:
    """Call scikit-learn's own ``_run_search`` (``parent``) from an override of it."""
    if "callback_ctx" in signature(parent).parameters:
        parent(evaluate_candidates, callback_ctx=callback_ctx)
    else:
        parent(evaluate_candidates)


# -- scikit-learn >= 1.9 callbacks ---------------------------------------------------------
def uses_callbacks(search: Any) -> bool:
    """scikit-learn >= 1.9 callbacks are set on this search.

    Only then does the search run scikit-learn's callback machinery, which sends the
    search itself (``caller=``) to every worker: without callbacks the search's
    parameters, including an open store's checkpointer, never need to be pickled.
    """
    return hasattr(search, "_init_callback_context") and bool(
        getattr(search, "_skl_callbacks", None)
    )


def init_callback_context(search: Any, max_subtasks: int) -> Any:
    return search._init_callback_context(max_subtasks=max_subtasks)


class maybe_propagate:
    """scikit-learn's ``propagate_callback_context`` when callbacks exist, else nothing."""

    def __init__(self, ctx: Any, sub_estimator: Any) -> None:
        self.cm = ctx.propagate_callback_context(sub_estimator) if ctx is not None else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.cm is not None:
            self.cm.__exit__(*exc)


class _NullCallbackContext:
    """Stands in for scikit-learn's callback context (>= 1.9) where no callback is set.

    Some ``_run_search`` methods (the halving searches') require a context and open
    sub-contexts on it; with no callback set, the searches keep their own object out
    of the workers (see :func:`uses_callbacks`), so they pass this one, which does nothing.
    """

    def subcontext(self, *args: Any, **kwargs: Any) -> _NullCallbackContext:
        return self

    def call_on_fit_task_begin(self, *args: Any, **kwargs: Any) -> _NullCallbackContext:
        return self

    def call_on_fit_task_end(self, *args: Any, **kwargs: Any) -> None:
        return None


NULL_CALLBACK_CONTEXT = _NullCallbackContext()
