"""Prediction sinks with exactly-once commits.

Every commit writes a batch's predictions, its dead letters and the input
offsets that produced them as one atomic step, so a job killed at any instant
resumes with nothing lost and nothing written twice:

* :class:`PartsSink` (a folder): each batch becomes ``part-<seq>`` (written to a
  temporary name, fsynced, renamed), then a commit record ``_commits/<seq>.json``
  holding the offsets is renamed into place. The commit record is the commit
  point; parts without one are leftovers of a crash and are deleted on restart.
* :class:`ParquetFileSink` (a single ``.parquet`` file): a :class:`PartsSink` in a
  hidden folder beside it (``.x.parquet.parts/``); once the input is exhausted the
  parts are assembled into the file, which carries the last commit state in its
  metadata, and only then is the folder removed (see the class).
* :class:`AppendSink` (a single ``.csv`` or ``.jsonl`` file): batches are
  appended and fsynced, then a state file recording the committed byte
  length and offsets is renamed into place; a restart truncates the file to
  the committed length.
* :class:`CheckpointerSink` (a store checkpointer): each batch is one ``set``
  of ``{"state": offsets, "predictions": DataFrame, "dead": [...]}`` under
  ``batch/<seq>``; one atomic, durable catalog write per commit.
* :class:`StdoutSink`: best effort (a pipe cannot be rolled back).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from ..._io import fsync_dir, leftover_temps, replacing
from ...errors import SchemaError
from .sources import BadRecord

__all__ = [
    "AppendSink",
    "CheckpointerSink",
    "CommitState",
    "ParquetFileSink",
    "PartsSink",
    "Sink",
    "StdoutSink",
    "open_sink",
]


@dataclass
class CommitState:
    seq: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: {"read": 0, "written": 0, "bad": 0, "duplicates": 0}
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommitState:
        return cls(
            int(data["seq"]),
            dict(data["offsets"]),
            dict(data["counts"]),
            dict(data.get("extra", {})),
        )


def _atomic_write(path: Path, data: bytes) -> None:
    # an exclusive, randomly named temporary file: a file or symlink planted under a
    # fixed name beside the output could otherwise redirect the write
    with replacing(str(path), f".{path.name}.", durable=True) as f:
        f.write(data)


def _clear_temps(*paths: Path) -> None:
    """Remove what an _atomic_write of any of ``paths`` left when its process was killed
    before the rename (never committed: the rename is the commit)."""
    for path in paths:
        for tmp in leftover_temps(str(path), f".{path.name}."):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_write_dir(path: Path) -> None:
    fsync_dir(path if path.is_dir() else path.parent)


def encode_table(table: pa.Table, fmt: str, header: bool = True) -> bytes:
    buf = io.BytesIO()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, buf)
    elif fmt == "csv":
        import pyarrow.csv as pc

        pc.write_csv(table, buf, write_options=pc.WriteOptions(include_header=header))
    else:
        for row in table.to_pylist():
            buf.write(json.dumps(row, default=str).encode())
            buf.write(b"\n")
    return buf.getvalue()


def _dead_bytes(dead: list[BadRecord]) -> bytes:
    return b"".join(d.to_json().encode() + b"\n" for d in dead)


class Sink:
    """Where predictions go. ``transactional`` sinks give exactly-once."""

    transactional = True
    key: str | None = None

    def recover(self) -> CommitState:
        """Drop uncommitted leftovers; return the last committed state."""
        return CommitState()

    def committed_keys(self) -> set[Any]:
        return set()

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once the input is exhausted."""

    def reset(self) -> None:
        """Delete everything earlier runs committed (``restart=True``, ``--restart``)."""


class PartsSink(Sink):
    """A folder of parts with one commit record per batch (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], fmt: str = "parquet") -> None:
        if fmt not in ("parquet", "csv", "jsonl"):
            raise SchemaError(f"unknown output format {fmt!r}")
        self.dir = Path(folder)
        self.fmt = fmt

    def _ensure_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "_commits").mkdir(exist_ok=True)
        (self.dir / "_dead").mkdir(exist_ok=True)

    def reset(self) -> None:
        if not self.dir.is_dir():
            return
        # only what a scoring run writes: other files a user keeps there stay
        for sub in ("_commits", "_dead"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        for p in self.dir.glob("part-*"):
            p.unlink(missing_ok=True)
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
        fsync_dir(self.dir)

    def _seqs(self) -> list[int]:
        out = []
        for p in (self.dir / "_commits").glob("*.json"):
            with contextlib.suppress(ValueError):
                out.append(int(p.stem))
        return sorted(out)

    def recover(self) -> CommitState:
        self._ensure_dirs()
        seqs = self._seqs()
        last = seqs[-1] if seqs else 0
        for p in list(self.dir.glob("part-*")) + list((self.dir / "_dead").glob("*")):
            try:
                seq = int(p.name.split("-")[1].split(".")[0])
            except (IndexError, ValueError):
                seq = last + 1  # a temporary file: never committed
            if seq > last or p.name.startswith("."):
                p.unlink(missing_ok=True)
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
        if not seqs:
            return CommitState()
        with open(self.dir / "_commits" / f"{last:09d}.json", encoding="utf-8") as f:
            return CommitState.from_json(json.load(f))

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob(f"part-*.{self.fmt}"))

    def committed_keys(self) -> set[Any]:
        if self.key is None:
            return set()
        keys: set[Any] = set()
        for p in self.parts():
            keys.update(_read_table(p, self.fmt).column(self.key).to_pylist())
        return keys

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        seq = state.seq
        self._ensure_dirs()
        if table.num_rows:
            _atomic_write(self.dir / f"part-{seq:09d}.{self.fmt}", encode_table(table, self.fmt))
        if dead:
            _atomic_write(self.dir / "_dead" / f"part-{seq:09d}.jsonl", _dead_bytes(dead))
        _atomic_write(
            self.dir / "_commits" / f"{seq:09d}.json", json.dumps(state.to_json()).encode()
        )
        fsync_dir(self.dir)

    def dead_letters(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.dir / "_dead").glob("part-*.jsonl")):
            out += [json.loads(line) for line in p.read_text().splitlines() if line]
        return out


class ParquetFileSink(PartsSink):
    """One Parquet file, built from parts committed in a hidden folder beside it.

    Batches commit into ``.x.parquet.parts/`` exactly as into a folder. Once the input
    is exhausted:

    1. the dead letters are gathered into ``x.parquet.dead.jsonl`` (or ``dead_letter``),
       written to a temporary name, fsynced and renamed;
    2. the parts are assembled into ``x.parquet`` the same way; the file's metadata holds
       the last commit state (offsets, counts), so the file itself records that it is
       complete and where its input ended;
    3. only then is the folder renamed to a trash name and deleted (a rename is atomic:
       a crash leaves the whole folder, which the next run assembles again, or none).

    A run on a finished output reads the state from the file: nothing to do. If new
    input appears (a folder source got files), the file is linked back in as the first
    part of a new folder, so the next assembly keeps every record.
    """

    STATE_KEY = b"safepoint.scoring.state"

    def __init__(
        self, path: str | os.PathLike[str], dead_letter: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        super().__init__(self.path.with_name(f".{self.path.name}.parts"), "parquet")
        self.dead_path = (
            Path(dead_letter)
            if dead_letter
            else self.path.with_name(self.path.name + ".dead.jsonl")
        )
        self._base: CommitState | None = None
        self._schema: pa.Schema | None = None

    def _trash(self) -> list[Path]:
        prefix = f".{self.path.name}.parts."
        return [
            p
            for p in self.path.parent.glob(f"{prefix}*")
            if p.name[len(prefix) :].startswith(("done-", "tmp-"))
        ]

    def _final_state(self) -> CommitState | None:
        """The commit state recorded in the assembled file, if it is one of ours."""
        import pyarrow.parquet as pq

        if not self.path.is_file():
            return None
        try:
            meta = pq.read_schema(self.path).metadata or {}
        except (pa.ArrowInvalid, OSError):
            meta = {}
        raw = meta.get(self.STATE_KEY)
        if raw is None:
            raise SchemaError(
                f"the output {self.path} exists and was not written by a scoring run: "
                "move it away, or start over with restart=True (CLI: --restart), which "
                "replaces it"
            )
        return CommitState.from_json(json.loads(raw))

    def recover(self) -> CommitState:
        for p in self._trash():
            shutil.rmtree(p, ignore_errors=True)
        _clear_temps(self.path, self.dead_path)
        self._base = None
        if self.dir.is_dir():
            return super().recover()
        state = self._final_state()
        if state is None:
            return CommitState()
        self._base = state
        return CommitState.from_json(state.to_json())  # the caller advances its own copy

    def _reopen(self) -> None:
        """New records after the file was assembled: the file becomes the first part of a
        new folder (built under a temporary name, then renamed into place)."""
        base = self._base
        assert base is not None
        tmp = self.path.with_name(f".{self.path.name}.parts.tmp-{uuid.uuid4().hex[:12]}")
        (tmp / "_commits").mkdir(parents=True)
        (tmp / "_dead").mkdir()
        part = tmp / f"part-{base.seq:09d}.parquet"
        try:
            os.link(self.path, part)
        except OSError:
            shutil.copyfile(self.path, part)
        if self.dead_path.is_file():
            shutil.copyfile(self.dead_path, tmp / "_dead" / f"part-{base.seq:09d}.jsonl")
        record = json.dumps(base.to_json()).encode()
        _atomic_write(tmp / "_commits" / f"{base.seq:09d}.json", record)
        fsync_dir(tmp)
        os.replace(tmp, self.dir)
        fsync_dir(self.path.parent)
        self._base = None

    def committed_keys(self) -> set[Any]:
        if self.key is None:
            return set()
        if self._base is not None:
            return set(_read_table(self.path, "parquet").column(self.key).to_pylist())
        return super().committed_keys()

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        if self._base is not None:
            self._reopen()
        self._schema = table.schema
        super().commit(table, dead, state)

    def finish(self) -> None:
        if not self.dir.is_dir():
            return  # nothing new since the file was assembled
        seqs = self._seqs()
        if not seqs:
            return
        with open(self.dir / "_commits" / f"{seqs[-1]:09d}.json", encoding="utf-8") as f:
            state = json.load(f)
        tables = [_read_table(p, "parquet") for p in self.parts()]
        if tables:
            table = pa.concat_tables(tables, promote_options="permissive")
        elif self._schema is not None:
            table = self._schema.empty_table()
        else:
            return  # no record and no schema to write an empty file with: keep the folder
        dead = b"".join(p.read_bytes() for p in sorted((self.dir / "_dead").glob("part-*.jsonl")))
        if dead:
            _atomic_write(self.dead_path, dead)
        elif self.dead_path.is_file():
            self.dead_path.unlink()
        meta = dict(table.schema.metadata or {})
        meta[self.STATE_KEY] = json.dumps(state).encode()
        _atomic_write(self.path, encode_table(table.replace_schema_metadata(meta), "parquet"))
        _fsync_write_dir(self.path)
        # the file is durable and records the state: the folder is no longer needed
        trash = self.path.with_name(f".{self.path.name}.parts.done-{uuid.uuid4().hex[:12]}")
        os.replace(self.dir, trash)
        fsync_dir(self.path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def reset(self) -> None:
        for p in [self.dir, *self._trash()]:
            shutil.rmtree(p, ignore_errors=True)
        for p in (self.path, self.dead_path):
            p.unlink(missing_ok=True)
        _clear_temps(self.path, self.dead_path)
        fsync_dir(self.path.parent)

    def dead_letters(self) -> list[dict[str, Any]]:
        if self.dir.is_dir():
            return super().dead_letters()
        if not self.dead_path.is_file():
            return []
        return [json.loads(line) for line in self.dead_path.read_text().splitlines() if line]


def _read_table(path: Path, fmt: str) -> pa.Table:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if fmt == "csv":
        import pyarrow.csv as pc

        return pc.read_csv(path)
    import pyarrow.json as pj

    return pj.read_json(path)


class AppendSink(Sink):
    """One CSV or JSON-lines file, appended batch by batch; state beside it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str,
        dead_letter: str | os.PathLike[str] | None = None,
    ) -> None:
        if fmt not in ("csv", "jsonl"):
            raise SchemaError("AppendSink writes csv or jsonl")
        self.path = Path(path)
        self.fmt = fmt
        self.dead_path = (
            Path(dead_letter)
            if dead_letter
            else self.path.with_name(self.path.name + ".dead.jsonl")
        )
        self.state_path = self.path.with_name(f".{self.path.name}.sp-state.json")

    def recover(self) -> CommitState:
        _clear_temps(self.state_path)
        if not self.state_path.exists():
            for p in (self.path, self.dead_path):
                if p.exists():
                    p.unlink()
            return CommitState()
        data = json.loads(self.state_path.read_text())
        for p, n in (
            (self.path, data["extra"]["bytes"]),
            (self.dead_path, data["extra"]["dead_bytes"]),
        ):
            if p.exists():
                with open(p, "r+b") as f:
                    f.truncate(n)
        return CommitState.from_json(data)

    def committed_keys(self) -> set[Any]:
        if self.key is None or not self.path.exists() or self.path.stat().st_size == 0:
            return set()
        return set(_read_table(self.path, self.fmt).column(self.key).to_pylist())

    def _append(self, path: Path, data: bytes) -> int:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return f.tell()

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        dsize = self.dead_path.stat().st_size if self.dead_path.exists() else 0
        if table.num_rows:
            size = self._append(self.path, encode_table(table, self.fmt, header=size == 0))
        if dead:
            dsize = self._append(self.dead_path, _dead_bytes(dead))
        state.extra["bytes"] = size
        state.extra["dead_bytes"] = dsize
        _atomic_write(self.state_path, json.dumps(state.to_json()).encode())

    def reset(self) -> None:
        for p in (self.state_path, self.path, self.dead_path):
            p.unlink(missing_ok=True)
        _clear_temps(self.state_path)


class StdoutSink(Sink):
    """JSON lines or CSV on standard output; dead letters on stderr. Best effort."""

    transactional = False

    def __init__(self, fmt: str = "jsonl", stream: IO[bytes] | None = None) -> None:
        self.fmt = fmt
        self.stream = stream
        self._header = True

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        out = self.stream or sys.stdout.buffer
        if table.num_rows:
            out.write(encode_table(table, self.fmt, header=self._header))
            self._header = False
            out.flush()
        for d in dead:
            print(d.to_json(), file=sys.stderr)


class CheckpointerSink(Sink):
    """Predictions into a store checkpointer, one key per committed batch."""

    PREFIX = "batch/"

    def __init__(self, checkpointer: Any) -> None:
        self.ckpt = checkpointer

    def _keys(self) -> list[str]:
        # a checkpointer is not iterable: keys() is its listing call
        return sorted(k for k in self.ckpt.keys() if k.startswith(self.PREFIX))  # noqa: SIM118

    def recover(self) -> CommitState:
        keys = self._keys()
        if not keys:
            return CommitState()
        return CommitState.from_json(self.ckpt.get(keys[-1])["state"])

    def committed_keys(self) -> set[Any]:
        if self.key is None:
            return set()
        out: set[Any] = set()
        for k in self._keys():
            frame = self.ckpt.get(k)["predictions"]
            if self.key in frame.columns:
                out.update(frame[self.key].tolist())
        return out

    def commit(self, table: pa.Table, dead: list[BadRecord], state: CommitState) -> None:
        self.ckpt.set(
            f"{self.PREFIX}{state.seq:09d}",
            {
                "state": state.to_json(),
                "predictions": table.to_pandas(),
                "dead": [json.loads(d.to_json()) for d in dead],
            },
        )

    def reset(self) -> None:
        for k in self._keys():
            self.ckpt.delete(k)

    def predictions(self) -> Any:
        """All committed predictions as one DataFrame."""
        import pandas as pd

        frames = [self.ckpt.get(k)["predictions"] for k in self._keys()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def open_sink(spec: Any, *, fmt: str | None = None, dead_letter: str | None = None) -> Sink:
    """``-`` (stdout), a ``.parquet``/``.csv``/``.jsonl`` file, a folder (parts), or a
    store checkpointer."""
    if isinstance(spec, Sink):
        return spec
    if hasattr(spec, "set") and hasattr(spec, "keys") and hasattr(spec, "get"):
        return CheckpointerSink(spec)
    path = os.fspath(spec)
    if path == "-":
        return StdoutSink(fmt or "jsonl")
    ext = Path(path).suffix.lower()
    if os.path.isdir(path) or path.endswith(os.sep) or not ext:
        return PartsSink(path, fmt or "parquet")
    kind = {
        ".parquet": "parquet",
        ".pq": "parquet",
        ".csv": "csv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
    }.get(ext, fmt)
    if kind is None:
        raise SchemaError(f"cannot tell the output format of {path!r}; pass a format")
    if kind == "parquet":
        return ParquetFileSink(path, dead_letter=dead_letter)
    return AppendSink(path, kind, dead_letter=dead_letter)
