"""Models that are not scikit-learn-like: how the scoring pipeline feeds them.

A scikit-learn-like model has ``predict(X)`` on a DataFrame or array and records its
input signature when saved. A Spark ``PipelineModel`` has ``transform`` on a Spark
DataFrame, and an H2O MOJO reads its columns (some categorical) from its own
``model.ini``. A :class:`FrameworkScorer` tells the pipeline, for one framework:

* ``before_load()``: what must exist before the model is loaded (a Spark session);
* ``signature(model)``: the input columns and their kinds, read from the model, when
  the file records none (``"string"`` columns are left as text, not made numbers);
* ``predict(model, frame)``: one prediction per row of a pandas DataFrame.

Scorers are a registry (:func:`register_scorer`); the built-in ones are Spark ML and
H2O. Frameworks are imported only when a model of theirs is seen.

>>> class Doubler:
...     pass
>>> import numpy as np
>>> register_scorer(FrameworkScorer(
...     "doubler", modules=("",),
...     matches=lambda m: isinstance(m, Doubler),
...     predict=lambda m, df: 2 * df["x"].to_numpy()))
>>> scorer_for(Doubler()).name
'doubler'
>>> del SCORERS["doubler"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCORERS", "FrameworkScorer", "prepare_load", "register_scorer", "scorer_for"]


def _none(model: Any) -> dict[str, Any]:
    return {}


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class FrameworkScorer:
    """How to score one framework's models (see the module docstring)."""

    name: str
    #: module prefixes of the model classes (checked before ``matches``, which may import)
    modules: tuple[str, ...]
    matches: Callable[[Any], bool]
    predict: Callable[[Any, Any], Any]
    signature: Callable[[Any], dict[str, Any]] = field(default=_none)
    #: prefixes of stored type names (``Store.inspect(...).types``) that need ``before_load``
    stored_types: tuple[str, ...] = ()
    before_load: Callable[[], None] = field(default=_nothing)


SCORERS: dict[str, FrameworkScorer] = {}


def register_scorer(scorer: FrameworkScorer) -> None:
    """Add (or replace) the scorer for a framework."""
    SCORERS[scorer.name] = scorer


def _builtins() -> None:
    if "spark" not in SCORERS:
        from .h2o_scoring import H2O_SCORER
        from .spark_scoring import SPARK_SCORER

        register_scorer(SPARK_SCORER)
        register_scorer(H2O_SCORER)


def scorer_for(model: Any) -> FrameworkScorer | None:
    """The scorer for ``model``, or None for a scikit-learn-like model."""
    _builtins()
    module = type(model).__module__ or ""
    for scorer in SCORERS.values():
        if module.startswith(scorer.modules) and scorer.matches(model):
            return scorer
    return None


def prepare_load(type_names: Iterable[str]) -> None:
    """Before loading a file holding these types: e.g. start a Spark session."""
    _builtins()
    names = list(type_names)
    for scorer in SCORERS.values():
        if scorer.stored_types and any(n.startswith(scorer.stored_types) for n in names):
            scorer.before_load()
