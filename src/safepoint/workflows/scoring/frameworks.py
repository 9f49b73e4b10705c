"""Models that are not scikit-learn-like: how the scoring pipeline feeds them.

A scikit-learn-like model has ``predict(X)`` on a DataFrame or array and records its
input signature when saved. A Spark ``PipelineModel`` has ``transform`` on a Spark
DataFrame, and an H2O MOJO reads its columns (some categorical) from its own
``model.ini``. A :class:`FrameworkScorer` tells the pipeline, for one framework:

* ``before_load()``: what must exist before the model is loaded (a Spark session);
* ``load_instead(types, source)``: another way to load a stored model, or None for the
  usual load (an H2O model without a running cluster is scored from its MOJO);
* ``signature(model)``: the input columns and their kinds, read from the model, when
  the file records none (``"string"`` columns are left as text, not made numbers);
* ``predict(model, frame)``: one prediction per row of a pandas DataFrame.

Scorers are a registry (:func:`register_scorer`); the built-in ones are Spark ML and
H2O, whose modules (and frameworks) are imported only when a model of theirs is seen.

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

__all__ = [
    "SCORERS",
    "FrameworkScorer",
    "load_instead",
    "prepare_load",
    "register_scorer",
    "scorer_for",
]


def _none(model: Any) -> dict[str, Any]:
    return {}


def _nothing() -> None:
    return None


def _usual(types: list[str], source: Any) -> Any:
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
    #: (stored type names, the file's path or bytes) -> a model, or None for the usual load
    load_instead: Callable[[list[str], Any], Any] = field(default=_usual)


SCORERS: dict[str, FrameworkScorer] = {}


def register_scorer(scorer: FrameworkScorer) -> None:
    """Add (or replace) the scorer for a framework."""
    SCORERS[scorer.name] = scorer


#: the built-in scorers: (name, module defining it, its name there, ``modules``,
#: ``stored_types``), imported only once a model or a file of theirs is seen (a
#: scikit-learn model's scoring imports neither; tests check these against the scorers)
BUILTIN_SCORERS = (
    ("spark", ".spark_scoring", "SPARK_SCORER", ("pyspark.ml",), ("pyspark.ml.",)),
    (
        "h2o",
        ".h2o_scoring",
        "H2O_SCORER",
        ("safepoint.adapters.h2o", "h2o."),
        ("h2o.estimators.",),
    ),
)
_builtins_loaded: set[str] = set()


def _builtins(module: str = "", names: Iterable[str] = ()) -> None:
    """Register the built-in scorers that a model of ``module``, or stored types
    ``names``, may concern (as :func:`register_scorer` did, unless already done)."""
    names = list(names)
    for name, where, attr, modules, stored in BUILTIN_SCORERS:
        if name in _builtins_loaded:
            continue
        if (module and module.startswith(modules)) or any(n.startswith(stored) for n in names):
            import importlib

            scorer = getattr(importlib.import_module(where, __package__), attr)
            _builtins_loaded.add(name)
            if name not in SCORERS:
                register_scorer(scorer)


def scorer_for(model: Any) -> FrameworkScorer | None:
    """The scorer for ``model``, or None for a scikit-learn-like model."""
    module = type(model).__module__ or ""
    _builtins(module)
    for scorer in SCORERS.values():
        if module.startswith(scorer.modules) and scorer.matches(model):
            return scorer
    return None


def _concerned(names: list[str]) -> list[FrameworkScorer]:
    _builtins(names=names)
    return [
        s
        for s in SCORERS.values()
        if s.stored_types and any(n.startswith(s.stored_types) for n in names)
    ]


def prepare_load(type_names: Iterable[str]) -> None:
    """Before loading a file holding these types: e.g. start a Spark session."""
    for scorer in _concerned(list(type_names)):
        scorer.before_load()


def load_instead(type_names: Iterable[str], source: Any) -> Any:
    """A model loaded another way than ``sp.load`` (see ``FrameworkScorer.load_instead``),
    or None. ``source`` is the file's path or bytes."""
    names = list(type_names)
    for scorer in _concerned(names):
        model = scorer.load_instead(names, source)
        if model is not None:
            return model
    return None
