"""Audited import of pickle, joblib and skops files (``sp.convert``, ``sp.scan``).

See :mod:`safepoint.importers.api` for the pipeline and
:mod:`safepoint.importers.semantics` for what is allowed. The implementation is
imported on first use, so that ``import safepoint`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._types import Trusted

if TYPE_CHECKING:
    from .api import ConversionReport, ScanResult, ScanResults
    from .limits import ConvertLimits

__all__ = ["ConversionReport", "ConvertLimits", "ScanResult", "ScanResults", "convert", "scan"]

_LAZY = {
    "ConversionReport": ".api",
    "ScanResult": ".api",
    "ScanResults": ".api",
    "ConvertLimits": ".limits",
}


def convert(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    trusted: Trusted = (),
    compress: str | None = None,
    limits: ConvertLimits | None = None,
) -> ConversionReport:
    """Import a pickle, joblib or skops file as a safepoint file, without running its code.

    The source is parsed (never unpickled), every name it needs is audited, and
    only allowlisted types are built: numpy arrays and dtypes from their bytes,
    scipy.sparse matrices, builtins, ``collections`` containers, scikit-learn
    estimators and their internal types, plus the names in ``trusted``.

    Args:
        src_path: a ``.pkl``/``.pickle``, ``.joblib`` (plain or compressed: zlib,
            gzip, bz2, xz, lzma, lz4), ``.skops`` file, or a zip holding one pickle.
        dst_path: the safepoint file to write.
        trusted: extra type names to allow (``"mypkg.models.MyEstimator"``).
        compress: ``"zstd"`` to compress the written buffers.
        limits: safety limits (see :class:`ConvertLimits`).

    Returns:
        :class:`ConversionReport`: format, the names needed, what was written.

    Raises:
        UntrustedTypesError: the file needs names outside the allowlist
            (``exc.types`` lists them); nothing was built.
        FormatError: the file is malformed, or uses a pickle feature that is
            never imported (persistent ids, the extension registry, calls of
            anything but known constructors).

    Example:
        >>> import pickle, safepoint as sp
        >>> from sklearn.linear_model import LinearRegression
        >>> with open("/tmp/lr.pkl", "wb") as f:
        ...     pickle.dump(LinearRegression().fit([[0], [1]], [0, 1]), f)
        >>> sp.convert("/tmp/lr.pkl", "/tmp/lr.sp").verdict
        'converted'
        >>> sp.load("/tmp/lr.sp").predict([[2]])
        array([2.])
    """
    from .api import convert as _convert

    return _convert(src_path, dst_path, trusted=trusted, compress=compress, limits=limits)


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    trusted: Trusted = (),
    limits: ConvertLimits | None = None,
) -> ScanResults:
    """Audit files without importing them: format, names needed, verdict per file.

    Every opcode of every pickle stream in a file is audited, not only what the
    returned value holds: a call whose result is dropped (POP, POP_MARK, memo only,
    left on the stack), a second pickle or other bytes after STOP make the file
    ``"refused"``. Each result says what was examined (``checked``) and what its
    verdict does not cover (``not_checked``).

    Directories are walked; inside them, files that are not pickle, joblib, zip,
    skops or safepoint files are skipped and listed in the returned list's
    ``skipped`` (a file named explicitly is always reported). Nothing in the files
    is imported or executed.

    Example:
        >>> import pickle, safepoint as sp
        >>> with open("/tmp/d.pkl", "wb") as f:
        ...     pickle.dump({"a": 1}, f)
        >>> [(r.format, r.verdict) for r in sp.scan(["/tmp/d.pkl"])]
        [('pickle', 'safe')]
    """
    from .api import scan as _scan

    return _scan(paths, trusted=trusted, limits=limits)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safepoint.importers' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
