"""Fixtures of the adversarial suite: valid files to start attacks from."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sps

import safepoint as sp


def rich_object() -> dict[str, Any]:
    """One value of (nearly) every node kind the format has."""
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    shared = [1, 2]
    return {
        "arr": np.arange(12.0).reshape(3, 4),
        "farr": np.asfortranarray(np.ones((2, 3))),
        "rec": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        "strs": np.array(["x", "yy", None], dtype=object),
        "nulstrs": np.array(["a\x00b", "c"], dtype=object),
        "sd": np.array(["a", "b"], dtype=np.dtypes.StringDType()),
        "objarr": np.array([np.arange(2), np.arange(3)], dtype=object),
        "big": 2**70,
        "c": 1 + 2j,
        "b": b"abc",
        "ba": bytearray(b"z"),
        "t": (1, 2),
        "s": {1, 2},
        "fs": frozenset({"a"}),
        "sl": slice(1, 2, None),
        "r": range(3),
        "pairs": {(1, 2): "x"},
        "cols": {f"k{i}": i for i in range(40)},
        "lst": [f"s{i}" for i in range(40)],
        "sc": np.float32(1.5),
        "dt": np.dtype("<f4"),
        "rs": np.random.RandomState(0),
        "sp": sps.csr_matrix(np.eye(3)),
        "coo": sps.coo_array(np.eye(2)),
        "df": pd.DataFrame(
            {
                "a": [1, 2],
                "b": ["x", None],
                "c": pd.Categorical(["u", "v"]),
                "d": pd.array([1, None], dtype="Int64"),
            }
        ),
        "ser": pd.Series([1.0, 2.0], index=pd.Index(["p", "q"], name="n")),
        "mi": pd.MultiIndex.from_tuples([(1, "a"), (2, "b")]),
        "ts": pd.Timestamp("2020-01-01"),
        "dti": pd.date_range("2020", periods=3, tz="UTC"),
        "model": DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y),
        "ohe": OneHotEncoder(dtype=float).fit(np.array([["a", None], ["b", "c"]], dtype=object)),
        "ufunc": np.add,
        "func": accuracy_score,
        "cls": float,
        "sh1": shared,
        "sh2": shared,
    }


@pytest.fixture(scope="session")
def rich_bytes() -> bytes:
    data = sp.dumps(rich_object())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set(sp.loads(data)) == set(rich_object())
    return data


@pytest.fixture(scope="session")
def small_bytes() -> bytes:
    """A small file with two buffers, fast to attack thousands of times."""
    return sp.dumps({"a": np.arange(10, dtype=np.int64), "b": [1.5, "x", None], "c": b"xyz"})
