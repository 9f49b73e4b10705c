"""Pickled XGBoost and LightGBM models, rebuilt through safepoint's adapters.

A pickled ``xgboost.Booster`` holds XGBoost's memory snapshot (bytes) and a pickled
``lightgbm.Booster`` its model text; their scikit-learn wrappers hold constructor
parameters, fitted attributes and the booster. These are recognised by their exact
class names, their state is audited and built like any other value, and the objects
are then rebuilt the way ``sp.load`` rebuilds them: the booster by the framework's
own loader of its native model format (after safepoint's model checks), the
wrapper with ``cls(**params)`` plus its fitted attributes. Neither class's
``__setstate__`` runs, and nothing the pickle names is called.

Nothing here imports a framework until :func:`rebuild` runs (after the audit).
"""

from __future__ import annotations

from typing import Any

from ..errors import FormatError

__all__ = ["ADAPTED", "rebuild"]

#: (module, qualname) -> (framework, what)
ADAPTED: dict[tuple[str, str], tuple[str, str]] = {
    ("xgboost.core", "Booster"): ("xgboost", "booster"),
    **{
        ("xgboost.sklearn", name): ("xgboost", "wrapper")
        for name in (
            "XGBClassifier",
            "XGBRegressor",
            "XGBRanker",
            "XGBRFClassifier",
            "XGBRFRegressor",
        )
    },
    ("lightgbm.basic", "Booster"): ("lightgbm", "booster"),
    **{
        ("lightgbm.sklearn", name): ("lightgbm", "wrapper")
        for name in ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")
    },
}
#: the state entry holding a wrapper's extra keyword parameters
_EXTRA_PARAMS = {"xgboost": "kwargs", "lightgbm": "_other_params"}


class _Fail:
    @staticmethod
    def fail(msg: str) -> FormatError:
        return FormatError(f"the imported model is invalid: {msg}")


def _state(state: Any, what: str) -> dict[str, Any]:
    if not isinstance(state, dict) or not all(type(k) is str for k in state):
        raise FormatError(f"the pickled state of {what} must be a dict with str keys")
    return state


def _param_names(cls: type) -> list[str]:
    from sklearn.base import BaseEstimator

    out: dict[str, None] = {}
    for klass in cls.__mro__:
        if issubclass(klass, BaseEstimator):
            out.update(dict.fromkeys(klass._get_param_names()))  # type: ignore[attr-defined]
    return list(out)


def rebuild(framework: str, what: str, cls: type, state: Any) -> Any:
    """The object a pickled booster or wrapper stands for, from its built ``state``.

    ``cls`` is the resolved class (one of :data:`ADAPTED`), ``state`` its pickled
    ``__dict__`` with every value already built by the audited constructor.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    st = _state({} if state is None else state, name)
    if framework == "xgboost":
        from ..adapters import xgboost as adapter
    else:
        from ..adapters import lightgbm as adapter  # type: ignore[no-redef]
    if what == "booster":
        if framework == "xgboost":
            if st.get("handle") is None:
                raise FormatError(f"the pickled {name} holds no model")
            return adapter.booster_from_snapshot(st["handle"])
        text = st.get("_handle", st.get("handle"))
        if text is None:
            raise FormatError(f"the pickled {name} holds no model")
        return adapter.booster_from_text(text, st.get("best_iteration", 0))  # type: ignore[attr-defined]
    # a wrapper: split its __dict__ as the adapter's encoder does (get_params / the rest);
    # the parameter names come from the signatures (the wrappers' get_params copies an
    # instance, which would run their unpickling code)
    names = _param_names(cls)
    params = {k: st[k] for k in names if k in st}
    extra = st.get(_EXTRA_PARAMS[framework])
    if isinstance(extra, dict) and all(type(k) is str for k in extra):
        params.update(extra)
    booster = st.get("_Booster")
    attrs = {
        k: v
        for k, v in st.items()
        if k != "_Booster" and k not in params and not k.startswith("__")
    }
    for k in attrs:
        # an instance attribute named like a method (predict, get_booster, ...) would
        # stand in for it: a value chosen by the file called as the model's method
        if callable(getattr(cls, k, None)) or isinstance(getattr(cls, k, None), property):
            raise FormatError(
                f"the pickled {name} sets an attribute {k!r} that hides the class's own "
                "method or property: refused"
            )
    return adapter.rebuild_wrapper(cls, params, attrs, booster, _Fail())
