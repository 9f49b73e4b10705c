"""Export scikit-learn models to ONNX through skl2onnx, checked with onnxruntime.

:func:`export_onnx` converts, runs the ONNX model on ``X_sample`` with onnxruntime and
compares with the original model's predictions (labels exactly, probabilities and regression
outputs within a float32 tolerance) before returning the bytes or writing the file.
``pip install 'safepoint[onnx]'`` installs skl2onnx, onnx and onnxruntime.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from .._io import replacing
from ..errors import ExportError
from ._common import import_framework

__all__ = ["export_onnx"]


def _as_float32(X: Any) -> np.ndarray[Any, Any]:
    values = X.to_numpy() if hasattr(X, "to_numpy") else X
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ExportError(
            "X_sample must be numeric (the export declares one float32 input tensor); "
            "encode strings and categories inside the pipeline, or export a numeric model"
        ) from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ExportError(f"X_sample must be a non-empty 2-D array, not shape {arr.shape}")
    return arr


def _compare(name: str, want: Any, got: Any, rtol: float, atol: float) -> None:
    a, b = np.asarray(want), np.asarray(got)
    if name == "predict" and (a.dtype.kind in "OUSb" or a.dtype.kind in "iu"):
        if a.shape != b.reshape(a.shape).shape or not np.array_equal(a, b.reshape(a.shape)):
            n = int(np.sum(a != b.reshape(a.shape))) if a.size == b.size else a.size
            raise ExportError(f"the ONNX model predicts different labels for {n} of {a.size} rows")
        return
    a, b = a.astype(np.float64), b.astype(np.float64).reshape(a.shape)
    if not np.allclose(a, b, rtol=rtol, atol=atol):
        diff = float(np.max(np.abs(a - b)))
        raise ExportError(
            f"the ONNX model's {name} differs from the original by up to {diff:.3g} "
            f"(tolerance rtol={rtol}, atol={atol}): not exported"
        )


def export_onnx(
    model: Any,
    X_sample: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    target_opset: int | None = None,
) -> bytes | None:
    """Convert a fitted scikit-learn model to ONNX and check its predictions.

    Args:
        model: a fitted estimator or pipeline that skl2onnx supports.
        X_sample: a few representative rows (numeric); they fix the input width and are
            used for the parity check.
        path: where to write the ``.onnx`` file (atomically); ``None`` returns the bytes.
        rtol, atol: tolerance for probabilities and regression outputs (ONNX runs in
            float32); class labels must match exactly.
        target_opset: passed to skl2onnx.

    Raises:
        ExportError: the model is not supported by skl2onnx, or the ONNX model predicts
            differently from the original on ``X_sample``.

    Example:
        >>> import safepoint as sp                                     # doctest: +SKIP
        >>> sp.export_onnx(model, X[:20], "model.onnx")               # doctest: +SKIP
    """
    skl2onnx = import_framework("skl2onnx", "onnx")
    ort = import_framework("onnxruntime", "onnx")
    from skl2onnx.common.data_types import FloatTensorType

    X = _as_float32(X_sample)
    if not hasattr(model, "predict"):
        raise ExportError(f"{type(model).__name__} has no predict(): only models are exported")
    options: dict[Any, Any] = {}
    if hasattr(model, "predict_proba"):
        # plain arrays rather than a list of dicts (ZipMap) for the probabilities
        options = {id(model): {"zipmap": False}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = skl2onnx.convert_sklearn(
                model,
                initial_types=[("X", FloatTensorType([None, X.shape[1]]))],
                options=options or None,
                target_opset=target_opset,
            )
    except Exception as exc:  # skl2onnx raises many kinds (RuntimeError, NotImplementedError...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"skl2onnx cannot convert {type(model).__name__}: {first}. "
            "See skl2onnx's list of supported models; keep the safepoint file for this one"
        ) from None
    data = onx.SerializeToString()
    try:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs = sess.run(None, {sess.get_inputs()[0].name: X})
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the exported model: {exc}") from None
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, outputs, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X_in = X_sample if hasattr(X_sample, "columns") else X
        label = got.get("label", outputs[0])
        _compare("predict", model.predict(X_in), label, rtol, atol)
        if "probabilities" in got and hasattr(model, "predict_proba"):
            _compare("predict_proba", model.predict_proba(X_in), got["probabilities"], rtol, atol)
    if path is None:
        return data
    with replacing(os.fspath(path), ".onnx-") as f:
        f.write(data)
    return None
