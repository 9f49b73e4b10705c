"""Every private scikit-learn name the resumable searches use, in one place.

The searches follow ``BaseSearchCV.fit`` step by step and call scikit-learn's own
helpers, some of them private. Importing them here, and nowhere else, makes a
scikit-learn upgrade that moves one of them a one-file change.
"""

from __future__ import annotations

from typing import Any

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
    "NULL_CALLBACK_CONTEXT",
    "_MultimetricScorer",
    "_check_method_params",
    "_fit_and_score",
    "_fit_context",
    "_insert_error_scores",
    "_num_samples",
    "_warn_or_raise_about_fit_failures",
    "_yields_constant_splits",
]


class _NullCallbackContext:
    """Stands in for scikit-learn's callback context (>= 1.9) where no callback is set.

    Some ``_run_search`` methods (the halving searches') require a context and open
    sub-contexts on it; with no callback set, the searches keep their own object out
    of the workers (see ``_uses_callbacks``), so they pass this one, which does nothing.
    """

    def subcontext(self, *args: Any, **kwargs: Any) -> _NullCallbackContext:
        return self

    def call_on_fit_task_begin(self, *args: Any, **kwargs: Any) -> _NullCallbackContext:
        return self

    def call_on_fit_task_end(self, *args: Any, **kwargs: Any) -> None:
        return None


NULL_CALLBACK_CONTEXT = _NullCallbackContext()
