"""H2O adapter: binary model + MOJO with the H2O version; MOJO scoring without a cluster."""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import numpy as np
import pytest

import safepoint as sp
from safepoint.adapters.h2o import H2OMojo, check_version, installed_version, mojo_from

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


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("SAFEPOINT_FULL") != "1":
        pytest.skip("H2O cluster test: set SAFEPOINT_FULL=1 to run it (starts a JVM)")
    if shutil.which("java") is None:
        pytest.skip("H2O needs Java")
    h2o.init(nthreads=2, max_mem_size="1G", verbose=False)
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


@pytest.mark.slow
def test_binary_and_mojo_in_the_store(cluster, tmp_path):
    from h2o.estimators import H2OGradientBoostingEstimator

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = np.where(df["a"] + df["b"] > 0, "yes", "no")
    frame = h2o.H2OFrame(df)
    frame["y"] = frame["y"].asfactor()
    gbm = H2OGradientBoostingEstimator(ntrees=10, max_depth=3, seed=1)
    gbm.train(x=["a", "b"], y="y", training_frame=frame)
    want = gbm.predict(frame).as_data_frame()

    store = sp.Store(str(tmp_path / "store"))
    store.put("churn/h2o", gbm)
    store.put("churn/h2o-mojo", H2OMojo.from_model(gbm))
    info = store.inspect("churn/h2o")
    assert info.environment["packages"]["h2o"] == h2o.__version__

    back = store.get("churn/h2o")  # binary: into the running cluster
    got = back.predict(frame).as_data_frame()
    pd.testing.assert_frame_equal(got, want)

    # MOJO scoring runs in a Java process, not in the cluster
    mojo = store.get("churn/h2o-mojo")
    scored = mojo.predict(df[["a", "b"]])
    assert list(scored["predict"].astype(str)) == list(want["predict"].astype(str))
    np.testing.assert_allclose(scored["yes"].astype(float), want["yes"], rtol=1e-6)
    with store.open_blob("churn/h2o") as f:
        inner = mojo_from(f)  # a path (local store) or bytes; no cluster involved
    # downloaded at another moment: same entries, other zip timestamps
    names = zipfile.ZipFile(io.BytesIO(inner.data)).namelist()
    assert names == zipfile.ZipFile(io.BytesIO(mojo.data)).namelist()
