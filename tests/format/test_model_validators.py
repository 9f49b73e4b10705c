"""The consistency checks of format/sklearn/model_validators.py: a model whose arrays
disagree with the counts compiled code walks them by is refused at load with a
FormatError (never a crash at predict), and a genuine model is unchanged.

The "crafted" models are real fitted models with one attribute changed before
``sp.dumps``: the writer stores whatever it is given, as an attacker's would.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sps
from sklearn.datasets import make_blobs

import safepoint as sp


def _data() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs(n_samples=40, n_features=3, centers=3, random_state=0)


def _refused(model: Any, match: str = "crafted") -> None:
    data = sp.dumps(model)
    with pytest.raises(sp.FormatError, match=match):
        sp.loads(data)


@pytest.fixture
def svc() -> Any:
    from sklearn.svm import SVC

    X, y = _data()
    return SVC().fit(X, y)


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("_n_support", lambda m: m._n_support + 1),
        ("_n_support", lambda m: m._n_support[:1]),
        ("_dual_coef_", lambda m: m._dual_coef_[:, :-1].copy()),
        ("_dual_coef_", lambda m: m._dual_coef_[:1].copy()),
        ("_intercept_", lambda m: m._intercept_[:-1].copy()),
        ("_probA", lambda m: np.ones(1)),
        ("support_", lambda m: m.support_[:-1].copy()),
        ("support_vectors_", lambda m: m.support_vectors_[:-1].copy()),
    ],
)
def test_svm_counts_must_match_its_arrays(svc: Any, attr: str, value: Any) -> None:
    setattr(svc, attr, value(svc))
    with pytest.raises(sp.FormatError):
        sp.loads(sp.dumps(svc))


def test_svm_precomputed_support_index_out_of_range() -> None:
    from sklearn.svm import SVC

    X, y = _data()
    K = X @ X.T
    model = SVC(kernel="precomputed").fit(K, y)
    model.support_ = model.support_.copy()
    model.support_[-1] = K.shape[0] + 5
    _refused(model, "kernel matrix")


def test_sparse_svm_counts() -> None:
    from sklearn.svm import SVR

    X, y = _data()
    model = SVR().fit(sps.csr_matrix(X), y.astype(float))
    loaded = sp.loads(sp.dumps(model))
    np.testing.assert_array_equal(model.predict(sps.csr_matrix(X)), loaded.predict(X))
    model.support_ = model.support_[:-1].copy()
    _refused(model)


@pytest.mark.parametrize("kind", ["range", "duplicate", "negative", "type"])
def test_vectorizer_vocabulary_must_index_its_columns(kind: str) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    model = TfidfVectorizer().fit(["a cat sat", "the dog ran", "a dog sat"])
    vocab = dict(model.vocabulary_)
    word = next(iter(vocab))
    vocab[word] = {
        "range": len(vocab) + 100,
        "duplicate": vocab[next(w for w in vocab if w != word)],
        "negative": -1,
        "type": "0",
    }[kind]
    model.vocabulary_ = vocab
    _refused(model, "vocabulary_")


def test_dict_vectorizer_vocabulary() -> None:
    from sklearn.feature_extraction import DictVectorizer

    model = DictVectorizer(sparse=False).fit([{"a": 1, "b": 2}, {"c": 3}])
    model.vocabulary_ = {**model.vocabulary_, "c": 7}
    _refused(model, "vocabulary_")
    model = DictVectorizer().fit([{"a": 1, "b": 2}, {"c": 3}])
    model.feature_names_ = model.feature_names_[:-1]
    _refused(model, "feature_names_")


def test_recorded_thread_counts_become_this_machines() -> None:
    from sklearn.cluster import KMeans
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    X, _ = _data()
    model = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    model._n_threads = 10**6  # would make OpenMP try to start a million threads
    loaded = sp.loads(sp.dumps(model))
    assert loaded._n_threads == _openmp_effective_n_threads()
    np.testing.assert_array_equal(model.cluster_centers_, loaded.cluster_centers_)
    np.testing.assert_array_equal(KMeans.predict(loaded, X), model.labels_)


def test_birch_leaves_are_linked_again() -> None:
    from sklearn.cluster import Birch

    X, _ = _data()
    model = Birch(threshold=0.3, branching_factor=5, n_clusters=3).fit(X)
    loaded = sp.loads(sp.dumps(model))
    leaves, got = model._get_leaves(), loaded._get_leaves()
    assert len(leaves) == len(got) > 1
    assert got[0].prev_leaf_ is loaded.dummy_leaf_
    for a, b in itertools.pairwise(got):
        assert a.next_leaf_ is b and b.prev_leaf_ is a
    # training continues through the linked list
    more = X + 0.05
    np.testing.assert_array_equal(
        model.partial_fit(more).predict(X), loaded.partial_fit(more).predict(X)
    )


def test_birch_chain_of_something_else_is_refused() -> None:
    from sklearn.cluster import Birch
    from sklearn.preprocessing import StandardScaler

    X, _ = _data()
    model = Birch(n_clusters=3).fit(X)
    model.dummy_leaf_.next_leaf_ = StandardScaler()
    with pytest.raises(sp.FormatError, match="_CFNode"):
        sp.loads(sp.dumps(model))
