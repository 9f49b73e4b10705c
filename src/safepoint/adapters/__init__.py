"""Optional frameworks stored in their own native, non-executable formats.

``sp.dump`` / ``sp.load`` and ``Store.put`` / ``Store.get`` handle these objects directly once
the framework is installed; nothing here imports a framework until it is used:

* :mod:`~safepoint.adapters.xgboost`: ``Booster`` and the scikit-learn wrappers (UBJSON);
* :mod:`~safepoint.adapters.lightgbm`: ``Booster`` and the scikit-learn wrappers (text model);
* :mod:`~safepoint.adapters.torch`: tensors, ``state_dict``\\ s and standard ``torch.nn`` modules
  (safetensors dtypes, one aligned buffer per tensor), ``save_safetensors``/``load_safetensors``;
* :mod:`~safepoint.adapters.spark`: ``pyspark.ml`` models as their saved directory;
* :mod:`~safepoint.adapters.h2o`: H2O binary models and MOJOs;
* :mod:`~safepoint.adapters.onnx`: ``export_onnx`` (skl2onnx, checked with onnxruntime).

See docs/adapters.md. :mod:`~safepoint.adapters.registry` is the extension point.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import registry

__all__ = ["export_onnx", "registry"]

_SUBMODULES = ("xgboost", "lightgbm", "torch", "spark", "h2o", "onnx")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "export_onnx":
        return importlib.import_module(f"{__name__}.onnx").export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
