"""H2O adapter: the MOJO by default, the binary model only when trusted by name.

Without a cluster: binary-only files are refused unless ``trusted=["h2o:binary"]``, saving a
model with no MOJO asks for ``with_binary``, MOJO scoring in a Java process. With a real
cluster (slow, starts a JVM): the default round trip through the MOJO, the binary model with
the trust token, and a binary-only file refused without it while the cluster gains no model.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import numpy as np
import pytest

import safepoint as sp
from safepoint.adapters import _common
from safepoint.adapters.h2o import (
    BINARY,
    H2OMojo,
    check_version,
    installed_version,
    mojo_from,
    with_binary,
)
from safepoint.adapters.registry import trust_tokens

h2o = pytest.importorskip("h2o")
pd = pytest.importorskip("pandas")


def _zip() -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        z.writestr("model.ini", "[info]\nalgo = gbm\n")
    return bio.getvalue()


def test_version_is_checked_before_loading():
    check_version(installed_version())  # same version: fine
    with pytest.raises(sp.AdapterError, match=r"only on the same version.*h2o==3\.0\.0\.1"):
        check_version("3.0.0.1")


def test_mojo_value_round_trip_and_extraction(tmp_path):
    mojo = H2OMojo(_zip(), "3.46.0.11", "gbm")
    path = tmp_path / "m.sp"
    sp.dump(mojo, path)
    back = sp.load(path)
    assert isinstance(back, H2OMojo) and back.data == mojo.data and back.algo == "gbm"
    assert mojo_from(path).data == mojo.data
    info = sp.inspect(path)
    assert info.types == [
        {"name": "safepoint.adapters.h2o.H2OMojo", "kind": "adapter", "trusted": True}
    ]
    with pytest.raises(sp.FormatError, match="zip"):
        H2OMojo(b"not a zip")


class _Model:
    """Stands in for an H2O model: what an attacker, or an algorithm without MOJO, gives."""

    __module__ = "h2o.estimators.gbm"
    __qualname__ = "H2OGradientBoostingEstimator"
    have_mojo = False
    algo = "gbm"


#: the magic of a Java serialization stream: what h2o.upload_model would deserialize
JAVA_STREAM = b"\xac\xed\x00\x05" + b"\x00" * 60


def _binary_only(path, monkeypatch) -> None:
    """A file whose H2O model is only a binary model (crafted without a cluster)."""

    with monkeypatch.context() as m:
        m.setattr(h2o, "save_model", lambda model, path, filename, force: _write(path, filename))
        sp.dump(with_binary(_Model()), path)


def test_h2o_binary_is_a_declared_trust_token():
    assert "Java deserialization" in trust_tokens()[BINARY]
    assert BINARY == "h2o:binary"
    with pytest.raises(RuntimeError, match="not a declared trust token"):
        _common.trusts(object(), "h2o:everything")  # type: ignore[arg-type]


def test_a_binary_only_model_needs_the_trust_token(tmp_path, monkeypatch):
    path = tmp_path / "bin.sp"
    _binary_only(path, monkeypatch)
    # refused before any cluster, version or upload is looked at
    for load in (lambda: sp.load(path), lambda: sp.loads(path.read_bytes())):
        with pytest.raises(sp.UntrustedTypesError, match=r"trusted=\['h2o:binary'\]") as err:
            load()
        assert err.value.types == ["h2o:binary"]
        assert "Java deserialization" in str(err.value)
    store = sp.Store(str(tmp_path / "store"))
    with monkeypatch.context() as m:
        m.setattr(h2o, "save_model", lambda model, path, filename, force: _write(path, filename))
        store.put("m", with_binary(_Model()))
    with pytest.raises(sp.UntrustedTypesError, match="h2o:binary"):
        store.get("m")
    # trusted: it goes on to the binary path, which needs a cluster (none here)
    if h2o.connection() is None or not h2o.connection().connected:
        with pytest.raises(sp.AdapterError, match="running H2O cluster"):
            sp.load(path, trusted=["h2o:binary"])
        with pytest.raises(sp.AdapterError, match="running H2O cluster"):
            store.get("m", trusted=[BINARY])


def _write(path, filename):
    out = os.path.join(path, filename)
    with open(out, "wb") as f:
        f.write(JAVA_STREAM)
    return out


def test_saving_a_model_without_mojo_asks_for_with_binary(tmp_path):
    with pytest.raises(sp.SerializationError, match=r"with_binary\(model\).*h2o:binary"):
        sp.dump(_Model(), tmp_path / "m.sp")
    assert not (tmp_path / "m.sp").exists()
    with pytest.raises(sp.SerializationError, match="takes an H2O model"):
        with_binary(object())


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("java") is None:
        pytest.skip("H2O needs Java (no java on PATH)")
    h2o.init(nthreads=1, max_mem_size="1G", verbose=False)
    h2o.no_progress()
    yield h2o
    h2o.cluster().shutdown()


FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "adapters", "h2o_gbm_mojo.sp")


def test_mojo_scores_without_a_cluster():
    """A MOJO made by tests/data/adapters/make_h2o_mojo.py, scored by a Java process with no
    H2O cluster running, reproduces the cluster's predictions stored beside it."""
    if shutil.which("java") is None:
        pytest.skip("MOJO scoring needs Java")
    data = sp.load(FIXTURE)
    assert h2o.connection() is None or not h2o.connection().connected
    scored = data["mojo"].predict(data["X"])
    assert list(scored["predict"].astype(str)) == data["cluster_predict"]
    np.testing.assert_allclose(scored["yes"].astype(float), data["cluster_yes"], rtol=1e-6)


def _gbm():
    from h2o.estimators import H2OGradientBoostingEstimator

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = np.where(df["a"] + df["b"] > 0, "yes", "no")
    frame = h2o.H2OFrame(df)
    frame["y"] = frame["y"].asfactor()
    gbm = H2OGradientBoostingEstimator(ntrees=10, max_depth=3, seed=1)
    gbm.train(x=["a", "b"], y="y", training_frame=frame)
    return gbm, df, frame


def _same(got, want) -> None:
    assert list(got["predict"].astype(str)) == list(want["predict"].astype(str))
    np.testing.assert_allclose(got["yes"].astype(float), want["yes"].astype(float), rtol=1e-6)


@pytest.mark.slow
def test_models_round_trip_through_the_mojo_and_the_trusted_binary(cluster, tmp_path):
    from h2o.estimators import H2OGenericEstimator, H2OGradientBoostingEstimator

    gbm, df, frame = _gbm()
    want = gbm.predict(frame).as_data_frame()
    store = sp.Store(str(tmp_path / "store"))
    store.put("churn/h2o", gbm)  # the MOJO only
    store.put("churn/h2o-bin", with_binary(gbm))  # MOJO + binary
    store.put("churn/h2o-mojo", H2OMojo.from_model(gbm))
    info = store.inspect("churn/h2o")
    assert info.environment["packages"]["h2o"] == h2o.__version__

    back = store.get("churn/h2o")  # default: the MOJO, as a generic model in the cluster
    assert isinstance(back, H2OGenericEstimator)
    _same(back.predict(frame).as_data_frame(), want)
    # a binary stored beside the MOJO is not read without the token
    assert isinstance(store.get("churn/h2o-bin"), H2OGenericEstimator)
    trusted = store.get("churn/h2o-bin", trusted=["h2o:binary"])
    assert isinstance(trusted, H2OGradientBoostingEstimator)
    _same(trusted.predict(frame).as_data_frame(), want)
    # a MOJO-only model: the token has nothing to allow
    assert isinstance(store.get("churn/h2o", trusted=[BINARY]), H2OGenericEstimator)

    # MOJO scoring runs in a Java process, not in the cluster
    mojo = store.get("churn/h2o-mojo")
    scored = mojo.predict(df[["a", "b"]])
    _same(scored, want)
    with store.open_blob("churn/h2o") as f:
        inner = mojo_from(f)  # a path (local store) or bytes; no cluster involved
    # downloaded at another moment: same entries, other zip timestamps
    names = zipfile.ZipFile(io.BytesIO(inner.data)).namelist()
    assert names == zipfile.ZipFile(io.BytesIO(mojo.data)).namelist()


@pytest.mark.slow
def test_a_binary_only_file_never_reaches_the_cluster_untrusted(cluster, tmp_path, monkeypatch):
    path = tmp_path / "bin.sp"
    _binary_only(path, monkeypatch)
    before = sorted(m["model_id"]["name"] for m in h2o.api("GET /3/Models")["models"])
    with pytest.raises(sp.UntrustedTypesError, match="h2o:binary"):
        sp.load(path)
    after = sorted(m["model_id"]["name"] for m in h2o.api("GET /3/Models")["models"])
    assert after == before  # nothing was uploaded or deserialized
    # trusted, the same bytes do go to H2O's deserializer (which rejects this stream)
    with pytest.raises(sp.FormatError, match="H2O could not load the stored binary model"):
        sp.load(path, trusted=["h2o:binary"])
