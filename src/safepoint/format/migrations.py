"""Migrations: load files written under older library versions.

Library drift is why pickled models break: scikit-learn renames a private
attribute, removes a helper class, or starts reading an attribute that older
versions never set. A file records the versions it was written with; when the
installed versions differ, the state is rewritten here into what the installed
version expects, so that the model predicts exactly as before. Where that is
impossible, the migration raises a :class:`~safepoint.errors.FormatError` that
names the attribute, both versions and what to do.

Two kinds of migration:

* **state migrations** (``validators.register_migration``): a function
  ``(state, decoder) -> state`` for a type whose attributes changed;
* **type migrations** (:func:`register_type_migration`): a class that no longer
  exists. The old name is accepted by the audit *only* because this module
  knows it, and its node is rebuilt by a function here (never by importing the
  old name), e.g. ``_RemainderColsList`` (scikit-learn 1.5-1.6) becomes the
  plain list that later versions store.

Every migration is tested against files written under the old versions
(``tests/data/drift``, made by ``tools/make_drift_files.py``).

Example, for a package of your own::

    from safepoint.format.validators import register_migration

    @register_migration("mypkg.models.Scorer")
    def _rename_weights(state, dec):
        if isinstance(state, dict) and "w" in state:
            state = {**state, "weights_": state.pop("w")}
        return state
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError
from .validators import register_migration

if TYPE_CHECKING:
    from .decoder import Decoder

__all__ = [
    "ReplacedType",
    "file_version",
    "register_type_migration",
    "replaced_type",
    "version_tuple",
]


# -- type migrations ------------------------------------------------------------------
class ReplacedType:
    """Stands, after the audit, for a class the installed library no longer has.

    ``build(node, decoder)`` rebuilds the value from the node's decoded parts
    (constructor arguments ``a``, state ``s``, list items ``li``, dict items
    ``di``) without importing the old name.
    """

    def __init__(self, name: str, build: Callable[[dict[str, Any], Decoder], Any]) -> None:
        self.name = name
        self._build = build

    def build(self, node: dict[str, Any], dec: Decoder) -> Any:
        return self._build(node, dec)

    def __repr__(self) -> str:
        return f"<migrated type {self.name}>"


Build = Callable[[dict[str, Any], "Decoder"], Any]
_replaced: dict[tuple[str, str | None], ReplacedType] = {}


def register_type_migration(*type_names: str, kind: str | None = None) -> Callable[[Build], Build]:
    """Decorator: ``fn(node, decoder) -> value`` rebuilds the nodes of ``type_names``
    (only those of node kind ``kind``, ``"obj"``/``"red"``/``"pyx"``, if given)."""

    def deco(fn: Build) -> Build:
        for name in type_names:
            _replaced[(name, kind)] = ReplacedType(name, fn)
        return fn

    return deco


def replaced_type(module: str, qualname: str, kind: str | None = None) -> ReplacedType | None:
    """The migration for nodes of ``module.qualname`` (of node kind ``kind``), if any."""
    name = f"{module}.{qualname}"
    return _replaced.get((name, kind)) or _replaced.get((name, None))


# -- helpers ---------------------------------------------------------------------------
def version_tuple(version: str | None) -> tuple[int, ...]:
    """``"1.6.1"`` -> ``(1, 6, 1)``; pre-release suffixes are ignored."""
    out = []
    for part in (version or "").split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def file_version(dec: Decoder, package: str = "scikit-learn") -> str | None:
    """The version of ``package`` recorded in the file being decoded."""
    env = dec.reader.manifest.get("env")
    pkgs = env.get("packages") if isinstance(env, dict) else None
    v = pkgs.get(package) if isinstance(pkgs, dict) else None
    return v if isinstance(v, str) else None


def _installed(package: str = "sklearn") -> str:
    import sys

    mod = sys.modules.get(package)
    return str(getattr(mod, "__version__", "?"))


def _decoded_parts(node: dict[str, Any], dec: Decoder) -> tuple[Any, Any, Any, Any]:
    def part(key: str) -> Any:
        return dec.decode(node[key]) if key in node else None

    return part("a"), part("s"), part("li"), part("di")


# -- scikit-learn -----------------------------------------------------------------------
@register_type_migration("sklearn.compose._column_transformer._RemainderColsList")
def _remainder_cols_list(node: dict[str, Any], dec: Decoder) -> list[Any]:
    """scikit-learn 1.5-1.6 kept the remainder columns of a fitted ColumnTransformer
    (``transformers_[-1][2]``) in ``_RemainderColsList``, a list that warned about a
    future change of its items; 1.7 removed the class and stores a plain list.
    The items (column indices) select the same columns, so predictions are equal.
    """
    _, state, items, _ = _decoded_parts(node, dec)
    data = state.get("data") if isinstance(state, dict) else None
    if data is None and isinstance(items, list):
        data = items
    if not isinstance(data, list) or not all(
        isinstance(x, int | str | bool) and not isinstance(x, float) for x in data
    ):
        raise FormatError(
            "malformed manifest: ColumnTransformer remainder columns (_RemainderColsList, "
            "scikit-learn 1.5-1.6) must be a list of column indices or names"
        )
    return list(data)


_CY_LOSSES = (
    "CyAbsoluteError",
    "CyExponentialLoss",
    "CyHalfBinomialLoss",
    "CyHalfGammaLoss",
    "CyHalfMultinomialLoss",
    "CyHalfPoissonLoss",
    "CyHalfSquaredError",
    "CyHalfTweedieLoss",
    "CyHalfTweedieLossIdentity",
    "CyHuberLoss",
    "CyLossFunction",
    "CyPinballLoss",
)


@register_type_migration(*(f"sklearn._loss._loss.{n}" for n in _CY_LOSSES), kind="pyx")
def _cython_loss(node: dict[str, Any], dec: Decoder) -> Any:
    """scikit-learn 1.5 pickled its Cython losses through Cython's generated
    ``__pyx_unpickle_<Class>(cls, checksum, (params...))``; from 1.6 on most are
    pickled as ``Class(*params)`` and the generated unpickler is gone. The state
    is the constructor parameters (none, or one float: Huber's delta, the pinball
    quantile, the Tweedie power), so the loss is rebuilt from them.
    """
    import importlib

    from .trust import resolve

    row = dec.reader.types[dec.field(node, "t", int)]
    cls = resolve(row[0], row[1], "red")
    args, state, _, _ = _decoded_parts(node, dec)
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], int):
        raise dec.fail("a Cython state needs its checksum")
    unpickle = getattr(importlib.import_module(cls.__module__), f"__pyx_unpickle_{row[1]}", None)
    if unpickle is not None:  # still pickled this way (CyHalfMultinomialLoss)
        return unpickle(cls, args[0], state)
    if (
        not isinstance(state, tuple)
        or len(state) > 1
        or not all(isinstance(x, float | int) and not isinstance(x, bool) for x in state)
    ):
        raise FormatError(
            f"{row[0]}.{row[1]} written under scikit-learn {file_version(dec) or '?'} has "
            f"state {state!r}; scikit-learn {_installed()} rebuilds it from its constructor "
            "parameters (at most one number), which this state is not: refit the model or "
            "load it with the scikit-learn it was written with"
        )
    return cls(*state)


@register_migration("sklearn.impute._base.SimpleImputer")
def _simple_imputer_fill_dtype(state: Any, dec: Decoder) -> Any:
    """scikit-learn 1.8 reads ``_fill_dtype`` at transform time; up to 1.7 only
    ``_fit_dtype`` existed. Both hold the dtype of the validated training data
    (``X.dtype`` after ``_validate_input`` in ``fit``), so the old one is copied.
    """
    if not isinstance(state, dict) or "_fill_dtype" in state:
        return state
    if "statistics_" not in state:
        return state  # not fitted: nothing reads either attribute
    if "_fit_dtype" not in state:
        raise FormatError(
            f"SimpleImputer written under scikit-learn {file_version(dec) or '?'} lacks "
            f"_fit_dtype, from which scikit-learn {_installed()} derives _fill_dtype: "
            "refit the imputer, or load the file with the scikit-learn it was written with"
        )
    return {**state, "_fill_dtype": state["_fit_dtype"]}


def _installed_at_least(*version: int) -> bool:
    # asked once per object of a forest or a boosted model: the parse is cached
    return _installed_tuple(_installed()) >= version


@functools.lru_cache(maxsize=16)
def _installed_tuple(version: str) -> tuple[int, ...]:
    return version_tuple(version)


def _class(name: str) -> Any:
    """An already audited and imported class, by its exact name."""
    import sys

    module, _, qualname = name.rpartition(".")
    return getattr(sys.modules.get(module), qualname, None)


# every scikit-learn estimator: parameters added to __init__ after the file was written
_SIGNATURES: dict[type, list[tuple[str, Any]]] = {}


def _new_defaults(cls: type) -> list[tuple[str, Any]]:
    params = _SIGNATURES.get(cls)
    if params is None:
        import inspect

        params = []
        init = getattr(cls, "__init__", None)
        sig = None
        # only Python-level __init__s have parameters with defaults to restore (and a
        # builtin's text signature would be parsed with compile(), which a load never does)
        if isinstance(init, types.FunctionType):
            try:
                sig = inspect.signature(init)
            except (TypeError, ValueError):
                sig = None
        for p in sig.parameters.values() if sig else ():
            if (
                p.name != "self"
                and p.default is not p.empty
                and p.kind
                in (
                    p.POSITIONAL_OR_KEYWORD,
                    p.KEYWORD_ONLY,
                )
            ):
                params.append((p.name, p.default))
        _SIGNATURES[cls] = params
    return params


def _estimator_new_params(name: str) -> Callable[[Any, Decoder], Any]:
    def migrate(state: Any, dec: Decoder) -> Any:
        """A parameter added to ``__init__`` after the file was written (Pipeline's
        ``transform_input``, scikit-learn 1.6) is missing from the state, which breaks
        ``get_params``, ``repr`` and ``clone``. scikit-learn adds parameters with a
        default that keeps the old behaviour, so the default is what the old model
        had. Fitted attributes are never invented here.
        """
        if type(state) is not dict or type(state.get("_sklearn_version")) is not str:
            return state
        if state["_sklearn_version"] == _installed():
            return state  # written by this very version: nothing can be missing
        cls = _class(name)
        base = _class("sklearn.base.BaseEstimator")
        if not isinstance(cls, type) or base is None or not issubclass(cls, base):
            return state
        missing = [(k, v) for k, v in _new_defaults(cls) if k not in state]
        if not missing:
            return state
        import copy

        return {**state, **{k: copy.deepcopy(v) for k, v in missing}}

    return migrate


def _register_estimator_params() -> None:
    from .sklearn_trust import ESTIMATORS

    for name in ESTIMATORS:
        register_migration(name)(_estimator_new_params(name))


_register_estimator_params()


@register_migration(
    *(
        f"sklearn._loss.loss.{n}"
        for n in (
            "AbsoluteError",
            "ExponentialLoss",
            "HalfBinomialLoss",
            "HalfGammaLoss",
            "HalfMultinomialLoss",
            "HalfPoissonLoss",
            "HalfSquaredError",
            "HalfTweedieLoss",
            "HalfTweedieLossIdentity",
            "HuberLoss",
            "PinballLoss",
        )
    )
)
def _loss_array_api(state: Any, dec: Decoder) -> Any:
    """scikit-learn 1.8 gave its loss objects ``xp``/``device`` (array API
    namespace, ``None`` = numpy) and the multinomial loss three caches that start
    as ``None``; files from earlier versions get exactly what ``__init__`` sets."""
    if not isinstance(state, dict) or "closs" not in state or not _installed_at_least(1, 8):
        return state
    return {"xp": None, "device": None, **state}


@register_migration("sklearn._loss.loss.HalfMultinomialLoss")
def _multinomial_caches(state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict) or not _installed_at_least(1, 8):
        return state
    caches = {"class_indexing_offsets": None, "y_true_int": None, "y_true_one_hot": None}
    return {**caches, **state}


_FOREST_AND_BAGGING = (
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._forest.RandomTreesEmbedding",
    "sklearn.ensemble._bagging.BaggingClassifier",
    "sklearn.ensemble._bagging.BaggingRegressor",
    "sklearn.ensemble._iforest.IsolationForest",
)


@register_migration(*_FOREST_AND_BAGGING)
def _bootstrap_sample_weight(state: Any, dec: Decoder) -> Any:
    """scikit-learn 1.8 draws bootstrap samples with probabilities proportional to
    ``sample_weight`` and keeps the weights in ``_sample_weight`` to redraw them
    (``estimators_samples_``, OOB scores). Up to 1.7 the draws were uniform
    whatever the weights: ``_sample_weight = None`` redraws exactly those samples.
    """
    if (
        not isinstance(state, dict)
        or "_sample_weight" in state
        or "estimators_" not in state
        or not _installed_at_least(1, 8)
    ):
        return state
    return {**state, "_sample_weight": None}


@register_migration(
    "sklearn.svm._classes.SVC",
    "sklearn.svm._classes.NuSVC",
    "sklearn.svm._classes.SVR",
    "sklearn.svm._classes.NuSVR",
    "sklearn.svm._classes.OneClassSVM",
)
def _svm_effective_probability(state: Any, dec: Decoder) -> Any:
    """scikit-learn 1.9 deprecated ``SVC(probability=...)`` and passes
    ``_effective_probability`` to libsvm at predict time (sparse inputs); before,
    ``probability`` itself was passed. Same value, new name."""
    if (
        not isinstance(state, dict)
        or "_effective_probability" in state
        or "support_" not in state
        or not _installed_at_least(1, 9)
    ):
        return state
    prob = state.get("probability", False)
    if type(prob) is str and prob == "deprecated":
        prob = False
    if type(prob) is not bool:
        raise dec.fail("an SVM's probability must be a bool")
    return {**state, "_effective_probability": prob}


@register_migration(
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier"
)
def _hgb_label_encoder(state: Any, dec: Decoder) -> Any:
    """scikit-learn 1.7 keeps the fitted ``LabelEncoder`` of the classes in
    ``_label_encoder`` (a warm-started fit encodes validation labels with it);
    earlier files only have ``classes_``, which is all a LabelEncoder holds."""
    if (
        not isinstance(state, dict)
        or "_label_encoder" in state
        or "classes_" not in state
        or not _installed_at_least(1, 7)
    ):
        return state
    from sklearn.preprocessing import LabelEncoder

    enc = LabelEncoder()
    enc.classes_ = state["classes_"]
    return {**state, "_label_encoder": enc}


@register_migration(
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._logistic.LogisticRegressionCV",
)
def _logistic_multi_class(state: Any, dec: Decoder) -> Any:
    """scikit-learn 1.8 removed ``multi_class``: a binary model's probabilities are
    the logistic of its decision function, a multiclass model's the softmax of
    its decision functions. Models fitted with the old defaults ('auto', or
    'deprecated' in 1.5-1.7) behave the same; a one-vs-rest model
    (``multi_class='ovr'``, or liblinear with 3+ classes) or a binary model
    fitted with ``multi_class='multinomial'`` would silently change its
    ``predict_proba``: refused, with what to do.
    """
    if not isinstance(state, dict) or "multi_class" not in state:
        return state
    if not _installed_at_least(1, 8) or "coef_" not in state:
        return state
    multi_class = state.get("multi_class")
    classes = state.get("classes_")
    solver = state.get("solver")
    # only plain values are compared (comparing an object would call its methods)
    if type(multi_class) is not str or (solver is not None and type(solver) is not str):
        raise dec.fail("LogisticRegression: multi_class and solver must be strings")
    if classes is not None and type(classes) is not np.ndarray:
        raise dec.fail("LogisticRegression: classes_ must be an array")
    n_classes = len(classes) if classes is not None else 0
    if multi_class in ("auto", "deprecated", "warn"):
        ovr = n_classes > 2 and solver == "liblinear"
        if not ovr:
            return state
        how = f"multi_class={multi_class!r} with solver='liblinear' and {n_classes} classes"
    elif multi_class == "ovr" and n_classes <= 2:
        return state  # binary one-vs-rest is the binary logistic model
    elif multi_class == "multinomial" and n_classes > 2:
        return state
    else:
        how = f"multi_class={multi_class!r} with {n_classes} classes"
    old = file_version(dec) or "?"
    new = _installed()
    change = (
        "one-vs-rest probabilities (normalised logistic of each class's decision)"
        if n_classes > 2
        else "probabilities softmax([-d, d]) = logistic(2d)"
    )
    refit = (
        "OneVsRestClassifier(LogisticRegression()) keeps one-vs-rest probabilities"
        if n_classes > 2
        else "LogisticRegression() on the same data"
    )
    raise FormatError(
        f"LogisticRegression attribute multi_class changed between scikit-learn {old} "
        f"(file) and {new} (here): this model was fitted with {how}, so it predicts "
        f"{change}; scikit-learn 1.8 removed multi_class and would compute different "
        "predict_proba from the same coefficients. What to do: load the file with "
        f"scikit-learn<1.8 (pip install 'scikit-learn=={old}'), or refit with "
        f"scikit-learn>=1.8 ({refit})."
    )
