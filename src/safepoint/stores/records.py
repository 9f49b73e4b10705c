"""What the blob storage keeps so that the catalog can be rebuilt: marker, records, journal.

Beside the blobs, a store writes three kinds of small JSON objects::

    store.json                              the store id, shared with the catalog
    records/<name>/@<version>.<digest>.json one per committed version (immutable)
    journal/<name>/@<seq>.json              alias moves, edits and deletes of a model

A **version record** (:class:`VersionRecord`) holds everything the catalog row of a
version holds: name, version, digest, size, metadata, metrics, tags, lineage, when and by
whom. The key alone names the version and its blob, so that gc can tell which blobs
records protect without reading them.

The **journal** (:class:`JournalEntry`) numbers the changes of one model with the
model's counter in the catalog (``models.journal_seq``): ``alias`` (an alias set, moved
or removed), ``edit`` (the metrics, tags and description of a version after the edit)
and ``delete`` (a version deleted). Replaying a model's entries in order gives its
aliases, edits and deletions.

Model names never contain ``@``, so ``records/a/@1...`` (model ``a``) and
``records/a/b/@1...`` (model ``a/b``) cannot be confused.

>>> rec = VersionRecord(name="fraud/scorer", version=3, digest="ab" * 16, size=10)
>>> rec.key
'records/fraud/scorer/@3.abababababababababababababababab.json'
>>> parse_record_key(rec.key)
('fraud/scorer', 3, 'abababababababababababababababab')
>>> VersionRecord.from_bytes(rec.to_bytes()) == rec
True
>>> JournalEntry(name="fraud/scorer", seq=7, op="alias", alias="prod", version=3).key
'journal/fraud/scorer/@000000000007.json'
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import IntegrityError
from .blobs import BlobInfo, BlobStore

__all__ = [
    "JOURNAL",
    "MARKER",
    "RECORDS",
    "JournalEntry",
    "StoreMarker",
    "VersionRecord",
    "parse_entry_key",
    "parse_record_key",
    "read_marker",
]

MARKER = "store.json"
RECORDS = "records"
JOURNAL = "journal"
MARKER_FORMAT = "safepoint.store/1"
RECORD_FORMAT = "safepoint.version-record/1"
ENTRY_FORMAT = "safepoint.journal-entry/1"

_RECORD_FILE = re.compile(r"@([0-9]{1,12})\.([0-9a-f]{16,128})\.json")
_ENTRY_FILE = re.compile(r"@([0-9]{1,15})\.json")
JOURNAL_OPS = ("alias", "edit", "delete")


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=True).encode()


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{what} is not valid JSON ({exc}): it is damaged") from None
    if not isinstance(value, dict):
        raise IntegrityError(f"{what} is not a JSON object: it is damaged")
    return value


@dataclass
class StoreMarker:
    """``store.json``: which store these blobs belong to."""

    store_id: str
    created_at: float = 0.0

    def to_bytes(self) -> bytes:
        return _dumps({"format": MARKER_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes) -> StoreMarker:
        d = _loads(data, MARKER)
        sid = d.get("store_id")
        if d.get("format") != MARKER_FORMAT or not isinstance(sid, str) or not sid:
            raise IntegrityError(f"{MARKER} does not name a store id: it is damaged")
        return cls(sid, float(d.get("created_at") or 0.0))


def read_marker(blobs: BlobStore) -> StoreMarker | None:
    """The store marker of ``blobs``; None if there is none (IntegrityError if damaged)."""
    data = blobs.read_object(MARKER)
    return None if data is None else StoreMarker.from_bytes(data)


@dataclass
class VersionRecord:
    """Everything the catalog knows about one committed version (see the module docstring)."""

    name: str
    version: int
    digest: str
    size: int
    created_at: float = 0.0
    created_by: str = ""
    host: str = ""
    root_type: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    data_digest: str | None = None
    code_digest: str | None = None
    run_id: str | None = None
    description: str = ""
    kind: str = "model"
    store_id: str = ""

    @property
    def key(self) -> str:
        return record_key(self.name, self.version, self.digest)

    def to_bytes(self) -> bytes:
        return _dumps({"format": RECORD_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, key: str = "a version record") -> VersionRecord:
        d = _loads(data, key)
        if d.get("format") != RECORD_FORMAT:
            raise IntegrityError(f"{key} is not a version record (format {d.get('format')!r})")
        known = {f.name for f in fields(cls)}
        try:
            rec = cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise IntegrityError(f"{key} lacks a field ({exc}): it is damaged") from None
        if not isinstance(rec.version, int) or not isinstance(rec.digest, str):
            raise IntegrityError(f"{key} has a malformed version or digest: it is damaged")
        return rec


def record_key(name: str, version: int, digest: str) -> str:
    return f"{RECORDS}/{name}/@{version}.{digest}.json"


def parse_record_key(key: str) -> tuple[str, int, str] | None:
    """``(name, version, digest)`` of a record key; None for other keys."""
    head, _, last = key.rpartition("/")
    m = _RECORD_FILE.fullmatch(last)
    if m is None or not head.startswith(RECORDS + "/"):
        return None
    return head[len(RECORDS) + 1 :], int(m.group(1)), m.group(2)


@dataclass
class JournalEntry:
    """One change of a model: an alias set/moved/removed, an edit, or a deletion.

    ``alias``: ``alias`` points at ``version`` (None: removed); ``previous`` is what it
    pointed at before. ``edit``: ``metrics``, ``tags`` and ``description`` of ``version``
    as they are after the edit. ``delete``: ``version`` was deleted.
    """

    name: str
    seq: int
    op: str
    version: int | None = None
    alias: str | None = None
    previous: int | None = None
    metrics: dict[str, float] | None = None
    tags: dict[str, str] | None = None
    description: str | None = None
    at: float = field(default_factory=time.time)
    actor: str = ""
    host: str = ""

    @property
    def key(self) -> str:
        return entry_key(self.name, self.seq)

    def to_bytes(self) -> bytes:
        return _dumps({"format": ENTRY_FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, data: bytes, key: str = "a journal entry") -> JournalEntry:
        d = _loads(data, key)
        if d.get("format") != ENTRY_FORMAT or d.get("op") not in JOURNAL_OPS:
            raise IntegrityError(f"{key} is not a journal entry: it is damaged")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise IntegrityError(f"{key} lacks a field ({exc}): it is damaged") from None


def entry_key(name: str, seq: int) -> str:
    return f"{JOURNAL}/{name}/@{seq:012d}.json"


def parse_entry_key(key: str) -> tuple[str, int] | None:
    """``(name, seq)`` of a journal key; None for other keys."""
    head, _, last = key.rpartition("/")
    m = _ENTRY_FILE.fullmatch(last)
    if m is None or not head.startswith(JOURNAL + "/"):
        return None
    return head[len(JOURNAL) + 1 :], int(m.group(1))


@dataclass
class RecordRef:
    """A record as listed (from its key alone)."""

    name: str
    version: int
    digest: str
    key: str
    mtime: float


def list_records(blobs: BlobStore) -> Iterator[RecordRef]:
    """Every version record's key, parsed (no record is read)."""
    for info in blobs.list_objects(RECORDS):
        parsed = parse_record_key(info.key)
        if parsed is not None:
            yield RecordRef(*parsed, info.key, info.mtime)


def list_entries(blobs: BlobStore) -> Iterator[tuple[str, int, BlobInfo]]:
    """``(name, seq, info)`` of every journal entry (none is read)."""
    for info in blobs.list_objects(JOURNAL):
        parsed = parse_entry_key(info.key)
        if parsed is not None:
            yield parsed[0], parsed[1], info


def read_record(blobs: BlobStore, key: str) -> VersionRecord | None:
    """The record under ``key`` (None if it is gone; IntegrityError if damaged)."""
    data = blobs.read_object(key)
    return None if data is None else VersionRecord.from_bytes(data, key)


def read_entry(blobs: BlobStore, key: str) -> JournalEntry | None:
    """The journal entry under ``key`` (None if it is gone; IntegrityError if damaged)."""
    data = blobs.read_object(key)
    return None if data is None else JournalEntry.from_bytes(data, key)
