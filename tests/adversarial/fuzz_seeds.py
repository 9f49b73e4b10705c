"""Seed corpora of the fuzzing harnesses (``fuzz_*.py``), built by code.

Not part of the test suite (no ``test_`` prefix). Every seed is made here, from the
same objects and payloads as the adversarial and importer tests, so nothing
generated is committed: ``tools/fuzz_campaign.py`` (and each harness's
``--make-seeds DIR``) writes them into a temporary folder.

Kinds (one per harness mode):

* ``reader``: whole safepoint files (small dicts, a tree, a kd-tree, a vocabulary,
  a compressed file, a signed file, the adversarial suite's "rich" object);
* ``manifest``: the manifest JSON of those files (wrapped back into a valid file by
  the harness, so mutations reach the decoder and the type handlers);
* ``pickle``: plain pickles of benign objects at every protocol, and every hostile
  payload of ``tests/importers/convert_payloads.py`` (calls, dropped results,
  concatenated pickles, trailing bytes);
* ``joblib``: joblib files, plain and compressed, and a zip holding a pickle;
* ``skops``: skops archives (a zip with ``schema.json`` and ``.npy`` members);
* ``skops-schema``: the ``schema.json`` of those archives (wrapped back into an
  archive with the seed's members by the harness).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # spcraft, conftest
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "importers"))  # convert_payloads

KINDS = ("reader", "manifest", "pickle", "joblib", "skops", "skops-schema")


def _data() -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    return X, y


def _models() -> dict[str, Any]:
    """Small fitted models: a tree, a linear model, a kd-tree, a pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    X, y = _data()
    return {
        "tree": DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y),
        "logreg": LogisticRegression().fit(X, y),
        "knn": KNeighborsClassifier(algorithm="kd_tree", leaf_size=5).fit(X, y),
        "pipe": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
    }


def _adversarial_conftest() -> Any:
    """tests/adversarial/conftest.py, by its path: under pytest, ``import conftest`` finds
    whichever folder's conftest was imported first (tests/stores/ in a full run)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("conftest.py")
    spec = importlib.util.spec_from_file_location("_sp_adversarial_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reader_files() -> dict[str, bytes]:
    import numpy as np

    import safepoint as sp

    rich_object = _adversarial_conftest().rich_object
    models = _models()
    objs: dict[str, Any] = {
        "small": {"a": np.arange(6), "s": ["x", None], "b": b"\x00", "t": (1.5, 2**70)},
        "tree": models["tree"],
        "knn": models["knn"],
        "pipe": models["pipe"],
        "vocab": {f"term{i}": i for i in range(200)},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {f"{k}.sp": sp.dumps(v) for k, v in objs.items()}
        out["rich.sp"] = sp.dumps(rich_object())
        out["zstd.sp"] = sp.dumps({"z": np.zeros(20_000)}, compress="zstd")
        out["signed.sp"] = sp.dumps(objs["small"], key=b"k" * 32)
    return out


def manifest_files() -> dict[str, bytes]:
    from spcraft import Crafted

    return {
        name.replace(".sp", ".json"): json.dumps(Crafted.from_bytes(data).manifest).encode()
        for name, data in reader_files().items()
    }


def pickle_files() -> dict[str, bytes]:
    import convert_payloads as cp
    import numpy as np

    out: dict[str, bytes] = {}
    benign: dict[str, Any] = {
        "plain": {"a": [1, 2.5, "x", None, True], "b": (b"\x00", 2**70), "c": {1, 2}},
        "array": np.arange(12.0).reshape(3, 4),
        **_models(),
    }
    for name, obj in benign.items():
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            out[f"{name}-p{proto}.pkl"] = pickle.dumps(obj, protocol=proto)
    # the hostile payloads touch a file named "canary" in the current folder if run
    for name, build in {**cp.PAYLOADS, **cp.DROPPED}.items():
        out[f"payload-{name}.pkl"] = build("canary")
    for i, module in enumerate(cp.UNICODE_MODULES):
        out[f"payload-unicode{i}.pkl"] = cp.unicode_module("canary", module)
    out["payload-evil-p2.pkl"] = pickle.dumps(cp.Evil("canary"), protocol=2)
    return out


def joblib_files() -> dict[str, bytes]:
    import joblib
    import numpy as np

    models = _models()
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, Any, Any]] = [
            ("tree.joblib", models["tree"], 0),
            ("pipe.joblib", models["pipe"], 0),
            ("arrays.joblib", {"a": np.arange(10), "b": np.ones((2, 3))}, 0),
            ("tree-zlib.joblib", models["tree"], ("zlib", 3)),
            ("logreg-gzip.joblib", models["logreg"], ("gzip", 3)),
            ("logreg-lzma.joblib", models["logreg"], ("lzma", 3)),
        ]
        for name, obj, compress in cases:
            path = os.path.join(tmp, name)
            joblib.dump(obj, path, compress=compress)
            with open(path, "rb") as f:
                out[name] = f.read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.pkl", pickle.dumps(models["tree"], protocol=4))
    out["zipped-pickle.zip"] = buf.getvalue()
    return out


def skops_files() -> dict[str, bytes]:
    import numpy as np

    try:
        import skops.io as sio
    except ImportError:  # the skops harness is skipped without skops
        return {}
    models = _models()
    objs = {"tree": models["tree"], "logreg": models["logreg"], "pipe": models["pipe"]}
    objs["dict"] = {"a": np.arange(5), "b": [1, "x", None]}
    return {f"{k}.skops": sio.dumps(v) for k, v in objs.items()}


def skops_schemas() -> dict[str, bytes]:
    out = {}
    for name, data in skops_files().items():
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            out[name.replace(".skops", ".json")] = z.read("schema.json")
    return out


MAKERS: dict[str, Callable[[], dict[str, bytes]]] = {
    "reader": reader_files,
    "manifest": manifest_files,
    "pickle": pickle_files,
    "joblib": joblib_files,
    "skops": skops_files,
    "skops-schema": skops_schemas,
}


def make_seeds(kind: str, folder: str) -> int:
    """Write the seeds of ``kind`` into ``folder``; returns how many."""
    files = MAKERS[kind]()
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return len(files)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(KINDS)}}} DIR")
    print(make_seeds(sys.argv[1], sys.argv[2]))
