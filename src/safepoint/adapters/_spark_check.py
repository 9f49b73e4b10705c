"""Check a packed Spark ML model folder completely before Spark sees it.

Spark's readers trust the folder: pyspark ``__import__``s the class a stage's ``metadata``
names and calls it, the JVM loads it with ``Class.forName`` and calls its ``read()``, parquet
footers may name user-defined types that Spark instantiates, and composite stages (pipelines,
searches, one-vs-rest) compute the paths of their nested stages from the metadata. So the
checker walks the folder the way pyspark's and Spark's readers do, starting at the root
``PipelineModel``, and for every stage:

* reads ``metadata/`` exactly as Spark will: one record on one line, in the only non-empty
  ``part-*`` file (Spark reads every file of the folder and takes the first line); strict
  UTF-8 JSON, no duplicate keys, no ``NaN``;
* requires the class to be in the reviewed allowlist (:mod:`._spark_stages`), every parameter
  name to be a ``Param`` of its pyspark class, and every value to be plain JSON data (numbers,
  strings, lists, or Spark's JSON form of a vector or matrix); ``uid``\\ s to be plain names;
* follows the nested stages its layout declares (pipeline stages by ``stageUids``, a search's
  estimator/evaluator/best model/sub-models and the stages its parameter grid refers to, the
  classifier and per-class models of one-vs-rest, RFormula's pipeline) and checks them too;
* checks every parquet file's Spark schema: only Spark's own vector and matrix types.

Every file of the folder must be reached by this walk; anything else (an extra file or
folder, ``_metadata`` summaries, compressed or hidden files, sub-folders of a data folder) is
refused. The walk never reads or writes a disk: it works on the ``(path, bytes)`` entries.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from ._spark_stages import EXCLUDED, STAGES, Stage

__all__ = ["check_tree", "pyspark_class"]

MAX_DEPTH = 24  # nesting of composite stages
MAX_STAGES = 20_000
MAX_GRID = 10_000  # parameter-grid points of one search
#: a parquet file may declare at most this many bytes of (decompressed) pages per stored byte
#: (plus 1 MiB), and this many rows per stored byte (plus 10,000): beyond, a bomb
MAX_PARQUET_EXPANSION = 64
MAX_PARQUET_ROWS_PER_BYTE = 16

_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,199}")
_VERSION = re.compile(r"\d{1,4}\.\d{1,4}(\.\d{1,4})?([.\-+][A-Za-z0-9.\-+]{0,40})?")
_HEX_ID = r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: text part files as Spark writes them (saveAsTextFile: part-00000; DataFrame writer: .txt)
_PART_TXT = re.compile(rf"part-\d{{5}}({_HEX_ID}-c\d{{3}}\.txt)?")
#: parquet part files (the codec is inside the file; the name's infix is informative)
_PART_PARQUET = re.compile(
    rf"part-(r-)?\d{{5}}({_HEX_ID})?(-c\d{{3}})?(\.[a-z0-9]{{1,12}})?\.parquet"
)
_EPM = re.compile(r"epm_[A-Za-z0-9_]{1,200}")
_BASE_KEYS = frozenset({"class", "timestamp", "sparkVersion", "uid", "paramMap", "defaultParamMap"})
_SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"
#: the user-defined types a parquet schema may name: Spark's own vectors and matrices
_UDTS = {
    "org.apache.spark.ml.linalg.VectorUDT": "pyspark.ml.linalg.VectorUDT",
    "org.apache.spark.ml.linalg.MatrixUDT": "pyspark.ml.linalg.MatrixUDT",
    "org.apache.spark.mllib.linalg.VectorUDT": "pyspark.mllib.linalg.VectorUDT",
    "org.apache.spark.mllib.linalg.MatrixUDT": "pyspark.mllib.linalg.MatrixUDT",
}
_VECTOR_KEYS = frozenset({"type", "size", "indices", "values"})
_MATRIX_KEYS = frozenset(
    {"class", "type", "numRows", "numCols", "colPtrs", "rowIndices", "values", "isTransposed"}
)


def _fail(where: str, msg: str) -> FormatError:
    return FormatError(f"spark model: {where}: {msg}: refused")


def pyspark_class(name: str) -> type:
    """The pyspark wrapper pyspark itself uses for a metadata class name (its
    ``replace("org.apache.spark", "pyspark")`` rule), for an allowlisted name only."""
    if name not in STAGES:
        raise KeyError(name)
    py = name.replace("org.apache.spark", "pyspark")
    module, _, attr = py.rpartition(".")
    from pyspark.ml.param import Params

    cls = getattr(importlib.import_module(module), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Params)):
        raise FormatError(f"spark model: the installed pyspark has no stage class {py}")
    return cls


def _is_param(cls: type, name: Any) -> bool:
    from pyspark.ml.param import Param

    return (
        isinstance(name, str)
        and name.isidentifier()
        and not name.startswith("_")
        and isinstance(getattr(cls, name, None), Param)
    )


class _Tree:
    """The packed entries as folders: name -> bytes, name -> sub-folder."""

    def __init__(self, entries: list[tuple[str, bytes]]) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.dirs: dict[str, set[str]] = {}
        for rel, data in entries:
            parts = rel.split("/")
            for i in range(len(parts) - 1):
                self.dirs.setdefault("/".join(parts[:i]), set()).add(parts[i])
            folder = "/".join(parts[:-1])
            if parts[-1] in self.files.setdefault(folder, {}):
                raise FormatError(f"spark model: {rel} appears twice: refused")
            self.files[folder][parts[-1]] = data
        self.claimed: set[str] = set()  # files reached by the walk
        self.crc: set[str] = set()  # Hadoop checksum files (reached, not unpacked)

    def listing(self, folder: str) -> tuple[dict[str, bytes], set[str]]:
        return self.files.get(folder, {}), self.dirs.get(folder, set())

    def exists(self, folder: str) -> bool:
        return folder in self.files or folder in self.dirs

    def claim_folder(self, folder: str, accept: Callable[[str, bytes], None], what: str) -> None:
        """Claim every file of ``folder`` (which Spark reads as a whole): data files pass
        ``accept``; ``_SUCCESS`` must be empty; ``.X.crc`` needs a sibling ``X``."""
        files, subdirs = self.listing(folder)
        if subdirs:
            raise _fail(folder, f"the {what} folder holds a sub-folder {sorted(subdirs)[0]!r}")
        for name, data in sorted(files.items()):
            path = f"{folder}/{name}"
            if name == "_SUCCESS":
                if data:
                    raise _fail(path, "the _SUCCESS marker is not empty")
            elif name.startswith(".") and name.endswith(".crc"):
                if name[1:-4] not in files or name[1:-4].startswith("."):
                    raise _fail(path, "a checksum file for no file")
                self.crc.add(path)
            else:
                accept(name, data)
            self.claimed.add(path)


def _loads(text: str, where: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise _fail(where, f"key {k!r} appears twice in a JSON object")
            out[k] = v
        return out

    def constant(c: str) -> Any:
        raise _fail(where, f"the JSON holds {c}")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except FormatError:
        raise
    except RecursionError:
        raise _fail(where, "the JSON nests too deeply") from None
    except ValueError as exc:
        raise _fail(where, f"not valid JSON ({exc})") from None


def _line(data: bytes, where: str) -> str:
    """The single line Spark's text reader will return (Hadoop splits at \\n and \\r)."""
    body = data[:-1] if data.endswith(b"\n") else data
    if not body or b"\n" in body or b"\r" in body:
        raise _fail(where, "the metadata file must hold exactly one line")
    if body.startswith(b"\xef\xbb\xbf"):
        raise _fail(where, "the metadata file starts with a byte-order mark")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(where, "the metadata file is not UTF-8") from None


def _metadata(tree: _Tree, folder: str) -> dict[str, Any]:
    """The one record of ``folder/metadata``, read as Spark reads it."""
    where = f"{folder}/metadata" if folder else "metadata"
    found: list[tuple[str, bytes]] = []

    def accept(name: str, data: bytes) -> None:
        if not _PART_TXT.fullmatch(name):
            raise _fail(f"{where}/{name}", "unexpected file in a metadata folder")
        if data:
            found.append((name, data))

    if not tree.exists(where):
        raise _fail(folder or ".", "no metadata folder (not a saved Spark ML stage)")
    tree.claim_folder(where, accept, "metadata")
    if len(found) != 1:
        raise _fail(where, f"{len(found)} non-empty metadata files (Spark writes one)")
    name, data = found[0]
    record = _loads(_line(data, f"{where}/{name}"), f"{where}/{name}")
    if not isinstance(record, dict):
        raise _fail(f"{where}/{name}", "the metadata is not a JSON object")
    return record


def _plain(value: Any, where: str, depth: int = 0) -> None:
    """A parameter value Spark and pyspark turn into data only."""
    if depth > 8:
        raise _fail(where, "a parameter value nests too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list):
        for v in value:
            _plain(v, where, depth + 1)
        return
    if isinstance(value, dict):
        keys = set(value)
        # Spark's JSON vectors ({"type", "size"?, "indices"?, "values"}) and matrices
        # ({"class": "matrix", ...}); any other object is refused
        if "class" in keys:
            ok = value["class"] == "matrix" and keys <= _MATRIX_KEYS
        else:
            ok = "values" in keys and keys <= _VECTOR_KEYS
        if not ok:
            raise _fail(where, f"a parameter value is an object with keys {sorted(keys)}")
        for k, v in value.items():
            if k != "class" and not (
                isinstance(v, bool | int | float)
                or (isinstance(v, list) and all(isinstance(x, int | float) for x in v))
            ):
                raise _fail(where, f"a vector/matrix field {k!r} is not numeric")
        return
    raise _fail(where, f"a parameter value of type {type(value).__name__}")


@dataclass
class _Stage:
    """The stage being checked, handed to its layout."""

    folder: str
    record: dict[str, Any]
    entry: Stage
    depth: int
    jvm: bool
    uids: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name

    @property
    def where(self) -> str:
        return self.path("metadata")


class _Checker:
    def __init__(self, tree: _Tree) -> None:
        self.tree = tree
        self.stages = 0

    # -- one stage -----------------------------------------------------------------------
    def stage(
        self, folder: str, depth: int, only: tuple[str, ...] = (), jvm: bool = False
    ) -> dict[str, str]:
        """Check the stage saved in ``folder``; returns uid -> class of it and its nested
        stages (what a search's parameter grid may refer to). ``jvm``: only Spark's JVM
        readers read this part of the tree (RFormulaModel's pipeline)."""
        where = f"{folder}/metadata" if folder else "metadata"
        if depth > MAX_DEPTH:
            raise _fail(where, f"stages nest deeper than {MAX_DEPTH} levels")
        self.stages += 1
        if self.stages > MAX_STAGES:
            raise _fail(where, f"more than {MAX_STAGES} stages")
        record = _metadata(self.tree, folder)
        cls_name = record.get("class")
        if not isinstance(cls_name, str):
            raise _fail(where, "the metadata names no class")
        if only and cls_name not in only:
            raise _fail(where, f"names class {cls_name!r} where Spark expects {only[0]}")
        entry = STAGES.get(cls_name)
        if entry is None:
            why = EXCLUDED.get(cls_name)
            if why is None and cls_name.startswith("pyspark.ml.connect"):
                why = "pyspark.ml.connect stages load code named in their own files"
            raise _fail(
                where,
                f"names class {cls_name!r}, which is not in the reviewed allowlist of Spark "
                f"ML stages ({why or 'see safepoint.adapters._spark_stages'})",
            )
        if jvm and not cls_name.startswith("org.apache.spark.ml."):
            raise _fail(where, f"names class {cls_name!r} where only the JVM reads stages")
        self.header(record, where)
        st = _Stage(folder, record, entry, depth, jvm, {record["uid"]: cls_name})
        if entry.jvm_only:
            if not jvm:
                raise _fail(where, f"names {cls_name}, a stage that only RFormulaModel holds")
            if record["paramMap"] or record.get("defaultParamMap"):
                raise _fail(where, f"{cls_name} has no parameters to set")
        elif entry.layout != "pipeline":  # a pipeline's paramMap is its stage list
            self.params(record, pyspark_class(cls_name), where, skip=("estimatorParamMaps",))
        self.extras(record, where)
        getattr(self, "layout_" + entry.layout)(st)
        return st.uids

    def nested(self, st: _Stage, name: str, only: tuple[str, ...] = ()) -> dict[str, str]:
        uids = self.stage(st.path(name), st.depth + 1, only, st.jvm)
        st.uids.update(uids)
        return uids

    def header(self, record: dict[str, Any], where: str) -> None:
        uid = record.get("uid")
        if not (isinstance(uid, str) and _UID.fullmatch(uid)):
            raise _fail(where, f"uid {uid!r} is not a plain name")
        version = record.get("sparkVersion")
        if not (isinstance(version, str) and _VERSION.fullmatch(version)):
            raise _fail(where, f"sparkVersion {version!r} is not a version")
        ts = record.get("timestamp")
        if "timestamp" in record and (not isinstance(ts, int) or isinstance(ts, bool)):
            raise _fail(where, "timestamp is not an integer")
        if not isinstance(record.get("paramMap"), dict):
            raise _fail(where, "paramMap is missing or not an object")
        if not isinstance(record.get("defaultParamMap", {}), dict):
            raise _fail(where, "defaultParamMap is not an object")

    def params(
        self, record: dict[str, Any], cls: type, where: str, skip: tuple[str, ...] = ()
    ) -> None:
        for key in ("paramMap", "defaultParamMap"):
            for name, value in record.get(key, {}).items():
                if not _is_param(cls, name):
                    raise _fail(where, f"{key} sets {name!r}, not a parameter of {cls.__name__}")
                if name not in skip:
                    _plain(value, f"{where} ({key}.{name})")

    def extras(self, record: dict[str, Any], where: str) -> None:
        """Keys besides the standard ones (numClasses, avgMetrics, ...): flat data only."""
        for key, value in record.items():
            if key in _BASE_KEYS:
                continue
            if not key.isidentifier():
                raise _fail(where, f"unexpected metadata key {key!r}")
            values = value if isinstance(value, list) else [value]
            if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
                raise _fail(where, f"metadata key {key!r} is not flat data")

    # -- layouts -------------------------------------------------------------------------
    def layout_params(self, st: _Stage) -> None:
        self.only(st.folder, ())

    def layout_data(self, st: _Stage) -> None:
        self.parquet_folder(st.path("data"))
        self.only(st.folder, ("data",))

    def layout_als(self, st: _Stage) -> None:
        for name in ("userFactors", "itemFactors"):
            self.parquet_folder(st.path(name))
        self.only(st.folder, ("userFactors", "itemFactors"))

    def layout_ensemble(self, st: _Stage) -> None:
        assert st.entry.tree is not None
        self.parquet_folder(st.path("data"))
        self.parquet_folder(st.path("treesMetadata"), trees=st.entry.tree)
        self.only(st.folder, ("data", "treesMetadata"))

    def layout_mllib(self, st: _Stage) -> None:
        data = st.path("data")
        old = _metadata(self.tree, data)
        where = f"{data}/metadata"
        if old.get("class") != st.entry.mllib:
            raise _fail(where, f"names class {old.get('class')!r}, not {st.entry.mllib}")
        if not isinstance(old.get("version"), str):
            raise _fail(where, "no format version")
        for key, value in old.items():
            if key not in ("class", "version"):
                _plain(value, f"{where} ({key})")
        self.parquet_folder(f"{data}/data")
        self.only(data, ("data",))
        self.only(st.folder, ("data",))

    def layout_rformula(self, st: _Stage) -> None:
        self.parquet_folder(st.path("data"))
        # the JVM reads this pipeline itself (Class.forName on each stage's class)
        self.stage(st.path("pipelineModel"), st.depth + 1, (STAGE_PIPELINE_JVM,), jvm=True)
        self.only(st.folder, ("data", "pipelineModel"))

    def layout_pipeline(self, st: _Stage) -> None:
        params = st.record["paramMap"]
        if set(params) - {"stageUids", "language"} or st.record.get("defaultParamMap"):
            raise _fail(st.where, "a pipeline's metadata holds parameters besides its stages")
        stage_uids = params.get("stageUids")
        if not isinstance(stage_uids, list) or len(stage_uids) > MAX_STAGES:
            raise _fail(st.where, "stageUids is not a list of stage ids")
        if params.get("language", "Python") not in ("Python", "Scala", "Java"):
            raise _fail(st.where, f"language {params['language']!r}")
        # pyspark and Spark name a stage's folder <index, zero-padded>_<uid>
        width = len(str(len(stage_uids)))
        names = []
        for i, uid in enumerate(stage_uids):
            if not (isinstance(uid, str) and _UID.fullmatch(uid)):
                raise _fail(st.where, f"stage id {uid!r} is not a plain name")
            names.append(f"{str(i).zfill(width)}_{uid}")
            self.nested(st, f"stages/{names[-1]}")
        self.only(st.path("stages"), tuple(names))
        self.only(st.folder, ("stages",) if names else ())

    def layout_ovr(self, st: _Stage) -> None:
        self.nested(st, "classifier")
        self.only(st.folder, ("classifier",))

    def layout_ovr_model(self, st: _Stage) -> None:
        n = st.record.get("numClasses")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_STAGES:
            raise _fail(st.where, "numClasses is not a class count")
        names = ["classifier", *(f"model_{i}" for i in range(n))]
        for name in names:
            self.nested(st, name)
        self.only(st.folder, tuple(names))

    def layout_validator(self, st: _Stage) -> tuple[list[str], int]:
        """estimator/, evaluator/ and the stages the grid names; returns the folders used
        and the number of grid points."""
        grid_uids = {**self.nested(st, "evaluator"), **self.nested(st, "estimator")}
        grid = st.record["paramMap"].get("estimatorParamMaps")
        if not isinstance(grid, list) or len(grid) > MAX_GRID:
            raise _fail(st.where, "estimatorParamMaps is not a list of parameter maps")
        # pyspark reads isJson and a path value as JSON strings unless its own writer wrote them
        python_form = st.record["class"].startswith("pyspark.ml.")
        used = ["evaluator", "estimator"]
        for point in grid:
            if not isinstance(point, list):
                raise _fail(st.where, "a point of estimatorParamMaps is not a list")
            for p in point:
                rel = self.grid_param(p, grid_uids, python_form, st.where)
                if rel is not None:
                    if rel in used:
                        raise _fail(st.where, f"grid stage {rel!r} named twice")
                    self.nested(st, rel)
                    used.append(rel)
        if st.entry.layout == "validator":
            self.only(st.folder, tuple(used))
        return used, len(grid)

    def grid_param(
        self, p: Any, grid_uids: dict[str, str], python_form: bool, where: str
    ) -> str | None:
        """Check one ``{"parent", "name", "value", "isJson"}``; returns the folder of a
        stage-valued parameter, or None for a JSON value."""
        if not isinstance(p, dict) or set(p) - {"parent", "name", "value", "isJson"}:
            raise _fail(where, "a grid parameter is not {parent, name, value, isJson}")
        parent, name, value = p.get("parent"), p.get("name"), p.get("value")
        if not isinstance(parent, str) or parent not in grid_uids:
            raise _fail(where, f"a grid parameter names stage {parent!r}, not in the search")
        if STAGES[grid_uids[parent]].jvm_only or not _is_param(
            pyspark_class(grid_uids[parent]), name
        ):
            raise _fail(where, f"a grid parameter sets {name!r}, not a parameter of {parent}")
        if not isinstance(value, str):
            raise _fail(where, f"grid parameter {name!r} has a non-string value")
        # pyspark's own writer stores a JSON true/false, Spark's the strings "true"/"false"
        flag = p.get("isJson", True)
        if "isJson" not in p or python_form:
            is_json = flag
        else:
            is_json = {"true": True, "false": False}.get(flag) if isinstance(flag, str) else None
        if not isinstance(is_json, bool):
            raise _fail(where, f"grid parameter {name!r} has isJson {flag!r}")
        if is_json:
            _plain(_loads(value, where), f"{where} (grid {name})")
            return None
        rel = value if python_form else _loads(value, where)
        if not (isinstance(rel, str) and _EPM.fullmatch(rel)):
            raise _fail(where, f"grid parameter {name!r} points to {rel!r}, not an epm_ folder")
        return rel

    def layout_cv_model(self, st: _Stage) -> None:
        self.validator_model(st, cv=True)

    def layout_tvs_model(self, st: _Stage) -> None:
        self.validator_model(st, cv=False)

    def validator_model(self, st: _Stage, *, cv: bool) -> None:
        used, n_points = self.layout_validator(st)
        self.nested(st, "bestModel")
        used.append("bestModel")
        persist = st.record.get("persistSubModels", False)
        if not isinstance(persist, bool):
            raise _fail(st.where, "persistSubModels is not true or false")
        if persist:
            if cv:
                folds = st.record["paramMap"].get("numFolds")
                if not isinstance(folds, int) or isinstance(folds, bool) or folds < 1:
                    raise _fail(st.where, "numFolds is not a positive integer")
                if folds * n_points > MAX_STAGES:
                    raise _fail(st.where, "too many sub-models")
                for f in range(folds):
                    for i in range(n_points):
                        self.nested(st, f"subModels/fold{f}/{i}")
                    self.only(st.path(f"subModels/fold{f}"), tuple(map(str, range(n_points))))
                self.only(st.path("subModels"), tuple(f"fold{f}" for f in range(folds)))
            else:
                for i in range(n_points):
                    self.nested(st, f"subModels/{i}")
                self.only(st.path("subModels"), tuple(map(str, range(n_points))))
            used.append("subModels")
        self.only(st.folder, tuple(used))

    # -- files -------------------------------------------------------------------------
    def only(self, folder: str, subdirs: tuple[str, ...]) -> None:
        """``folder`` holds ``metadata/`` (a stage's) and ``subdirs``, and no file."""
        files, dirs = self.tree.listing(folder)
        if files:
            raise _fail(f"{folder or '.'}/{sorted(files)[0]}", "unexpected file")
        extra = dirs - set(subdirs) - {"metadata"}
        if extra:
            raise _fail(f"{folder or '.'}/{sorted(extra)[0]}", "unexpected folder")

    def parquet_folder(self, folder: str, trees: str | None = None) -> None:
        def accept(name: str, data: bytes) -> None:
            if not _PART_PARQUET.fullmatch(name):
                raise _fail(f"{folder}/{name}", "unexpected file in a data folder")
            _check_parquet(data, f"{folder}/{name}", trees)

        if self.tree.exists(folder):
            self.tree.claim_folder(folder, accept, "data")


STAGE_PIPELINE_JVM = "org.apache.spark.ml.PipelineModel"
ROOT_CLASSES = (STAGE_PIPELINE_JVM, "pyspark.ml.pipeline.PipelineModel")


def _check_schema(node: Any, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise _fail(where, "the parquet schema nests too deeply")
    if isinstance(node, dict):
        if "serializedClass" in node or "pyClass" in node or node.get("type") == "udt":
            cls, py = node.get("class"), node.get("pyClass")
            if (
                node.get("type") != "udt"
                or cls not in _UDTS
                or _UDTS[cls] != py
                or set(node) - {"type", "class", "pyClass", "sqlType"}
            ):
                raise _fail(where, f"the parquet schema names type {cls or py!r}")
        for v in node.values():
            _check_schema(v, where, depth + 1)
    elif isinstance(node, list):
        for v in node:
            _check_schema(v, where, depth + 1)


def _check_parquet(data: bytes, where: str, trees: str | None) -> None:
    """A parquet file whose Spark schema names only Spark's vector and matrix types; for
    ``trees``, every per-tree metadata row is checked like a stage's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not data.startswith(b"PAR1") or not data.endswith(b"PAR1"):
        raise _fail(where, "not a parquet file")
    try:
        f = pq.ParquetFile(pa.BufferReader(data))
        kv = f.metadata.metadata or {}
        groups = [f.metadata.row_group(i) for i in range(f.metadata.num_row_groups)]
        declared = sum(
            g.column(c).total_uncompressed_size for g in groups for c in range(g.num_columns)
        )
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(where, f"unreadable parquet footer ({exc})") from None
    # a small file declaring huge pages or row counts would make Spark's JVM (and the tree
    # check below) allocate without bound: a decompression bomb
    if declared > MAX_PARQUET_EXPANSION * len(data) + (1 << 20):
        raise _fail(where, f"declares {declared} bytes of pages in a {len(data)}-byte file")
    if f.metadata.num_rows > MAX_PARQUET_ROWS_PER_BYTE * len(data) + 10_000:
        raise _fail(where, f"declares {f.metadata.num_rows} rows in a {len(data)}-byte file")
    # Spark builds the DataFrame schema (and instantiates the types it names) from this
    # footer entry; a footer holding it twice could show one value here and another to Spark
    footer_len = int.from_bytes(data[-8:-4], "little")
    if data[-8 - footer_len : -8].count(_SPARK_SCHEMA_KEY) > 1:
        raise _fail(where, "the parquet footer holds the Spark schema twice")
    if _SPARK_SCHEMA_KEY in kv:
        try:
            text = kv[_SPARK_SCHEMA_KEY].decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(where, "the parquet footer's Spark schema is not UTF-8") from None
        _check_schema(_loads(text, where), where)
    if trees is not None:
        _check_tree_rows(f, where, trees)


def _check_tree_rows(f: Any, where: str, tree_cls: str) -> None:
    import pyarrow as pa

    try:
        table = f.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _fail(where, f"unreadable tree metadata ({exc})") from None
    # (treeID, metadata, weights); Spark 4 writes the columns as _1, _2, _3
    text_columns = [i for i, t in enumerate(table.schema.types) if pa.types.is_string(t)]
    if table.num_columns != 3 or text_columns != [1]:
        raise _fail(where, f"tree metadata has columns {table.schema.names}")
    if table.num_rows > MAX_STAGES:
        raise _fail(where, "too many trees")
    cls = pyspark_class(tree_cls)
    for i, text in enumerate(table.column(1).to_pylist()):
        row = f"{where} (tree {i})"
        if not isinstance(text, str):
            raise _fail(row, "a tree has no metadata")
        record = _loads(text, row)
        if not isinstance(record, dict) or record.get("class") != tree_cls:
            name = record.get("class") if isinstance(record, dict) else None
            raise _fail(row, f"names class {name!r}, not {tree_cls}")
        checker = _Checker(_Tree([]))
        checker.header(record, row)
        checker.params(record, cls, row)
        checker.extras(record, row)


def check_tree(entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Check a packed ``PipelineModel`` folder; returns the entries to write for Spark
    (Hadoop's ``.crc`` checksum files are left out: safepoint checksums every file)."""
    tree = _Tree(entries)
    _Checker(tree).stage("", 0, only=ROOT_CLASSES)
    unreached = sorted({rel for rel, _ in entries} - tree.claimed)
    if unreached:
        raise _fail(unreached[0], "a file no Spark reader of this model reads")
    return [(rel, data) for rel, data in entries if rel not in tree.crc]
