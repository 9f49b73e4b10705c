"""Spark ML: a ``pyspark.ml`` ``PipelineModel`` stored as the directory Spark saves.

Saving runs ``model.write().save(tmp)`` and packs the directory tree into the safepoint file
(one buffer per file plus a manifest of relative paths), so a model is ONE file, hence one
atomic store version. Loading needs an active classic ``SparkSession`` (any master, e.g.
``local[2]``; not a Spark Connect session): the tree is checked, unpacked into a fresh
temporary folder and read with ``PipelineModel.load``; the folder stays while a stage of the
loaded model is referenced (Spark reads some model data lazily).

The check matters: Spark's readers import and instantiate the class each stage's
``metadata`` names, compute the paths of nested stages from it, and build the types a
parquet footer names. :func:`check_tree` walks the whole tree the way they do before Spark
sees it: every stage (nested pipelines, searches, one-vs-rest, ...) must name a class of the
reviewed allowlist (:mod:`safepoint.adapters._spark_stages`), every parameter must be a
parameter of that class holding plain JSON data, every parquet schema may name only Spark's
vector and matrix types, and every file must be one those readers read. Anything else raises
:class:`~safepoint.errors.FormatError`.

Example:
    >>> store.put("churn/spark", pipeline_model)                    # doctest: +SKIP
    >>> spark = SparkSession.builder.master("local[2]").getOrCreate()  # doctest: +SKIP
    >>> model = store.get("churn/spark")                            # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError, FormatError, SerializationError
from ._common import adapter_class, import_framework, type_ref
from ._spark_check import check_tree
from .files import check_relpath, pack, unpack, verify_unpacked

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = ["HANDLERS", "check_tree"]

MODEL_TYPES = ("pyspark.ml.pipeline.PipelineModel",)


def _session() -> Any:
    import_framework("pyspark", "spark")
    from pyspark.sql import SparkSession
    from pyspark.sql.utils import is_remote

    if is_remote():
        raise AdapterError(
            "loading a Spark ML model needs a classic SparkSession: a Spark Connect session "
            "reads models on its server, which cannot see the checked local copy"
        )
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
        try:
            check_tree(entries)  # what load would refuse is refused now, with the reason
        except FormatError as exc:
            raise SerializationError(
                f"this Spark model cannot be stored: {exc} (loading checks it the same way)"
            ) from None
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
        import_framework("pyspark", "spark")
        entries = check_tree(entries)  # before any Spark reader sees a byte of it
        _session()
        tmp = tempfile.mkdtemp(prefix="safepoint-spark-")
        try:
            target = f"{tmp}/model"
            unpack(entries, target)
            verify_unpacked(target, [rel for rel, _ in entries])
            try:
                model = cls.load(f"file://{target}")
            except Exception as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise FormatError(
                    f"Spark could not load the stored model (written with Spark "
                    f"{node.get('spark')}): {msg[:500]}"
                ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _hold(model, _Folder(tmp))
        return model


class _Folder:
    """The unpacked folder of a loaded model. Spark reads some model data lazily, when the
    model is used (ALS factors, FP-growth itemsets, imputer surrogates), so the folder is
    removed only when no stage of the model is referenced any more (or at exit)."""

    def __init__(self, path: str) -> None:
        self.path = path
        weakref.finalize(self, _remove, path)


def _remove(path: str) -> None:
    from ..format.guard import is_active

    if is_active():
        # garbage collection may run this inside another load, whose guard would refuse the
        # removal (and fail that load): a new thread starts outside any guard
        threading.Thread(target=shutil.rmtree, args=(path, True), daemon=True).start()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _hold(stage: Any, folder: _Folder, depth: int = 0) -> None:
    """Let every Python stage of the loaded model keep ``folder``."""
    if depth > 64:
        return
    if isinstance(stage, list | tuple):
        for s in stage:
            _hold(s, folder, depth + 1)
        return
    try:
        stage._safepoint_folder = folder
    except AttributeError:
        return
    attrs = getattr(stage, "__dict__", {})  # plain instance attributes: never a JVM call
    for name in ("stages", "bestModel", "subModels", "models"):
        if attrs.get(name) is not None:
            _hold(attrs[name], folder, depth + 1)


HANDLERS = {"spark.ml": SparkModelHandler}
