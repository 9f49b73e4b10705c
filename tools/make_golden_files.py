#!/usr/bin/env python
"""Write the golden files of the *current* safepoint format version.

safepoint promises that every later release reads every file an earlier release
wrote. The proof is a frozen set of representative files per format version,
committed under ``tests/data/format-MAJOR.MINOR/``, which
``tests/format/test_golden_files.py`` loads with the current code and compares with
the ``expected.json`` written next to them: a canonical description of every value
(see ``tests/format/golden_util.py``) and the outputs of every model on fixed inputs.

Golden files are written ONCE, when a format version is released, and never
regenerated: regenerating them would test the new code against itself. The script
therefore refuses to touch an existing folder (``--force`` exists for the release
that introduces the version, before it is published).

Usage::

    python tools/make_golden_files.py            # writes tests/data/format-<current>/
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "format"))

from golden_util import describe, jsonable_output  # noqa: E402

import safepoint as sp  # noqa: E402
from safepoint.format import spec  # noqa: E402
from safepoint.format.api import golden_outputs  # noqa: E402

#: not a secret: the key the golden-file test verifies the signed file with
TEST_HMAC_KEY = b"safepoint-golden-files-test-key!"


# -- data values ---------------------------------------------------------------------
def builtins_value() -> dict[str, Any]:
    shared = ["shared", 1, (2, 3)]
    return {
        "none": None,
        "bools": [True, False],
        "ints": [0, -1, 255, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 2**70, -(2**80)],
        "floats": [0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308],
        "complex": [3 - 4j, complex(math.inf, -0.0)],
        "strings": ["", "plain", "héllo wörld", "nul\x00inside", "日本語", "emoji \U0001f642"],
        "bytes": b"\x00\xffabc",
        "bytearray": bytearray(b"\x01\x02"),
        "tuple": (1, (2, (3, ())), "x"),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a", "b"}),
        "nested": {"a": [1, {"b": (None, [[]])}], "c": {}},
        "non_str_keys": {1: "int", (1, 2): "tuple", 2.5: "float", None: "none", False: "bool"},
        "slice": slice(1, 50, 2),
        "range": range(0, 10, 3),
        "empties": [[], {}, (), set(), "", b""],
        # big homogeneous containers take the columnar path
        "vocabulary": {f"term{i}": i for i in range(400)},
        "float_dict": {f"k{i}": i / 7 for i in range(120)},
        "word_list": [f"w{i:03d}" for i in range(150)],
        "shared_a": shared,
        "shared_b": shared,
    }


def numpy_value() -> dict[str, Any]:
    rs = np.random.RandomState(0)
    structured = np.zeros(
        4,
        dtype=[
            ("id", "<i4"),
            ("pos", "<f8", (2,)),
            ("name", "S6"),
            ("inner", [("a", "u1"), ("b", "<f4")]),
            ("when", "<M8[s]"),
        ],
    )
    structured["id"] = [1, 2, 3, 4]
    structured["pos"] = rs.normal(size=(4, 2))
    structured["name"] = [b"ab", b"cdef", b"", b"xyzxyz"]
    structured["inner"]["a"] = [7, 8, 9, 255]
    structured["inner"]["b"] = [0.5, -1.5, np.nan, np.inf]
    structured["when"] = np.array(
        ["2024-01-01T00:00:01", "NaT", "1970-01-01", "2038-01-19"], "M8[s]"
    )
    out: dict[str, Any] = {
        f"{np.dtype(dt).name}": (np.arange(-3, 9) if np.dtype(dt).kind == "i" else np.arange(12))
        .astype(dt)
        .reshape(3, 4)
        for dt in ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")
    }
    out.update(
        {
            "float16": np.array([0.0, -0.0, 1.5, np.nan, np.inf, 65504], dtype=np.float16),
            "float32": rs.normal(size=(5, 3)).astype(np.float32),
            "float64": np.array([np.nan, -np.inf, 5e-324, 1.0, -0.0]),
            "complex64": (rs.normal(size=4) + 1j * rs.normal(size=4)).astype(np.complex64),
            "complex128": np.array([1 + 2j, np.nan + 0j, complex(0, np.inf)]),
            "bool": np.array([[True, False], [False, True]]),
            "bytes_S": np.array([b"a", b"bc", b"\x00\xff"], dtype="S3"),
            "unicode_U": np.array(["\u03b1", "beta", "", "日本"], dtype="U4"),
            "datetime64_ns": np.array(
                ["2020-02-29T12:34:56.789012345", "NaT", "1900-01-01"], dtype="M8[ns]"
            ),
            "datetime64_D": np.arange("2024-01-01", "2024-01-08", dtype="M8[D]"),
            "timedelta64_ms": np.array([0, -1500, 86_400_000, "NaT"], dtype="m8[ms]"),
            "structured": structured,
            "big_endian_i4": np.arange(6, dtype=">i4"),
            "big_endian_f8": np.linspace(0, 1, 5).astype(">f8"),
            "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
            "zero_d": np.array(42.0),
            "empty": np.zeros((0, 3), dtype=np.int32),
            "three_d": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
            "large": rs.normal(size=(64, 64)),  # > 4 KiB: a real buffer
            "scalars": [
                np.float32(1.25),
                np.float64(-0.0),
                np.int64(-7),
                np.uint8(200),
                np.bool_(True),
                np.complex128(1 - 1j),
                np.datetime64("2024-05-01T10:00", "m"),
                np.timedelta64(3, "h"),
                np.str_("np-str"),
                np.bytes_(b"np-bytes"),
            ],
            "dtypes": [
                np.dtype("<f4"),
                np.dtype(">i8"),
                np.dtype("M8[us]"),
                np.dtype([("x", "<f8"), ("y", "<i2", (3,))]),
            ],
        }
    )
    return out


def strings_value() -> dict[str, Any]:
    import pandas as pd

    cat = np.array(["blue", "green", "red", None], dtype=object)
    out: dict[str, Any] = {
        # OneHotEncoder.categories_ style: sorted strings with a missing value last
        "object_with_none": cat,
        "object_with_nan": np.array(["a", "b", np.nan], dtype=object),
        "object_2d": np.array([["x", "yy"], ["", "zzz"]], dtype=object),
        "object_unicode": np.array(["héllo", "日本語", "\U0001f642", "nul\x00"], dtype=object),
        "pandas_string_na": pd.array(["a", None, "c"], dtype="string[python]"),
        "pandas_string_pyarrow": pd.array(["p", "q", None], dtype="string[pyarrow]"),
        "pandas_str_series": pd.Series(["u", None, "w"], dtype="str", name="s"),
    }
    if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
        out["stringdtype"] = np.array(["one", "two", "three"], dtype=np.dtypes.StringDType())
        out["stringdtype_na"] = np.array(
            ["x", None, "z"], dtype=np.dtypes.StringDType(na_object=None)
        )
    return out


def sparse_value() -> dict[str, Any]:
    import scipy.sparse as sps

    rs = np.random.RandomState(1)
    dense = rs.binomial(1, 0.2, size=(20, 15)) * rs.normal(size=(20, 15))
    return {
        "csr_matrix": sps.csr_matrix(dense),
        "csc_matrix": sps.csc_matrix(dense.astype(np.float32)),
        "coo_matrix": sps.coo_matrix(dense),
        "csr_array": sps.csr_array(dense),
        "csc_array_int": sps.csc_array((dense != 0).astype(np.int64)),
        "empty_csr": sps.csr_matrix((5, 7), dtype=np.float64),
    }


def pandas_value() -> dict[str, Any]:
    import pandas as pd

    n = 6
    frame = pd.DataFrame(
        {
            "int64": np.arange(n, dtype=np.int64),
            "float64": [0.5, np.nan, 2.0, -1.0, np.inf, 3.25],
            "bool": [True, False] * 3,
            "str": pd.Series(["a", "b", None, "d", "e", "f"], dtype="str"),
            "string": pd.array(["s1", None, "s3", "s4", "s5", "s6"], dtype="string"),
            "category": pd.Categorical(["lo", "hi", "lo", None, "mid", "hi"]),
            "ordered": pd.Categorical(
                ["S", "M", "L", "M", "S", "L"], categories=["S", "M", "L"], ordered=True
            ),
            "Int64": pd.array([1, None, 3, 4, None, 6], dtype="Int64"),
            "boolean": pd.array([True, None, False, True, False, None], dtype="boolean"),
            "Float64": pd.array([1.5, None, 2.5, 3.5, 4.5, 5.5], dtype="Float64"),
            "datetime": pd.date_range("2024-01-01", periods=n, freq="D").astype("M8[ns]"),
            "datetime_tz": pd.date_range("2024-03-30", periods=n, freq="12h", tz="Europe/Paris"),
            "timedelta": pd.to_timedelta(np.arange(n), unit="s"),
            "uint8": np.arange(n, dtype=np.uint8),
            "float32": np.linspace(0, 1, n, dtype=np.float32),
        },
        index=pd.Index([f"r{i}" for i in range(n)], name="row"),
    )
    mi = pd.MultiIndex.from_product([["a", "b"], [1, 2, 3]], names=["letter", "number"])
    return {
        "frame": frame,
        "series_multiindex": pd.Series(np.arange(6.0), index=mi, name="values"),
        "datetime_index": pd.DatetimeIndex(["2024-01-01", "2024-06-30", None], name="when"),
        "range_index": pd.RangeIndex(5, 25, 5, name="r"),
        "categorical": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
        "empty_frame": pd.DataFrame({"a": pd.Series([], dtype=np.float64)}),
    }


# -- models ---------------------------------------------------------------------------
def _xy() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rs = np.random.RandomState(42)
    X = rs.normal(size=(200, 5))
    w = rs.normal(size=5)
    s = X @ w + 0.2 * rs.normal(size=200)
    y3 = np.digitize(s, np.quantile(s, [1 / 3, 2 / 3]))
    return X, y3, s


def _frame() -> tuple[Any, Any]:
    import pandas as pd

    rs = np.random.RandomState(7)
    n = 200
    income = np.round(rs.lognormal(10, 0.6, n), 2)
    income[::13] = np.nan
    frame = pd.DataFrame(
        {
            "age": rs.randint(18, 90, n),
            "income": income,
            "city": rs.choice(["paris", "lyon", "nice", "lille"], n),
            "plan": pd.Series(rs.choice(["free", "pro", None], n), dtype="str"),
        }
    )
    y = np.where(frame["age"] + (frame["city"] == "paris") * 20 > 55, "churn", "stay")
    return frame, y


def models() -> dict[str, tuple[Any, Any]]:
    """name -> (fitted model, golden input rows)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y3, _ = _xy()
    frame, yf = _frame()
    fg = frame.iloc[:10].copy()
    fg.loc[fg.index[0], "city"] = "unseen-city"
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        (
                            "num",
                            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                            ["age", "income"],
                        ),
                        # "plan" has missing values: categories_ holds None/NaN
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(frame, yf)
    Xh = X.copy()
    Xh[::11, 1] = np.nan
    words = ["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white"]
    rs = np.random.RandomState(3)
    docs = [" ".join(rs.choice(words, rs.randint(2, 8))) for _ in range(60)]
    return {
        "pipeline_ohe_logreg": (pipe, fg),
        "random_forest": (
            # 20 trees: an object table with a nested table of Trees (format 1.1)
            RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0).fit(X, y3),
            X[:10],
        ),
        "hist_gradient_boosting": (
            HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=8, random_state=0).fit(
                Xh, y3
            ),
            Xh[:10],
        ),
        "knn_kd_tree": (KNeighborsClassifier(5, algorithm="kd_tree").fit(X, y3), X[:10]),
        "tfidf_vectorizer": (TfidfVectorizer(ngram_range=(1, 2)).fit(docs), docs[:6]),
    }


# -- writing --------------------------------------------------------------------------
def _file_record(path: Path, **extra: Any) -> dict[str, Any]:
    info = sp.inspect(path)
    return {
        "file": path.name,
        "format_version": info.format_version,
        "root_type": info.root_type,
        "types": sorted(t["name"] for t in info.types),
        "compressed_buffers": info.compressed_buffers,
        "signed": info.signed,
        "metadata": info.metadata,
        **extra,
    }


def write(out: Path) -> dict[str, Any]:
    import pandas as pd
    import scipy
    import sklearn

    files: dict[str, Any] = {}
    data = {
        "builtins": builtins_value(),
        "numpy": numpy_value(),
        "strings": strings_value(),
        "scipy_sparse": sparse_value(),
        "pandas": pandas_value(),
    }
    for name, value in data.items():
        path = out / f"{name}.sp"
        sp.dump(value, path, metadata={"golden": name})
        files[name] = _file_record(path, kind="data", value=describe(value))

    fitted = models()
    for name, (model, xg) in fitted.items():
        path = out / f"{name}.sp"
        sp.dump(model, path, golden=xg, metadata={"golden": name})
        outs = golden_outputs(model, xg)
        files[name] = _file_record(
            path,
            kind="model",
            input=name,
            outputs={k: jsonable_output(v) for k, v in outs.items()},
        )

    # compression: compressible arrays (stored zstd) next to random ones (stored raw)
    rs = np.random.RandomState(5)
    compressed = {
        "zeros": np.zeros((256, 64)),
        "repeating": np.tile(np.arange(32, dtype=np.int32), 512),
        "noise": rs.bytes(8192),
        "model": fitted["random_forest"][0],
    }
    path = out / "compressed.sp"
    sp.dump(compressed, path, compress="zstd", golden=None, metadata={"golden": "compressed"})
    X10 = fitted["random_forest"][1]
    files["compressed"] = _file_record(
        path,
        kind="compressed",
        value=describe({k: v for k, v in compressed.items() if k != "model"}),
        input="random_forest",
        outputs={"predict_proba": jsonable_output(compressed["model"].predict_proba(X10))},
    )

    path = out / "signed_hmac.sp"
    knn = fitted["knn_kd_tree"]
    sp.dump(knn[0], path, key=TEST_HMAC_KEY, golden=knn[1], metadata={"golden": "signed"})
    files["signed_hmac"] = _file_record(
        path,
        kind="model",
        key_hex=TEST_HMAC_KEY.hex(),
        input="knn_kd_tree",
        outputs={k: jsonable_output(v) for k, v in golden_outputs(knn[0], knn[1]).items()},
    )

    # the fixed inputs the outputs were computed on, themselves a golden data file
    inputs = {name: xg for name, (_, xg) in fitted.items()}
    sp.dump(inputs, out / "inputs.sp", metadata={"golden": "inputs"})
    files["inputs"] = _file_record(out / "inputs.sp", kind="data", value=describe(inputs))

    return {
        "format_version": f"{spec.FORMAT_MAJOR}.{spec.FORMAT_MINOR}",
        "written_with": {
            "safepoint": sp.__version__,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "files": files,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="folder (default tests/data/format-X.Y)")
    ap.add_argument(
        "--force", action="store_true", help="overwrite (only before the version is released)"
    )
    args = ap.parse_args()
    version = f"{spec.FORMAT_MAJOR}.{spec.FORMAT_MINOR}"
    out = Path(args.out) if args.out else ROOT / "tests" / "data" / f"format-{version}"
    if out.exists() and any(out.iterdir()):
        if not args.force:
            print(
                f"{out} exists: golden files of a released format version are frozen. "
                "Use --force only for a version that has not been released yet.",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = write(out)
    (out / "expected.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(record['files'])} golden files to {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
