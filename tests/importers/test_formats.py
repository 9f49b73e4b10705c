"""Container details: joblib at every protocol, names of older numpy/Python versions,
safepoint files in scans."""

from __future__ import annotations

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest

import safepoint as sp


@pytest.mark.parametrize("protocol", range(6))
def test_joblib_every_protocol(tmp: Path, protocol: int) -> None:
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(40, 3)
    model = DecisionTreeClassifier().fit(X, (X[:, 0] > 0.5).astype(int))
    obj = {
        "model": model,
        "objects": np.array(["a", None, 2.5], dtype=object),
        "fortran": np.asfortranarray(rng.rand(3, 4)),
        "big_endian": np.arange(5, dtype=">i4"),
        "records": np.zeros(3, dtype=[("a", "<i8"), ("b", "<f4", (2,))]),
        "empty": np.zeros((0, 7)),
        "scalar": np.float32(1.25),
    }
    src = tmp / "obj.joblib"
    joblib.dump(obj, src, protocol=protocol)
    report = sp.convert(src, tmp / "obj.sp")
    assert report.format == "joblib"
    got = sp.load(tmp / "obj.sp")
    np.testing.assert_array_equal(got["model"].predict(X), model.predict(X))
    assert list(got["objects"]) == ["a", None, 2.5]
    assert got["fortran"].flags.f_contiguous
    np.testing.assert_array_equal(got["fortran"], obj["fortran"])
    assert got["big_endian"].dtype == np.dtype(">i4")
    assert got["records"].dtype == obj["records"].dtype
    assert got["empty"].shape == (0, 7)
    assert got["scalar"] == np.float32(1.25) and type(got["scalar"]) is np.float32


def test_old_numpy_module_names(tmp: Path) -> None:
    """Pickles written by numpy 1.x name numpy.core.*, not numpy._core.*."""
    data = pickle.dumps({"a": np.arange(3.0), "s": np.int64(7)}, protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != data
    src = tmp / "old.pkl"
    src.write_bytes(old)
    sp.convert(src, tmp / "old.sp")
    got = sp.load(tmp / "old.sp")
    np.testing.assert_array_equal(got["a"], np.arange(3.0))
    assert got["s"] == 7


def test_python2_names(tmp: Path) -> None:
    """Protocol 0-2 streams from Python 2 name __builtin__ and copy_reg; they are mapped
    by name (as pickle's fix_imports does), without importing anything."""
    data = (
        b"\x80\x02}q\x00(U\x01aq\x01c__builtin__\nset\nq\x02]q\x03(K\x01K\x02e\x85Rq\x04"
        b"U\x01bq\x05c__builtin__\nfrozenset\n]K\x03a\x85Ru."
    )
    src = tmp / "py2.pkl"
    src.write_bytes(data)
    report = sp.convert(src, tmp / "py2.sp")
    assert "builtins.set" in [t["name"] for t in report.types]
    assert sp.load(tmp / "py2.sp") == {"a": {1, 2}, "b": frozenset({3})}


def test_scan_reads_safepoint_files(tmp: Path) -> None:
    sp.dump({"w": np.arange(3)}, tmp / "ok.sp")
    [res] = sp.scan([tmp / "ok.sp"])
    assert res.format == "safepoint" and res.verdict == "safe"


def test_ordered_dict_is_kept(tmp: Path) -> None:
    """collections.OrderedDict is rebuilt by safepoint itself; the written file names
    it, so loading needs it trusted (safepoint's own default set does not list it)."""
    import collections

    src = tmp / "od.pkl"
    src.write_bytes(pickle.dumps(collections.OrderedDict(a=np.arange(2)), protocol=4))
    report = sp.convert(src, tmp / "od.sp")
    assert report.verdict == "converted"
    got = sp.load(tmp / "od.sp", trusted=["collections.OrderedDict"])
    assert list(got) == ["a"]
