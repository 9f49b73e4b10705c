"""Scoring with a Spark ML model: each batch becomes a Spark DataFrame, ``transform`` runs on it.

A stored ``PipelineModel`` can only be loaded inside a Spark session; the scoring
pipeline starts a local one (``local[*]``, no web UI) when none is active, so a
Spark model scores a file like any other model. The input columns and their kinds
are read from the pipeline's stages: a column consumed by a ``StringIndexer`` or a
tokenizer stays text, the others are numbers (text that is not a number is a bad
record). A stage whose inputs cannot be read from the model (``SQLTransformer``,
``RFormula``) makes every input column go to Spark as read.

Bad records: Spark fails a whole batch for one bad record (an unseen category with
``handleInvalid="error"``, a null in a ``VectorAssembler``); the pipeline then splits
the batch to find the records that fail (a Spark job per split, so a batch with many
bad records is slow). A stage with ``handleInvalid="skip"`` drops records: they are
reported as bad records too, never silently lost.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import numpy as np
import pandas as pd

from ...adapters._common import import_framework
from .frameworks import FrameworkScorer

__all__ = ["SPARK_SCORER", "ensure_session", "spark_error", "spark_inputs"]

ROW = "__safepoint_row"
#: stages whose input column is text (a numeric column would be cast to text by Spark)
_TEXT_STAGES = {"StringIndexerModel", "Tokenizer", "RegexTokenizer"}
#: stages that take any column type as it is
_ANY_STAGES = {"FeatureHasher"}
#: stages whose inputs are not named by parameters
_OPAQUE_STAGES = {"SQLTransformer", "RFormulaModel"}
_IN = ("inputCol", "inputCols")
_OUT = (
    "outputCol",
    "outputCols",
    "predictionCol",
    "probabilityCol",
    "rawPredictionCol",
    "varianceCol",
    "leafCol",
)


def ensure_session(master: str | None = None, quiet: bool = True) -> Any:
    """The active Spark session, or a new local one (``master``, default ``local[*]``)."""
    import_framework("pyspark", "spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (
        SparkSession.builder.master(master or "local[*]")
        .appName("safepoint-scoring")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false" if quiet else "true")
    )
    if not os.environ.get("PYSPARK_PYTHON"):
        # Python workers run the interpreter that runs this job (its packages, its safepoint)
        builder = builder.config("spark.pyspark.python", sys.executable)
    spark = builder.getOrCreate()
    if quiet:
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def _stages(model: Any) -> list[Any]:
    out: list[Any] = []
    for stage in getattr(model, "stages", None) or [model]:
        if hasattr(stage, "stages"):
            out += _stages(stage)
        else:
            out.append(stage)
    return out


def _param(stage: Any, name: str) -> Any:
    if not stage.hasParam(name) or not stage.isDefined(name):
        return None
    return stage.getOrDefault(name)


def spark_inputs(model: Any) -> dict[str, str] | None:
    """Raw input columns of a Spark ML model and their kinds (``float64``, ``string``,
    ``any``, ``vector``), or None when a stage's inputs cannot be read from the model."""
    produced: set[str] = set()
    inputs: dict[str, str] = {}
    stages = _stages(model)
    # a label indexer's input is only there in training: Spark skips the stage without it
    labels = {_param(st, "labelCol") for st in stages} - {None}
    for stage in stages:
        kind = type(stage).__name__
        if kind in _OPAQUE_STAGES:
            return None
        if kind == "StringIndexerModel" and _param(stage, "outputCol") in labels:
            continue
        names: list[str] = []
        for p in _IN:
            v = _param(stage, p)
            names += [v] if isinstance(v, str) else list(v or [])
        features = _param(stage, "featuresCol")
        predictor = _param(stage, "predictionCol") is not None
        if predictor and isinstance(features, str) and features not in produced | set(inputs):
            inputs[features] = "vector"
        for name in names:
            if name not in produced and name not in inputs:
                inputs[name] = _kind(kind)
        for p in _OUT:
            v = _param(stage, p)
            produced.update([v] if isinstance(v, str) else list(v or []))
    return inputs


def _kind(stage: str) -> str:
    if stage in _TEXT_STAGES:
        return "string"
    return "any" if stage in _ANY_STAGES else "float64"


def _signature(model: Any) -> dict[str, Any]:
    inputs = spark_inputs(model)
    if inputs is None:
        return {"passthrough": True}
    vectors = [c for c, k in inputs.items() if k == "vector"]
    if vectors:
        from ...errors import SchemaError

        raise SchemaError(
            f"the Spark model reads vector column(s) {vectors} that no stage of it builds: "
            "a file has no vector columns; save the whole PipelineModel (with its "
            "VectorAssembler), or score it with apply(fn, batch=True)"
        )
    return {
        "feature_names": list(inputs),
        "dtypes": {c: ("object" if k != "float64" else "float64") for c, k in inputs.items()},
    }


def _prediction_col(model: Any) -> str:
    for stage in reversed(_stages(model)):
        col = _param(stage, "predictionCol")
        if isinstance(col, str):
            return col
    return "prediction"


def spark_error(exc: BaseException) -> str:
    """The useful line of a Spark (Java) error: its deepest cause, not the stack."""
    text = str(exc).strip()
    found = ""
    for line in text.splitlines():
        m = re.match(r"\s*(?:Caused by: )?([\w.$]+(?:Exception|Error)): (.+)", line)
        if m and "awaitResult" not in m.group(2) and "An error occurred while calling" not in line:
            found = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
    if not found:
        found = text.splitlines()[0] if text else repr(exc)
    return found[:500]


class SparkScoringError(ValueError):
    """A batch Spark could not score (the pipeline then looks for the records at fault)."""


def _to_arrow(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    cols: dict[str, Any] = {}
    for name in frame.columns:
        s = frame[name]
        if s.dtype.kind in "biuf":
            cols[str(name)] = pa.array(s.to_numpy(), from_pandas=True)
        else:
            # text (or mixed) columns go as strings; Spark reads large_string poorly
            vals = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in s]
            cols[str(name)] = pa.array(vals, type=pa.string())
    return pa.table(cols)


def _predict(model: Any, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    spark = ensure_session()
    n = len(frame)
    data = frame.reset_index(drop=True)
    data = data.assign(**{ROW: np.arange(n, dtype=np.int64)})
    col = _prediction_col(model)
    try:
        sdf = spark.createDataFrame(_to_arrow(data))
        out = model.transform(sdf).select(ROW, col)
        table = out.toArrow() if hasattr(out, "toArrow") else None
        result = table.to_pandas() if table is not None else out.toPandas()
    except Exception as exc:
        raise SparkScoringError(f"Spark: {spark_error(exc)}") from None
    if len(result) != n:
        raise SparkScoringError(
            f"the Spark model returned {len(result)} rows for {n} records (a stage with "
            "handleInvalid='skip' dropped a record it could not use)"
        )
    result = result.sort_values(ROW)
    return result[col].to_numpy()


def _before_load() -> None:
    ensure_session()


def _is_spark_model(model: Any) -> bool:
    from pyspark.ml import Transformer

    return isinstance(model, Transformer)


SPARK_SCORER = FrameworkScorer(
    "spark",
    modules=("pyspark.ml",),
    matches=_is_spark_model,
    predict=_predict,
    signature=_signature,
    stored_types=("pyspark.ml.",),
    before_load=_before_load,
)
