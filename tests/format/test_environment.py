"""Environment checks compare what is installed, whatever the distribution is called."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet, no cache warm)."""
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_an_import_name_from_a_differently_named_distribution_is_installed() -> None:
    # `dateutil` is provided by the python-dateutil distribution (a pandas dependency)
    version = metadata.version("python-dateutil")
    out = _fresh(
        f"""
        import json, sys
        from safepoint.format.environment import _static, compare
        assert "dateutil" not in sys.modules
        rec = {{"python": _static()["python"], "packages": {{"dateutil": {version!r}}}}}
        print(json.dumps(compare(rec)))
        """
    )
    assert json.loads(out) == []


def test_a_missing_package_and_another_version_are_still_reported() -> None:
    out = _fresh(
        """
        import json
        from safepoint.format.environment import _static, compare
        rec = {"python": _static()["python"],
               "packages": {"no_such_package_xyz": "1.0", "dateutil": "0.0.1"}}
        print(json.dumps(compare(rec)))
        """
    )
    diffs = json.loads(out)
    assert "no_such_package_xyz 1.0 (file) is not installed here" in diffs
    assert any(d.startswith("dateutil 0.0.1 (file) vs ") for d in diffs)


@pytest.mark.slow
def test_xgboost_file_loads_with_env_error_where_it_was_written(tmp_path) -> None:
    """With the xgboost-cpu distribution (what docs/adapters.md recommends), a file
    written here loads here with env="error" and no warning."""
    pytest.importorskip("xgboost")
    path = tmp_path / "xgb.sp"
    _fresh(
        f"""
        import numpy as np, xgboost, safepoint as sp
        X = np.random.default_rng(0).random((50, 3)); y = (X[:, 0] > .5).astype(int)
        sp.dump(xgboost.XGBClassifier(n_estimators=3).fit(X, y), {str(path)!r})
        """
    )
    out = _fresh(
        f"""
        import json, warnings, safepoint as sp
        warnings.simplefilter("error")
        info = sp.inspect({str(path)!r})
        sp.load({str(path)!r}, env="error")
        print(json.dumps([info.environment["packages"], info.environment_diff]))
        """
    )
    packages, diffs = json.loads(out)
    assert "xgboost" in packages and diffs == []
