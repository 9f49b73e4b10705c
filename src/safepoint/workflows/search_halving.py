"""The name saved files record for a fitted halving search.

``safepoint.workflows.search_halving.ResumableHalvingGridSearchCV`` is what the file
of a fitted halving search names (format/trust.py trusts it), from before the
searches became the :mod:`safepoint.workflows.search` package; the classes live in
``search/_halving.py`` and keep this module name, so files keep loading either way.
"""

from __future__ import annotations

from .search._halving import ResumableHalvingGridSearchCV, ResumableHalvingRandomSearchCV

__all__ = ["ResumableHalvingGridSearchCV", "ResumableHalvingRandomSearchCV"]
