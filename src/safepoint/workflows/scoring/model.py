"""The model a scoring job uses: loaded once, safely, and reloaded when its alias moves.

A :class:`ModelHandle` knows the model's input signature (feature names, count
and dtypes recorded in the file) and checks each input against it, so a
mismatch is a clear error, not silently wrong predictions.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pandas as pd

from ...errors import NotFoundError, SchemaError

__all__ = ["METHODS", "ModelHandle", "open_model"]

#: the model methods scoring may call (by name, from the CLI or an HTTP request): never
#: anything else, so a request cannot reach ``fit``, ``set_params`` or a dunder
METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")


class ModelHandle:
    """Base: ``model``, ``version``, ``signature``; ``refresh()`` switches versions."""

    store: Any = None
    label: str = "model"

    def __init__(self) -> None:
        self.model: Any = None
        self.version: str = "?"
        self.signature: dict[str, Any] = {}
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Reload if the reference now points to another version; True if it switched."""
        return False

    def current(self) -> tuple[Any, str]:
        """The model and its version, consistent with each other (for concurrent readers)."""
        with self._lock:
            return self.model, self.version

    # -- input checks ---------------------------------------------------------------
    def features(self, frame: pd.DataFrame) -> list[str]:
        names = self.signature.get("feature_names")
        if names:
            return list(names)
        n = self.signature.get("n_features_in")
        cols = [c for c in frame.columns if c not in ("id", "key")]
        if isinstance(n, int) and len(cols) != n:
            raise SchemaError(
                f"the model expects {n} features but the input has {len(cols)} columns "
                f"besides id ({cols[:10]}...); the model records no feature names, so give "
                "the input exactly its feature columns (plus an optional id)"
            )
        return cols

    def check_input(self, frame: pd.DataFrame) -> None:
        """Before the first batch: every feature the model was trained on must be there."""
        names = self.signature.get("feature_names")
        if names:
            missing = [c for c in names if c not in frame.columns]
            if missing:
                raise SchemaError(
                    f"the input lacks feature column(s) {missing} that model {self.label} "
                    f"(version {self.version}) was trained on; it has {list(frame.columns)}"
                )
        self.features(frame)

    def coerce(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
        """Convert text feature columns (CSV, JSON) to numbers; report records that fail."""
        dtypes = self.signature.get("dtypes") or {}
        bad: dict[int, str] = {}
        out = frame
        for col in self.features(frame):
            if col not in frame.columns:
                raise SchemaError(f"the input lacks feature column {col!r}")
            series = frame[col]
            want = str(dtypes.get(col, "float64"))
            if series.dtype.kind in "biuf" or not _numeric(want):
                continue
            num = pd.to_numeric(series, errors="coerce")
            failed = num.isna() & series.notna()
            for label in series.index[failed.to_numpy()]:
                bad.setdefault(int(label), f"{col}: {series.loc[label]!r} is not a number")
            if out is frame:
                out = frame.copy()
            out[col] = num
        if bad:
            out = out.drop(index=list(bad))
        return out, sorted(bad.items())

    def methods(self, model: Any = None) -> list[str]:
        """The :data:`METHODS` the model has (``predict_proba`` only if it can answer it)."""
        m = self.model if model is None else model
        return [name for name in METHODS if callable(getattr(m, name, None))]

    def check_method(self, method: str, model: Any = None) -> None:
        """Refuse a method scoring may not call, or one this model lacks."""
        if method not in METHODS:
            raise SchemaError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if method not in self.methods(model):
            m = self.model if model is None else model
            raise SchemaError(
                f"model {self.label} (version {self.version}, {type(m).__name__}) has no "
                f"{method}; it has {', '.join(self.methods(model)) or 'none of them'}"
            )

    def classes(self, model: Any = None) -> list[Any] | None:
        """The class labels, in the order of ``predict_proba``'s columns (classifiers)."""
        m = self.model if model is None else model
        labels = getattr(m, "classes_", None)
        if labels is None:
            return None
        return [v.item() if isinstance(v, np.generic) else v for v in np.asarray(labels).tolist()]

    def predict(
        self, frame: pd.DataFrame, model: Any = None, method: str = "predict"
    ) -> np.ndarray[Any, Any]:
        """``model.<method>(features)``; ``method`` is one of :data:`METHODS`."""
        m = self.model if model is None else model
        self.check_method(method, m)
        cols = self.features(frame)
        X = frame[cols] if self.signature.get("feature_names") else frame[cols].to_numpy()
        return np.asarray(getattr(m, method)(X))


def _numeric(dtype: str) -> bool:
    return any(dtype.startswith(p) for p in ("float", "int", "uint", "bool"))


class FileModelHandle(ModelHandle):
    def __init__(self, path: str, trusted: Any = ()) -> None:
        super().__init__()
        import safepoint as sp

        if not os.path.isfile(path):
            raise NotFoundError(f"model file {path!r} does not exist")
        self.label = os.path.basename(path)
        info = sp.inspect(path, trusted=trusted)
        self.model = sp.load(path, trusted=trusted)
        self.version = info.digest[:12]
        self.signature = info.signature or {}


class ObjectModelHandle(ModelHandle):
    """An in-memory model (for notebooks and tests); never reloads."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        from ...format.environment import signature_of

        self.model = model
        self.version = "in-memory"
        self.label = type(model).__name__
        self.signature = signature_of(model) or {}


def open_model(model: Any, *, store: Any = None, trusted: Any = ()) -> ModelHandle:
    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, str | os.PathLike):
        ref = os.fspath(model)
        if os.path.isfile(ref) or ref.endswith(".sp"):
            return FileModelHandle(ref, trusted)
        from .store_model import StoreModelHandle

        return StoreModelHandle(ref, store=store, trusted=trusted)
    if hasattr(model, "predict"):
        return ObjectModelHandle(model)
    raise SchemaError(
        f"model must be 'NAME@ALIAS' (with store=), a .sp file path or a fitted model, "
        f"not {type(model).__name__}"
    )
