"""The fitted best model of each model type of a search over several types.

A search built with :func:`~safepoint.search_spaces` knows which candidates are a
KNN, a random forest, ... :meth:`SearchSpace.refit_best` fits the best candidate of
each type on the whole data (as the search's own refit does for the best overall)
and puts each in the store, with its cross-validation metrics and its lineage (the
data digest, the search's run), as ``<name>/<label>``.

Each model put is a checkpoint: a rerun (the same script after a crash) finds the
model of each label already in the store, for the same candidate and data, and
loads it instead of fitting it again; the best candidate overall is not refitted
either when the search holds it as ``best_estimator_``. So a kill during the refits
loses only the one in progress.

>>> space = sp.search_spaces({"knn": ..., "rf": ...})                  # doctest: +SKIP
>>> search = sp.ResumableGridSearchCV(*space, checkpoint="runs/s").fit(X, y)  # doctest: +SKIP
>>> best = space.refit_best(search, X, y)                              # doctest: +SKIP
>>> best["rf"].estimator.predict(X[:3]), best["rf"].ref                 # doctest: +SKIP
(array([0, 1, 1]), 'search/best/rf@1')
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sklearn.base import clone

from ...errors import NotFoundError, SafepointError, SearchError
from .._fingerprint import data_digest, fingerprint
from ._ledger import META_KEY

if TYPE_CHECKING:
    from ._api import SearchSpace

__all__ = ["BestModel", "refit_best"]

#: tag of a refit model version: the digest of what it was fitted from
REFIT_TAG = "safepoint.refit"


@dataclass
class BestModel:
    """The best candidate of one model type, fitted on the whole data."""

    label: str
    params: dict[str, Any]
    score: float
    estimator: Any = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    ref: str | None = None  # where it is in the store (``name/label@version``)
    refitted: bool = True  # False: taken from the store or from the search's best_estimator_


def _metrics(search: Any, index: int) -> dict[str, float]:
    out = {}
    for key, values in search.cv_results_.items():
        if key.startswith(("mean_test_", "std_test_", "mean_train_", "std_train_")):
            value = float(values[index])
            if math.isfinite(value):
                out[key] = value
    return out


def _search_store(search: Any) -> tuple[Any, str | None, bool]:
    """(store, checkpointer name, store owned) of a search's checkpoint, or Nones."""
    checkpoint = getattr(search, "checkpoint", None)
    if checkpoint is None:
        return None, None, False
    if isinstance(checkpoint, str | os.PathLike):
        from ._fit import DEFAULT_CHECKPOINTER, _resolve_checkpoint

        _, _, store, owned = _resolve_checkpoint(checkpoint)
        return store, DEFAULT_CHECKPOINTER, owned
    return getattr(checkpoint, "store", None), getattr(checkpoint, "name", None), False


def _run_id(store: Any, checkpointer: str | None) -> str | None:
    """The search's run in the store's runs table (the same ledger digest), if any."""
    if store is None or checkpointer is None:
        return None
    try:
        meta = store.checkpointer(checkpointer).get(META_KEY)
        digest = meta.get("digest", "")[:16] if isinstance(meta, dict) else None
        for info in store.runs.list(kind="search", name=checkpointer, limit=20):
            if digest and info.state.get("digest") == digest:
                return str(info.id)
    except SafepointError:
        return None
    return None


def _saved(store: Any, model: str, key: str) -> Any:
    try:
        versions = store.versions(model)
    except NotFoundError:
        return None
    for mv in reversed(versions):
        if (mv.tags or {}).get(REFIT_TAG) == key:
            return mv
    return None


def refit_best(
    space: SearchSpace,
    search: Any,
    X: Any,
    y: Any = None,
    *,
    store: Any = None,
    name: str | None = None,
    metric: str | None = None,
    trusted: Any = (),
    **fit_params: Any,
) -> dict[str, BestModel]:
    """Fit the best candidate of each label of ``space`` on ``X, y``; see the module doc.

    Args:
        space: the :class:`SearchSpace` the search was built from.
        search: the fitted search (``cv_results_`` is read).
        X, y, fit_params: the data, as given to ``search.fit``.
        store: where to put the models: a :class:`~safepoint.Store`, its URL or
            folder; default: the store of the search's checkpoint, if any; ``False``:
            nowhere (then nothing is checkpointed).
        name: the models are ``<name>/<label>``; default ``<checkpointer>/best``
            (``search/best/knn`` for ``checkpoint="path"``).
        metric: the metric that ranks candidates (a multi-metric search's name);
            default: the search's ``refit`` metric.
        trusted: types to trust when a model is loaded back from the store.

    Returns:
        ``{label: BestModel}`` in the order of the space's labels.
    """
    if not hasattr(search, "cv_results_"):
        raise SearchError("refit_best() needs a fitted search: call search.fit(X, y) first")
    owned = False
    checkpointer = None
    if store is None:
        store, checkpointer, owned = _search_store(search)
    elif store is False:
        store = None
    elif not hasattr(store, "put"):
        from ...stores.opening import open_store

        store, owned = open_store(os.fspath(store)), True
    else:
        _, checkpointer, _ = _search_store(search)
    if store is not None and name is None:
        name = f"{checkpointer or 'search'}/best"
    try:
        return _refit_all(space, search, X, y, store, name, metric, trusted, fit_params)
    finally:
        if owned:
            store.close()


def _refit_all(
    space: SearchSpace,
    search: Any,
    X: Any,
    y: Any,
    store: Any,
    name: str | None,
    metric: str | None,
    trusted: Any,
    fit_params: dict[str, Any],
) -> dict[str, BestModel]:
    from ._fit import candidate_key

    best = space.best_by_label(search, metric)
    data = data_digest(X, y, fit_params)
    run_id = _run_id(store, _search_store(search)[1]) if store is not None else None
    reuse = None
    if hasattr(search, "best_estimator_") and getattr(search, "_sp_data_digest", None) == data:
        reuse = candidate_key(search.estimator, search.best_params_)
    out: dict[str, BestModel] = {}
    for label in dict.fromkeys(space.labels):
        if label not in best:
            continue
        info = best[label]
        params = dict(info["params"])
        candidate = candidate_key(search.estimator, params)
        key = fingerprint((candidate, data))
        metrics = _metrics(search, info["index"])
        model = f"{name}/{label}" if store is not None else None
        mv = _saved(store, model, key) if model is not None else None
        if mv is not None:
            estimator = store.get(model, mv.version, trusted=trusted)
            out[label] = BestModel(label, params, info["score"], estimator, metrics, mv.ref, False)
            continue
        if candidate == reuse:
            estimator, refitted = search.best_estimator_, False
        else:
            estimator = clone(search.estimator).set_params(**clone(params, safe=False))
            if y is None:
                estimator.fit(X, **fit_params)
            else:
                estimator.fit(X, y, **fit_params)
            refitted = True
        ref = None
        if model is not None:
            put = store.put(
                model,
                estimator,
                metrics=metrics,
                tags={REFIT_TAG: key, "label": label, "search": type(search).__name__},
                metadata={"label": label, "params": {k: repr(v)[:200] for k, v in params.items()}},
                data_digest=data,
                run_id=run_id,
            )
            ref = put.ref
        out[label] = BestModel(label, params, info["score"], estimator, metrics, ref, refitted)
    return out
