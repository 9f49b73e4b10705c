"""``safepoint.format.open``: the handle on an open file (safetensors' ``safe_open``).

Real files on disk and real bytes; each test checks the handle agrees with the
one-call functions it backs (``sp.load``, ``sp.inspect``, ``sp.verify``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import safepoint as sp
from safepoint.format import SafepointFile


@pytest.fixture(scope="module")
def model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


@pytest.fixture
def path(tmp_path: Path, model: LogisticRegression) -> Path:
    p = tmp_path / "m.sp"
    sp.dump(model, p, metadata={"owner": "ds"}, golden=np.ones((3, 4)))
    return p


def test_open_reads_the_manifest_and_loads(path: Path, model: LogisticRegression) -> None:
    with sp.format.open(path) as f:
        assert isinstance(f, SafepointFile)
        assert not f.closed
        assert f.digest == sp.inspect(path).digest
        assert f.metadata == {"owner": "ds"}
        assert f.root_type.endswith("LogisticRegression")
        assert f.header["digest"] == f.digest
        assert f.header["size"] == path.stat().st_size
        assert f.header["format_version"] == f.format_version
        assert ("sklearn.linear_model._logistic", "LogisticRegression", "obj") in f.types
        assert "root" in f.manifest
        with pytest.raises(TypeError):
            f.manifest["root"] = None  # type: ignore[index]  # a read-only view
        assert f.inspect() == sp.inspect(path)
        assert f.untrusted_types() == []
        loaded = f.load()
        # one handle, several loads: each builds a new object
        again = f.load(mmap=True, verify_mapped=True)
    assert f.closed
    X = np.ones((3, 4))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(again.coef_, model.coef_)


def test_open_from_bytes_and_file_objects(path: Path) -> None:
    data = path.read_bytes()
    with sp.format.open(data) as a, sp.format.open(io.BytesIO(data)) as b:
        assert a.digest == b.digest
        assert a.inspect() == b.inspect()


def test_verify_matches_sp_verify(path: Path) -> None:
    with sp.format.open(path) as f:
        report = f.verify()
        quick = f.verify(golden=False)
    assert report == sp.verify(path)
    assert report.ok and report.golden
    # golden=False: checksums (and signature) only, the model is not built
    assert quick.ok and quick.golden == {}


def test_verify_with_a_key(tmp_path: Path) -> None:
    p = tmp_path / "signed.sp"
    sp.dump({"a": np.arange(4)}, p, key=b"k" * 32)
    with sp.format.open(p) as f:
        # what the block claims, named as a claim; a signature is reported only by checking it
        assert f.header["signature_claimed"] == "hmac-sha256"
        assert f.inspect().signed is None
        assert f.inspect(key=b"k" * 32).signed == "hmac-sha256"
        assert f.verify(key=b"k" * 32).ok
        assert not f.verify(key=b"x" * 32).ok
        assert f.load(key=b"k" * 32)["a"].tolist() == [0, 1, 2, 3]


def test_untrusted_types_refused_before_anything_is_built(tmp_path: Path) -> None:
    p = tmp_path / "frac.sp"
    from fractions import Fraction

    sp.dump(Fraction(1, 3), p)
    with sp.format.open(p) as f:
        assert f.untrusted_types() == ["fractions.Fraction"]
        assert f.inspect().untrusted == ["fractions.Fraction"]
        with pytest.raises(sp.UntrustedTypesError) as err:
            f.load()
        assert err.value.types == ["fractions.Fraction"]
        assert f.load(trusted=["fractions.Fraction"]) == Fraction(1, 3)


def test_use_after_close_is_a_clear_error(path: Path) -> None:
    f = sp.format.open(path)
    f.close()
    f.close()  # idempotent
    for use in (
        lambda: f.load(),
        lambda: f.inspect(),
        lambda: f.verify(),
        lambda: f.digest,
        lambda: f.manifest,
    ):
        with pytest.raises(sp.ClosedFileError, match="is closed") as err:
            use()
        assert isinstance(err.value, sp.SafepointError)
        assert isinstance(err.value, ValueError)
        assert "safepoint.format.open" in str(err.value)
    assert "closed" in repr(f)


def test_open_refuses_what_is_not_a_safepoint_file(tmp_path: Path) -> None:
    with pytest.raises(sp.FormatError):
        sp.format.open(b"not a safepoint file at all")
    with pytest.raises(sp.NotFoundError):
        sp.format.open(tmp_path / "missing.sp")


def test_limits_apply_when_opening(path: Path) -> None:
    with pytest.raises(sp.LimitExceededError):
        sp.format.open(path, limits=sp.Limits(max_manifest_bytes=64))


def test_env_policy_is_checked(path: Path) -> None:
    with sp.format.open(path) as f, pytest.raises(sp.EnvPolicyError):
        f.load(env="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["safepoint.format.file", "safepoint.format.registry", "safepoint._types"]
)
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
