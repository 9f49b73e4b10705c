"""The compatibility promise: every release reads every earlier format version.

``tests/data/format-X.Y/`` holds files written by the release that introduced format
version X.Y (``tools/make_golden_files.py``), frozen since, and ``expected.json``:
a canonical description of every stored value and each model's outputs on fixed
inputs. Here the *current* code loads each of them and must reproduce both.

If one of these tests fails after a change to the format code, the change broke
files that users already have. Before format X.Y is released, regenerating its
folder with ``--force`` is acceptable; after, keep the old decoding path (or bump
``FORMAT_MINOR`` and add new golden files for the new version alongside).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden_util import describe

import safepoint as sp
from safepoint.format import spec

DATA = Path(__file__).resolve().parents[1] / "data"
VERSION_DIRS = sorted(DATA.glob("format-*"))


def _expected(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "expected.json").read_text())


def _cases() -> list[Any]:
    cases = []
    for folder in VERSION_DIRS:
        for name in sorted(_expected(folder)["files"]):
            cases.append(pytest.param(folder, name, id=f"{folder.name}/{name}"))
    return cases


def _load(path: Path, rec: dict[str, Any], **kw: Any) -> Any:
    key = bytes.fromhex(rec["key_hex"]) if "key_hex" in rec else None
    return sp.load(path, env="ignore", key=key, **kw)


def _inputs(folder: Path) -> dict[str, Any]:
    return sp.load(folder / "inputs.sp", env="ignore")


def _assert_outputs(name: str, want: dict[str, Any], got: Any) -> None:
    if hasattr(got, "toarray"):
        got = got.toarray()
    got = np.asarray(got)
    assert list(got.shape) == want["shape"], f"{name}: shape"
    if want["dtype"] == "object":
        assert [str(v) for v in got.ravel()] == want["values"], name
        return
    expected = np.array(want["values"], dtype=np.dtype(want["dtype"])).reshape(want["shape"])
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-12, err_msg=name)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_every_readable_format_version_has_golden_files() -> None:
    have = {tuple(int(p) for p in d.name.removeprefix("format-").split(".")) for d in VERSION_DIRS}
    missing = sorted(set(spec.READABLE_VERSIONS) - have)
    assert not missing, (
        f"format version(s) {missing} can be read but have no golden files: run "
        "tools/make_golden_files.py when introducing a format version"
    )
    assert (spec.FORMAT_MAJOR, spec.FORMAT_MINOR) in have


def test_golden_files_stay_small() -> None:
    total = sum(p.stat().st_size for d in VERSION_DIRS for p in d.iterdir())
    assert 0 < total < 2 * 2**20


@pytest.mark.parametrize(("folder", "name"), _cases())
def test_golden_file_loads_with_current_code(folder: Path, name: str) -> None:
    rec = _expected(folder)["files"][name]
    path = folder / rec["file"]
    version = folder.name.removeprefix("format-")

    info = sp.inspect(path)
    assert info.format_version == version == rec["format_version"]
    assert info.root_type == rec["root_type"]
    assert sorted(t["name"] for t in info.types) == rec["types"]
    assert info.untrusted == [], "a golden file must load under the default trust set"
    assert info.metadata == rec["metadata"]
    # a signature is reported only by checking it; without a key, as a claim
    assert info.signed is None
    assert info.signature_claimed == rec["signed"]
    assert info.compressed_buffers == rec["compressed_buffers"]

    # a file written elsewhere loads by default (env="warn" warns at most)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sp.EnvironmentMismatchWarning)
        obj = _load(path, rec) if "key_hex" in rec else sp.load(path)

    kind = rec["kind"]
    if kind == "data":
        assert describe(obj) == rec["value"]
    elif kind == "compressed":
        assert rec["compressed_buffers"] > 0
        assert describe({k: v for k, v in obj.items() if k != "model"}) == rec["value"]
        X = _inputs(folder)[rec["input"]]
        _assert_outputs(name, rec["outputs"]["predict_proba"], obj["model"].predict_proba(X))
    else:
        X = _inputs(folder)[rec["input"]]
        for method, want in rec["outputs"].items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = getattr(obj, method)(X)
            _assert_outputs(f"{name}.{method}", want, got)


def test_builtins_golden_keeps_shared_references() -> None:
    for folder in VERSION_DIRS:
        out = sp.load(folder / "builtins.sp", env="ignore")
        assert out["shared_a"] is out["shared_b"]
        assert math.isnan(out["floats"][3]) and math.copysign(1, out["floats"][1]) < 0


@pytest.mark.parametrize(("folder", "name"), _cases())
def test_golden_file_checksums_and_golden_outputs_verify(folder: Path, name: str) -> None:
    rec = _expected(folder)["files"][name]
    key = bytes.fromhex(rec["key_hex"]) if "key_hex" in rec else None
    report = sp.verify(folder / rec["file"], key=key)
    assert report.ok, report.problems
    assert report.checked_buffers > 0 or name == "builtins"
    if rec["kind"] == "model":
        assert set(report.golden) == set(rec["outputs"])
        assert all(v in ("identical", "within 1e-7") for v in report.golden.values())
    if key is not None:
        assert report.signed == rec["signed"] == "hmac-sha256"


def test_signed_golden_file_rejects_the_wrong_key() -> None:
    for folder in VERSION_DIRS:
        rec = _expected(folder)["files"]["signed_hmac"]
        right = bytes.fromhex(rec["key_hex"])
        with pytest.raises(sp.IntegrityError):
            sp.load(folder / rec["file"], env="ignore", key=right[::-1])
        assert sp.load(folder / rec["file"], env="ignore", key=right) is not None


def test_golden_files_load_memory_mapped() -> None:
    # mmap=True is a different read path (views on the file): same values
    for folder in VERSION_DIRS:
        rec = _expected(folder)["files"]["numpy"]
        assert describe(sp.load(folder / "numpy.sp", env="ignore", mmap=True)) == rec["value"]
