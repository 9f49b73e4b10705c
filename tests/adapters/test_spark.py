"""Spark ML adapter: a PipelineModel as its saved directory, in one store version.

* The checker (no JVM): the allowlist covers every stage class of the installed pyspark;
  hand-made trees exercise every rule (classes, nested stages, parameters, files, parquet
  schemas, paths).
* Hostile files against a real ``local[1]`` session: a stage of ``pyspark.ml.connect`` whose
  own ``metadata.json`` names a function, at the top, nested in a pipeline, and as the best
  model of an allowed CrossValidatorModel. A positive control shows each payload really
  runs when pyspark reads the folder itself; through ``sp.load`` it is refused and the canary
  file is never written.
* Round trips of real fitted models (slow): every folder layout of the allowlist, and a
  load in another process.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

import safepoint as sp
from safepoint.adapters import spark as spark_adapter
from safepoint.adapters._spark_check import check_tree, pyspark_class
from safepoint.adapters._spark_stages import EXCLUDED, STAGES
from safepoint.adapters.files import pack, unpack, verify_unpacked

pytest.importorskip("pyspark")

ROWS = [(float(i % 7), float((i * 3) % 5), float(i % 2), f"c{i % 3}") for i in range(60)]
PART = "part-00000-0a62bd3e-c370-46f9-8af8-bfaf1fa54664-c000.txt"
PARQUET = "part-00000-2fe32fc6-6c68-459d-84c1-88c651009e48-c000.snappy.parquet"
ML = "org.apache.spark.ml."
CONNECT = "pyspark.ml.connect.feature.MaxAbsScalerModel"


# -- hand-made trees -----------------------------------------------------------------------
def record(cls: str, uid: str, params=None, defaults=None, **extra) -> dict:
    return {
        "class": cls,
        "timestamp": 1,
        "sparkVersion": "4.0.0",
        "uid": uid,
        "paramMap": params or {},
        "defaultParamMap": defaults or {},
        **extra,
    }


def meta(prefix: str, rec: dict) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}metadata/{PART}", (json.dumps(rec) + "\n").encode()),
        (f"{prefix}metadata/_SUCCESS", b""),
        (f"{prefix}metadata/.{PART}.crc", b"crc\x00fake"),
    ]


def pipeline(prefix: str, uid: str, stages: list[tuple[str, list]]) -> list[tuple[str, bytes]]:
    """``stages``: (stage uid, entries relative to the stage folder)."""
    out = meta(prefix, record(ML + "PipelineModel", uid, {"stageUids": [u for u, _ in stages]}))
    for i, (u, entries) in enumerate(stages):
        out += [(f"{prefix}stages/{i}_{u}/{rel}", data) for rel, data in entries]
    return out


def binarizer(uid: str = "Binarizer_1") -> list[tuple[str, bytes]]:
    return meta("", record(ML + "feature.Binarizer", uid, {"threshold": 0.5, "inputCol": "a"}))


def parquet(schema_json: str | None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": [1.0, 2.0]})
    if schema_json is not None:
        table = table.replace_schema_metadata(
            {"org.apache.spark.sql.parquet.row.metadata": schema_json}
        )
    bio = io.BytesIO()
    pq.write_table(table, bio)
    return bio.getvalue()


VECTOR_UDT = {
    "type": "udt",
    "class": "org.apache.spark.ml.linalg.VectorUDT",
    "pyClass": "pyspark.ml.linalg.VectorUDT",
    "sqlType": {"type": "struct", "fields": []},
}


def spark_schema(field_type) -> str:
    return json.dumps(
        {
            "type": "struct",
            "fields": [{"name": "x", "type": field_type, "nullable": True, "metadata": {}}],
        }
    )


def scaler(uid: str = "StandardScaler_1", data: bytes | None = None) -> list:
    return [
        *meta("", record(ML + "feature.StandardScalerModel", uid, {"inputCol": "a"})),
        (f"data/{PARQUET}", data if data is not None else parquet(spark_schema(VECTOR_UDT))),
        ("data/_SUCCESS", b""),
    ]


def cv_model(best: list, grid=None, prefix: str = "") -> list[tuple[str, bytes]]:
    """A CrossValidatorModel over LogisticRegression with ``best`` as its best model."""
    rec = record(
        ML + "tuning.CrossValidatorModel",
        "CrossValidatorModel_1",
        {"numFolds": 2, "estimatorParamMaps": grid if grid is not None else [[]]},
        avgMetrics=[1.0],
        persistSubModels=False,
    )
    out = meta(prefix, rec)
    out += meta(
        prefix + "evaluator/", record(ML + "evaluation.BinaryClassificationEvaluator", "e1")
    )
    out += meta(prefix + "estimator/", record(ML + "classification.LogisticRegression", "lr1"))
    out += [(f"{prefix}bestModel/{rel}", data) for rel, data in best]
    return out


def valid_tree() -> list[tuple[str, bytes]]:
    return pipeline(
        "",
        "PipelineModel_1",
        [
            ("Binarizer_1", binarizer()),
            ("StandardScaler_1", scaler()),
            ("CrossValidatorModel_1", cv_model(binarizer("Binarizer_2"))),
        ],
    )


def connect_stage(module: str) -> list[tuple[str, bytes]]:
    """A pyspark.ml.connect stage whose own metadata.json names ``module.plant``: pyspark's
    connect reader imports and calls it."""
    mj = {
        "type": "spark_connect",
        "class": f"{module}.plant",
        "uid": "x",
        "paramMap": {},
        "defaultParamMap": {},
    }
    return [
        *meta("", record(CONNECT, "MaxAbsScalerModel_1")),
        ("metadata.json", json.dumps(mj).encode()),
    ]


def replace(entries, rel: str, data: bytes):
    return [(r, data if r == rel else d) for r, d in entries]


# -- the allowlist -------------------------------------------------------------------------
def test_every_loadable_pyspark_stage_is_reviewed():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    try:
        import spark_stage_candidates as tool
    finally:
        sys.path.pop(0)
    candidates = tool.candidates()
    assert len(candidates) > 100
    assert tool.unreviewed() == [], "review these pyspark classes (tools/spark_stage_candidates)"
    assert not [n for n in [*STAGES, *candidates.values()] if "connect" in n]
    for name, entry in STAGES.items():
        assert entry.reason and entry.layout
        if entry.jvm_only:
            assert name not in candidates
        elif name in candidates:  # (others are classes of another pyspark version)
            assert pyspark_class(name).__module__.startswith("pyspark.ml.")
    assert not set(STAGES) & set(EXCLUDED)


# -- the checker on hand-made trees --------------------------------------------------------
def test_a_valid_tree_passes_and_checksums_are_not_unpacked():
    entries = valid_tree()
    out = check_tree(entries)
    assert {r for r, _ in out} == {r for r, _ in entries if not r.endswith(".crc")}


@pytest.mark.parametrize(
    "tree, message",
    [
        (  # the top stage from pyspark.ml.connect
            lambda: pipeline("", "p", [("m", connect_stage("x"))]),
            "pyspark.ml.connect",
        ),
        (  # two pipelines down
            lambda: pipeline(
                "", "p", [("q", pipeline("", "q", [("b", binarizer()), ("m", connect_stage("x"))]))]
            ),
            "not in the reviewed allowlist",
        ),
        (  # allowed at top, the best model of a search names something else
            lambda: pipeline("", "p", [("cv", cv_model(connect_stage("x")))]),
            "bestModel/metadata: names class",
        ),
        (  # an excluded class says why
            lambda: pipeline(
                "", "p", [("s", meta("", record(ML + "feature.SQLTransformer", "s")))]
            ),
            "Spark SQL can call JVM methods",
        ),
        (  # the root must be a PipelineModel
            lambda: binarizer(),
            "where Spark expects",
        ),
        (  # a JVM-only helper outside RFormulaModel
            lambda: pipeline("", "p", [("c", meta("", record(ML + "feature.ColumnPruner", "c")))]),
            "only RFormulaModel holds",
        ),
    ],
)
def test_classes_outside_the_allowlist_are_refused(tree, message):
    with pytest.raises(sp.FormatError, match=message):
        check_tree(tree())


def _bin_meta(**changes) -> list:
    rec = record(ML + "feature.Binarizer", "b", {"threshold": 0.5})
    rec.update(changes)
    return pipeline("", "p", [("b", meta("", rec))])


@pytest.mark.parametrize(
    "entries, message",
    [
        (  # a parameter that is no Param (pyspark would getattr it: a property, a method)
            lambda: _bin_meta(paramMap={"summary": 1}),
            "not a parameter of Binarizer",
        ),
        (lambda: _bin_meta(paramMap={"__class__": 1}), "not a parameter"),
        (  # a value pyspark or Spark would turn into an object
            lambda: _bin_meta(paramMap={"threshold": {"class": "java.lang.Runtime"}}),
            "an object with keys",
        ),
        (lambda: _bin_meta(defaultParamMap={"threshold": {"a": 1}}), "an object with keys"),
        (lambda: _bin_meta(uid="../../etc"), "not a plain name"),
        (lambda: _bin_meta(sparkVersion="x"), "not a version"),
        (lambda: _bin_meta(extra={"a": {"b": 1}}), "not flat data"),
        (  # a stage id that leaves the folder
            lambda: pipeline("", "p", [("../../x", binarizer())]),
            "not a plain name",
        ),
    ],
)
def test_metadata_contents_are_checked(entries, message):
    with pytest.raises(sp.FormatError, match=message):
        check_tree(entries())


def test_a_json_vector_parameter_is_data():
    rec = record(
        ML + "feature.ElementwiseProduct", "e", {"scalingVec": {"type": 1, "values": [1.0, 2.0]}}
    )
    check_tree(pipeline("", "p", [("e", meta("", rec))]))


@pytest.mark.parametrize(
    "line, message",
    [
        (b'{"class": "x"}\n{"class": "y"}\n', "exactly one line"),
        # Hadoop splits lines at \r: Spark would read only the part before it
        (b'{"class": "org.apache.spark.ml.feature.Binarizer"\r, "uid": "b"}\n', "one line"),
        (b'{"class": "a", "class": "org.apache.spark.ml.feature.Binarizer"}\n', "twice"),
        (b"\xef\xbb\xbf{}\n", "byte-order mark"),
        (b'{"class": NaN}\n', "NaN"),
        (b"\xff\n", "not UTF-8"),
        (b"[1]\n", "not a JSON object"),
    ],
)
def test_the_metadata_line_is_read_as_spark_reads_it(line, message):
    entries = replace(valid_tree(), f"stages/0_Binarizer_1/metadata/{PART}", line)
    with pytest.raises(sp.FormatError, match=message):
        check_tree(entries)


@pytest.mark.parametrize(
    "extra, message",
    [
        # the payload of the attack: a file no checked reader reads, but a connect reader would
        (("stages/0_Binarizer_1/metadata.json", b"{}"), "metadata.json: unexpected file"),
        (("stages/0_Binarizer_1/metadata/part-00001", b'{"class": "x"}\n'), "2 non-empty"),
        (("stages/0_Binarizer_1/metadata/evil.json", b"{}"), "unexpected file in a metadata"),
        (("stages/0_Binarizer_1/metadata/sub/part-00000", b"{}"), "sub-folder"),
        (("stages/1_StandardScaler_1/data/_metadata", b"PAR1"), "unexpected file in a data"),
        (("stages/1_StandardScaler_1/data/a=1/" + PARQUET, b"PAR1"), "sub-folder"),
        (("stages/1_StandardScaler_1/data/part-00001.gz", b"x"), "unexpected file in a data"),
        (("stages/1_StandardScaler_1/data/.x.crc", b"x"), "checksum file for no file"),
        (("stages/1_StandardScaler_1/data/_SUCCESS2", b""), "unexpected file"),
        (("stages/0_Binarizer_1/data/" + PARQUET, parquet(None)), "unexpected folder"),
        (("stages/9_Other_1/metadata/" + PART, b"{}"), "unexpected folder"),
        (("README", b"hi"), "unexpected file"),
    ],
)
def test_every_file_must_be_one_spark_reads_and_was_checked(extra, message):
    with pytest.raises(sp.FormatError, match=message):
        check_tree([*valid_tree(), extra])


@pytest.mark.parametrize(
    "schema, message",
    [
        (spark_schema({**VECTOR_UDT, "class": "org.example.Gadget"}), "names type"),
        (spark_schema({**VECTOR_UDT, "pyClass": "os.system"}), "names type"),
        (spark_schema({**VECTOR_UDT, "serializedClass": "gASV"}), "names type"),
        (spark_schema({"type": "array", "elementType": {**VECTOR_UDT, "class": "x"}}), "type"),
        ("{not json", "not valid JSON"),
    ],
)
def test_parquet_schemas_name_only_spark_vector_and_matrix_types(schema, message):
    entries = replace(valid_tree(), f"stages/1_StandardScaler_1/data/{PARQUET}", parquet(schema))
    with pytest.raises(sp.FormatError, match=message):
        check_tree(entries)


def test_a_parquet_footer_with_the_spark_schema_twice_is_refused():
    good = parquet(spark_schema(VECTOR_UDT))
    key = b"org.apache.spark.sql.parquet.row.metadata"
    # a second key/value entry with the same key, spliced into the footer's thrift list
    n = len(good)
    footer_len = int.from_bytes(good[-8:-4], "little")
    footer = good[n - 8 - footer_len : n - 8]
    assert footer.count(key) == 1
    twice = footer + key  # the key's bytes now appear twice in the footer
    data = good[: n - 8 - footer_len] + twice + len(twice).to_bytes(4, "little") + b"PAR1"
    entries = replace(valid_tree(), f"stages/1_StandardScaler_1/data/{PARQUET}", data)
    with pytest.raises(sp.FormatError, match=r"twice|unreadable"):
        check_tree(entries)


def test_a_parquet_bomb_is_refused_from_its_footer():
    import pyarrow as pa
    import pyarrow.parquet as pq

    bio = io.BytesIO()
    zeros = pa.table({"x": pa.array([0] * 2_000_000, pa.int64())})
    pq.write_table(zeros, bio, compression="zstd", use_dictionary=False)
    assert len(bio.getvalue()) < 50_000  # 16 MB of pages in a few kilobytes
    entries = replace(valid_tree(), f"stages/1_StandardScaler_1/data/{PARQUET}", bio.getvalue())
    with pytest.raises(sp.FormatError, match="bytes of pages in a"):
        check_tree(entries)


@pytest.mark.parametrize(
    "param, message",
    [
        ({"parent": "lr1", "name": "regParam", "value": "0.1", "isJson": "true"}, None),
        ({"parent": "lr1", "name": "regParam", "value": '{"class": "x"}'}, "an object"),
        ({"parent": "nobody", "name": "regParam", "value": "0.1"}, "not in the search"),
        ({"parent": "lr1", "name": "summary", "value": "0.1"}, "not a parameter"),
        ({"parent": "lr1", "name": "regParam", "value": "0.1", "isJson": "yes"}, "isJson"),
        ({"parent": "lr1", "name": "regParam", "value": "0.1", "isJson": 1}, "isJson"),
        (  # a stage-valued grid parameter pointing outside the folder
            {"parent": "lr1", "name": "regParam", "value": '"../../x"', "isJson": "false"},
            "not an epm_ folder",
        ),
        (
            {"parent": "lr1", "name": "regParam", "value": '"/tmp/x"', "isJson": "false"},
            "not an epm_ folder",
        ),
        (  # a stage-valued parameter whose folder is missing
            {"parent": "lr1", "name": "regParam", "value": '"epm_x0"', "isJson": "false"},
            "no metadata folder",
        ),
    ],
)
def test_search_grids_are_checked(param, message):
    entries = pipeline("", "p", [("cv", cv_model(binarizer(), grid=[[param]]))])
    if message is None:
        check_tree(entries)
    else:
        with pytest.raises(sp.FormatError, match=message):
            check_tree(entries)


def test_a_grid_stage_is_checked_like_any_stage():
    param = {"parent": "lr1", "name": "regParam", "value": '"epm_x0"', "isJson": "false"}
    cv = cv_model(binarizer(), grid=[[param]])
    ok = pipeline("", "p", [("cv", cv + meta("epm_x0/", record(ML + "feature.Binarizer", "b2")))])
    check_tree(ok)
    bad = pipeline("", "p", [("cv", cv + [(f"epm_x0/{r}", d) for r, d in connect_stage("x")])])
    with pytest.raises(sp.FormatError, match="epm_x0/metadata: names class"):
        check_tree(bad)


def test_unpack_refuses_clashing_paths_cleanly(tmp_path):
    with pytest.raises(sp.FormatError, match="clashes"):
        unpack([("a", b"x"), ("a/b", b"y")], tmp_path / "d")


def test_the_unpacked_tree_is_exactly_the_checked_files(tmp_path):
    dest = tmp_path / "d"
    unpack([("a/b", b"x")], dest)
    verify_unpacked(dest, ["a/b"])
    os.symlink("/etc", dest / "a" / "link")
    with pytest.raises(sp.FormatError, match="not a file from the model"):
        verify_unpacked(dest, ["a/b"])
    os.unlink(dest / "a" / "link")
    (dest / "extra").mkdir()
    with pytest.raises(sp.FormatError, match="was not in the file"):
        verify_unpacked(dest, ["a/b"])


@pytest.mark.parametrize("rel", ["/etc/passwd", "../escape", "a/../../b", "a//b", "a\\b", "./a"])
def test_unpack_refuses_unsafe_paths(tmp_path, rel):
    with pytest.raises(sp.FormatError):
        unpack([(rel, b"x")], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pack_unpack_round_trip(tmp_path):
    src = tmp_path / "src"
    for rel, data in valid_tree():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    entries = pack(src)
    check_tree(entries)
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(entries, dest)
    assert pack(dest) == entries
    with pytest.raises(sp.FormatError, match="appears twice"):
        unpack(entries + entries[:1], tmp_path / "dest2")


# -- hostile files against a real session ---------------------------------------------------
def _java_ok() -> bool:
    return shutil.which("java") is not None


@pytest.fixture(scope="module")
def spark():
    if not _java_ok():
        pytest.skip("Spark needs Java (no java on PATH)")
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    s = (
        SparkSession.builder.master("local[1]")
        .appName("safepoint-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .getOrCreate()
    )
    yield s
    s.stop()


class _FolderModel:
    """Stands in for a PipelineModel whose saved folder an attacker wrote by hand."""

    __module__ = "pyspark.ml.pipeline"
    __qualname__ = "PipelineModel"

    def __init__(self, entries: list[tuple[str, bytes]], link: str | None = None) -> None:
        self.entries, self.link = entries, link

    def write(self):
        return self

    def save(self, url: str) -> None:
        root = url.removeprefix("file://")
        for rel, data in self.entries:
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)
        if self.link:
            os.makedirs(os.path.join(root, "stages"), exist_ok=True)
            os.symlink(self.link, os.path.join(root, "stages", "0_m"))


def _craft(entries, path, monkeypatch) -> None:
    """Write a .sp holding ``entries`` as the packed folder (skipping the save-side check
    an attacker does not run)."""
    with monkeypatch.context() as m:
        m.setattr(spark_adapter, "check_tree", lambda e: e)
        sp.dump(_FolderModel(entries), path)


def _attack(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    # without the hand-made .crc files: Hadoop reads those as checksums (a bogus header makes
    # it allocate gigabytes), so an attacker leaves them out
    return [(r, d) for r, d in entries if not r.endswith(".crc")]


ATTACKS = {
    "connect-stage": lambda mod: _attack(pipeline("", "p", [("m", connect_stage(mod))])),
    "nested-stage": lambda mod: _attack(
        pipeline(
            "", "p", [("q", pipeline("", "q", [("b", binarizer()), ("m", connect_stage(mod))]))]
        )
    ),
    "cv-best-model": lambda mod: _attack(pipeline("", "p", [("cv", cv_model(connect_stage(mod)))])),
}


def _plant_module(tmp_path, monkeypatch, name: str):
    canary = tmp_path / f"canary-{name}"
    (tmp_path / f"{name}.py").write_text(
        f"def plant():\n    open({str(canary)!r}, 'w').write('code ran')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return canary


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.slow
def test_the_payloads_run_when_pyspark_reads_the_folder_itself(
    spark, tmp_path, monkeypatch, attack
):
    """Positive control: each hostile folder really runs its payload under pyspark's own
    reader, so the refusals below are what stops it."""
    try:
        import pyspark.ml.connect  # noqa: F401 - the reader the payload goes through
    except ImportError as exc:
        pytest.skip(f"pyspark.ml.connect cannot be imported here ({exc}): pyspark[connect]")
    from pyspark.ml import PipelineModel

    mod = "spcontrol_" + attack.replace("-", "_")
    canary = _plant_module(tmp_path, monkeypatch, mod)
    folder = tmp_path / "control"
    unpack(ATTACKS[attack](mod), folder)
    with pytest.raises(AttributeError):  # the payload returns None, then pyspark fails
        PipelineModel.load(f"file://{folder}")
    assert canary.read_text() == "code ran"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_stage_runs_nothing_in_load(spark, tmp_path, monkeypatch, attack):
    mod = "spcanary_" + attack.replace("-", "_")
    canary = _plant_module(tmp_path, monkeypatch, mod)
    path = tmp_path / "hostile.sp"
    _craft(ATTACKS[attack](mod), path, monkeypatch)
    with pytest.raises(sp.SafepointError, match="reviewed allowlist"):
        sp.load(path)
    assert not canary.exists()
    with pytest.raises(sp.SafepointError, match="reviewed allowlist"):
        sp.loads(path.read_bytes())
    assert not canary.exists()
    assert sys.modules.get(mod) is None  # not even imported


def test_a_symlink_in_the_saved_folder_is_refused(spark, tmp_path, monkeypatch):
    mod = "spcanary_symlink"
    canary = _plant_module(tmp_path, monkeypatch, mod)
    outside = tmp_path / "outside"
    unpack(connect_stage(mod), outside)
    model = _FolderModel(pipeline("", "p", [("m", [])]), link=str(outside))
    path = tmp_path / "linked.sp"
    with pytest.raises(sp.SafepointError, match="symbolic link"):
        sp.dump(model, path)
    assert not path.exists() and not canary.exists()


def test_saving_a_model_the_loader_would_refuse_says_why(spark, tmp_path):
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import SQLTransformer

    model = PipelineModel([SQLTransformer(statement="SELECT * FROM __THIS__")])
    with pytest.raises(sp.SerializationError, match=r"SQLTransformer.*JVM methods"):
        sp.dump(model, tmp_path / "m.sp")
    assert not (tmp_path / "m.sp").exists()


@pytest.mark.slow
def test_the_unpacked_folder_lives_as_long_as_a_stage_of_the_model(spark, tmp_path):
    """Spark reads some model data lazily (ALS factors, FP-growth itemsets, imputer
    surrogates): the folder stays while any stage is referenced, and goes after."""
    import gc

    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import Binarizer

    inner = PipelineModel([Binarizer(threshold=0.5, inputCol="a", outputCol="b")])
    back = sp.loads(sp.dumps(PipelineModel([inner])))
    folder = back._safepoint_folder.path
    stage = back.stages[0].stages[0]
    assert stage._safepoint_folder.path == folder
    del back
    gc.collect()
    assert os.path.isdir(folder)  # the nested stage still holds it
    del stage
    gc.collect()
    assert not os.path.exists(folder)

    # collected during another load: removed from a thread outside that load's guard,
    # which the removal must not fail
    from safepoint.format.guard import guarded

    back = sp.loads(sp.dumps(inner))
    folder = back._safepoint_folder.path
    with guarded("a load elsewhere"):
        del back
        gc.collect()
    for _ in range(200):
        if not os.path.exists(folder):
            break
        threading.Event().wait(0.05)
    assert not os.path.exists(folder)


# -- real models -----------------------------------------------------------------------------
def _frame(spark):
    from pyspark.ml.linalg import Vectors

    rows = [
        (Vectors.dense([float(i % 7), float((i * 3) % 5)]), float(i % 2), float(i % 3), f"c{i % 3}")
        for i in range(40)
    ]
    return spark.createDataFrame(rows, ["features", "label", "label3", "cat"])


def _out(model, df, cols: tuple[str, ...]) -> list:
    return [tuple(r) for r in model.transform(df).select(*cols).collect()]


@pytest.mark.slow
def test_every_layout_round_trips(spark, tmp_path):
    """One fitted stage per folder layout of the allowlist, nested in pipelines, stored
    and loaded back with identical outputs."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import (
        LogisticRegression,
        OneVsRest,
        RandomForestClassifier,
    )
    from pyspark.ml.clustering import BisectingKMeans
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import Binarizer, RFormula, StringIndexer
    from pyspark.ml.recommendation import ALS
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    df = _frame(spark)
    lr = LogisticRegression(
        maxIter=3, predictionCol="p_cv", rawPredictionCol="r_cv", probabilityCol="pr_cv"
    )
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.1]).build()
    cv = CrossValidator(
        estimator=lr,
        estimatorParamMaps=grid,
        evaluator=BinaryClassificationEvaluator(rawPredictionCol="r_cv"),
        numFolds=2,
        collectSubModels=True,
    ).fit(df)
    inner = Pipeline(
        stages=[
            StringIndexer(inputCol="cat", outputCol="cat_i"),  # data
            Binarizer(threshold=2.0, inputCol="label3", outputCol="bin"),  # params
            RFormula(formula="label ~ cat", featuresCol="rf_f", labelCol="rf_l"),  # rformula
        ]
    ).fit(df)
    stages = [
        inner,  # nested pipeline
        cv,  # cv_model with sub-models
        RandomForestClassifier(
            numTrees=2,
            maxDepth=2,
            predictionCol="p_rf",
            rawPredictionCol="r_rf",
            probabilityCol="pr_rf",
        ).fit(df),
        OneVsRest(classifier=LogisticRegression(maxIter=2), predictionCol="p_ovr").fit(df),
        BisectingKMeans(k=2, maxIter=2, predictionCol="p_bkm").fit(df),  # mllib
    ]
    model = PipelineModel(stages)
    ratings = spark.createDataFrame(
        [(i % 5, i % 4, float(i % 3)) for i in range(30)], ["user", "item", "rating"]
    )
    als = ALS(rank=2, maxIter=1, userCol="user", itemCol="item", ratingCol="rating").fit(ratings)

    path = tmp_path / "m.sp"
    sp.dump({"pipeline": model, "als": PipelineModel([als])}, path)
    back = sp.load(path)
    got = back["pipeline"]
    assert [type(s).__name__ for s in got.stages] == [type(s).__name__ for s in stages]
    assert len(got.stages[1].subModels) == 2
    cols = ("cat_i", "bin", "rf_f", "p_cv", "p_rf", "p_ovr", "p_bkm")
    assert _out(got, df, cols) == _out(model, df, cols)
    assert _out(back["als"], ratings, ("prediction",)) == _out(
        PipelineModel([als]), ratings, ("prediction",)
    )


@pytest.mark.slow
def test_pipeline_model_in_another_process(spark, tmp_path):
    import pyspark
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    df = spark.createDataFrame(ROWS, ["a", "b", "label", "cat"])
    pipeline_ = Pipeline(
        stages=[
            StringIndexer(inputCol="cat", outputCol="cat_i"),
            VectorAssembler(inputCols=["a", "b", "cat_i"], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features"),
            LogisticRegression(maxIter=20),
        ]
    )
    model = pipeline_.fit(df)
    store = sp.Store(str(tmp_path / "store"))
    mv = store.put("churn/spark", model, alias="production")
    assert len(store.versions("churn/spark")) == 1  # one version holds the whole directory
    info = store.inspect("churn/spark@production")
    assert info.types == [
        {"name": "pyspark.ml.pipeline.PipelineModel", "kind": "adapter", "trusted": True}
    ]
    assert info.environment["packages"]["pyspark"] == pyspark.__version__
    out = model.transform(df).select("probability", "prediction").collect()
    want = [[*r["probability"].toArray().tolist(), r["prediction"]] for r in out]
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
        spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
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
        timeout=600,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-SESSION" in proc.stderr and "SparkSession" in proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == want
