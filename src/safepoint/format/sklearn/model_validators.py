"""Consistency checks for scikit-learn estimators whose predict runs compiled code.

:mod:`safepoint.format.sklearn.validators` checks the compiled structures
(trees, neighbour indexes, gradient-boosting predictors). The estimators here
hand plain arrays to C, C++ or Cython code that trusts their shapes:

* support vector machines (libsvm reads ``_n_support``, ``_dual_coef_``,
  ``_intercept_``, ``_probA`` / ``_probB`` and the support vectors by count);
* k-means and the histogram bin mapper (their recorded OpenMP thread counts);
* text and dict vectorizers (their vocabularies become column indices of a
  sparse matrix that scipy's C++ code indexes without checks).

Validators run on the decoded state, before ``__setstate__``; they are keyed
by a base class, and run for every subclass (see ``objects.py``). Birch keeps a
doubly linked list of its leaves, a reference cycle: it is written as an ordered
list and linked again here.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..reader import in_private_memory
from ..registry import register_reducer, register_validator

if TYPE_CHECKING:
    from ..decoder import Decoder


def _array(
    state: dict[str, Any], key: str, dec: Decoder, what: str, kinds: str, ndim: int
) -> np.ndarray[Any, Any]:
    """``state[key]``, checked to be an array of a kind and rank, in private memory
    (a memory-mapped page could change after the checks vouch for it): the caller
    puts the returned array back in the state."""
    arr = state.get(key)
    if type(arr) is not np.ndarray or arr.dtype.kind not in kinds or arr.ndim != ndim:
        raise dec.fail(f"{what}.{key} must be a {ndim}-D array (crafted file?)")
    return arr if in_private_memory(arr) else np.array(arr, copy=True)


# -- support vector machines (libsvm) ------------------------------------------------------
_LIBSVM_IMPL = ("c_svc", "nu_svc", "one_class", "epsilon_svr", "nu_svr")


def _libsvm(args: list[Any], state: Any, dec: Decoder, impl: str) -> Any:
    """The counts libsvm's C code walks its arrays by must match the arrays."""
    if not isinstance(state, dict) or state.get("support_") is None:
        return state  # not fitted
    what = "an SVM"
    # _impl is a class attribute; an instance attribute in the state would override it
    impl = state.get("_impl", impl)
    if type(impl) is not str or impl not in _LIBSVM_IMPL:
        raise dec.fail(f"{what}: unknown libsvm implementation {impl!r}")
    state = dict(state)
    support = state["support_"] = _array(state, "support_", dec, what, "iu", 1)
    n_sv = support.shape[0]
    n_support = state["_n_support"] = _array(state, "_n_support", dec, what, "iu", 1)
    n_class = n_support.shape[0]
    if n_class < 2:
        raise dec.fail(f"{what}: _n_support needs at least two entries (crafted file?)")
    pairs = n_class * (n_class - 1) // 2
    if impl in ("c_svc", "nu_svc") and (n_support.min() < 0 or int(n_support.sum()) != n_sv):
        raise dec.fail(f"{what}: _n_support does not add up to the support vectors (crafted file?)")
    intercept = state["_intercept_"] = _array(state, "_intercept_", dec, what, "f", 1)
    if intercept.shape[0] != pairs:
        raise dec.fail(f"{what}: _intercept_ has {intercept.shape[0]} entries, not {pairs}")
    for key in ("_probA", "_probB"):
        prob = state[key] = _array(state, key, dec, what, "f", 1)
        if prob.shape[0] not in (0, pairs):
            raise dec.fail(f"{what}: {key} has {prob.shape[0]} entries, not 0 or {pairs}")
    vectors: Any = state.get("support_vectors_")
    dual: Any = state.get("_dual_coef_")
    if state.get("_sparse"):
        import scipy.sparse as sps

        if not (sps.issparse(vectors) and sps.issparse(dual)):
            raise dec.fail(f"{what}: a sparse SVM needs sparse support vectors and coefficients")
        if vectors.shape[0] != n_sv or np.asarray(dual.data).shape != ((n_class - 1) * n_sv,):
            raise dec.fail(f"{what}: the support vectors do not match support_ (crafted file?)")
        return state
    if not isinstance(dual, np.ndarray) or dual.shape != (n_class - 1, n_sv):
        raise dec.fail(f"{what}: _dual_coef_ does not match the support vectors (crafted file?)")
    # a callable slot: a string or a function trusted by name (checked before this)
    kernel = state.get("kernel")
    if (type(kernel) is str and kernel == "precomputed") or callable(kernel):
        # libsvm reads column support_[i] of the test kernel matrix, whose width
        # predict checks against shape_fit_[0]
        fit_shape = state.get("shape_fit_")
        if not (isinstance(fit_shape, tuple) and fit_shape and isinstance(fit_shape[0], int)):
            raise dec.fail(f"{what}: shape_fit_ is missing (crafted file?)")
        if n_sv and (support.min() < 0 or support.max() >= fit_shape[0]):
            raise dec.fail(f"{what}: support_ points outside the kernel matrix (crafted file?)")
    elif not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[0] != n_sv:
        raise dec.fail(f"{what}: support_vectors_ does not match support_ (crafted file?)")
    return state


def _register_libsvm(cls_name: str, impl: str) -> None:
    def check(args: list[Any], state: Any, dec: Decoder) -> Any:
        return _libsvm(args, state, dec, impl)

    register_validator(f"sklearn.svm._classes.{cls_name}")(check)


for _cls, _impl in (
    ("SVC", "c_svc"),
    ("NuSVC", "nu_svc"),
    ("OneClassSVM", "one_class"),
    ("SVR", "epsilon_svr"),
    ("NuSVR", "nu_svr"),
):
    _register_libsvm(_cls, _impl)


# -- thread counts recorded at fit ------------------------------------------------------
@register_validator(
    "sklearn.cluster._kmeans._BaseKMeans",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
)
def _thread_count(args: list[Any], state: Any, dec: Decoder) -> Any:
    """k-means' ``_n_threads`` and the bin mapper's ``n_threads`` are the fitting
    machine's OpenMP thread count, handed to ``prange(num_threads=...)`` at
    predict / transform: a huge crafted value makes OpenMP abort the process. The
    value that belongs in a loaded model is this machine's. (Their array shapes are
    checked in ``sklearn_.py``.)"""
    if not isinstance(state, dict):
        return state
    key = "_n_threads" if "_n_threads" in state else "n_threads"
    n = state.get(key)
    if n is None or (type(n) is int and 1 <= n <= (os.cpu_count() or 1)):
        # as many threads as this machine has cores or fewer: what pickle would
        # keep, and harmless (asking scikit-learn for its own count can start an
        # `lscpu` process, which costs more than loading a small model)
        return state
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    return {**state, key: _openmp_effective_n_threads()}


@register_validator("sklearn.base.BaseEstimator")
def _n_jobs(args: list[Any], state: Any, dec: Decoder) -> Any:
    """``n_jobs`` is handed to joblib at predict: a crafted 10**9 makes it fail deep
    inside (or try to start that many workers). Beyond this machine's cores it means
    "all of them" (-1); anything but None or an int is refused."""
    if type(state) is not dict or "n_jobs" not in state:
        return state
    n = state["n_jobs"]
    if n is None:
        return state
    if type(n) is not int:
        raise dec.fail(f"n_jobs must be None or an integer, not {type(n).__name__}")
    cpus = os.cpu_count() or 1
    if n > cpus or n < -cpus - 1 or n == 0:
        return {**state, "n_jobs": -1}
    return state


# -- vectorizers: vocabularies are column indices -------------------------------------------
def _check_vocabulary(vocab: Any, n_columns: int, dec: Decoder, what: str) -> None:
    if type(vocab) is not dict:
        raise dec.fail(f"{what}.vocabulary_ must be a dict")
    values = vocab.values()
    if set(map(type, values)) <= {int}:
        # the common case, checked at C speed (hundreds of thousands of terms)
        cols = np.fromiter(values, dtype=np.int64, count=len(vocab))
    else:
        cols = np.fromiter(
            (
                v if isinstance(v, int | np.integer) and not isinstance(v, bool) else -1
                for v in values
            ),
            dtype=np.int64,
            count=len(vocab),
        )
    if cols.size and (cols.min() < 0 or cols.max() >= n_columns):
        bad = True
    elif cols.size:
        # distinct columns: in range now, so mark them (linear, unlike a sort)
        seen = np.zeros(n_columns, dtype=bool)
        seen[cols] = True
        bad = int(np.count_nonzero(seen)) != cols.size
    else:
        bad = False
    if bad:
        raise dec.fail(
            f"{what}.vocabulary_ maps terms to columns outside 0..{n_columns - 1} or to the "
            "same column twice (crafted file?)"
        )


@register_validator("sklearn.feature_extraction.text.CountVectorizer")
def _count_vectorizer(args: list[Any], state: Any, dec: Decoder) -> Any:
    if isinstance(state, dict) and state.get("vocabulary_") is not None:
        vocab = state["vocabulary_"]
        _check_vocabulary(vocab, len(vocab) if type(vocab) is dict else 0, dec, "a vectorizer")
    return state


@register_validator("sklearn.feature_extraction._dict_vectorizer.DictVectorizer")
def _dict_vectorizer(args: list[Any], state: Any, dec: Decoder) -> Any:
    if isinstance(state, dict) and state.get("vocabulary_") is not None:
        names = state.get("feature_names_")
        vocab = state["vocabulary_"]
        if type(names) is not list or type(vocab) is not dict or len(names) != len(vocab):
            raise dec.fail("DictVectorizer: feature_names_ does not match vocabulary_")
        _check_vocabulary(vocab, len(names), dec, "DictVectorizer")
    return state


# -- leftovers of fit that are not state ----------------------------------------------------
@register_reducer(
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
)
def _hgb_drop_patched_method(obj: Any, state: Any) -> Any:
    """Early stopping with a scorer patches ``_raw_predict`` during fit and leaves the
    original bound method in the instance dict: not state (it is the class's own
    method), and a state key that shadows a method is refused at load."""
    bound = state.get("_raw_predict") if isinstance(state, dict) else None
    if bound is not None and getattr(bound, "__self__", None) is obj:
        state = {k: v for k, v in state.items() if k != "_raw_predict"}
    return state


# -- Birch: a doubly linked list of leaves (a cycle) stored as an ordered list -----------
_BIRCH = "sklearn.cluster._birch.Birch"
_CFNODE = "sklearn.cluster._birch._CFNode"
_LEAF_CHAIN = "__safepoint_leaf_chain__"


@register_reducer(_CFNODE)
def _cfnode_reduce(obj: Any, state: Any) -> Any:
    if isinstance(state, dict) and ("prev_leaf_" in state or "next_leaf_" in state):
        state = {k: v for k, v in state.items() if k not in ("prev_leaf_", "next_leaf_")}
    return state


@register_reducer(_BIRCH)
def _birch_reduce(obj: Any, state: Any) -> Any:
    dummy = state.get("dummy_leaf_") if isinstance(state, dict) else None
    if dummy is None:
        return state
    chain = [dummy]
    seen = {id(dummy)}
    node = getattr(dummy, "next_leaf_", None)
    while node is not None and id(node) not in seen:
        chain.append(node)
        seen.add(id(node))
        node = getattr(node, "next_leaf_", None)
    return {**state, _LEAF_CHAIN: chain}


@register_validator(_BIRCH)
def _birch_link(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict) or _LEAF_CHAIN not in state:
        return state
    state = dict(state)
    chain = state.pop(_LEAF_CHAIN)
    if type(chain) is not list or not chain or chain[0] is not state.get("dummy_leaf_"):
        raise dec.fail("Birch's chain of leaves must start at its dummy leaf")
    if len({id(n) for n in chain}) != len(chain):
        raise dec.fail("Birch's chain of leaves must be distinct _CFNode objects")
    # each must be a _CFNode this load built (its own __dict__, no custom __setattr__):
    # linking them is assigning attributes, as unpickling the cycle would
    attrs = []
    for node in chain:
        dec.state_of(node, _CFNODE, what="a leaf of Birch's chain")
        attrs.append(node.__dict__)
    attrs[0]["prev_leaf_"] = None
    for (a, da), (b, db) in itertools.pairwise(zip(chain, attrs, strict=True)):
        da["next_leaf_"] = b
        db["prev_leaf_"] = a
    attrs[-1]["next_leaf_"] = None
    return state
