"""The model a scoring job uses: loaded once, safely, and reloaded when its alias moves.

A :class:`ModelHandle` knows the model's input signature (feature names, count
and dtypes recorded in the file, or read from a Spark or H2O model itself) and
checks each input against it, so a mismatch is a clear error, not silently wrong
predictions.

Where the model comes from: a store reference, a ``.sp`` file, a model object, a
key of a store checkpointer (:func:`from_checkpointer`), a function returning the
model (plain or ``async``), or nothing at all (the pipeline's function fetches its
model itself).
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ...errors import NotFoundError, SchemaError

__all__ = ["METHODS", "ModelHandle", "from_checkpointer", "open_model"]

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
        #: how to feed a model that is not scikit-learn-like (Spark, H2O), else None
        self.scorer: Any = None
        self._lock = threading.Lock()

    def _adopt(self, model: Any, recorded: dict[str, Any] | None) -> dict[str, Any]:
        """Pick the scorer for ``model``; its signature is the recorded one, else the
        one the framework reads from the model (Spark stages, a MOJO's columns)."""
        from .frameworks import scorer_for

        self.scorer = scorer_for(model)
        if recorded:
            return recorded
        return dict(self.scorer.signature(model)) if self.scorer is not None else {}

    def prepare(self, call: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        """Before the first batch of a run: load what is loaded lazily (``call`` runs a
        coroutine, for an ``async`` model function)."""

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
        if self.signature.get("passthrough"):
            return list(frame.columns)
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
        if self.signature.get("passthrough"):
            return frame, []  # the framework takes the columns as read
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
        from .frameworks import scorer_for

        if m is not None and scorer_for(m) is not None:
            return ["predict"]  # a Spark or H2O model: its framework's prediction
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
        if self.scorer is not None:  # Spark, H2O: their prediction ("predict" only)
            return np.asarray(self.scorer.predict(m, frame[cols]))
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
        from .frameworks import load_instead, prepare_load

        self.label = os.path.basename(path)
        info = sp.inspect(path, trusted=trusted)
        types = [t["name"] for t in info.types]
        prepare_load(types)
        self.model = load_instead(types, path)
        if self.model is None:
            self.model = sp.load(path, trusted=trusted)
        self.version = info.digest[:12]
        self.signature = self._adopt(self.model, info.signature)


class ObjectModelHandle(ModelHandle):
    """An in-memory model (for notebooks and tests); never reloads."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        from ...format.environment import signature_of

        self.model = model
        self.version = "in-memory"
        self.label = type(model).__name__
        self.signature = self._adopt(model, signature_of(model))


class NoModelHandle(ModelHandle):
    """No model: the pipeline's function fetches (and caches) its model itself."""

    label = "no model"

    def __init__(self) -> None:
        super().__init__()
        self.version = "unknown"


class FunctionModelHandle(ModelHandle):
    """The model a function returns (``get_clf()`` or ``async get_clf()``), called once
    at the start of each run, so a function that loads its model on first call and
    caches it loads it once."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.label = f"{getattr(fn, '__qualname__', type(fn).__name__)}()"
        self.version = "unknown"  # what the function loaded is its own business

    def prepare(self, call: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        from ...format.environment import signature_of

        model = self.fn()
        if inspect.isawaitable(model):
            model = call(_awaited(model))
        if model is None:
            raise SchemaError(f"the model function {self.label} returned None, not a model")
        with self._lock:
            self.model = model
            self.signature = self._adopt(model, signature_of(model))


async def _awaited(aw: Any) -> Any:
    return await aw


class CheckpointerModelHandle(ModelHandle):
    """The model under ``key`` of a store checkpointer; reloaded when the key is set again.

    Its version is the time the key was last set (UTC). A value that is raw bytes is
    read as a safepoint file; a pickle is refused (convert it with ``safepoint convert``
    and set the model itself).
    """

    def __init__(self, checkpointer: Any, key: str, trusted: Any = ()) -> None:
        super().__init__()
        for attr in ("get", "info", "store", "name"):
            if not hasattr(checkpointer, attr):
                raise SchemaError(
                    f"from_checkpointer() takes a store checkpointer "
                    f"(store.checkpointer(NAME)), not {type(checkpointer).__name__}"
                )
        self.ckpt = checkpointer
        self.key = key
        self.trusted = trusted
        self.store = checkpointer.store
        self.label = f"{checkpointer.name}[{key}]"
        self._stamp: float | None = None
        self._load()

    def _load(self) -> None:
        from ...format.environment import signature_of

        stamp = float(self.ckpt.info(self.key)["updated_at"])  # NotFoundError if missing
        value = self.ckpt.get(self.key)
        if isinstance(value, bytes):
            value = self._from_bytes(value)
        if value is None:
            raise SchemaError(f"checkpoint {self.label} holds None, not a model")
        with self._lock:
            self.model = value
            self.signature = self._adopt(value, signature_of(value))
            self.version = datetime.fromtimestamp(stamp, tz=UTC).isoformat(timespec="milliseconds")
            self._stamp = stamp

    def _from_bytes(self, data: bytes) -> Any:
        import safepoint as sp

        from ...format.spec import MAGIC

        if not data.startswith(MAGIC):
            raise SchemaError(
                f"checkpoint {self.label} holds raw bytes that are not a safepoint file "
                "(a pickle is never loaded): set the model object itself "
                "(checkpointer.set(key, model)), or convert the pickle with "
                "'safepoint convert' and set the converted model"
            )
        return sp.loads(data, trusted=self.trusted)

    def refresh(self) -> bool:
        stamp = float(self.ckpt.info(self.key)["updated_at"])
        if stamp == self._stamp:
            return False
        self._load()
        return True


def from_checkpointer(checkpointer: Any, key: str, *, trusted: Any = ()) -> ModelHandle:
    """The model stored under ``key`` of a store checkpointer, for a scoring pipeline.

    Example:
        >>> ckpt = store.checkpointer("USERNAME/PROJECT_NAME/predictive-model")  # doctest: +SKIP
        >>> ckpt.set("clf", clf)                                                # doctest: +SKIP
        >>> p = ScoringPipeline(from_checkpointer(ckpt, "clf"))                 # doctest: +SKIP

    When the key is set again, the pipeline switches to the new model at the next
    batch (like an alias move). The run is recorded in the checkpointer's store.
    """
    if not isinstance(key, str) or not key:
        raise SchemaError("from_checkpointer() needs the key the model was set under")
    return CheckpointerModelHandle(checkpointer, key, trusted)


def open_model(model: Any, *, store: Any = None, trusted: Any = ()) -> ModelHandle:
    """A handle for ``model`` (see the module docstring for what it may be)."""
    if model is None:
        return NoModelHandle()
    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, str | os.PathLike):
        ref = os.fspath(model)
        if os.path.isfile(ref) or ref.endswith(".sp"):
            return FileModelHandle(ref, trusted)
        from .store_model import StoreModelHandle

        return StoreModelHandle(ref, store=store, trusted=trusted)
    if isinstance(model, type):
        raise SchemaError(
            f"model is the class {model.__name__}, not a fitted model: pass a fitted instance"
        )
    from .frameworks import scorer_for

    if hasattr(model, "predict") or scorer_for(model) is not None:
        return ObjectModelHandle(model)
    if callable(model):
        return FunctionModelHandle(model)
    raise SchemaError(
        f"model must be 'NAME@ALIAS' (with store=), a .sp file path, a fitted model, "
        f"from_checkpointer(checkpointer, key), a function returning the model, or None "
        f"(the pipeline's function fetches its own model); not {type(model).__name__}"
    )
