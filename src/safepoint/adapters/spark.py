"""Spark ML: a ``pyspark.ml`` ``PipelineModel`` stored as the directory Spark saves.

Saving runs ``model.write().save(tmp)`` and packs the directory tree into the safepoint file
(one buffer per file plus a manifest of relative paths), so a model is ONE file, hence one
atomic store version. Loading needs an active ``SparkSession`` (any master, e.g. ``local[2]``):
the tree is checked, unpacked into a temporary folder and read with ``PipelineModel.load``.

The check matters: Spark's readers import and instantiate the class named in each stage's
``metadata`` (``DefaultParamsReader`` does ``__import__`` on it). Every metadata record must
name a class under ``org.apache.spark.ml.`` or ``pyspark.ml.``; anything else is refused before
Spark sees the folder. Paths are refused if absolute or containing ``..``.

Example:
    >>> store.put("churn/spark", pipeline_model)                    # doctest: +SKIP
    >>> spark = SparkSession.builder.master("local[2]").getOrCreate()  # doctest: +SKIP
    >>> model = store.get("churn/spark")                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError, FormatError
from ._common import adapter_class, import_framework, type_ref
from .files import check_relpath, pack, unpack

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = ["HANDLERS", "check_metadata"]

MODEL_TYPES = ("pyspark.ml.pipeline.PipelineModel",)
_CLASS = re.compile(r"(org\.apache\.spark\.ml|pyspark\.ml)(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _is_metadata(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 2 and parts[-2] == "metadata" and parts[-1].startswith("part-")


def check_metadata(entries: list[tuple[str, bytes]]) -> None:
    """Refuse a tree whose stage metadata names a class outside Spark ML."""
    found = 0
    for rel, data in entries:
        check_relpath(rel)
        if not _is_metadata(rel):
            continue
        for line in data.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise FormatError(f"spark model: {rel} is not JSON lines") from None
            cls = record.get("class") if isinstance(record, dict) else None
            if not isinstance(cls, str) or not _CLASS.fullmatch(cls):
                raise FormatError(
                    f"spark model: {rel} names class {cls!r}, not a Spark ML class "
                    "(org.apache.spark.ml.* / pyspark.ml.*): refused"
                )
            found += 1
    if not found:
        raise FormatError("spark model: the directory has no stage metadata")


def _session() -> Any:
    import_framework("pyspark", "spark")
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise AdapterError(
            "loading a Spark ML model needs an active SparkSession: start one first, e.g. "
            "SparkSession.builder.master('local[2]').getOrCreate(), then load again"
        )
    return spark


class SparkModelHandler:
    """``PipelineModel`` <-> its saved directory tree."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        import pyspark

        tmp = tempfile.mkdtemp(prefix="safepoint-spark-")
        try:
            target = f"{tmp}/model"
            obj.write().save(f"file://{target}")
            entries = pack(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return {
            "t": type_ref(enc, obj),
            "spark": pyspark.__version__,
            "files": [[rel, enc.buffer(data)] for rel, data in entries],
        }

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        cls: Any = adapter_class(node, dec, MODEL_TYPES)
        entries = []
        for item in dec.items(node, "files"):
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], int)):
                raise dec.fail("a packed file must be [path, buffer]")
            entries.append((check_relpath(item[0]), dec.raw(item[1])))
        check_metadata(entries)
        _session()
        tmp = tempfile.mkdtemp(prefix="safepoint-spark-")
        try:
            target = f"{tmp}/model"
            unpack(entries, target)
            try:
                return cls.load(f"file://{target}")
            except Exception as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise FormatError(
                    f"Spark could not load the stored model (written with Spark "
                    f"{node.get('spark')}): {msg[:500]}"
                ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


HANDLERS = {"spark.ml": SparkModelHandler}
