"""Scale a scoring job out on Spark: a Parquet dataset through ``mapInPandas``, exactly once.

::

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.master("local[2]").getOrCreate()
    report = score_on_spark(spark, "fraud/clf@production", "/shared/store",
                            "features/", "predictions/", schema="id: Int! @key, prediction: Float!")

How it works:

* On the driver, the alias is resolved once (every executor scores with the same
  version) and the dataset's Parquet footers are read (metadata only): each **row
  group** of each input file is a unit of work and of commit. Spark never splits a
  row group between tasks, and a row group does not depend on how Spark partitions
  the dataset, so the commit unit is stable across runs and configurations.
* ``spark.read.parquet(...)`` with the hidden ``_metadata.file_path`` and
  ``_metadata.row_index`` columns goes through ``mapInPandas``. In each Python
  worker the model is loaded once (from the store, safely) and kept for every task
  that worker runs; each task scores the row groups of its partition with the same
  pipeline as :class:`~.pipeline.ScoringPipeline` (signature check, text to numbers,
  schema, dead letters).
* A finished row group commits as ``output/part-<file>-<hash>-rg<N>.parquet``:
  its dead letters first (``output/_dead/``), then the part, written to a temporary
  name, fsynced and renamed; the part (its counts are in its metadata) is the commit
  point. A rename is atomic and the content of a unit does not depend on who writes
  it, so a retried or speculative task, or a worker that outlives a killed driver,
  can only rewrite the same file: nothing is written twice.
* Run again after a crash (or ``kill -9`` of the driver), the job skips files whose
  row groups are all committed and every committed row group of the others.

The input, the output and the store must be reachable from the executors under the
same paths (a local or mounted shared folder; the store may also be S3 with a
PostgreSQL catalog). Keys are deduplicated within a row group only.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from ...errors import NotFoundError, SafepointError, SchemaError
from .sinks import CommitState, Sink, _atomic_write, encode_table
from .sources import BadRecord, Batch, Source

if TYPE_CHECKING:
    from ...stores.store import Store

__all__ = ["SparkScoringReport", "score_on_spark"]

FILE = "__safepoint_file"
ROW = "__safepoint_row_index"
STATS_SCHEMA = (
    "unit string, source string, read long, written long, bad long, duplicates long, "
    "skipped boolean, loaded boolean, pid long, version string"
)
UNIT_KEY = b"safepoint.scoring.unit"

# (store url, model ref, trusted) -> handle: one load per Python worker process
_HANDLES: dict[tuple[str, str, tuple[str, ...]], Any] = {}
_LOCK = threading.Lock()


@dataclass
class SparkScoringReport:
    """What a Spark scoring job did (this run), and what the output holds in all."""

    read: int = 0
    written: int = 0
    bad: int = 0
    duplicates: int = 0
    #: row groups committed by this run / found committed by earlier runs
    units: int = 0
    units_skipped: int = 0
    units_total: int = 0
    version: str = ""
    #: Python worker process id -> how many times it loaded the model (1 each)
    model_loads: dict[int, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)
    already_complete: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class _FilePlan:
    source: str  # path relative to the input root: names the records' source
    starts: tuple[int, ...]  # first row index of each row group
    sizes: tuple[int, ...]
    units: tuple[str, ...]

    @property
    def live(self) -> list[str]:
        """The units to commit: row groups with records (an empty one has nothing)."""
        return [u for u, n in zip(self.units, self.sizes, strict=True) if n]


@dataclass(frozen=True)
class _JobPlan:
    store: Store
    ref: str
    trusted: tuple[str, ...]
    output: str
    schema: str | None
    batch_size: int
    on_error: str
    fn: Callable[..., Any] | None
    batch: bool | None
    method: str
    files: dict[str, _FilePlan]  # local path -> plan
    committed: frozenset[str]


# -- driver side ----------------------------------------------------------------------------
def _local(uri: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise SchemaError(
            f"score_on_spark reads and writes local or mounted shared folders; {uri} is on "
            f"{parsed.scheme}:// (copy the dataset to a shared folder, or score it per file "
            "on Dask)"
        )
    return os.path.normpath(urllib.parse.unquote(parsed.path))


def _unit_id(rel: str, rg: int) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(rel).stem)[:40]
    digest = hashlib.sha256(rel.encode()).hexdigest()[:10]
    return f"{stem}-{digest}-rg{rg:05d}"


def _plan_files(files: list[str], root: str) -> dict[str, _FilePlan]:
    import pyarrow.parquet as pq

    plans = {}
    for path in files:
        meta = pq.ParquetFile(path).metadata
        sizes = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        starts, at = [], 0
        for n in sizes:
            starts.append(at)
            at += n
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        units = tuple(_unit_id(rel, i) for i in range(len(sizes)))
        plans[path] = _FilePlan(rel, tuple(starts), sizes, units)
    return plans


def _part(output: Path, unit: str) -> Path:
    return output / f"part-{unit}.parquet"


def _committed(output: Path) -> dict[str, dict[str, Any]]:
    """Unit id -> the counts its part records."""
    import pyarrow.parquet as pq

    out = {}
    for p in output.glob("part-*.parquet"):
        try:
            meta = pq.read_schema(p).metadata or {}
        except (pa.ArrowInvalid, OSError):
            continue  # not one of ours (or damaged): it is not a commit
        raw = meta.get(UNIT_KEY)
        if raw is not None:
            info = json.loads(raw)
            out[info["unit"]] = info
    return out


def _resolve(model: Any, store: Store) -> tuple[Any, str, str]:
    """(store, reference pinned to one version, version label)."""
    from ...stores.names import parse_ref
    from .store_model import open_store

    if not isinstance(model, str):
        raise SchemaError(
            "score_on_spark takes the model as a store reference (NAME[@ALIAS|@VERSION]): "
            "every executor loads it from the store; put a model object in the store first"
        )
    st = open_store(store)
    name, selector = parse_ref(model)
    version = st.info(name, selector).version
    return st, f"{name}@{version}", str(version)


def score_on_spark(
    spark: Any,
    model: str,
    store: Store,
    inputs: Any,
    output: str | os.PathLike[str],
    *,
    schema: str | None = None,
    batch_size: int = 10_000,
    on_error: str = "dead_letter",
    trusted: tuple[str, ...] = (),
    fn: Callable[..., Any] | None = None,
    batch: bool | None = None,
    method: str = "predict",
    restart: bool = False,
) -> SparkScoringReport:
    """Score a Parquet dataset (a folder, a file or a list of files) on a Spark cluster.

    ``model`` is ``NAME[@ALIAS|@VERSION]`` in ``store`` (a Store or a URL reachable
    from the executors); ``output`` a folder. ``fn``/``batch``/``method`` are as for
    :meth:`ScoringPipeline.apply` (default: the model's predict). Run again after a
    crash, it resumes with nothing lost or written twice; on a finished output it does
    nothing (``already_complete``); ``restart=True`` deletes the output's parts first.
    """
    from .pipeline import ON_ERROR

    if on_error not in ON_ERROR:
        raise SchemaError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise SchemaError(f"batch_size must be a positive integer, not {batch_size!r}")
    from .model import METHODS

    if method not in METHODS:
        raise SchemaError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if fn is not None and method != "predict":
        raise SchemaError("score_on_spark takes a function or a method, not both")
    if schema is not None:
        from .schema import Schema

        Schema.parse(schema)  # a bad schema fails here, not in every task
    t0 = time.perf_counter()
    st, ref, version = _resolve(model, store)
    paths = [os.fspath(p) for p in ([inputs] if isinstance(inputs, str | os.PathLike) else inputs)]
    for p in paths:
        if not os.path.exists(p):
            raise NotFoundError(f"input {p!r} does not exist")
    root = paths[0] if len(paths) == 1 and os.path.isdir(paths[0]) else None
    reader = spark.read.option("basePath", root) if root else spark.read
    try:
        files = sorted(_local(u) for u in reader.parquet(*paths).inputFiles())
    except SafepointError:
        raise
    except Exception as exc:
        from .spark_scoring import spark_error

        raise SchemaError(f"Spark cannot read {paths} as Parquet: {spark_error(exc)}") from None
    if not files:
        raise NotFoundError(f"no Parquet file in {paths}")
    plans = _plan_files(files, root or os.path.commonpath([os.path.dirname(f) for f in files]))
    out = Path(output)
    if restart and out.is_dir():
        _reset(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "_dead").mkdir(exist_ok=True)
    done = _committed(out)
    report = SparkScoringReport(version=version)
    report.units_total = sum(len(p.live) for p in plans.values())
    report.units_skipped = sum(1 for p in plans.values() for u in p.live if u in done)
    todo = [f for f, p in plans.items() if any(u not in done for u in p.live)]
    run = _start_run(st, ref, str(out))
    try:
        if todo:
            _check_columns(st, ref, trusted, reader.parquet(*todo).columns, fn)
            plan = _JobPlan(
                st,
                ref,
                tuple(trusted),
                str(out.resolve()),
                schema,
                batch_size,
                on_error,
                fn,
                batch,
                method,
                {f: plans[f] for f in todo},
                frozenset(done),
            )
            frame = reader.parquet(*todo).selectExpr(
                "*", f"_metadata.file_path AS {FILE}", f"_metadata.row_index AS {ROW}"
            )
            try:
                rows = frame.mapInPandas(_task(plan), STATS_SCHEMA).collect()
            except Exception as exc:
                from .spark_scoring import spark_error

                raise SchemaError(f"the Spark scoring job failed: {spark_error(exc)}") from None
            for r in rows:
                if r["skipped"]:
                    report.units_skipped += 1
                    continue
                report.units += 1
                report.read += r["read"]
                report.written += r["written"]
                report.bad += r["bad"]
                report.duplicates += r["duplicates"]
                if r["loaded"]:
                    report.model_loads[r["pid"]] = report.model_loads.get(r["pid"], 0) + 1
        else:
            report.already_complete = bool(done)
        final = _committed(out)
        for key in ("read", "written", "bad", "duplicates"):
            report.committed[key] = sum(int(u.get(key, 0)) for u in final.values())
        missing = report.units_total - sum(1 for p in plans.values() for u in p.live if u in final)
        if missing:
            raise SchemaError(
                f"{missing} row group(s) of the input were not committed (did the input change "
                "while the job ran?): run the same job again to score them"
            )
    except BaseException as exc:
        if run is not None:
            run.fail(f"{type(exc).__name__}: {exc}"[:500])
        raise
    report.seconds = time.perf_counter() - t0
    if run is not None:
        run.update(
            state={
                "counts": report.committed,
                "units": report.units_total,
                "model_version": version,
                "engine": "spark",
            }
        )
        run.finish(message="already complete" if report.already_complete else "")
    return report


def _reset(out: Path) -> None:
    import shutil

    for p in out.glob("part-*.parquet"):
        p.unlink(missing_ok=True)
    shutil.rmtree(out / "_dead", ignore_errors=True)
    for p in out.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def _start_run(store: Store, ref: str, output: str) -> Any:
    runs = getattr(store, "runs", None)
    if runs is None:
        return None
    return runs.start("scoring", f"score:{ref} (spark)", {"output": output, "engine": "spark"})


def _check_columns(
    store: Store, ref: str, trusted: tuple[str, ...], columns: list[str], fn: Any
) -> None:
    """Before any task: a model the executors can use, and every feature it was trained on."""
    info = store.inspect(ref, trusted=trusted)
    spark_types = [t["name"] for t in info.types if t["name"].startswith("pyspark.")]
    if spark_types:
        raise SchemaError(
            f"{ref} is a Spark model ({spark_types[0]}): Spark workers cannot load it (it "
            "needs the driver's session). Score it with the ordinary pipeline "
            "(safepoint score without --engine spark), which runs it on a Spark session"
        )
    if fn is not None:
        return
    names = (info.signature or {}).get("feature_names") or []
    missing = [c for c in names if c not in columns]
    if missing:
        raise SchemaError(
            f"the dataset lacks feature column(s) {missing} that model {ref} was trained on; "
            f"it has {columns}"
        )


# -- executor side ----------------------------------------------------------------------------
def _handle(plan: _JobPlan) -> tuple[Any, bool]:
    from .model import open_model

    key = (plan.store.url, plan.ref, plan.trusted)
    with _LOCK:
        handle = _HANDLES.get(key)
        if handle is not None:
            return handle, False
        handle = open_model(plan.ref, store=plan.store, trusted=plan.trusted)
        _HANDLES[key] = handle
        return handle, True


def _task(plan: _JobPlan) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from _score_partition(plan, batches)

    return run


def _score_partition(plan: _JobPlan, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    import numpy as np

    pending: dict[str, list[pd.DataFrame]] = {}
    counts: dict[str, int] = {}
    where: dict[str, tuple[_FilePlan, int]] = {}
    local: dict[str, str] = {}
    for pdf in batches:
        for uri, rows in pdf.groupby(FILE, sort=False):
            path = local.setdefault(str(uri), _local(str(uri)))
            fp = plan.files.get(path)
            if fp is None:
                raise SchemaError(f"Spark read {path}, which the job did not plan to score")
            rg = np.searchsorted(fp.starts, rows[ROW].to_numpy(), side="right") - 1
            for g, part in rows.groupby(rg, sort=False):
                unit = fp.units[int(g)]
                if unit in plan.committed:
                    continue
                pending.setdefault(unit, []).append(part)
                counts[unit] = counts.get(unit, 0) + len(part)
                where[unit] = (fp, int(g))
                if counts[unit] == fp.sizes[int(g)]:
                    yield _commit_unit(plan, unit, fp, int(g), pd.concat(pending.pop(unit)))
    if pending:
        raise SchemaError(
            f"row group(s) {sorted(pending)} came incomplete to this task: "
            f"{ {u: counts[u] for u in pending} } rows"
        )


class _UnitSource(Source):
    def __init__(self, name: str, frame: pd.DataFrame, start: int) -> None:
        self.name = name
        self.frame = frame
        self.start = start

    def batches(self, committed: dict[str, int], batch_size: int) -> Iterator[Batch]:
        n = len(self.frame)
        for i in range(0, n, batch_size):
            part = self.frame.iloc[i : i + batch_size]
            yield Batch(self.name, self.start + i, part, self.start + i + len(part))


class _UnitSink(Sink):
    """Collects a row group's predictions; ``finish`` commits them as one part."""

    def __init__(self, output: Path, unit: str, info: dict[str, Any]) -> None:
        self.output = output
        self.unit = unit
        self.info = info
        self.tables: list[pa.Table] = []
        self.dead: list[BadRecord] = []
        self.counts: dict[str, int] = {}

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        self.tables.append(table)
        self.dead += dead
        self.counts = dict(state.counts)

    def finish(self) -> None:
        dead_file = self.output / "_dead" / f"{self.unit}.jsonl"
        if self.dead:
            _atomic_write(dead_file, b"".join(d.to_json().encode() + b"\n" for d in self.dead))
        nonempty = [t for t in self.tables if t.num_columns]
        table = (
            pa.concat_tables(nonempty, promote_options="permissive") if nonempty else pa.table({})
        )
        meta = dict(table.schema.metadata or {})
        meta[UNIT_KEY] = json.dumps({**self.info, **self.counts, "unit": self.unit}).encode()
        # the commit point: the part appears whole, with its counts, or not at all
        _atomic_write(
            _part(self.output, self.unit),
            encode_table(table.replace_schema_metadata(meta), "parquet"),
        )


def _commit_unit(
    plan: _JobPlan, unit: str, fp: _FilePlan, rg: int, rows: pd.DataFrame
) -> pd.DataFrame:
    from .pipeline import ScoringPipeline

    output = Path(plan.output)
    stats: dict[str, Any] = {
        "unit": unit,
        "source": fp.source,
        "read": 0,
        "written": 0,
        "bad": 0,
        "duplicates": 0,
        "skipped": False,
        "loaded": False,
        "pid": os.getpid(),
        "version": "",
    }
    if _part(output, unit).exists():  # an earlier attempt of this task committed it
        return pd.DataFrame([{**stats, "skipped": True}])
    handle, loaded = _handle(plan)
    rows = rows.sort_values(ROW)
    frame = rows.drop(columns=[FILE, ROW])
    frame.index = pd.Index(rows[ROW].to_numpy(), dtype="int64")
    p = ScoringPipeline(handle, batch_size=plan.batch_size, on_error=plan.on_error, quiet=True)
    p.store = None  # the driver records the job in the runs table, not every row group
    p.reload = False  # one version for the whole job
    sink = _UnitSink(
        output,
        unit,
        {"source": fp.source, "row_group": rg, "model_version": handle.version},
    )
    p.write(
        p.apply(
            p.read(_UnitSource(fp.source, frame, fp.starts[rg])),
            plan.fn,
            batch=plan.batch,
            method=plan.method,
        ),
        sink,
        schema=plan.schema,
    )
    r = p.run()
    stats.update(
        read=r.read,
        written=r.written,
        bad=r.bad,
        duplicates=r.duplicates,
        loaded=loaded,
        version=handle.version,
    )
    return pd.DataFrame([stats])
