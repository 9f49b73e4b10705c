"""safepoint: save, version, checkpoint and serve machine-learning models, safely and fast.

>>> import safepoint as sp
>>> sp.dump(model, "model.sp")          # doctest: +SKIP
>>> model = sp.load("model.sp")         # never executes code from the file  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    AliasConflictError,
    BackendUnavailableError,
    CheckpointMismatchError,
    EnvironmentMismatchError,
    EnvironmentMismatchWarning,
    FormatError,
    IntegrityError,
    InvalidKeyError,
    InvalidNameError,
    LimitExceededError,
    NotFoundError,
    SafepointError,
    SafepointWarning,
    SchemaError,
    SerializationError,
    StepError,
    StoreError,
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

__all__ = [
    "AliasConflictError",
    "BackendUnavailableError",
    "CheckpointMismatchError",
    "EnvironmentMismatchError",
    "EnvironmentMismatchWarning",
    "FormatError",
    "Inspection",
    "IntegrityError",
    "InvalidKeyError",
    "InvalidNameError",
    "LimitExceededError",
    "Limits",
    "NotFoundError",
    "SafepointError",
    "SafepointWarning",
    "SchemaError",
    "SerializationError",
    "StepError",
    "StoreError",
    "UnsupportedFormatVersionError",
    "UntrustedTypesError",
    "VerifyReport",
    "WriteResult",
    "__version__",
    "dump",
    "dumps",
    "inspect",
    "load",
    "loads",
    "untrusted_types",
    "verify",
]
