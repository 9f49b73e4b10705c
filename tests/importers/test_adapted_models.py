"""Pickled XGBoost and LightGBM models convert through safepoint's adapters.

The booster is rebuilt from its native model format (XGBoost's UBJSON/JSON model cut
out of the pickled memory snapshot, LightGBM's model text) with the adapters' checks,
the wrapper with ``cls(**params)``; no ``__setstate__`` of either runs, and the result
loads with the default trust set.
"""

from __future__ import annotations

import copyreg
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import safepoint as sp

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

X = np.random.RandomState(0).rand(120, 4)
Y_BIN = (X[:, 0] + X[:, 1] > 1).astype(int)
Y_REG = X @ [1.0, -2.0, 0.5, 0.0]
Y_MULTI = np.digitize(X[:, 0], [0.33, 0.66])


def _models() -> dict[str, Any]:
    return {
        "xgb_classifier": xgb.XGBClassifier(n_estimators=4, max_depth=3).fit(X, Y_BIN),
        "xgb_multiclass": xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(X, Y_MULTI),
        "xgb_regressor": xgb.XGBRegressor(n_estimators=4, learning_rate=0.5).fit(X, Y_REG),
        "xgb_rf": xgb.XGBRFRegressor(n_estimators=3, max_depth=3).fit(X, Y_REG),
        "xgb_gblinear": xgb.XGBRegressor(booster="gblinear", n_estimators=3).fit(X, Y_REG),
        "xgb_booster": xgb.train({"max_depth": 2}, xgb.DMatrix(X, Y_REG), num_boost_round=3),
        "lgb_classifier": lgb.LGBMClassifier(n_estimators=4, verbose=-1).fit(X, Y_BIN),
        "lgb_multiclass": lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(X, Y_MULTI),
        "lgb_regressor": lgb.LGBMRegressor(n_estimators=4, verbose=-1, reg_alpha=0.1).fit(X, Y_REG),
        "lgb_booster": lgb.train(
            {"verbose": -1, "objective": "regression"}, lgb.Dataset(X, Y_REG), num_boost_round=3
        ),
    }


MODELS = _models()


def _predictions(model: Any) -> list[np.ndarray]:
    if isinstance(model, xgb.Booster):
        return [model.predict(xgb.DMatrix(X))]
    out = [np.asarray(model.predict(X))]
    if hasattr(model, "predict_proba") and not isinstance(model, lgb.Booster):
        out.append(model.predict_proba(X))
    return out


def _write(path: Path, model: Any, how: str) -> None:
    if how.startswith("pickle"):
        path.write_bytes(pickle.dumps(model, protocol=int(how[-1])))
    else:
        joblib.dump(model, path, compress=int(how[-1]))


@pytest.mark.parametrize("how", ["pickle0", "pickle2", "pickle5", "joblib0", "joblib3"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_pickled_model_converts_through_its_adapter(tmp: Path, name: str, how: str) -> None:
    model = MODELS[name]
    src = tmp / "m.bin"
    _write(src, model, how)
    [res] = sp.scan([src])
    assert res.verdict == "safe", (res.untrusted, res.problems)
    report = sp.convert(src, tmp / "m.sp")
    assert report.verdict == "converted"
    back = sp.load(tmp / "m.sp")  # the default trust set: nothing to trust by hand
    assert type(back) is type(model)
    for got, want in zip(_predictions(back), _predictions(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_setstate_of_the_framework_never_runs(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the boosters' nor the wrappers' own unpickling code is called."""
    calls: list[str] = []

    def boom(self: Any, state: Any) -> None:
        calls.append(type(self).__name__)
        raise AssertionError("__setstate__ ran")

    from safepoint.importers.audit import audit_stream
    from safepoint.importers.construct import Constructor
    from safepoint.importers.pickle_parser import PickleParser

    built = []
    with monkeypatch.context() as patch:
        # the import step only: saving calls the wrappers' get_params, which copies
        for cls in (xgb.core.Booster, lgb.basic.Booster, xgb.XGBClassifier, lgb.LGBMClassifier):
            patch.setattr(cls, "__setstate__", boom, raising=False)
        for name in ("xgb_classifier", "lgb_classifier"):
            parser = PickleParser(pickle.dumps(MODELS[name], protocol=5))
            root = parser.parse()
            res = audit_stream(root, parser.created)
            built.append(Constructor(res).build(root))
    assert calls == []
    for obj, name in zip(built, ("xgb_classifier", "lgb_classifier"), strict=True):
        np.testing.assert_allclose(obj.predict_proba(X), MODELS[name].predict_proba(X))


def test_lightgbm_best_iteration_is_kept(tmp: Path) -> None:
    Xv = np.random.RandomState(1).rand(60, 4)
    yv = Xv @ [1.0, -2.0, 0.5, 0.0]
    model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.3, verbose=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eval_set is deprecated in newer LightGBM
        model.fit(X, Y_REG, eval_set=[(Xv, yv)], callbacks=[lgb.early_stopping(3, verbose=False)])
    assert 0 < model.best_iteration_ < 200
    src = tmp / "es.joblib"
    joblib.dump(model, src)
    sp.convert(src, tmp / "es.sp")
    back = sp.load(tmp / "es.sp")
    assert back.best_iteration_ == model.best_iteration_
    np.testing.assert_allclose(back.predict(X), model.predict(X))


class _Reduced:
    def __init__(self, rv: tuple[Any, ...]) -> None:
        self.rv = rv

    def __reduce__(self) -> tuple[Any, ...]:
        return self.rv


def _snapshot_json(booster: Any, edit: Any = None) -> bytearray:
    model = json.loads(bytes(booster.save_raw("json")))
    if edit is not None:
        edit(model)
    return bytearray(json.dumps({"Config": {}, "Model": model}).encode())


def test_xgboost_json_snapshot_and_tree_checks(tmp: Path) -> None:
    booster = MODELS["xgb_booster"]
    src = tmp / "b.pkl"
    ok = _Reduced((copyreg.__newobj__, (xgb.core.Booster,), {"handle": _snapshot_json(booster)}))
    # protocol 1 writes copyreg.__newobj__(Booster) as a call: what protocol 2+ writes
    # as NEWOBJ (whose writer checks the object's class)
    src.write_bytes(pickle.dumps(ok, protocol=1))
    sp.convert(src, tmp / "b.sp")
    back = sp.load(tmp / "b.sp")
    np.testing.assert_allclose(back.predict(xgb.DMatrix(X)), booster.predict(xgb.DMatrix(X)))

    def bad_split(model: dict[str, Any]) -> None:
        tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
        tree["split_indices"][0] = 10**6

    bad = _Reduced(
        (
            copyreg.__newobj__,
            (xgb.core.Booster,),
            {"handle": _snapshot_json(booster, bad_split)},
        )
    )
    src.write_bytes(pickle.dumps(bad, protocol=1))
    with pytest.raises(sp.FormatError, match="splits on feature"):
        sp.convert(src, tmp / "bad.sp")
    assert not (tmp / "bad.sp").exists()


def test_xgboost_snapshot_garbage_is_refused(tmp: Path) -> None:
    for handle in (
        bytearray(b"binf\x00\x01"),
        bytearray(b"{L\x00\x00\x00\x00\x00\x00\x00\x05Model"),
        bytearray(b"{L\xff\xff\xff\xff\xff\xff\xff\xffx}"),
    ):
        src = tmp / "b.pkl"
        obj = _Reduced((copyreg.__newobj__, (xgb.core.Booster,), {"handle": handle}))
        src.write_bytes(pickle.dumps(obj, protocol=1))
        assert sp.scan([src])[0].verdict == "safe"  # the audit passes: the bytes are data
        with pytest.raises(sp.FormatError, match="xgboost model"):
            sp.convert(src, tmp / "b.sp")


def test_lightgbm_text_checks(tmp: Path) -> None:
    model = MODELS["lgb_regressor"]
    text = model.booster_.model_to_string()
    m = re.search(r"split_feature=(\d+)", text)
    assert m is not None
    state = model.booster_.__getstate__()
    state["_handle"] = text.replace(m.group(0), "split_feature=77", 1)
    src = tmp / "l.pkl"
    src.write_bytes(pickle.dumps(_Reduced((copyreg.__newobj__, (lgb.basic.Booster,), state)), 1))
    with pytest.raises(sp.FormatError, match="splits on feature 77"):
        sp.convert(src, tmp / "l.sp")
    assert not (tmp / "l.sp").exists()


def test_hostile_values_inside_the_state_are_audited(tmp: Path) -> None:
    from convert_payloads import Evil

    model = pickle.loads(pickle.dumps(MODELS["xgb_classifier"]))
    model.extra = Evil(str(tmp / "canary"))
    src = tmp / "x.pkl"
    src.write_bytes(pickle.dumps(model, protocol=5))
    with pytest.raises(sp.UntrustedTypesError) as info:
        sp.convert(src, tmp / "x.sp")
    assert info.value.types == ["posix.system"]
    assert not (tmp / "canary").exists()


@pytest.mark.parametrize(
    "rv",
    [
        # the wrapper called with arguments chosen by the file: a call, never made
        lambda: (xgb.XGBClassifier, (), None),
        lambda: (lgb.LGBMClassifier, ("gbdt",)),
        # a booster built with arguments, or given items / two states
        lambda: (copyreg.__newobj__, (xgb.core.Booster, 1), {"handle": None}),
    ],
)
def test_other_shapes_are_refused(tmp: Path, rv: Any) -> None:
    src = tmp / "x.pkl"
    src.write_bytes(pickle.dumps(_Reduced(rv()), protocol=1))
    with pytest.raises(sp.SafepointError):
        sp.convert(src, tmp / "x.sp")
    assert sp.scan([src])[0].verdict != "safe"


@pytest.mark.parametrize("attr", ["predict", "get_booster", "feature_importances_"])
def test_attributes_hiding_methods_are_refused(tmp: Path, attr: str) -> None:
    """A fitted attribute named like a method or property would stand in for it."""
    model = pickle.loads(pickle.dumps(MODELS["xgb_classifier"]))
    state = dict(vars(model))
    state[attr] = [1, 2]
    rv = (copyreg.__newobj__, (xgb.XGBClassifier,), state)
    src = tmp / "x.pkl"
    src.write_bytes(pickle.dumps(_Reduced(rv), protocol=1))
    with pytest.raises(sp.FormatError, match="hides the class"):
        sp.convert(src, tmp / "x.sp")


def test_a_wrapper_must_hold_its_own_framework_booster(tmp: Path) -> None:
    state = dict(vars(pickle.loads(pickle.dumps(MODELS["lgb_classifier"]))))
    state["_Booster"] = MODELS["xgb_booster"]
    rv = (copyreg.__newobj__, (lgb.LGBMClassifier,), state)
    src = tmp / "x.pkl"
    src.write_bytes(pickle.dumps(_Reduced(rv), protocol=1))
    with pytest.raises(sp.FormatError, match="lightgbm Booster"):
        sp.convert(src, tmp / "x.sp")
