"""Audited import of pickle, joblib and skops files (``sp.convert``, ``sp.scan``).

See :mod:`safepoint.convert.api` for the pipeline and
:mod:`safepoint.convert.semantics` for what is allowed.
"""

from __future__ import annotations

from .api import ConversionReport, ScanResult, convert, scan
from .limits import ConvertLimits

__all__ = ["ConversionReport", "ConvertLimits", "ScanResult", "convert", "scan"]
