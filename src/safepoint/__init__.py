"""safepoint: save, version, checkpoint and serve machine-learning models, safely and fast.

>>> import safepoint as sp
>>> sp.dump(model, "model.sp")          # doctest: +SKIP
>>> model = sp.load("model.sp")         # never executes code from the file  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .errors import (
    AdapterError,
    AliasConflictError,
    BackendUnavailableError,
    CatalogBusyError,
    CatalogDamagedError,
    CheckpointMismatchError,
    ClosedFileError,
    EnvironmentMismatchError,
    EnvironmentMismatchWarning,
    EnvPolicyError,
    ExportError,
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidNameError,
    LimitExceededError,
    LoadGuardError,
    MissingDependencyError,
    NotAFileError,
    NotFoundError,
    ReadOnlyStoreError,
    RecoveryNeededError,
    RunBusyError,
    SafepointError,
    SafepointWarning,
    SchemaError,
    SearchError,
    SerializationError,
    StepConfigError,
    StepError,
    StorageFullError,
    StorageIOError,
    StoreError,
    TrustArgumentError,
    UnsupportedFormatVersionError,
    UntrustedTypesError,
)
from .format import (
    Inspection,
    Limits,
    VerifyReport,
    WriteResult,
    dump,
    dumps,
    inspect,
    load,
    loads,
    untrusted_types,
    verify,
)
from .importers import convert, scan  # a thin module: the pipeline loads on first use

if TYPE_CHECKING:  # lazily imported below; named here for type checkers
    from .adapters.onnx import export_onnx
    from .importers import ConversionReport, ConvertLimits, ScanResult
    from .stores import Checkpointer, ModelVersion, Store
    from .workflows.scoring import Schema, ScoringPipeline
    from .workflows.search import (
        ResumableGridSearchCV,
        ResumableRandomizedSearchCV,
        SearchSpace,
        search_spaces,
    )
    from .workflows.search_halving import (
        ResumableHalvingGridSearchCV,
        ResumableHalvingRandomSearchCV,
    )
    from .workflows.steps import Steps, Workflow, step

__all__ = [
    "AdapterError",
    "AliasConflictError",
    "BackendUnavailableError",
    "CatalogBusyError",
    "CatalogDamagedError",
    "CheckpointMismatchError",
    "Checkpointer",
    "ClosedFileError",
    "ConversionReport",
    "ConvertLimits",
    "EnvPolicyError",
    "EnvironmentMismatchError",
    "EnvironmentMismatchWarning",
    "ExportError",
    "FormatError",
    "Inspection",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidNameError",
    "LimitExceededError",
    "Limits",
    "LoadGuardError",
    "MissingDependencyError",
    "ModelVersion",
    "NotAFileError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "RecoveryNeededError",
    "ResumableGridSearchCV",
    "ResumableHalvingGridSearchCV",
    "ResumableHalvingRandomSearchCV",
    "ResumableRandomizedSearchCV",
    "RunBusyError",
    "SafepointError",
    "SafepointWarning",
    "ScanResult",
    "Schema",
    "SchemaError",
    "ScoringPipeline",
    "SearchError",
    "SearchSpace",
    "SerializationError",
    "StepConfigError",
    "StepError",
    "Steps",
    "StorageFullError",
    "StorageIOError",
    "Store",
    "StoreError",
    "TrustArgumentError",
    "UnsupportedFormatVersionError",
    "UntrustedTypesError",
    "VerifyReport",
    "Workflow",
    "WriteResult",
    "__version__",
    "convert",
    "dump",
    "dumps",
    "export_onnx",
    "inspect",
    "load",
    "loads",
    "scan",
    "search_spaces",
    "step",
    "untrusted_types",
    "verify",
]

# Public names whose modules import heavy libraries (scikit-learn, ...): loaded on first use,
# so that `import safepoint` and the CLI stay fast.
_LAZY = {
    "ConversionReport": ".importers",
    "ConvertLimits": ".importers",
    "ScanResult": ".importers",
    "Checkpointer": ".stores",
    "ModelVersion": ".stores",
    "Store": ".stores",
    "Steps": ".workflows.steps",
    "Workflow": ".workflows.steps",
    "step": ".workflows.steps",
    "ResumableGridSearchCV": ".workflows.search",
    "ResumableRandomizedSearchCV": ".workflows.search",
    "ResumableHalvingGridSearchCV": ".workflows.search_halving",
    "ResumableHalvingRandomSearchCV": ".workflows.search_halving",
    "SearchSpace": ".workflows.search",
    "search_spaces": ".workflows.search",
    "ScoringPipeline": ".workflows.scoring",
    "Schema": ".workflows.scoring",
    "export_onnx": ".adapters.onnx",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safepoint' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
