"""Library drift: files written under older scikit-learn versions load here.

``tests/data/drift/sklearn-X.Y/`` holds models fitted and saved under an older
scikit-learn (with the numpy/scipy/pandas of its time) by
``tools/make_drift_files.py``, with ``expected.json``: the outputs they gave there
on fixed inputs (``inputs.sp``). Under the installed scikit-learn each file must
either load and give the same outputs (migrations in
``safepoint.format.sklearn.migrations`` map changed attributes), or fail with a
``FormatError`` that names the attribute, both versions and what to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from sklearn.base import clone

import safepoint as sp
from safepoint.format.migrations import version_tuple

DRIFT = Path(__file__).resolve().parents[1] / "data" / "drift"
VERSION_DIRS = sorted(DRIFT.glob("sklearn-*"))
HERE = sklearn.__version__

#: models whose state cannot be mapped onto scikit-learn >= 1.8, and what the error
#: must say (besides the attribute and both versions)
UNMAPPABLE_SINCE_1_8 = {
    "logistic_regression_ovr": ["multi_class='ovr'", "3 classes", "OneVsRestClassifier"],
    "logistic_regression_multinomial_binary": ["multi_class='multinomial'", "2 classes"],
}


def _expected(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "expected.json").read_text())


def _unmappable(name: str) -> bool:
    return name in UNMAPPABLE_SINCE_1_8 and version_tuple(HERE) >= (1, 8)


def _cases(mappable: bool) -> list[Any]:
    out = []
    for folder in VERSION_DIRS:
        for name in sorted(_expected(folder)["models"]):
            if _unmappable(name) != mappable:
                out.append(pytest.param(folder, name, id=f"{folder.name}/{name}"))
    return out


_inputs_cache: dict[Path, dict[str, Any]] = {}


def _inputs(folder: Path) -> dict[str, Any]:
    if folder not in _inputs_cache:
        # written under the old numpy/pandas too: loading it is part of the test
        _inputs_cache[folder] = sp.load(folder / "inputs.sp", env="ignore")
    return _inputs_cache[folder]


def _check_output(what: str, want: dict[str, Any], got: Any) -> None:
    if hasattr(got, "toarray"):
        got = got.toarray()
    got = np.asarray(got)
    assert list(got.shape) == want["shape"], what
    if want["dtype"] == "object":
        assert [str(v) for v in got.ravel()] == want["values"], what
        return
    exp = np.array(want["values"], dtype=np.dtype(want["dtype"])).reshape(want["shape"])
    if exp.dtype.kind in "fc":
        # same coefficients, other numpy/BLAS: rounding may differ in the last bits
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12, err_msg=what)
    else:
        np.testing.assert_array_equal(got, exp, err_msg=what)


def test_drift_fixtures_exist_for_two_older_minor_versions() -> None:
    versions = {_expected(d)["versions"]["scikit-learn"] for d in VERSION_DIRS}
    older = {v for v in versions if version_tuple(v)[:2] < version_tuple(HERE)[:2]}
    assert len({version_tuple(v)[:2] for v in older}) >= 2, versions
    for d in VERSION_DIRS:
        exp = _expected(d)
        assert not exp["failed"], f"{d.name}: models the writer could not save: {exp['failed']}"
        # the writer itself worked under the old version: save -> load -> same outputs
        bad = {
            n: m["same_version_roundtrip"]
            for n, m in exp["models"].items()
            if m["same_version_roundtrip"] != "identical"
        }
        assert not bad, bad


def test_drift_fixtures_stay_small() -> None:
    assert 0 < sum(p.stat().st_size for p in DRIFT.rglob("*") if p.is_file()) < 3 * 2**20


@pytest.mark.parametrize(("folder", "name"), _cases(mappable=True))
def test_drift_model_loads_with_identical_outputs(folder: Path, name: str) -> None:
    rec = _expected(folder)["models"][name]
    model = sp.load(folder / rec["file"], env="ignore")
    assert f"{type(model).__module__}.{type(model).__qualname__}" == rec["type"]
    X = _inputs(folder)[rec["input"]]
    for method, want in rec["outputs"].items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = getattr(model, method)(X)
        _check_output(f"{folder.name}/{name}.{method}", want, got)

    extras = rec.get("extras", {})
    if "estimators_samples_" in extras:
        # bootstrap draws recomputed from the stored seeds (OOB analyses use them)
        got = [s[:40].tolist() for s in model.estimators_samples_[:3]]
        assert got == extras["estimators_samples_"]
    if "get_feature_names_out" in extras:
        named = model[:-1] if hasattr(model, "steps") else model
        assert [str(x) for x in named.get_feature_names_out()] == extras["get_feature_names_out"]

    # parameters added to __init__ since (Pipeline.transform_input, 1.6) get their
    # default: get_params, repr and clone work as on a model fitted here
    assert repr(model)
    assert type(clone(model)) is type(model)
    assert model.get_params(deep=True)


@pytest.mark.parametrize(("folder", "name"), _cases(mappable=False))
def test_unmappable_drift_fails_with_an_explanation(folder: Path, name: str) -> None:
    rec = _expected(folder)["models"][name]
    written = _expected(folder)["versions"]["scikit-learn"]
    with pytest.raises(sp.FormatError) as info:
        sp.load(folder / rec["file"], env="ignore")
    msg = str(info.value)
    assert "LogisticRegression attribute multi_class changed" in msg
    assert f"scikit-learn {written} (file) and {HERE} (here)" in msg
    for part in UNMAPPABLE_SINCE_1_8[name]:
        assert part in msg
    assert (
        f"What to do: load the file with scikit-learn<1.8 (pip install 'scikit-learn=={written}')"
        in msg
    )
    assert "refit" in msg

    # verify explains it as well, instead of crashing
    report = sp.verify(folder / rec["file"])
    assert not report.ok
    assert any("multi_class" in p for p in report.problems)


def test_fixtures_still_exercise_every_migration() -> None:
    """Regenerated fixtures must keep the old shapes that the migrations map."""
    v15 = DRIFT / "sklearn-1.5"
    names = {t["name"]: t for t in sp.inspect(v15 / "ohe_pipeline.sp").types}
    removed = "sklearn.compose._column_transformer._RemainderColsList"
    assert removed in names and names[removed]["trusted"]
    kinds = {
        (t["name"], t["kind"]) for t in sp.inspect(v15 / "gradient_boosting_regressor.sp").types
    }
    assert ("sklearn._loss._loss.CyHalfSquaredError", "pyx") in kinds
    # no file names the bare extension module "_loss" (scikit-learn < 1.8 reports it)
    for d in VERSION_DIRS:
        for f in d.glob("*.sp"):
            assert not any(t["name"].startswith("_loss.") for t in sp.inspect(f).types), f


def _drift_file() -> tuple[Path, str]:
    folder = VERSION_DIRS[0]
    return folder / "standard_scaler.sp", _expected(folder)["versions"]["scikit-learn"]


def test_env_error_names_the_scikit_learn_versions() -> None:
    path, written = _drift_file()
    with pytest.raises(sp.EnvironmentMismatchError) as info:
        sp.load(path, env="error")
    assert f"scikit-learn {written} (file) vs {HERE} (here)" in str(info.value)


def test_env_warn_warns_and_loads() -> None:
    path, written = _drift_file()
    with pytest.warns(sp.EnvironmentMismatchWarning, match=rf"scikit-learn {written} \(file\)"):
        model = sp.load(path, env="warn")
    assert hasattr(model, "mean_")


def test_env_ignore_is_silent() -> None:
    path, _ = _drift_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sp.load(path, env="ignore")
    assert hasattr(model, "scale_")
    assert [str(w.message) for w in caught] == []


@pytest.mark.slow
def test_verify_reports_golden_outputs_of_drift_files() -> None:
    for folder in VERSION_DIRS:
        written = _expected(folder)["versions"]["scikit-learn"]
        for name in ("random_forest", "ohe_pipeline", "hist_gradient_boosting", "svc_sparse"):
            report = sp.verify(folder / f"{name}.sp")
            assert report.ok, (folder.name, name, report.problems)
            assert "predict" in report.golden
            assert all(v in ("identical", "within 1e-7") for v in report.golden.values())
            assert f"scikit-learn {written} (file) vs {HERE} (here)" in report.environment_diff


@pytest.mark.slow
def test_cli_verify_prints_golden_results_for_a_drift_file() -> None:
    folder = VERSION_DIRS[0]
    written = _expected(folder)["versions"]["scikit-learn"]
    out = subprocess.run(
        [sys.executable, "-m", "safepoint.cli", "verify", str(folder / "hgb_ordinal_pipeline.sp")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "golden predict: identical" in out.stdout
    assert "golden predict_proba:" in out.stdout
    assert f"scikit-learn {written} (file) vs {HERE} (here)" in out.stdout


# -- migrations facing crafted files ------------------------------------------------------
def _crafted(path: Path) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adversarial"))
    try:
        from spcraft import Crafted
    finally:
        sys.path.pop(0)
    return Crafted.from_bytes(path.read_bytes())


def test_a_removed_class_passes_the_audit_only_as_its_migration() -> None:
    c = _crafted(DRIFT / "sklearn-1.5" / "ohe_pipeline.sp")
    (node,) = c.find("_RemainderColsList")
    # a list of column indices becomes a plain list; anything else is refused
    node["s"] = {"@": "dict", "s": {"data": {"@": "list", "v": [{"@": "list", "v": [1]}]}}}
    with pytest.raises(sp.FormatError, match="remainder columns"):
        sp.loads(c.to_bytes(), env="ignore")
    # the old name as a function reference is not what the migration knows: untrusted
    c = _crafted(DRIFT / "sklearn-1.5" / "ohe_pipeline.sp")
    (node,) = c.find("_RemainderColsList")
    row = node["t"]
    c.manifest["types"][row][2] = "ref"
    node.clear()
    node.update({"@": "ref", "t": row})
    with pytest.raises(sp.UntrustedTypesError, match="_RemainderColsList"):
        sp.loads(c.to_bytes(), env="ignore")


def test_a_cython_loss_state_that_is_not_its_parameters_is_refused() -> None:
    c = _crafted(DRIFT / "sklearn-1.5" / "gradient_boosting_regressor.sp")
    (node,) = c.find("CyHalfSquaredError")
    assert node["@"] == "pyx"
    node["s"] = {"@": "tuple", "v": [1.0, 2.0, "x"]}
    with pytest.raises(sp.FormatError, match="CyHalfSquaredError written under scikit-learn"):
        sp.loads(c.to_bytes(), env="ignore")
