"""safepoint's own classes that fitted models hold, in the default trust set.

A fitted resumable search is saved like the scikit-learn search it subclasses (plain
scikit-learn-style state), so it is trusted like one. Named here, by string, so that
neither the format nor a load imports the workflows (scikit-learn) to decide.
"""

from __future__ import annotations

from .format.registry import register_trust_rule

#: node kind "obj" only: built as cls.__new__(cls) and given their state
CLASSES = frozenset(
    {
        "safepoint.workflows.search.ResumableGridSearchCV",
        "safepoint.workflows.search.ResumableRandomizedSearchCV",
        "safepoint.workflows.search_halving.ResumableHalvingGridSearchCV",
        "safepoint.workflows.search_halving.ResumableHalvingRandomSearchCV",
    }
)


@register_trust_rule
def _own_estimators(module: str, qualname: str, kind: str) -> bool:
    return kind == "obj" and f"{module}.{qualname}" in CLASSES
