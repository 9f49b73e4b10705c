"""scikit-learn's migrations: files written under older scikit-learn versions.

See :mod:`safepoint.format.migrations` for the two kinds of migration; each one
here is tested against files written under the old versions (``tests/data/drift``,
made by ``tools/make_drift_files.py``).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import FormatError
from ..migrations import decoded_parts, file_version, installed_version, version_tuple
from ..registry import register_migration, register_type_migration
from .trust_table import LOSSES

if TYPE_CHECKING:
    from ..decoder import Decoder


# -- scikit-learn -----------------------------------------------------------------------
@register_type_migration("sklearn.compose._column_transformer._RemainderColsList")
def _remainder_cols_list(node: dict[str, Any], dec: Decoder) -> list[Any]:
    """scikit-learn 1.5-1.6 kept the remainder columns of a fitted ColumnTransformer
    (``transformers_[-1][2]``) in ``_RemainderColsList``, a list that warned about a
    future change of its items; 1.7 removed the class and stores a plain list.
    The items (column indices) select the same columns, so predictions are equal.
    """
    _, state, items, _ = decoded_parts(node, dec)
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

    from ..trust import resolve

    row = dec.reader.types[dec.field(node, "t", int)]
    cls = resolve(row[0], row[1], "red")
    args, state, _, _ = decoded_parts(node, dec)
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
            f"state {state!r}; scikit-learn {installed_version()} rebuilds it from its constructor "
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
            f"_fit_dtype, from which scikit-learn {installed_version()} derives _fill_dtype: "
            "refit the imputer, or load the file with the scikit-learn it was written with"
        )
    return {**state, "_fill_dtype": state["_fit_dtype"]}


def _installed_at_least(*version: int) -> bool:
    # asked once per object of a forest or a boosted model: the parse is cached
    return _installed_tuple(installed_version()) >= version


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
        if state["_sklearn_version"] == installed_version():
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

    def unchanged_for_columns(columns: dict[str, Any]) -> bool:
        """Whether ``migrate`` returns every state of an object table as it is: each
        object's own ``_sklearn_version`` (what ``migrate`` reads, not the file's
        record) is the installed version or not a str. Only a list column holds str."""
        col = columns.get("_sklearn_version")
        if type(col) is not list:
            return True
        installed = installed_version()
        return all(type(v) is not str or v == installed for v in col)

    migrate.unchanged_for_columns = unchanged_for_columns  # type: ignore[attr-defined]
    return migrate


def _register_estimator_params() -> None:
    from .trust_table import ESTIMATORS

    for name in ESTIMATORS:
        register_migration(name)(_estimator_new_params(name))


_register_estimator_params()


@register_migration(*(f"sklearn._loss.loss.{n}" for n in LOSSES))
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
    new = installed_version()
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
