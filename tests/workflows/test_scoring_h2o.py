"""Scoring with H2O, for real: a GBM trained in a live H2O cluster on categorical columns;
its MOJO, from the store, scores records whose categorical columns are text (they are not
forced to numbers) with the cluster's own predictions; so does the cluster model itself."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pandas as pd
import pytest

import safepoint as sp
from safepoint.workflows.scoring import ScoringPipeline

h2o = pytest.importorskip("h2o")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="H2O needs Java on PATH"),
]
SCHEMA = "id: Int! @key, prediction: String!"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster():
    # a cluster of our own on a free port: never another process's H2O on 54321
    h2o.init(ip="127.0.0.1", port=_free_port(), nthreads=1, max_mem_size="1G", verbose=False)
    h2o.no_progress()
    yield h2o
    h2o.cluster().shutdown()


@pytest.fixture(scope="module")
def trained(cluster):
    from h2o.estimators import H2OGradientBoostingEstimator

    rng = np.random.default_rng(3)
    n = 300
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 10, size=n).round(1),
            "city": rng.choice(["paris", "lyon", "nice"], size=n),
            "plan": rng.choice(["basic", "pro"], size=n),
        }
    )
    score = (df.city == "paris") * 2.0 + (df.plan == "pro") - (df.age - 40) / 10
    df["churn"] = np.where(score + rng.normal(0, 0.3, size=n) > 1, "yes", "no")
    types = {"city": "enum", "plan": "enum", "churn": "enum"}
    frame = h2o.H2OFrame(df, column_types=types)
    gbm = H2OGradientBoostingEstimator(ntrees=10, max_depth=3, seed=1)
    gbm.train(x=["age", "city", "plan"], y="churn", training_frame=frame)
    want = gbm.predict(frame).as_data_frame()
    assert set(want["predict"].astype(str)) == {"yes", "no"}
    feats = df[["age", "city", "plan"]].copy()
    feats.insert(0, "id", np.arange(n))
    return gbm, feats, want["predict"].astype(str).to_numpy()


def test_stored_mojo_scores_text_categorical_columns(trained, tmp_path):
    from safepoint.adapters.h2o import H2OMojo

    gbm, feats, want = trained
    store = sp.Store(tmp_path / "store")
    store.put("churn/h2o-mojo", H2OMojo.from_model(gbm), alias="production")
    csv = tmp_path / "features.csv"
    feats.to_csv(csv, index=False)
    with open(csv, "a") as f:
        f.write("300,forty,paris,pro\n")  # a numeric column that is not a number
    p = ScoringPipeline("churn/h2o-mojo@production", store=store, batch_size=1000)
    p.write(p.apply(p.read(csv)), tmp_path / "out.parquet", schema=SCHEMA)
    report = p.run()
    assert (report.read, report.written, report.bad) == (301, 300, 1)
    got = pd.read_parquet(tmp_path / "out.parquet").sort_values("id")
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want)
    dead = [json.loads(x) for x in (tmp_path / "out.parquet.dead.jsonl").open()]
    assert [d["offset"] for d in dead] == [300] and "age" in dead[0]["error"]
    assert p.handle.signature["dtypes"] == {"age": "float64", "city": "object", "plan": "object"}


def test_mojo_and_cluster_model_score_parquet_records(trained, tmp_path):
    from safepoint.adapters.h2o import H2OMojo

    gbm, feats, want = trained
    feats.to_parquet(tmp_path / "features.parquet")
    mojo_file = tmp_path / "gbm.sp"
    sp.dump(H2OMojo.from_model(gbm), mojo_file)
    for model, name in ((mojo_file, "mojo"), (gbm, "cluster")):
        p = ScoringPipeline(model, batch_size=1000)
        p.write(p.apply(p.read(tmp_path / "features.parquet")), tmp_path / name, schema=SCHEMA)
        assert p.run().written == 300, name
        got = pd.read_parquet(tmp_path / name).sort_values("id")
        np.testing.assert_array_equal(got["prediction"].to_numpy(), want, err_msg=name)


def test_stored_h2o_model_scores_in_the_cluster_or_from_its_mojo_without_one(trained, tmp_path):
    import os
    import subprocess
    import sys

    gbm, feats, want = trained
    store = sp.Store(tmp_path / "store")
    store.put("churn/h2o", gbm, alias="production")
    csv = tmp_path / "features.csv"
    feats.to_csv(csv, index=False)

    # here a cluster runs: the model loads into it and is scored there
    p = ScoringPipeline("churn/h2o@production", store=store)
    p.write(p.apply(p.read(csv)), tmp_path / "in-cluster.parquet", schema=SCHEMA)
    assert p.run().written == 300
    assert type(p.model).__module__.startswith("h2o.")
    got = pd.read_parquet(tmp_path / "in-cluster.parquet").sort_values("id")
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want)

    # a fresh process has no cluster: the CLI scores the model's MOJO without one
    out = tmp_path / "no-cluster.parquet"
    args = [sys.executable, "-m", "safepoint.cli", "score", "-m", "churn/h2o@production"]
    args += ["--store", str(store.url), "-i", str(csv), "-o", str(out), "--schema", SCHEMA]
    r = subprocess.run(
        [*args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["written"] == 300
    got = pd.read_parquet(out).sort_values("id")
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want)
