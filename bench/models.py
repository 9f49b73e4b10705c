"""The benchmark models M1-M6, built deterministically and cached.

Every model is built from generated data (fixed seeds, no downloads) and cached
under ``bench/.cache`` as a protocol-5 pickle next to a small JSON record (its
deep size and a fingerprint of its outputs, against which every load is checked).
``scale`` shrinks a model proportionally: 1.0 is the full size (``MODELS`` below).

>>> from bench.models import build
>>> obj, check_input = build("M5", 0.0001)  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MODELS: dict[str, str] = {
    "M1": "KNeighborsClassifier, 1,000,000 x 100 float64",
    "M2": "RandomForestClassifier, 300 trees",
    "M3": "TfidfVectorizer(1-2 grams) + LogisticRegression",
    "M4": "HistGradientBoostingClassifier, 3 classes, 200 iterations",
    "M5": "dict of float32 arrays, 1 GiB",
    "M6": "pandas DataFrame, 10,000,000 rows, mixed dtypes",
}

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"


def _n(full: int, scale: float, least: int) -> int:
    return max(least, round(full * scale))


# -- builders: each returns (object, input used to fingerprint it) ---------------------
def build_m1(scale: float) -> tuple[Any, Any]:
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    n = _n(1_000_000, scale, 200)
    X = rng.standard_normal((n, 100))
    y = rng.integers(0, 10, n)
    # algorithm="auto" is what users get; with 100 features it picks brute force,
    # so the model is essentially the 800 MB training matrix
    model = KNeighborsClassifier(n_neighbors=5).fit(X, y)
    return model, X[:20].copy()


def build_m2(scale: float) -> tuple[Any, Any]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    # 24,000 noisy samples grow ~4,000-node trees: 300 of them pickle to ~100 MB
    X, y = make_classification(
        n_samples=24_000 if scale >= 0.05 else 2_000,
        n_features=20,
        n_informative=10,
        flip_y=0.1,
        random_state=2,
    )
    model = RandomForestClassifier(n_estimators=_n(300, scale, 2), random_state=2, n_jobs=2).fit(
        X, y
    )
    model.set_params(n_jobs=None)
    return model, X[:50].copy()


def make_corpus(n_docs: int, seed: int = 3) -> tuple[list[str], np.ndarray[Any, Any]]:
    """A generated corpus: Zipf-distributed synthetic words, ~80 tokens a document.

    The word list has 60,000 words (fewer for tiny corpora), so that the
    vocabulary of 1-2 grams grows with the number of documents.
    """
    rng = np.random.default_rng(seed)
    # tiny corpora (smoke tests) need no 60,000-word list
    n_words = min(60_000, max(2_000, n_docs))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, n_words)
    words = np.array(["".join(rng.choice(letters, k)) for k in lengths], dtype=object)
    p = 1.0 / (np.arange(1, n_words + 1) + 5.0)
    p /= p.sum()
    idx = rng.choice(n_words, size=(n_docs, 80), p=p)
    docs = [" ".join(row) for row in words[idx]]
    # the label depends on a few frequent words, so the classifier has signal
    marker = np.isin(idx, np.arange(20, 40)).sum(axis=1)
    y = (marker > np.median(marker)).astype(np.int64)
    return docs, y


def build_m3(scale: float) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    docs, y = make_corpus(_n(60_000, scale, 50))
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2),
        LogisticRegression(max_iter=200),
    ).fit(docs, y)
    return model, docs[:20]


def build_m4(scale: float) -> tuple[Any, Any]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_classification(
        n_samples=_n(200_000, scale, 2_000),
        n_features=30,
        n_informative=15,
        n_classes=3,
        random_state=4,
    )
    model = HistGradientBoostingClassifier(
        max_iter=_n(200, scale, 3), early_stopping=False, random_state=4
    ).fit(X, y)
    return model, X[:50].copy()


def build_m5(scale: float) -> tuple[Any, Any]:
    # a "state dict": 32 weight matrices and 32 biases, float32, 1 GiB in all
    rng = np.random.default_rng(5)
    rows = _n(4096, scale, 4)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for i in range(32):
        out[f"layer{i}.weight"] = rng.standard_normal((rows, 2048), dtype=np.float32)
        out[f"layer{i}.bias"] = rng.standard_normal(rows, dtype=np.float32)
    return out, None


def build_m6(scale: float) -> tuple[Any, Any]:
    import pandas as pd

    rng = np.random.default_rng(6)
    n = _n(10_000_000, scale, 1_000)
    cities = np.array([f"city-{i:04d}" for i in range(1_000)], dtype=object)
    user = rng.integers(0, 2_000_000, n)
    count = pd.array(rng.integers(0, 1_000, n), dtype="Int64")
    count[rng.random(n) < 0.01] = pd.NA
    df = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "x": rng.standard_normal(n),
            "y": rng.standard_normal(n).astype(np.float32),
            "small": rng.integers(0, 100, n).astype(np.int32),
            "flag": rng.random(n) < 0.3,
            "ts": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 86_400, n), unit="s"),
            "city": pd.Categorical.from_codes(rng.integers(0, 1_000, n), categories=cities),
            "user": pd.array([f"user_{u}" for u in user.tolist()], dtype="str"),
            "count": count,
        }
    )
    return df, None


BUILDERS: dict[str, Callable[[float], tuple[Any, Any]]] = {
    "M1": build_m1,
    "M2": build_m2,
    "M3": build_m3,
    "M4": build_m4,
    "M5": build_m5,
    "M6": build_m6,
}


def build(name: str, scale: float) -> tuple[Any, Any]:
    return BUILDERS[name](scale)


# -- fingerprints and sizes ----------------------------------------------------------
def fingerprint(obj: Any, check_input: Any) -> str:
    """A digest of what the object computes (estimators) or holds (data)."""
    h = hashlib.sha256()
    if isinstance(obj, dict):
        for k in sorted(obj):
            a = np.ascontiguousarray(obj[k])
            h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()
    if type(obj).__module__.startswith("pandas"):
        import pandas as pd

        h.update(str(list(zip(obj.columns, map(str, obj.dtypes), strict=True))).encode())
        h.update(pd.util.hash_pandas_object(obj, index=True).to_numpy().tobytes())
        return h.hexdigest()
    for method in ("predict", "predict_proba"):
        out = np.ascontiguousarray(getattr(obj, method)(check_input))
        h.update(f"{method}:{out.dtype.str}:{out.shape}".encode())
        h.update(out.tobytes())
    return h.hexdigest()


def deep_size(obj: Any) -> int:
    """Bytes held by ``obj``: array data, Python objects, pandas columns.

    Array memory is counted once per underlying buffer, however many views
    point to it. This is the "loaded object" the peak-memory ratio divides by.
    """
    seen: set[int] = set()
    # temporaries (the states __getstate__ builds) are kept alive, or their ids
    # would be reused by the next ones and those skipped as already seen
    keep: list[Any] = []
    buffers: set[tuple[int, int]] = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        keep.append(o)
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                total += o.nbytes
                stack.extend(o.ravel().tolist())
                continue
            key = (o.__array_interface__["data"][0], o.nbytes)
            if key not in buffers:
                buffers.add(key)
                total += o.nbytes
            continue
        mod = type(o).__module__
        if mod.startswith("pandas") and hasattr(o, "memory_usage"):
            usage = o.memory_usage(deep=True)
            total += int(usage.sum() if hasattr(usage, "sum") else usage)
            continue
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif isinstance(o, str | bytes | int | float | bool | type) or o is None:
            continue
        elif hasattr(o, "__dict__"):
            stack.append(vars(o))
        elif hasattr(o, "__getstate__"):
            try:
                state = o.__getstate__()
            except TypeError:
                continue
            stack.append(state)
    return total


# -- the cache -------------------------------------------------------------------------
def cache_paths(name: str, scale: float, cache_dir: Path = DEFAULT_CACHE) -> tuple[Path, Path]:
    stem = f"{name}-s{scale:g}"
    return cache_dir / f"{stem}.pkl", cache_dir / f"{stem}.json"


def ensure(name: str, scale: float, cache_dir: Path = DEFAULT_CACHE) -> dict[str, Any]:
    """Build and cache the model once; returns its record (paths, sizes, fingerprint)."""
    obj_path, meta_path = cache_paths(name, scale, cache_dir)
    if obj_path.exists() and meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        return meta
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    obj, check_input = build(name, scale)
    build_s = time.perf_counter() - t0
    check_path = obj_path.with_suffix(".check.pkl")
    with open(check_path, "wb") as f:
        pickle.dump(check_input, f, protocol=5)
    tmp = obj_path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=5)
    os.replace(tmp, obj_path)
    meta = {
        "model": name,
        "description": MODELS[name],
        "scale": scale,
        "path": str(obj_path),
        "check_path": str(check_path),
        "deep_size": deep_size(obj),
        "fingerprint": fingerprint(obj, check_input),
        "build_s": round(build_s, 2),
        "summary": summarize(obj),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    del obj
    gc.collect()
    return meta


def summarize(obj: Any) -> str:
    """A one-line description of what was built (shapes, counts)."""
    if isinstance(obj, dict):
        return f"{len(obj)} arrays, {sum(a.nbytes for a in obj.values()) / 2**20:.0f} MiB"
    if type(obj).__module__.startswith("pandas"):
        return f"{obj.shape[0]:,} rows x {obj.shape[1]} columns ({', '.join(map(str, obj.dtypes))})"
    name = type(obj).__name__
    if hasattr(obj, "estimators_"):
        return f"{name}, {len(obj.estimators_)} trees"
    if hasattr(obj, "_predictors"):
        return f"{name}, {sum(len(r) for r in obj._predictors)} tree predictors"
    if hasattr(obj, "_fit_X"):
        return f"{name}, fit on {obj._fit_X.shape}, algorithm={obj._fit_method}"
    if hasattr(obj, "steps"):
        vec = obj.steps[0][1]
        return f"{name}, vocabulary of {len(vec.vocabulary_):,} terms"
    return name


def main() -> None:
    """``python -m bench.models NAME SCALE [CACHE_DIR]``: build and cache one model."""
    name, scale = sys.argv[1], float(sys.argv[2])
    cache_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_CACHE
    print(json.dumps(ensure(name, scale, cache_dir)))


if __name__ == "__main__":
    main()
