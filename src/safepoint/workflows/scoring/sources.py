"""Record sources: Parquet, CSV, JSON lines, a folder of them, stdin.

A source yields :class:`Batch` objects tagged with the source file and the
row offset they start at. Offsets count records of one file (good and bad
alike), so a resumed job skips exactly what was committed. Files and folders
are replayable (exactly once); stdin is not (best effort).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa

from ...errors import NotFoundError, SchemaError

__all__ = ["BadRecord", "Batch", "Source", "open_source"]

CSV_BLOCK = 1 << 20
FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass
class BadRecord:
    """A record that could not be read or scored, kept for the dead-letter file."""

    source: str
    offset: int
    error: str
    record: Any = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "offset": self.offset,
                "error": self.error,
                "record": self.record,
            },
            default=str,
        )


@dataclass
class Batch:
    source: str
    start: int
    #: records as a DataFrame, indexed by their offset in the source
    frame: pd.DataFrame
    #: offset after the last record of this batch (bad records included)
    end: int
    bad: list[BadRecord] = field(default_factory=list)


def detect_format(path: str, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("parquet", "csv", "jsonl"):
            raise SchemaError(f"unknown input format {fmt!r}: use parquet, csv or jsonl")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise SchemaError(
            f"cannot tell the format of {path!r} from its extension; "
            "pass format='parquet'|'csv'|'jsonl' (CLI: --input-format)"
        )
    return FORMATS[ext]


class Source:
    """Base class: iterate batches, resuming after committed offsets."""

    replayable = True

    def batches(self, committed: dict[str, int], batch_size: int) -> Iterator[Batch]:
        raise NotImplementedError

    def total(self) -> int | None:
        """Number of records, where it is known without reading them (Parquet)."""
        return None


def _iter_parquet(path: str, name: str, start: int, batch_size: int) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    # skip whole row groups before the offset without decoding them
    pos = 0
    first = pf.num_row_groups
    for i in range(pf.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if pos + n > start:
            first = i
            break
        pos += n
    # every group from the first unfinished one on, whatever its size: a short
    # group after it (the file's last) ends before `start` too but is still unread
    groups = list(range(first, pf.num_row_groups))
    if not groups:
        return
    for rb in pf.iter_batches(batch_size=batch_size, row_groups=groups):
        n = rb.num_rows
        if pos + n <= start:
            pos += n
            continue
        skip = max(0, start - pos)
        if skip:
            rb = rb.slice(skip)
        frame = rb.to_pandas()
        frame.index = pd.RangeIndex(pos + skip, pos + n)
        yield Batch(name, pos + skip, frame, pos + n)
        pos += n


def _iter_csv(path: str, name: str, start: int, batch_size: int) -> Iterator[Batch]:
    import csv

    import pyarrow.csv as pc

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    if not header:
        return
    # all columns as text: values that do not parse are per-record errors later,
    # not a failure of the whole block
    convert = pc.ConvertOptions(
        column_types={c: pa.string() for c in header}, strings_can_be_null=True
    )
    invalid: list[tuple[int | None, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text))
        return "skip"

    reader = pc.open_csv(
        path,
        # a fixed block size keeps offsets stable when --batch-size changes between runs
        read_options=pc.ReadOptions(block_size=CSV_BLOCK),
        parse_options=pc.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=convert,
    )
    # offsets count data lines (good and malformed) so both resume exactly
    pos = 0
    for rb in reader:
        frame = rb.to_pandas()
        bad_here = [BadRecord(name, -1, "malformed CSV line", text) for _, text in invalid]
        invalid.clear()
        n = len(frame) + len(bad_here)
        for j, b in enumerate(bad_here):
            b.offset = pos + len(frame) + j
        frame.index = pd.RangeIndex(pos, pos + len(frame))
        if pos + n > start:
            keep = frame[frame.index >= start]
            yield Batch(
                name, max(pos, start), keep, pos + n, [b for b in bad_here if b.offset >= start]
            )
        pos += n


def _iter_jsonl_lines(lines: IO[str], name: str, start: int, batch_size: int) -> Iterator[Batch]:
    pos = 0
    rows: list[dict[str, Any]] = []
    idx: list[int] = []
    bad: list[BadRecord] = []
    first = start
    for line in lines:
        off = pos
        pos += 1
        if off < start:
            continue
        text = line.strip()
        if not text:
            bad.append(BadRecord(name, off, "empty line", ""))
        else:
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                bad.append(BadRecord(name, off, f"malformed JSON: {exc}", text[:1000]))
            else:
                if isinstance(rec, dict):
                    rows.append(rec)
                    idx.append(off)
                else:
                    bad.append(BadRecord(name, off, "a JSON line must be an object", text[:1000]))
        if len(rows) + len(bad) >= batch_size:
            yield Batch(name, first, pd.DataFrame(rows, index=idx), pos, bad)
            rows, idx, bad, first = [], [], [], pos
    if rows or bad:
        yield Batch(name, first, pd.DataFrame(rows, index=idx), pos, bad)


def _iter_file(path: str, name: str, fmt: str, start: int, batch_size: int) -> Iterator[Batch]:
    if fmt == "parquet":
        yield from _iter_parquet(path, name, start, batch_size)
    elif fmt == "csv":
        yield from _iter_csv(path, name, start, batch_size)
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from _iter_jsonl_lines(f, name, start, batch_size)


class FileSource(Source):
    def __init__(self, path: str, fmt: str | None = None) -> None:
        if not os.path.isfile(path):
            raise NotFoundError(f"input file {path!r} does not exist")
        self.path = path
        self.fmt = detect_format(path, fmt)

    def total(self) -> int | None:
        if self.fmt != "parquet":
            return None
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(self.path).metadata.num_rows)

    def batches(self, committed: dict[str, int], batch_size: int) -> Iterator[Batch]:
        name = os.path.basename(self.path)
        yield from _iter_file(self.path, name, self.fmt, committed.get(name, 0), batch_size)


class FolderSource(Source):
    """Every supported file in a folder, in name order; with ``follow``, new files too.

    A file is read once it is complete: writers should create it under a
    temporary name (``.name`` or ``*.tmp``) and rename it into place.
    """

    def __init__(
        self,
        path: str,
        fmt: str | None = None,
        follow: bool = False,
        poll: float = 1.0,
        idle_timeout: float | None = None,
    ) -> None:
        if not os.path.isdir(path):
            raise NotFoundError(f"input folder {path!r} does not exist")
        self.path = path
        self.fmt = fmt
        self.follow = follow
        self.poll = poll
        self.idle_timeout = idle_timeout
        self.stop = False

    def _files(self) -> list[str]:
        out = []
        for entry in sorted(os.listdir(self.path)):
            if entry.startswith(".") or entry.endswith(".tmp"):
                continue
            if Path(entry).suffix.lower() in FORMATS or self.fmt:
                out.append(entry)
        return out

    def batches(self, committed: dict[str, int], batch_size: int) -> Iterator[Batch]:
        done: set[str] = set()
        idle_since = time.monotonic()
        while True:
            new = [f for f in self._files() if f not in done]
            for entry in new:
                full = os.path.join(self.path, entry)
                fmt = detect_format(full, self.fmt)
                yield from _iter_file(full, entry, fmt, committed.get(entry, 0), batch_size)
                done.add(entry)
            if not self.follow or self.stop:
                return
            if new:
                idle_since = time.monotonic()
            elif (
                self.idle_timeout is not None and time.monotonic() - idle_since > self.idle_timeout
            ):
                return
            time.sleep(self.poll)


class StdinSource(Source):
    """JSON lines (default) or CSV from standard input; not replayable (best effort)."""

    replayable = False

    def __init__(self, fmt: str | None = None, stream: IO[str] | None = None) -> None:
        self.fmt = fmt or "jsonl"
        if self.fmt not in ("jsonl", "csv"):
            raise SchemaError("stdin takes jsonl or csv")
        self.stream = stream

    def batches(self, committed: dict[str, int], batch_size: int) -> Iterator[Batch]:
        stream = self.stream or sys.stdin
        if self.fmt == "jsonl":
            yield from _iter_jsonl_lines(stream, "<stdin>", 0, batch_size)
            return
        import io

        import pyarrow.csv as pc

        data = stream.read().encode()
        reader = pc.read_csv(io.BytesIO(data))
        frame = reader.to_pandas()
        for i in range(0, len(frame), batch_size):
            part = frame.iloc[i : i + batch_size]
            yield Batch("<stdin>", i, part, i + len(part))


def open_source(
    spec: str | os.PathLike[str] | Source,
    *,
    fmt: str | None = None,
    follow: bool = False,
    idle_timeout: float | None = None,
) -> Source:
    """A source from a path, a folder, ``"-"`` (stdin) or a :class:`Source`."""
    if isinstance(spec, Source):
        return spec
    path = os.fspath(spec)
    if path == "-":
        return StdinSource(fmt)
    if os.path.isdir(path):
        return FolderSource(path, fmt, follow=follow, idle_timeout=idle_timeout)
    return FileSource(path, fmt)
