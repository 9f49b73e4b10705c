"""The scoring pipeline: records in, model applied, predictions out, exactly once.

A ``read -> apply -> write`` pipeline::

    import safepoint as sp

    p = sp.ScoringPipeline(model="demo/clf@production", store=".safepoint")
    features = p.read("features.parquet")            # a file, a folder, or "-" (stdin)
    predictions = p.apply(features)                  # default: model.predict on the features
    p.write(predictions, "predictions.parquet",
            schema="type Predictions @schema { id: Int! @key prediction: Float! }")
    report = p.run()

``apply`` also takes a per-record function (plain, generator
or async; ``fn(record)`` or ``fn(record, model)``) or, preferably, a batch
function on a DataFrame (``batch=True``) so that predictions are vectorised.
A function that fetches its model itself needs no model: ``ScoringPipeline()``.

``run()`` works in a script and inside a running event loop (a Jupyter cell);
``await p.arun()`` runs async functions on the caller's own loop (see :mod:`.aio`).

Input offsets are committed atomically with the predictions they produced
(see :mod:`.sinks`); a killed job resumes where it stopped with no record lost
or written twice, for files and folders. stdin/stdout are best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ...errors import SafepointError, SchemaError
from .aio import BridgeCancelled, LoopBridge
from .model import ModelHandle, NoModelHandle, open_model
from .schema import Schema
from .sinks import CommitState, Sink, open_sink
from .sources import BadRecord, Batch, Source, open_source

__all__ = ["ScoringPipeline", "ScoringReport"]

ON_ERROR = ("dead_letter", "skip", "raise")


@dataclass
class ScoringReport:
    """What a run did. ``bad`` records went to the dead-letter output (or were
    skipped, if asked), never silently: they are counted here."""

    read: int = 0
    written: int = 0
    bad: int = 0
    duplicates: int = 0
    batches: int = 0
    resumed_from: dict[str, int] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exactly_once: bool = True
    #: the output already held every record of the input: this run found nothing to do
    already_complete: bool = False
    #: counts and input offsets committed in all, this run and earlier ones
    committed: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0


class _Stream:
    def __init__(self, pipeline: ScoringPipeline, stage: str) -> None:
        self.pipeline = pipeline
        self.stage = stage


class ScoringPipeline:
    """A read -> apply -> write pipeline over a model from the store (or a file).

    Args:
        model: ``"NAME@ALIAS"`` / ``"NAME@3"`` / ``"NAME"`` (latest) in ``store``, a path
            to a ``.sp`` file, a fitted model, ``from_checkpointer(checkpointer, key)``,
            a function returning the model (plain or async, called once per run), or
            None when the function given to :meth:`apply` fetches its model itself.
        store: a Store, URL or folder, for store references; with any model, the run is
            recorded in this store's runs table (shown by ``safepoint runs`` and the
            console).
        batch_size: records per batch (and per commit).
        on_error: ``"dead_letter"`` (default), ``"skip"`` (counted) or ``"raise"``.
        trusted: extra type names trusted when loading the model.
        reload: check the alias at every batch boundary and switch versions.
        quiet: no progress bar (default: quiet unless stderr is a terminal).
        name: run name shown in the store's runs table.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        store: Any = None,
        batch_size: int = 10_000,
        on_error: str = "dead_letter",
        trusted: Any = (),
        reload: bool = True,
        quiet: bool | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise SchemaError(f"batch_size must be a positive integer, not {batch_size!r}")
        if on_error not in ON_ERROR:
            raise SchemaError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        self.handle: ModelHandle = open_model(model, store=store, trusted=trusted)
        self.store = self.handle.store
        if self.store is None and store is not None:
            from .store_model import open_store

            self.store = open_store(store)  # a model object's run is recorded there too
        self.batch_size = batch_size
        self.on_error = on_error
        self.reload = reload
        self.quiet = (not sys.stderr.isatty()) if quiet is None else quiet
        self.name = name or f"score:{self.handle.label}"
        self._source: Source | None = None
        self._fn: Callable[..., Any] | None = None
        self._batch_fn = True
        self._sink: Sink | None = None
        self._schema: Schema | None = None
        self._check_signature = True
        self._concurrency = 100
        self._bridge: LoopBridge | None = None
        self._warm = False
        self._method = "predict"

    @property
    def model(self) -> Any:
        """The model in use (it changes when the alias moves)."""
        return self.handle.model

    # -- building the pipeline ----------------------------------------------------------
    def read(
        self,
        source: Any,
        *,
        format: str | None = None,
        follow: bool = False,
        idle_timeout: float | None = None,
    ) -> _Stream:
        """Records from a Parquet/CSV/JSON-lines file, a folder of them, or ``"-"``."""
        self._source = open_source(source, fmt=format, follow=follow, idle_timeout=idle_timeout)
        return _Stream(self, "read")

    def apply(
        self,
        stream: _Stream | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        batch: bool | None = None,
        check_signature: bool = True,
        concurrency: int = 100,
        method: str = "predict",
    ) -> _Stream:
        """Apply ``fn`` (default: the model's ``method``) to every record or batch.

        ``method`` is ``"predict"`` (a ``prediction`` column), ``"predict_proba"``,
        ``"predict_log_proba"`` or ``"decision_function"``; a method answering several
        values per record gives one column per class (``proba_<class>``,
        ``log_proba_<class>``, ``decision_<class>``)::

            p.apply(p.read("features.parquet"), method="predict_proba")

        An ``async`` per-record function runs on up to ``concurrency`` records at once;
        the run's very first record runs alone, so a function that loads and caches its
        model on first call loads it once.
        """
        if fn is not None and not callable(fn):
            raise SchemaError("apply() takes a function")
        if fn is not None and method != "predict":
            raise SchemaError("apply() takes a function or a method, not both")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise SchemaError(f"concurrency must be a positive integer, not {concurrency!r}")
        if isinstance(self.handle, NoModelHandle):
            if fn is None:
                raise SchemaError(
                    "this pipeline has no model: give ScoringPipeline a model, or give "
                    "apply() a function that fetches its model itself"
                )
            if _arity(fn) >= 2:
                raise SchemaError(
                    f"{getattr(fn, '__name__', 'the function')} takes a model argument but "
                    "the pipeline has no model: pass model= to ScoringPipeline (a store "
                    "reference, from_checkpointer(...), or a function returning the model)"
                )
        if fn is None and self.handle.model is not None:
            self.handle.check_method(method)  # a model from a function: checked at run()
        self._method = method
        if fn is not None and batch is None:
            # a per-record function unless told otherwise
            batch = bool(getattr(fn, "__safepoint_batch__", False))
        self._concurrency = concurrency
        self._fn = fn
        self._batch_fn = True if fn is None else bool(batch)
        self._check_signature = check_signature
        return _Stream(self, "apply")

    def write(
        self,
        stream: _Stream | None,
        sink: Any,
        *,
        schema: Schema | str | dict[str, Any] | None = None,
        format: str | None = None,
        dead_letter: str | None = None,
    ) -> None:
        """Write predictions to a file, folder, ``"-"`` or a :class:`Sink`, with a schema."""
        if isinstance(schema, str):
            schema = Schema.parse(schema)
        elif isinstance(schema, dict):
            schema = Schema(schema.get("columns", schema), key=schema.get("key"))
        self._schema = schema
        self._sink = open_sink(sink, fmt=format, dead_letter=dead_letter)
        self._sink.key = schema.key if schema is not None else None

    # -- running --------------------------------------------------------------------------
    def run(self, *, restart: bool = False) -> ScoringReport:
        """Process every record (or, with ``follow``, until stopped) and report counts.

        Run again on the same output, it resumes after the last commit; if everything
        was already scored it does nothing and says so (``report.already_complete``).
        ``restart=True`` deletes what earlier runs committed to the output and starts over.

        Works in a script and inside a running event loop (a Jupyter cell): async
        functions then run on a private loop in a helper thread. Use ``await arun()``
        to run them on the caller's loop instead (needed when they use objects bound
        to it, such as a client opened in the notebook).
        """
        with LoopBridge() as bridge:
            return self._run(bridge, restart, None)

    async def arun(self, *, restart: bool = False) -> ScoringReport:
        """:meth:`run` from async code, without blocking the event loop.

        Reading, scoring and committing run in a worker thread; async functions given
        to :meth:`apply` run on this loop. Cancelled, the run stops at the batch in
        flight (its async calls are cancelled and it is not committed; the next run
        resumes after the last committed batch) and the cancellation propagates.

        Example:
            >>> report = await pipeline.arun()  # doctest: +SKIP
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ScoringReport] = loop.create_future()
        stop = threading.Event()

        def settle(result: ScoringReport | None, exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(result)  # type: ignore[arg-type]

        bridge = LoopBridge(loop)

        def work() -> None:
            try:
                result = self._run(bridge, restart, stop)
            except BaseException as exc:
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        threading.Thread(target=work, name="safepoint-scoring", daemon=True).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            stop.set()
            bridge.cancel()  # the batch in flight is abandoned: the next run redoes it
            with contextlib.suppress(BaseException):
                await done
            raise

    def _run(
        self, bridge: LoopBridge, restart: bool, stop: threading.Event | None
    ) -> ScoringReport:
        if self._source is None or self._sink is None:
            raise SchemaError("call read() and write() before run()")
        source, sink = self._source, self._sink
        if restart:
            sink.reset()
        state = sink.recover()
        resumed = state.seq > 0
        report = ScoringReport(
            resumed_from=dict(state.offsets), exactly_once=source.replayable and sink.transactional
        )
        seen = sink.committed_keys()
        run = self._start_run(state)
        total = source.total()
        t0 = time.perf_counter()
        progress = _Progress(self.quiet)
        self._bridge, self._warm = bridge, False
        try:
            self.handle.prepare(bridge.call)
            if self._fn is None:
                self.handle.check_method(self._method)
            checked = False
            for batch in source.batches(state.offsets, self.batch_size):
                if stop is not None and stop.is_set():
                    raise _Stopped("cancelled")
                if self.reload and self.handle.refresh():
                    progress.note(f"model switched to version {self.handle.version}")
                if not checked and self._check_signature and self._fn is None:
                    self.handle.check_input(batch.frame)
                    checked = True
                table, dead = self._process(batch)
                if self._schema is not None and self._schema.key is not None and table.num_rows:
                    table, dups = _dedup(table, self._schema.key, seen)
                    report.duplicates += dups
                    state.counts["duplicates"] += dups
                if self.on_error == "raise" and dead:
                    raise SchemaError(
                        f"record {dead[0].source}:{dead[0].offset} failed: {dead[0].error}"
                    )
                n_in = batch.end - batch.start
                state.seq += 1
                state.offsets[batch.source] = batch.end
                state.counts["read"] += n_in
                state.counts["written"] += table.num_rows
                state.counts["bad"] += len(dead)
                versions = state.extra.setdefault("versions", {})
                versions[str(state.seq)] = self.handle.version
                sink.commit(table, dead if self.on_error == "dead_letter" else [], state)
                report.read += n_in
                report.written += table.num_rows
                report.bad += len(dead)
                report.batches += 1
                if self.handle.version not in report.versions:
                    report.versions.append(self.handle.version)
                progress.advance(n_in)
                if run is not None:
                    elapsed = time.perf_counter() - t0
                    run.update(
                        progress=min(1.0, state.counts["read"] / total) if total else None,
                        state={
                            "offsets": state.offsets,
                            "counts": state.counts,
                            "records_per_s": report.read / elapsed if elapsed else 0.0,
                            "model_version": self.handle.version,
                            "latest": _latest(table, self.handle.version),
                            "dead_letters": state.counts["bad"],
                        },
                    )
            sink.finish()
        except BaseException as exc:
            if run is not None:
                if isinstance(exc, KeyboardInterrupt | _Stopped | BridgeCancelled):
                    # resumable: the committed batches stay, the next run goes on from them
                    with contextlib.suppress(SafepointError):
                        run.update(status="interrupted", message="stopped; run again to resume")
                else:
                    run.fail(f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            progress.close()
            self._bridge = None
        report.seconds = time.perf_counter() - t0
        report.already_complete = resumed and report.batches == 0
        report.committed = dict(state.counts)
        report.offsets = dict(state.offsets)
        if run is not None:
            run.update(
                state={
                    "offsets": state.offsets,
                    "counts": state.counts,
                    "versions": report.versions,
                }
            )
            run.finish(message=complete_message(report) if report.already_complete else "")
        return report

    def _start_run(self, state: CommitState) -> Any:
        if self.store is None:
            return None
        runs = getattr(self.store, "runs", None)
        if runs is None:
            return None
        return runs.start(
            "scoring",
            self.name,
            {"offsets": state.offsets, "model": self.handle.label},
        )

    # -- one batch --------------------------------------------------------------------------
    def _process(self, batch: Batch) -> tuple[pa.Table, list[BadRecord]]:
        dead = list(batch.bad)
        frame = batch.frame
        if len(frame) == 0:
            return self._conform(pd.DataFrame(), dead, batch)
        if self._fn is None:
            frame, bad_rows = self.handle.coerce(frame)
            dead += [
                BadRecord(batch.source, int(i), why, _record(batch.frame, i)) for i, why in bad_rows
            ]
            out = self._predict_default(frame, batch, dead)
        elif self._batch_fn:
            out = self._apply_batch(frame, batch, dead)
        else:
            out = self._apply_records(frame, batch, dead)
        return self._conform(out, dead, batch)

    def _call(self, fn: Callable[..., Any], x: Any) -> Any:
        return fn(x, self.handle.model) if _arity(fn) >= 2 else fn(x)

    def _predict_default(
        self, frame: pd.DataFrame, batch: Batch, dead: list[BadRecord]
    ) -> pd.DataFrame:
        def predict(df: pd.DataFrame) -> pd.DataFrame:
            preds = self.handle.predict(df, method=self._method)
            out = _prediction_frame(preds, self._method, self.handle.classes(), df.index)
            key = self._schema.key if self._schema is not None else None
            for col in ([key] if key else []) + (["id"] if "id" in df.columns else []):
                if col in df.columns and col not in out.columns:
                    out.insert(0, col, df[col].to_numpy())
            return out

        return self._guarded(predict, frame, batch, dead)

    def _apply_batch(
        self, frame: pd.DataFrame, batch: Batch, dead: list[BadRecord]
    ) -> pd.DataFrame:
        def run(df: pd.DataFrame) -> pd.DataFrame:
            res = self._call(self._fn, df)  # type: ignore[arg-type]
            return _as_frame(res, df.index)

        return self._guarded(run, frame, batch, dead)

    def _guarded(
        self,
        fn: Callable[[pd.DataFrame], pd.DataFrame],
        frame: pd.DataFrame,
        batch: Batch,
        dead: list[BadRecord],
    ) -> pd.DataFrame:
        """Run vectorised; if the batch fails, split it in halves until the records
        that fail are found (a few calls for a few bad records, not one per record:
        a call may be a Spark job or a Java process)."""
        if len(frame) == 0:
            return pd.DataFrame()
        try:
            return fn(frame)
        except SafepointError:
            raise
        except Exception as exc:
            if len(frame) == 1:
                off = int(frame.index[0])
                dead.append(
                    BadRecord(
                        batch.source, off, f"{type(exc).__name__}: {exc}", _record(frame, off)
                    )
                )
                return pd.DataFrame()
        mid = len(frame) // 2
        halves = [
            self._guarded(fn, frame.iloc[:mid], batch, dead),
            self._guarded(fn, frame.iloc[mid:], batch, dead),
        ]
        parts = [h for h in halves if len(h) or len(h.columns)]
        return pd.concat(parts) if parts else pd.DataFrame()

    def _apply_records(
        self, frame: pd.DataFrame, batch: Batch, dead: list[BadRecord]
    ) -> pd.DataFrame:
        fn = self._fn
        assert fn is not None
        rows: list[dict[str, Any]] = []
        index: list[int] = []
        records: list[dict[str, Any]] = frame.to_dict("records")
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)

        results: list[Any]
        if is_async:
            bridge = self._bridge or LoopBridge()
            try:
                results = bridge.call(self._gather(fn, records))
            finally:
                if self._bridge is None:
                    bridge.close()
        else:
            results = []
            for rec in records:
                try:
                    res = self._call(fn, rec)
                    results.append(list(res) if inspect.isgenerator(res) else _as_records(res))
                except Exception as exc:
                    results.append(exc)
        for off, rec, res in zip(frame.index, records, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, SafepointError):
                    raise res
                dead.append(BadRecord(batch.source, int(off), f"{type(res).__name__}: {res}", rec))
                continue
            for r in res:
                rows.append(r)
                index.append(int(off))
        return pd.DataFrame(rows, index=index)

    async def _gather(self, fn: Callable[..., Any], records: list[dict[str, Any]]) -> list[Any]:
        """Every record through an async function, ``concurrency`` at a time; the run's
        first record alone first (a function that caches its model loads it once)."""
        sem = asyncio.Semaphore(self._concurrency)

        async def one(rec: dict[str, Any]) -> Any:
            async with sem:
                try:
                    res = self._call(fn, rec)
                    if inspect.isasyncgen(res):
                        return _as_records([r async for r in res])
                    return _as_records(await res)
                except Exception as exc:
                    return exc

        out: list[Any] = []
        rest = records
        if not self._warm and records:
            out.append(await one(records[0]))
            rest = records[1:]
            self._warm = True
        out += await asyncio.gather(*(one(r) for r in rest))
        return out

    def _conform(
        self, out: pd.DataFrame, dead: list[BadRecord], batch: Batch
    ) -> tuple[pa.Table, list[BadRecord]]:
        if self._schema is None or (len(out) == 0 and not len(out.columns)):
            if len(out) == 0:
                return (
                    self._schema.arrow().empty_table() if self._schema is not None else pa.table({})
                ), dead
            out = out.assign(model_version=self.handle.version)
            return pa.Table.from_pandas(out, preserve_index=False), dead
        if "model_version" in self._schema.names:
            out = out.assign(model_version=self.handle.version)
        table, bad_rows = self._schema.conform(out)
        for pos, why in bad_rows:
            off = int(out.index[pos])
            dead.append(
                BadRecord(
                    batch.source, off, f"output does not fit the schema: {why}", _record(out, off)
                )
            )
        return table, dead


class _Stopped(Exception):
    """``arun()`` was cancelled: stop at this batch boundary."""


def _arity(fn: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 1


def complete_message(report: ScoringReport) -> str:
    """``already complete: 1,000 records at offset in.parquet:1000``."""
    where = ", ".join(f"{k}:{v}" for k, v in sorted(report.offsets.items())) or "-"
    n = report.committed.get("read", 0)
    return f"already complete: {n:,} records at offset {where}"


#: column prefix of each method's output when it answers several values per record
_PREFIX = {"predict_proba": "proba", "predict_log_proba": "log_proba"}


def _prediction_frame(
    preds: np.ndarray[Any, Any], method: str, classes: list[Any] | None, index: pd.Index
) -> pd.DataFrame:
    """One ``prediction`` column, or one column per class for 2-D answers."""
    if preds.ndim == 1:
        return pd.DataFrame({"prediction": preds}, index=index)
    prefix = _PREFIX.get(method, method.replace("_function", ""))
    labels = classes if classes is not None and len(classes) == preds.shape[1] else None
    names = [f"{prefix}_{labels[i] if labels else i}" for i in range(preds.shape[1])]
    return pd.DataFrame(preds.reshape(len(preds), -1), index=index, columns=names)


def _latest(table: pa.Table, version: str, n: int = 5) -> list[dict[str, Any]]:
    """The last few predictions of a batch, JSON-safe, for the runs table (and the console)."""
    import json

    rows = table.slice(max(0, table.num_rows - n)).to_pylist()
    out: list[dict[str, Any]] = json.loads(json.dumps(rows, default=str))
    for row in out:
        row.setdefault("model_version", version)
    return out


def _record(frame: pd.DataFrame, label: Any) -> Any:
    try:
        row = frame.loc[label]
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        return {
            str(k): (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in row.to_dict().items()
        }
    except (KeyError, TypeError, ValueError):
        return None


def _as_records(res: Any) -> list[dict[str, Any]]:
    if res is None:
        return []
    if isinstance(res, dict):
        return [res]
    if isinstance(res, list | tuple) and all(isinstance(r, dict) for r in res):
        return list(res)
    raise SchemaError(f"a per-record function must return a dict or dicts, not {type(res)}")


def _as_frame(res: Any, index: pd.Index) -> pd.DataFrame:
    if isinstance(res, pd.DataFrame):
        return res
    if isinstance(res, pd.Series):
        return res.to_frame(res.name or "prediction")
    if isinstance(res, dict):
        return pd.DataFrame(res, index=index)
    arr = np.asarray(res)
    if arr.ndim == 1 and len(arr) == len(index):
        return pd.DataFrame({"prediction": arr}, index=index)
    raise SchemaError(
        f"a batch function must return a DataFrame, Series, dict of columns or 1-D array "
        f"of one value per record; got {type(res).__name__} {getattr(arr, 'shape', '')}"
    )


def _dedup(table: pa.Table, key: str, seen: set[Any]) -> tuple[pa.Table, int]:
    keys = table.column(key).to_pylist()
    keep = np.ones(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        if k in seen:
            keep[i] = False
        else:
            seen.add(k)
    dups = int((~keep).sum())
    return (table.filter(pa.array(keep)) if dups else table), dups


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.bar: Any = None
        if not quiet and not os.environ.get("SAFEPOINT_QUIET"):
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("{task.completed:,} records"),
                TimeElapsedColumn(),
                console=Console(stderr=True),  # stdout may be the predictions or --json
                transient=False,
            )
            self.task = self.bar.add_task("scoring", total=None)
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def note(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.console.print(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
