"""Scoring with Spark, for real (Java + pyspark, local[2]):

* a stored Spark ``PipelineModel`` scores a file with ``safepoint score`` in a fresh
  process that has no Spark session (the pipeline starts a local one);
* ``score --engine spark`` / ``score_on_spark`` score a Parquet dataset with a
  scikit-learn model from the store through ``mapInPandas``, one model load per
  Python worker, one commit per row group; a real ``kill -9`` of the driver process
  and a resume leave every record exactly once.

Each JVM takes 20-60 s to start on a loaded 2-core machine: the module shares one
session, and starts two more in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import safepoint as sp

pytest.importorskip("pyspark")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java on PATH"),
]
SCHEMA = "id: Int! @key, prediction: Float!"
COLS = [f"f{i}" for i in range(4)]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    s = (
        SparkSession.builder.master("local[2]")
        .appName("safepoint-scoring-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "safepoint.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )


# -- a Spark model in the ordinary pipeline ---------------------------------------------------
def test_stored_spark_pipeline_model_scores_a_file_by_default(spark, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression as SparkLR
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    rng = np.random.default_rng(0)
    n = 400
    train = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "cat": rng.choice(["red", "green", "blue"], size=n),
        }
    )
    train["label"] = ((train.a + (train.cat == "red") * 1.5 + 0.3 * train.b) > 0.5).astype(float)
    model = Pipeline(
        stages=[
            StringIndexer(inputCol="cat", outputCol="cat_i"),
            VectorAssembler(inputCols=["a", "b", "cat_i"], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features"),
            SparkLR(maxIter=20),
        ]
    ).fit(spark.createDataFrame(train))
    store = sp.Store(tmp_path / "store")
    store.put("churn/spark", model, alias="production")

    # the file to score: the 400 records (text, as in a CSV), then two bad ones
    feats = train[["a", "b", "cat"]].copy()
    feats.insert(0, "id", np.arange(n))
    want = (
        model.transform(spark.createDataFrame(feats))
        .select("id", "prediction")
        .toPandas()
        .sort_values("id")
    )
    assert want["prediction"].nunique() == 2  # a model that tells classes apart
    csv = tmp_path / "features.csv"
    feats.to_csv(csv, index=False)
    with open(csv, "a") as f:
        f.write("400,not-a-number,0.1,red\n")  # not a number for a numeric input
        f.write("401,0.5,0.1,purple\n")  # a category the StringIndexer never saw
    out = tmp_path / "predictions.parquet"
    args = ["score", "-m", "churn/spark@production", "--store", str(store.url), "-i", str(csv)]
    r = _cli(*args, "-o", str(out), "--schema", SCHEMA, "--batch-size", "250", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert (summary["read"], summary["written"], summary["bad"]) == (402, 400, 2)
    got = pd.read_parquet(out).sort_values("id")
    np.testing.assert_array_equal(got["id"], want["id"])
    np.testing.assert_array_equal(got["prediction"], want["prediction"])
    dead = [json.loads(x) for x in (tmp_path / "predictions.parquet.dead.jsonl").open()]
    assert [d["offset"] for d in dead] == [400, 401]
    assert "not a number" in dead[0]["error"]
    assert "purple" in dead[1]["error"] or "Unseen label" in dead[1]["error"], dead[1]


def test_spark_stage_inputs_are_read_from_the_model(spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression as SparkLR
    from pyspark.ml.feature import SQLTransformer, StringIndexer, VectorAssembler

    from safepoint.workflows.scoring.spark_scoring import spark_inputs

    df = spark.createDataFrame(
        [(float(i % 5), f"c{i % 3}", ["no", "yes"][i % 2]) for i in range(30)],
        ["x", "cat", "churn"],
    )
    model = Pipeline(
        stages=[
            StringIndexer(inputCol="churn", outputCol="label"),  # training only
            StringIndexer(inputCol="cat", outputCol="cat_i"),
            VectorAssembler(inputCols=["x", "cat_i"], outputCol="features"),
            SparkLR(maxIter=5),
        ]
    ).fit(df)
    assert spark_inputs(model) == {"cat": "string", "x": "float64"}
    # and Spark agrees: records without the label score
    scored = model.transform(df.drop("churn")).select("prediction").collect()
    assert len(scored) == 30
    bare = model.stages[-1]  # a predictor alone reads a vector no file has
    with pytest.raises(sp.SchemaError, match="vector column"):
        sp.workflows.scoring.model.ObjectModelHandle(bare)
    opaque = Pipeline(stages=[SQLTransformer(statement="SELECT *, x * 2 AS y FROM __THIS__")])
    assert spark_inputs(opaque.fit(df)) is None  # its inputs are in SQL: columns go as read


# -- scale out: score_on_spark / --engine spark ----------------------------------------------
def _dataset(folder, files=4, groups=3, rows=25, seed=1):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    at = 0
    for k in range(files):
        df = pd.DataFrame(rng.random((groups * rows, len(COLS))), columns=COLS)
        df.insert(0, "id", np.arange(at, at + len(df)))
        at += len(df)
        df.to_parquet(folder / f"part-{k}.parquet", row_group_size=rows)
    return pd.concat(pd.read_parquet(folder / f"part-{k}.parquet") for k in range(files))


@pytest.fixture
def sklearn_store(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((300, len(COLS))), columns=COLS)
    clf = LogisticRegression().fit(X, (X.f0 + X.f1 > 1).astype(int))
    store = sp.Store(tmp_path / "store")
    store.put("fraud/clf", clf, alias="production")
    return store, clf


def test_score_on_spark_commits_per_row_group_and_loads_the_model_once_per_worker(
    spark, sklearn_store, tmp_path
):
    from safepoint.workflows.scoring.spark_engine import score_on_spark

    store, clf = sklearn_store
    feats = _dataset(tmp_path / "features")
    first = pd.read_parquet(tmp_path / "features" / "part-0.parquet")
    first.loc[first.id == 7, "f2"] = np.nan  # a missing feature: a dead letter, not a crash
    first.to_parquet(tmp_path / "features" / "part-0.parquet", row_group_size=25)
    out = tmp_path / "predictions"
    r = score_on_spark(
        spark, "fraud/clf@production", store, tmp_path / "features", out, schema=SCHEMA
    )
    assert (r.units, r.units_total, r.read, r.written, r.bad) == (12, 12, 300, 299, 1)
    # each Python worker that scored loaded the model exactly once
    assert r.model_loads and set(r.model_loads.values()) == {1}
    assert len(r.model_loads) <= 2  # local[2]: at most two Python workers
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 12
    got = pd.read_parquet(out).sort_values("id")
    good = feats[feats.id != 7].sort_values("id")
    np.testing.assert_array_equal(got["id"], good["id"])
    np.testing.assert_array_equal(got["prediction"], clf.predict(good[COLS]))
    dead = [json.loads(x) for p in (out / "_dead").glob("*.jsonl") for x in p.open()]
    assert [(d["source"], d["offset"]) for d in dead] == [("part-0.parquet", 7)]
    run = store.runs.list(kind="scoring")[0]
    assert run.status == "succeeded" and run.state["counts"]["written"] == 299

    again = score_on_spark(spark, "fraud/clf@production", store, tmp_path / "features", out)
    assert again.already_complete and again.read == 0 and again.committed["written"] == 299


def test_engine_spark_cli_refuses_what_it_cannot_do(sklearn_store, tmp_path):
    from safepoint.cli.main import _register_commands, cli

    store, _ = sklearn_store
    _register_commands()
    base = ["score", "--engine", "spark", "--store", str(store.url), "-i", str(tmp_path)]
    r = CliRunner().invoke(cli, [*base, "-m", "fraud/clf", "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 2 and "give a folder" in r.output
    r = CliRunner().invoke(cli, [*base, "-m", "fraud/clf", "-o", "o", "--follow"])
    assert r.exit_code == 2 and "--follow" in r.output
    r = CliRunner().invoke(cli, [*base, "-m", str(tmp_path / "m.sp"), "-o", "o"])
    assert r.exit_code == 2 and "from the store" in r.output


DRIVER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from safepoint.workflows.scoring.spark_engine import score_on_spark
    from safepoint.workflows.scoring.spark_scoring import ensure_session

    store, src, out = sys.argv[1:4]

    def slow(df, clf):
        time.sleep(0.4)  # slow enough to be killed half way
        return pd.DataFrame({"id": df["id"], "prediction": clf.predict(df.drop(columns="id"))})

    spark = ensure_session("local[2]")
    print("STARTED", flush=True)
    r = score_on_spark(spark, "fraud/clf@production", store, src, out,
                       schema="id: Int! @key, prediction: Float!", fn=slow, batch=True)
    print("DONE", r.read, flush=True)
    """
)


def test_kill_minus_nine_of_the_driver_then_resume_exactly_once(spark, sklearn_store, tmp_path):
    store, clf = sklearn_store
    feats = _dataset(tmp_path / "features", files=6, groups=5, rows=20)  # 30 row groups
    out = tmp_path / "predictions"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store.url), str(tmp_path / "features"), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        start_new_session=True,  # its JVM and Python workers: cleaned up at the end
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("part-*.parquet"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the driver process, mid-job
        proc.wait()
        committed = len(list(out.glob("part-*.parquet")))
        assert 3 <= committed < 30, committed
    finally:
        time.sleep(1)  # the JVM notices its driver is gone; what is left is killed
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # the resume: the CLI, in this process's Spark session
    from safepoint.cli.main import _register_commands, cli

    _register_commands()
    args = ["score", "--engine", "spark", "-m", "fraud/clf@production", "--store", str(store.url)]
    args += ["-i", str(tmp_path / "features"), "-o", str(out), "--schema", SCHEMA, "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["row_groups_skipped"] >= committed
    assert summary["row_groups"] + summary["row_groups_skipped"] == 30
    assert summary["read"] <= 600 - 20 * committed  # committed row groups were not redone
    assert summary["committed"]["written"] == 600
    got = pd.read_parquet(out)
    ids = got["id"].to_numpy()
    assert len(ids) == 600 and len(set(ids.tolist())) == 600, "a record lost or written twice"
    got = got.sort_values("id")
    np.testing.assert_array_equal(got["prediction"], clf.predict(feats.sort_values("id")[COLS]))
