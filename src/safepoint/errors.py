"""The safepoint error tree.

Every error a public function raises on bad input is a :class:`SafepointError`.
Each subclass also inherits the builtin exception a Python user would expect, so
``except ValueError`` keeps working around safepoint calls::

    >>> import safepoint as sp
    >>> issubclass(sp.UntrustedTypesError, TypeError)
    True

Every exception class of the package is defined here (a test keeps it so), which
makes this tree the whole picture (builtin bases in brackets)::

    SafepointError (Exception)
    ├── FormatError (ValueError)                    bytes that are not a valid file
    │   ├── UnsupportedFormatVersionError           written by a newer format version
    │   └── LimitExceededError                      beyond the configured Limits
    ├── IntegrityError (ValueError)                 checksum, digest or signature mismatch
    ├── ClosedFileError (ValueError)                a SafepointFile used after close()
    ├── InvalidKeyError (TypeError)                 a key= of the wrong kind
    ├── SerializationError (TypeError)              an object the format cannot write
    ├── UntrustedTypesError (TypeError)             .types: names to pass as trusted=
    ├── TrustArgumentError (TypeError)              trusted= names no type
    ├── EnvPolicyError (ValueError)                 env= is not 'warn'/'error'/'ignore'
    ├── EnvironmentMismatchError (RuntimeError)     library versions differ (env='error')
    ├── LoadGuardError (PermissionError)            a load tried I/O, a process, exec, ...
    ├── InvalidNameError (ValueError)               a model or key name that is no path
    ├── InvalidArgumentError (ValueError, TypeError)
    ├── NotAFileError (OSError)                     a path to write is a folder, device, ...
    ├── StoreError (RuntimeError)
    │   ├── NotFoundError (LookupError)
    │   ├── AliasConflictError                      an alias moved since it was read
    │   ├── BackendUnavailableError (ConnectionError)
    │   ├── StorageFullError (OSError)              ENOSPC: nothing was committed
    │   ├── StorageIOError (OSError)
    │   ├── ReadOnlyStoreError (OSError, PermissionError)
    │   ├── CatalogBusyError (TimeoutError)
    │   ├── CatalogDamagedError                     run Store.recover()
    │   ├── RecoveryNeededError                     run Store.recover()
    │   └── RunBusyError                            a live run holds (kind, name)
    ├── StepError (RuntimeError)
    │   └── StepConfigError (ValueError)
    │       └── FilesExistError                     an export would replace files (.paths)
    ├── CheckpointMismatchError (ValueError)        a checkpoint of another search/workflow
    ├── SearchError (ValueError, TypeError)
    ├── SchemaError (ValueError)                    records that do not fit a schema
    ├── AdapterError (RuntimeError)                 a framework adapter cannot do it
    ├── ExportError (ValueError)
    └── MissingDependencyError (ModuleNotFoundError)  an optional extra is not installed

    SafepointWarning (UserWarning)
    └── EnvironmentMismatchWarning                  library versions differ (env='warn')
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AdapterError",
    "AliasConflictError",
    "BackendUnavailableError",
    "CatalogBusyError",
    "CatalogDamagedError",
    "CheckpointMismatchError",
    "ClosedFileError",
    "EnvPolicyError",
    "EnvironmentMismatchError",
    "EnvironmentMismatchWarning",
    "ExportError",
    "FormatError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidNameError",
    "LimitExceededError",
    "LoadGuardError",
    "MissingDependencyError",
    "NotAFileError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "RecoveryNeededError",
    "RunBusyError",
    "SafepointError",
    "SafepointWarning",
    "SchemaError",
    "SearchError",
    "SerializationError",
    "StepConfigError",
    "StepError",
    "StorageFullError",
    "StorageIOError",
    "StoreError",
    "TrustArgumentError",
    "UnsupportedFormatVersionError",
    "UntrustedTypesError",
]


class SafepointError(Exception):
    """Base class of every error raised by safepoint."""


class SafepointWarning(UserWarning):
    """Base class of every warning issued by safepoint."""


class FormatError(SafepointError, ValueError):
    """The bytes are not a valid safepoint file (truncated, corrupt, crafted)."""


class UnsupportedFormatVersionError(FormatError):
    """The file was written by a newer format version than this reader knows."""


class LimitExceededError(FormatError):
    """A declared size, count or depth is beyond the configured safety limits."""


class LoadGuardError(SafepointError, PermissionError):
    """During a load, something tried what loading a model never needs (open a socket,
    start a process, run code it built, write a file, import an unnamed module): the
    load-time guard stopped it (see docs/security.md)."""


class IntegrityError(SafepointError, ValueError):
    """A checksum, digest or signature does not match: the file changed after it was written."""


class ClosedFileError(SafepointError, ValueError):
    """A :class:`~safepoint.format.SafepointFile` was used after it was closed: use it
    inside its ``with safepoint.format.open(...)`` block, or open the file again."""


class InvalidKeyError(SafepointError, TypeError):
    """A ``key=`` argument of the wrong kind or too weak."""


class SerializationError(SafepointError, TypeError):
    """An object cannot be written in the safepoint format (and why, and what to do)."""


class UntrustedTypesError(SafepointError, TypeError):
    """Loading would need types that are not trusted.

    ``types`` lists them as ``"module.qualname"`` strings; pass the ones you trust
    to ``sp.load(..., trusted=[...])``.
    """

    def __init__(self, types: Iterable[str], message: str | None = None) -> None:
        self.types = sorted(set(types))
        if message is None:
            listed = ", ".join(self.types)
            message = (
                f"refusing to load {len(self.types)} untrusted type(s): {listed}. "
                "Nothing was imported or executed. If you trust the file's author and these "
                f"types, pass them by name: sp.load(path, trusted={self.types!r}) "
                "(CLI: --trust NAME)."
            )
        super().__init__(message)


class TrustArgumentError(SafepointError, TypeError):
    """``trusted=`` was given something that does not name a type."""


class EnvPolicyError(SafepointError, ValueError):
    """``env=`` must be 'warn', 'error' or 'ignore'."""


class EnvironmentMismatchError(SafepointError, RuntimeError):
    """The library versions differ from the ones the file was written with (env='error')."""


class EnvironmentMismatchWarning(SafepointWarning):
    """The library versions differ from the ones the file was written with (env='warn')."""


class StoreError(SafepointError, RuntimeError):
    """A model store operation failed."""


class NotFoundError(StoreError, LookupError):
    """An unknown model, version, alias, key or file."""


class InvalidNameError(SafepointError, ValueError):
    """A model or key name is not a valid namespaced path."""


class AliasConflictError(StoreError):
    """A compare-and-swap on an alias failed: it moved since it was read."""


class BackendUnavailableError(StoreError, ConnectionError):
    """A storage or metadata backend cannot be reached."""


class InvalidArgumentError(SafepointError, ValueError, TypeError):
    """An argument of the wrong type or out of range; the message names the argument."""


class NotAFileError(SafepointError, OSError):
    """A path to write names a folder, a device, a pipe or a socket that the file,
    written under a temporary name and renamed into place, would replace."""


class _StoreOSError(StoreError, OSError):
    """A store error that is also an ``OSError`` (``errno`` and ``filename`` set when known).

    ``str()`` is the safepoint message alone (OSError's ``[Errno n] ...`` form would
    repeat the path).
    """

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.strerror = message
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StorageFullError(_StoreOSError):
    """The disk (or quota) holding the store or its catalog is full: ``errno.ENOSPC``.

    Nothing was committed; free space and retry.
    """


class StorageIOError(_StoreOSError):
    """The operating system failed to read or write the store's files (I/O error, a
    missing folder, permissions)."""


class ReadOnlyStoreError(_StoreOSError, PermissionError):
    """A write to a store that is open read-only (a read-only folder, file or database)."""


class CatalogBusyError(StoreError, TimeoutError):
    """The catalog stayed locked by another process longer than the timeout."""


class CatalogDamagedError(StoreError):
    """The catalog database is unreadable (not a database, a damaged file): rebuild it
    from the blobs with ``Store.recover()`` / ``safepoint recover``."""


class RecoveryNeededError(StoreError):
    """The catalog does not match the store's blobs (missing, empty, damaged or another
    store's): writes and gc are refused until ``Store.recover()`` / ``safepoint recover``
    rebuilds it."""


class RunBusyError(StoreError):
    """A live run of the same kind and name holds what ``Runs.start(exclusive=True)``
    asked for (``holder``: its ``RunInfo``): wait for it to finish, or run another name."""

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


class StepError(SafepointError, RuntimeError):
    """A resumable workflow step failed or was configured wrongly."""


class StepConfigError(StepError, ValueError):
    """A workflow was called with bad arguments (``start_from``, name, version, params, steps)."""


class FilesExistError(StepConfigError):
    """A workflow export would replace files; ``paths`` names them.

    Raised by ``safepoint.workflows.steps.export_outputs`` (and ``safepoint steps
    export``) without ``overwrite=True``; not in ``sp.__all__``.
    """

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


class CheckpointMismatchError(SafepointError, ValueError):
    """A checkpoint belongs to a different search, workflow or pipeline."""


class SearchError(SafepointError, ValueError, TypeError):
    """A resumable search was set up wrongly (``checkpoint=``, ``on_mismatch=``, search spaces)."""


class SchemaError(SafepointError, ValueError):
    """Records do not fit a declared schema or a model's input signature."""


class AdapterError(SafepointError, RuntimeError):
    """A framework adapter cannot do what was asked (framework missing, wrong version, ...)."""


class ExportError(SafepointError, ValueError):
    """A model cannot be exported (unsupported by the converter, or the exported copy
    predicts differently from the original)."""


class MissingDependencyError(SafepointError, ModuleNotFoundError):
    """A feature needs an optional extra that is not installed.

    >>> str(MissingDependencyError("ui", "uvicorn"))
    "this needs the [ui] extra (uvicorn is not installed): pip install 'safepoint[ui]'"
    """

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this needs the [{extra}] extra ({module} is not installed): "
            f"pip install 'safepoint[{extra}]'",
            name=module,
        )
        self.extra = extra
