"""Spark ML adapter: a PipelineModel as its saved directory, in one store version, loaded back
in another process on local[2] with identical predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import safepoint as sp
from safepoint.adapters.files import pack, unpack
from safepoint.adapters.spark import check_metadata

ROWS = [(float(i % 7), float((i * 3) % 5), float(i % 2), f"c{i % 3}") for i in range(60)]


def _java_ok() -> bool:
    import shutil

    return shutil.which("java") is not None


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if os.environ.get("SAFEPOINT_FULL") != "1":
        # two JVMs (this process and a fresh one): ~1 min on an idle 2-core machine, several
        # under load; docs/adapters.md says how to run it
        pytest.skip("Spark end-to-end test: set SAFEPOINT_FULL=1 to run it")
    if not _java_ok():
        pytest.skip("Spark needs Java")
    from pyspark.sql import SparkSession

    s = (
        SparkSession.builder.master("local[2]")
        .appName("safepoint-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield s
    s.stop()


def _predictions(model, spark) -> list[list[float]]:
    df = spark.createDataFrame(ROWS, ["a", "b", "label", "cat"])
    out = model.transform(df).select("probability", "prediction").collect()
    return [[*r["probability"].toArray().tolist(), r["prediction"]] for r in out]


@pytest.mark.slow
def test_pipeline_model_in_another_process(spark, tmp_path):
    import pyspark
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    df = spark.createDataFrame(ROWS, ["a", "b", "label", "cat"])
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="cat", outputCol="cat_i"),
            VectorAssembler(inputCols=["a", "b", "cat_i"], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features"),
            LogisticRegression(maxIter=20),
        ]
    )
    model = pipeline.fit(df)
    store = sp.Store(str(tmp_path / "store"))
    mv = store.put("churn/spark", model, alias="production")
    assert len(store.versions("churn/spark")) == 1  # one version holds the whole directory
    info = store.inspect("churn/spark@production")
    assert info.types == [
        {"name": "pyspark.ml.pipeline.PipelineModel", "kind": "adapter", "trusted": True}
    ]
    assert info.environment["packages"]["pyspark"] == pyspark.__version__
    want = _predictions(model, spark)
    script = textwrap.dedent(
        f"""
        import json, sys
        import safepoint as sp
        from pyspark.sql import SparkSession
        store = sp.Store({str(tmp_path / "store")!r})
        try:
            store.get("churn/spark", {mv.version})
        except sp.AdapterError as e:
            print("NO-SESSION", e, file=sys.stderr)
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .getOrCreate())
        model = store.get("churn/spark", "production")
        df = spark.createDataFrame({ROWS!r}, ["a", "b", "label", "cat"])
        out = model.transform(df).select("probability", "prediction").collect()
        json.dump([[*r["probability"].toArray().tolist(), r["prediction"]] for r in out],
                  sys.stdout)
        spark.stop()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-SESSION" in proc.stderr and "SparkSession" in proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == want


@pytest.mark.parametrize(
    "rel",
    ["/etc/passwd", "../escape", "a/../../b", "a//b", "a\\b", "./a"],
)
def test_unpack_refuses_unsafe_paths(tmp_path, rel):
    with pytest.raises(sp.FormatError):
        unpack([(rel, b"x")], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pack_unpack_round_trip(tmp_path):
    src = tmp_path / "src"
    (src / "metadata").mkdir(parents=True)
    (src / "metadata" / "part-00000").write_text('{"class": "pyspark.ml.pipeline.PipelineModel"}')
    (src / "stages" / "0_x" / "data").mkdir(parents=True)
    (src / "stages" / "0_x" / "data" / "p.parquet").write_bytes(b"\x00\x01")
    entries = pack(src)
    check_metadata(entries)
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(entries, dest)
    assert pack(dest) == entries
    with pytest.raises(sp.FormatError, match="appears twice"):
        unpack(entries + entries[:1], tmp_path / "dest2")


@pytest.mark.parametrize(
    "cls", ["os.system", "pyspark.sql.SparkSession", "org.apache.spark.sql.Foo", None, 3]
)
def test_metadata_naming_a_foreign_class_is_refused(cls):
    entries = [("stages/0_a/metadata/part-00000", json.dumps({"class": cls}).encode())]
    with pytest.raises(sp.FormatError, match="not a Spark ML class"):
        check_metadata(entries)
