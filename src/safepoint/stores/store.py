"""``sp.Store``: versioned models in a folder, on object storage, with a shared catalog.

>>> import safepoint as sp, numpy as np, tempfile
>>> store = sp.Store(tempfile.mkdtemp())                 # a local folder + embedded SQLite
>>> mv = store.put("demo/weights", {"w": np.arange(3)}, alias="production",
...                metrics={"auc": 0.91}, parents=["demo/data@1"])
>>> (mv.name, mv.version, mv.aliases)
('demo/weights', 1, ['production'])
>>> store.get("demo/weights", "production")["w"]
array([0, 1, 2])
>>> store.set_alias("demo/weights", "production", 1, expected=1).version
1
>>> [v.version for v in store.versions("demo/weights")]
[1]

API summary (every method raises a :class:`safepoint.SafepointError` subclass on bad input:
``NotFoundError``, ``InvalidNameError``, ``AliasConflictError``, ``BackendUnavailableError``,
``IntegrityError``):

* ``Store(url=".safepoint", metadata=None, *, storage_options=None, grace=3600,
  lease_ttl=21600, create=True)``: ``url`` a
  folder or an fsspec URL (``file://``, ``memory://``, ``s3://bucket/prefix``; default
  ``$SAFEPOINT_STORE`` or ``.safepoint``); ``metadata`` a SQLAlchemy URL
  (``sqlite:///...``, ``postgresql://...``). Without ``metadata`` a local store keeps its
  catalog in ``<url>/catalog.db``; remote blobs then get a local SQLite catalog in
  ``~/.safepoint/catalogs/`` and a warning that it serves one user.
* ``put(name, obj, *, metadata, metrics, tags, alias, parents, data_digest, code_digest,
  run_id, compress, golden, key) -> ModelVersion``; ``put_file(name, path, ...)``.
* ``get(name, version=None|int|"alias", *, trusted, mmap, env, key)``: the object.
* ``info(name, version)``, ``versions(name)``, ``models()``, ``aliases(name)``,
  ``lineage(name, version)``, ``find(data_digest=, code_digest=, parent=, tag=)``.
* ``set_alias(name, alias, version, *, expected=None)``: compare-and-swap; ``expected``
  must equal the alias's current version (None: the alias must not exist yet).
  ``delete_alias(name, alias, *, expected)``.
* ``delete(name, version=None, *, force=False)``; ``gc(keep_last, keep_best, keep_aliases,
  dry_run, grace) -> GcReport``; ``copy(name, version, *, to, new_name, alias)``.
* ``log(name=None, *, action=None, limit=100) -> list[AuditEntry]``: puts, alias moves,
  deletes, copies (who, when, from which host).
* ``checkpointer(name, description="")``: see :mod:`safepoint.stores.checkpointer`.
* ``runs``: see :mod:`safepoint.stores.runs`.
* ``inspect(ref)``, ``verify(ref)``: like ``sp.inspect``/``sp.verify`` on ``NAME[@V|@ALIAS]``.

Guarantees: a version becomes visible only once its blob is durable (written to a
temporary object, fsynced, atomically promoted to its content address, then the catalog
transaction); concurrent puts of one name get distinct consecutive versions; ``gc``
never removes a blob that a commit holds a lease on or that is younger than ``grace``.
"""

from __future__ import annotations

import collections
import contextlib
import getpass
import hashlib
import io
import json
import math
import operator
import os
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, SupportsIndex

import sqlalchemy as sa

from ..errors import (
    AliasConflictError,
    FormatError,
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    SafepointError,
    SafepointWarning,
    SerializationError,
    StoreError,
)
from ..format import api as _api
from ..format.reader import open_reader
from .blobs import BlobStore, TempBlob, open_blobs, scheme_of
from .catalog import (
    T_ALIASES,
    T_AUDIT,
    T_MODELS,
    T_VERSIONS,
    Catalog,
    dumps_json,
    loads_json,
    memory_catalog,
    open_catalog,
)
from .names import check_alias, check_name, parse_ref

if TYPE_CHECKING:
    from .checkpointer import Checkpointer
    from .runs import Run, Runs

__all__ = ["AuditEntry", "GcReport", "ModelVersion", "Store", "default_store_url"]

DEFAULT_URL = ".safepoint"


def default_store_url() -> str:
    """``$SAFEPOINT_STORE`` or ``.safepoint`` (a folder in the working directory)."""
    return os.environ.get("SAFEPOINT_STORE") or DEFAULT_URL


def _actor() -> str:
    user = os.environ.get("SAFEPOINT_USER")
    if user:
        return user[:100]
    try:
        return getpass.getuser()[:100]
    except Exception:  # no passwd entry in some containers
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=UTC)


@dataclass
class ModelVersion:
    """One immutable version of a model in a store."""

    name: str
    version: int
    digest: str
    size: int
    created: datetime
    created_by: str
    host: str
    root_type: str
    environment: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)
    data_digest: str | None = None
    code_digest: str | None = None
    run_id: str | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """``name@version``, usable wherever a model reference is accepted."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created"] = self.created.isoformat()
        return d


@dataclass
class AuditEntry:
    """One line of the audit log."""

    id: int
    at: datetime
    actor: str
    host: str
    action: str
    name: str
    version: int | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        return d


@dataclass
class GcReport:
    """What :meth:`Store.gc` removed (or would remove with ``dry_run``)."""

    dry_run: bool
    deleted_versions: list[str] = field(default_factory=list)
    deleted_blobs: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    deleted_temps: int = 0
    kept_blobs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Staged:
    """A blob written, leased and promoted, waiting for its catalog row."""

    digest: str
    size: int
    lease_ids: tuple[str, ...]  # of the temporary object and of the digest
    inspection: _api.Inspection | None


def _json_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SerializationError(f"{what} must be a dict with str keys")
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} must be JSON-serializable: {exc}") from None
    return dict(value)


def _metrics(value: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in _json_dict(value, "metrics").items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise SerializationError(f"metric {k!r} must be a number, not {v!r}") from None
    return out


def _tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return {value: ""}
    if isinstance(value, Iterable):
        return {str(t): "" for t in value}
    raise SerializationError("tags must be a dict of str -> str or a list of str")


def _parents(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | ModelVersion):
        value = [value]
    out = []
    for p in value:
        if isinstance(p, ModelVersion):
            out.append(p.ref)
        elif isinstance(p, str) and p:
            out.append(p)
        else:
            raise SerializationError(
                f"parents must be model references ('name@3'), run ids or ModelVersions, not {p!r}"
            )
    return out


def _run_id(value: Any) -> str | None:
    """The id of a run given as a ``Run``/``RunInfo`` or a str (lineage: which run made it)."""
    if value is None or isinstance(value, str):
        return value
    rid = getattr(value, "id", None)
    if isinstance(rid, str):
        return rid
    raise SerializationError(f"run_id must be a run id (str) or a Run, not {value!r}")


def _as_version(value: Any, what: str) -> int:
    """An int version from an int-like value (numpy integers included), else a clear error."""
    if isinstance(value, bool):
        raise InvalidNameError(f"{what} must be an int version, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidNameError(f"{what} must be an int version, not {value!r}") from None


def _digest_arg(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if not isinstance(value, str) or not value or len(value) > 128:
        raise SerializationError(f"{what} must be a str of at most 128 characters (or bytes)")
    return value


class _Miss(Exception):
    """A read outside the bytes a :class:`_Tee` kept."""


class _Tee:
    """Passes writes to the blob's file and keeps the first one (the header) and the last
    few (manifest, signature block, footer), so that the new file can be described
    without reading it back from (possibly remote) storage."""

    KEEP = 1 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0
        self.head: tuple[int, bytes] | None = None
        self.tail: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=4)

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if n <= self.KEEP:
            seg = (self.pos, bytes(mv))
            if self.head is None:
                self.head = seg
            else:
                self.tail.append(seg)
        elif self.head is None:
            self.head = (self.pos, b"")
        done = 0
        while done < n:
            k = self.f.write(mv[done:])
            done += n - done if k is None else k
        self.pos += n
        return n

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def sparse(self) -> _Sparse:
        segs = ([self.head] if self.head else []) + list(self.tail)
        return _Sparse(self.pos, segs)


class _Sparse(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only some segments are known."""

    def __init__(self, size: int, segments: list[tuple[int, bytes]]) -> None:
        self.size = size
        self.segments = segments
        self.at = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.at = (
            offset if whence == 0 else (self.at + offset if whence == 1 else self.size + offset)
        )
        return self.at

    def tell(self) -> int:
        return self.at

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.at
        for start, data in self.segments:
            if start <= self.at and self.at + n <= start + len(data):
                out = data[self.at - start : self.at - start + n]
                self.at += n
                return out
        raise _Miss(self.at, n)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class Store:
    """A model store: content-addressed blobs plus a catalog (see the module docstring)."""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        metadata: str | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        grace: float = 3600.0,
        lease_ttl: float = 6 * 3600.0,
        create: bool = True,
    ) -> None:
        url = default_store_url() if url is None else os.fspath(url)
        if not isinstance(url, str) or not url:
            raise InvalidNameError(f"store url must be a non-empty path or URL, not {url!r}")
        self.url = url
        # what it takes to open this store again elsewhere (pickling, e.g. to Dask workers)
        self._args = (url, metadata, storage_options, float(grace), float(lease_ttl))
        self.grace = float(grace)
        self.lease_ttl = float(lease_ttl)
        self.blobs: BlobStore = open_blobs(url, storage_options, create=create)
        self.blobs.check()
        if metadata is None:
            if self.blobs.is_local:
                metadata = "sqlite:///" + os.path.join(self.blobs.url, "catalog.db")
                self.catalog: Catalog = open_catalog(metadata)
            elif not self.blobs.is_remote:
                self.catalog = memory_catalog(url)
            else:
                home = os.environ.get("SAFEPOINT_HOME") or os.path.expanduser("~/.safepoint")
                folder = os.path.join(home, "catalogs")
                os.makedirs(folder, exist_ok=True)
                key = hashlib.sha256(url.encode()).hexdigest()[:16]
                self.catalog = open_catalog("sqlite:///" + os.path.join(folder, key + ".db"))
        else:
            if not isinstance(metadata, str):
                raise StoreError(f"metadata must be a database URL string, not {metadata!r}")
            self.catalog = open_catalog(metadata)
        if self.blobs.is_remote and self.catalog.is_sqlite:
            warnings.warn(
                SafepointWarning(
                    f"store {url!r} keeps blobs on shared storage but its catalog is a local "
                    f"SQLite file ({self.catalog.url}): it serves one user on this machine. "
                    "Teams should pass metadata='postgresql://...' so that everyone sees the "
                    "same versions."
                ),
                stacklevel=2,
            )
        self.actor = _actor()
        self.host = socket.gethostname()[:255]
        self._runs: Runs | None = None

    def __repr__(self) -> str:
        return f"Store({self.url!r}, metadata={self.catalog.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # a Store travels as the arguments that open it (connections do not pickle)
        return (_reopen, self._args)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release database connections (the store stays usable: they reopen on demand)."""
        if not self.catalog.in_memory:
            self.catalog.close()

    # -- writing blobs -------------------------------------------------------------------
    def _begin(self) -> TempBlob:
        """A temporary blob, leased in the catalog before it exists (so that no gc, even
        with ``grace=0``, removes it while this process writes it)."""
        tmp_id, lease_id = uuid.uuid4().hex, uuid.uuid4().hex
        self.catalog.lease_temp(lease_id, tmp_id, self.host, os.getpid())
        try:
            tmp = self.blobs.begin(tmp_id)
        except BaseException:
            self._release(lease_id)
            raise
        tmp.lease_id = lease_id
        return tmp

    def _abort(self, tmp: TempBlob) -> None:
        tmp.abort()
        self._release(tmp.lease_id)

    def _lease(self, digest: str, size: int, lease_id: str) -> None:
        deadline = time.monotonic() + 120.0
        while not self.catalog.lease(digest, size, lease_id, self.host, os.getpid()):
            # a gc is deleting this very blob; it finishes in moments
            if time.monotonic() > deadline:
                raise StoreError(f"blob {digest} stayed locked by a gc for 2 minutes; retry")
            time.sleep(0.05)

    def _finish_stage(self, tmp: TempBlob, digest: str, size: int, durable: bool) -> Staged:
        """Close, lease the final digest, promote. On error the caller calls _abort."""
        tmp.close(durable)
        digest_lease = uuid.uuid4().hex
        self._lease(digest, size, digest_lease)
        try:
            tmp.promote(digest, durable)
        except BaseException:
            self._release(digest_lease)
            raise
        return Staged(digest, size, (tmp.lease_id, digest_lease), None)

    def _release(self, *lease_ids: str) -> None:
        with (
            contextlib.suppress(SafepointError),
            self.catalog.tx(write=True, durable=False) as conn,
        ):
            self.catalog.drop_lease(conn, *lease_ids)

    def _stage_object(self, obj: Any, durable: bool = True, **dump_kwargs: Any) -> Staged:
        tmp = self._begin()
        try:
            tee = _Tee(tmp.file)
            res = _api.dump(obj, tee, **dump_kwargs)  # type: ignore[arg-type]
            tmp.close(durable)
            try:
                # header, manifest and footer are still in memory: no read-back round trip
                insp: _api.Inspection | None = _api.inspect(tee.sparse())  # type: ignore[arg-type]
            except _Miss:
                insp = self._inspect_temp(tmp)
            if insp is not None and insp.digest != res.digest:  # pragma: no cover
                raise IntegrityError("the blob changed while it was written")
            staged = self._finish_stage(tmp, res.digest, res.size, durable)
        except BaseException:
            self._abort(tmp)
            raise
        staged.inspection = insp
        return staged

    def _stage_stream(self, src: BinaryIO, durable: bool = True) -> Staged:
        """Copy a safepoint file into a blob, validating it (manifest and checksums)."""
        tmp = self._begin()
        try:
            shutil.copyfileobj(src, tmp.file, 8 << 20)
            tmp.close(durable)
            with self._open_temp(tmp) as f:
                try:
                    with contextlib.closing(open_reader(f)) as reader:
                        problems = reader.verify_all()
                        insp = _api._inspect_reader(reader)
                except FormatError as exc:
                    raise FormatError(f"not a valid safepoint file: {exc}") from None
            if problems:
                raise IntegrityError("the file is corrupt: " + "; ".join(problems))
            staged = self._finish_stage(tmp, insp.digest, insp.size, durable)
        except BaseException:
            self._abort(tmp)
            raise
        staged.inspection = insp
        return staged

    @contextlib.contextmanager
    def _open_temp(self, tmp: TempBlob) -> Iterator[BinaryIO]:
        from .blobs import FsspecBlobs, LocalBlobs

        if isinstance(self.blobs, LocalBlobs):
            f: BinaryIO = open(os.path.join(self.blobs.tmp_dir, tmp.id + ".tmp"), "rb")  # noqa: SIM115
        elif isinstance(self.blobs, FsspecBlobs):
            f = self.blobs.fs.open(self.blobs._tmp(tmp.id), "rb")
        else:  # pragma: no cover - third-party backends
            raise StoreError("this blob backend cannot read temporary objects")
        try:
            yield f
        finally:
            f.close()

    def _inspect_temp(self, tmp: TempBlob) -> _api.Inspection | None:
        with self._open_temp(tmp) as f:
            return _api.inspect(f)

    # -- versions ------------------------------------------------------------------------
    def put(
        self,
        name: str,
        obj: Any,
        *,
        metadata: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | Iterable[str] | None = None,
        alias: str | None = None,
        parents: Iterable[str | ModelVersion] | str | None = None,
        data_digest: str | bytes | None = None,
        code_digest: str | bytes | None = None,
        run_id: str | Run | None = None,
        compress: str | None = None,
        golden: Any = None,
        key: Any = None,
    ) -> ModelVersion:
        """Save ``obj`` as the next version of ``name``; returns the new version.

        The object streams straight into a temporary blob (checksums computed while
        writing), which is fsynced and promoted to its content address before the
        catalog transaction makes the version visible. ``alias`` moves (or creates) that
        alias to the new version in the same transaction; ``metadata`` is also written
        into the file's manifest, so ``sp.inspect`` of the blob shows it.

        Example:
            >>> mv = store.put("fraud/scorer", model, alias="staging",     # doctest: +SKIP
            ...                metrics={"auc": 0.93}, parents=["fraud/features@4"])
        """
        name = check_name(name)
        meta = _json_dict(metadata, "metadata")
        fields = self._version_fields(metrics, tags, alias, parents, data_digest, code_digest)
        rid = _run_id(run_id)
        staged = self._stage_object(obj, compress=compress, metadata=meta, golden=golden, key=key)
        return self._commit(name, staged, meta, fields, run_id=rid, action="put")

    def put_file(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        metadata: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | Iterable[str] | None = None,
        alias: str | None = None,
        parents: Iterable[str | ModelVersion] | str | None = None,
        data_digest: str | bytes | None = None,
        code_digest: str | bytes | None = None,
        run_id: str | Run | None = None,
    ) -> ModelVersion:
        """Store an existing safepoint file (validated, never loaded) as a new version."""
        name = check_name(name)
        meta = _json_dict(metadata, "metadata")
        fields = self._version_fields(metrics, tags, alias, parents, data_digest, code_digest)
        try:
            src = open(os.fspath(path), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise NotFoundError(f"no such file: {os.fspath(path)!r}") from None
        except IsADirectoryError:
            raise FormatError(f"{os.fspath(path)!r} is a directory, not a safepoint file") from None
        with src:
            staged = self._stage_stream(src)
        assert staged.inspection is not None
        meta = {**staged.inspection.metadata, **meta}
        return self._commit(name, staged, meta, fields, run_id=_run_id(run_id), action="put")

    def _version_fields(
        self,
        metrics: Any,
        tags: Any,
        alias: str | None,
        parents: Any,
        data_digest: Any,
        code_digest: Any,
    ) -> dict[str, Any]:
        return {
            "metrics": _metrics(metrics),
            "tags": _tags(tags),
            "alias": None if alias is None else check_alias(alias),
            "parents": _parents(parents),
            "data_digest": _digest_arg(data_digest, "data_digest"),
            "code_digest": _digest_arg(code_digest, "code_digest"),
        }

    def _commit(
        self,
        name: str,
        staged: Staged,
        meta: dict[str, Any],
        fields: dict[str, Any],
        *,
        run_id: str | None,
        action: str,
        detail: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
        root_type: str | None = None,
    ) -> ModelVersion:
        insp = staged.inspection
        env = environment if environment is not None else (insp.environment if insp else {})
        rtype = root_type or (insp.root_type if insp else "?")
        now = time.time()
        alias = fields["alias"]
        try:
            with self.catalog.tx(write=True) as conn:
                mid = self.catalog.model_id(conn, name, create_by=self.actor)
                # the model row is locked (FOR UPDATE / BEGIN IMMEDIATE): the counter
                # gives distinct consecutive numbers, never reused after a delete
                last = conn.execute(
                    sa.select(T_MODELS.c.last_version).where(T_MODELS.c.id == mid)
                ).scalar()
                version = int(last or 0) + 1
                conn.execute(
                    T_MODELS.update().where(T_MODELS.c.id == mid).values(last_version=version)
                )
                conn.execute(
                    T_VERSIONS.insert().values(
                        model_id=mid,
                        version=version,
                        digest=staged.digest,
                        size=staged.size,
                        created_at=now,
                        created_by=self.actor,
                        host=self.host,
                        root_type=rtype[:255],
                        environment=dumps_json(env),
                        metadata=dumps_json(meta),
                        metrics=dumps_json(fields["metrics"]),
                        tags=dumps_json(fields["tags"]),
                        parents=dumps_json(fields["parents"]),
                        data_digest=fields["data_digest"],
                        code_digest=fields["code_digest"],
                        run_id=run_id,
                    )
                )
                self.catalog.audit(
                    conn,
                    actor=self.actor,
                    host=self.host,
                    action=action,
                    name=name,
                    version=version,
                    digest=staged.digest,
                    size=staged.size,
                    **(detail or {}),
                )
                if alias is not None:
                    self._move_alias(conn, mid, name, alias, version, check=self._ANY)
                self.catalog.drop_lease(conn, *staged.lease_ids)
        except BaseException:
            self._release(*staged.lease_ids)
            raise
        return ModelVersion(
            name=name,
            version=version,
            digest=staged.digest,
            size=staged.size,
            created=_ts(now),  # type: ignore[arg-type]
            created_by=self.actor,
            host=self.host,
            root_type=rtype,
            environment=env,
            metadata=meta,
            metrics=fields["metrics"],
            tags=fields["tags"],
            parents=fields["parents"],
            data_digest=fields["data_digest"],
            code_digest=fields["code_digest"],
            run_id=run_id,
            aliases=[alias] if alias else [],
        )

    _ANY: Any = object()

    def _move_alias(
        self,
        conn: sa.Connection,
        mid: int,
        name: str,
        alias: str,
        version: int | None,
        *,
        check: Any,
    ) -> int | None:
        """Set (an int ``version``) or remove (``None``) an alias in transaction ``conn``.

        ``check`` is the compare-and-swap expectation: the version the alias must point
        at now (``None``: it must not exist), or ``_ANY`` when the caller checked already
        or owns the target (put's own alias, inside its commit).
        """
        cur = conn.execute(
            sa.select(T_ALIASES.c.version)
            .where(T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == alias)
            .with_for_update()
        ).scalar()
        if check is not self._ANY and cur != check:
            raise AliasConflictError(
                f"alias {name}@{alias} points at "
                f"{'nothing' if cur is None else f'version {cur}'}, not version {check}: it "
                "moved since you read it; re-read it and retry with expected=<current version>"
            )
        now = time.time()
        if version is None:
            conn.execute(
                T_ALIASES.delete().where(T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == alias)
            )
        elif cur is None:
            conn.execute(
                T_ALIASES.insert().values(
                    model_id=mid,
                    alias=alias,
                    version=version,
                    updated_at=now,
                    updated_by=self.actor,
                )
            )
        else:
            conn.execute(
                T_ALIASES.update()
                .where(T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == alias)
                .values(version=version, updated_at=now, updated_by=self.actor)
            )
        self.catalog.audit(
            conn,
            actor=self.actor,
            host=self.host,
            action="alias" if version is not None else "unalias",
            name=name,
            version=version,
            alias=alias,
            previous=cur,
        )
        return cur

    def set_alias(
        self,
        name: str,
        alias: str,
        version: SupportsIndex,
        *,
        expected: SupportsIndex | None = None,
    ) -> ModelVersion:
        """Point ``name@alias`` at ``version`` by compare-and-swap.

        ``expected`` is the version the alias must point at now (``None``: the alias must
        not exist yet); otherwise :class:`AliasConflictError` and nothing changes.

        Example:
            >>> store.set_alias("fraud/scorer", "production", 4, expected=3)  # doctest: +SKIP
        """
        name = check_name(name)
        alias = check_alias(alias)
        version = _as_version(version, "version")
        if expected is not None:
            expected = _as_version(expected, "expected")
        with self.catalog.tx(write=True) as conn:
            mid = self.catalog.model_id(conn, name)
            self._row(conn, mid, name, version)
            cur = conn.execute(
                sa.select(T_ALIASES.c.version)
                .where(T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == alias)
                .with_for_update()
            ).scalar()
            if cur != expected:
                if expected is None:
                    raise AliasConflictError(
                        f"alias {name}@{alias} already points at version {cur}; pass "
                        f"expected={cur} to move it (compare-and-swap)"
                    )
                raise AliasConflictError(
                    f"alias {name}@{alias} points at "
                    f"{'nothing' if cur is None else f'version {cur}'}, not version {expected}: "
                    "it moved since you read it; re-read it and retry"
                )
            self._move_alias(conn, mid, name, alias, version, check=self._ANY)
        return self.info(name, version)

    def delete_alias(self, name: str, alias: str, *, expected: int) -> None:
        """Remove ``name@alias`` if it still points at ``expected`` (compare-and-swap)."""
        name = check_name(name)
        alias = check_alias(alias)
        with self.catalog.tx(write=True) as conn:
            mid = self.catalog.model_id(conn, name)
            self._move_alias(conn, mid, name, alias, None, check=expected)

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of model ``name``."""
        name = check_name(name)
        with self.catalog.tx() as conn:
            mid = self.catalog.model_id(conn, name)
            rows = conn.execute(
                sa.select(T_ALIASES.c.alias, T_ALIASES.c.version).where(T_ALIASES.c.model_id == mid)
            ).all()
        return {r.alias: int(r.version) for r in sorted(rows)}

    # -- reading -------------------------------------------------------------------------
    def _resolve(self, conn: sa.Connection, mid: int, name: str, version: Any) -> int:
        if isinstance(version, str):
            if version.isdigit():
                version = int(version)
            elif version == "latest":
                version = None
        if version is None:
            v = conn.execute(
                sa.select(sa.func.max(T_VERSIONS.c.version)).where(T_VERSIONS.c.model_id == mid)
            ).scalar()
            if v is None:
                raise NotFoundError(f"model {name!r} has no versions")
            return int(v)
        if isinstance(version, bool):
            raise InvalidNameError(f"version must be an int, an alias or None, not {version!r}")
        if not isinstance(version, str) and hasattr(version, "__index__"):
            return operator.index(version)
        if isinstance(version, str):
            alias = check_alias(version)
            v = conn.execute(
                sa.select(T_ALIASES.c.version).where(
                    T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == alias
                )
            ).scalar()
            if v is None:
                known = conn.execute(
                    sa.select(T_ALIASES.c.alias).where(T_ALIASES.c.model_id == mid)
                ).scalars()
                raise NotFoundError(
                    f"model {name!r} has no alias {alias!r} (aliases: "
                    f"{', '.join(sorted(known)) or 'none'})"
                )
            return int(v)
        raise InvalidNameError(
            f"version must be an int, an alias name or None, not {type(version).__name__}"
        )

    def _row(self, conn: sa.Connection, mid: int, name: str, version: int) -> sa.Row[Any]:
        row = conn.execute(
            sa.select(T_VERSIONS).where(
                T_VERSIONS.c.model_id == mid, T_VERSIONS.c.version == version
            )
        ).first()
        if row is None:
            have = conn.execute(
                sa.select(
                    sa.func.min(T_VERSIONS.c.version), sa.func.max(T_VERSIONS.c.version)
                ).where(T_VERSIONS.c.model_id == mid)
            ).one()
            hint = f"it has versions {have[0]}..{have[1]}" if have[0] is not None else "none left"
            raise NotFoundError(f"model {name!r} has no version {version} ({hint})")
        return row

    def _version(self, row: Any, name: str, aliases: list[str]) -> ModelVersion:
        return ModelVersion(
            name=name,
            version=int(row.version),
            digest=row.digest,
            size=int(row.size),
            created=_ts(row.created_at),  # type: ignore[arg-type]
            created_by=row.created_by,
            host=row.host,
            root_type=row.root_type,
            environment=loads_json(row.environment, {}),
            metadata=loads_json(row.metadata, {}),
            metrics=loads_json(row.metrics, {}),
            tags=loads_json(row.tags, {}),
            parents=loads_json(row.parents, []),
            data_digest=row.data_digest,
            code_digest=row.code_digest,
            run_id=row.run_id,
            aliases=aliases,
        )

    def _alias_map(self, conn: sa.Connection, mid: int) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for r in conn.execute(
            sa.select(T_ALIASES.c.alias, T_ALIASES.c.version).where(T_ALIASES.c.model_id == mid)
        ):
            out.setdefault(int(r.version), []).append(r.alias)
        return {k: sorted(v) for k, v in out.items()}

    def info(self, name: str, version: SupportsIndex | str | None = None) -> ModelVersion:
        """The catalog record of one version (``None``: the latest; str: an alias)."""
        if isinstance(name, str) and "@" in name and version is None:
            name, version = parse_ref(name)
        name = check_name(name)
        with self.catalog.tx() as conn:
            mid = self.catalog.model_id(conn, name)
            v = self._resolve(conn, mid, name, version)
            row = self._row(conn, mid, name, v)
            return self._version(row, name, self._alias_map(conn, mid).get(v, []))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        name = check_name(name)
        with self.catalog.tx() as conn:
            mid = self.catalog.model_id(conn, name)
            amap = self._alias_map(conn, mid)
            rows = conn.execute(
                sa.select(T_VERSIONS)
                .where(T_VERSIONS.c.model_id == mid)
                .order_by(T_VERSIONS.c.version)
            ).all()
        return [self._version(r, name, amap.get(int(r.version), [])) for r in rows]

    def models(self, prefix: str | None = None) -> list[str]:
        """Names of the models that have at least one version (optionally under ``prefix/``)."""
        q = (
            sa.select(T_MODELS.c.name)
            .where(sa.exists().where(T_VERSIONS.c.model_id == T_MODELS.c.id))
            .order_by(T_MODELS.c.name)
        )
        if prefix:
            p = check_name(prefix.rstrip("/"), "prefix")
            q = q.where(T_MODELS.c.name.startswith(p + "/", autoescape=True))
        with self.catalog.tx() as conn:
            return list(conn.execute(q).scalars())

    def summary(self) -> list[dict[str, Any]]:
        """One row per model: name, number of versions, latest version and its time, aliases."""
        with self.catalog.tx() as conn:
            rows = conn.execute(
                sa.select(
                    T_MODELS.c.name,
                    T_MODELS.c.id,
                    sa.func.count(T_VERSIONS.c.version).label("n"),
                    sa.func.max(T_VERSIONS.c.version).label("latest"),
                    sa.func.max(T_VERSIONS.c.created_at).label("updated"),
                    sa.func.sum(T_VERSIONS.c.size).label("bytes"),
                )
                .join(T_VERSIONS, T_VERSIONS.c.model_id == T_MODELS.c.id)
                .group_by(T_MODELS.c.id, T_MODELS.c.name)
                .order_by(T_MODELS.c.name)
            ).all()
            aliases: dict[int, dict[str, int]] = {}
            for a in conn.execute(sa.select(T_ALIASES)):
                aliases.setdefault(int(a.model_id), {})[a.alias] = int(a.version)
        return [
            {
                "name": r.name,
                "versions": int(r.n),
                "latest": int(r.latest),
                "updated": _ts(r.updated).isoformat(),  # type: ignore[union-attr]
                "bytes": int(r.bytes or 0),
                "aliases": dict(sorted(aliases.get(int(r.id), {}).items())),
            }
            for r in rows
        ]

    def get(
        self,
        name: str,
        version: SupportsIndex | str | None = None,
        *,
        trusted: Iterable[Any] | str | type | None = (),
        mmap: bool = False,
        env: str = "warn",
        key: Any = None,
    ) -> Any:
        """Load a version (``None``: the latest; an int; or an alias name).

        The blob is checked against the digest recorded in the catalog and every buffer
        against its checksum while reading; a mismatch raises :class:`IntegrityError`.
        ``trusted``, ``mmap``, ``env`` and ``key`` are as for :func:`safepoint.load`
        (``mmap`` only for local stores).
        """
        mv = self.info(name, version)
        return self._load_blob(mv.digest, mv.ref, trusted=trusted, mmap=mmap, env=env, key=key)

    def _load_blob(
        self,
        digest: str,
        what: str,
        *,
        trusted: Any = (),
        mmap: bool = False,
        env: str = "warn",
        key: Any = None,
    ) -> Any:
        path = self.blobs.local_path(digest)
        try:
            if path is not None:
                try:
                    reader = open_reader(path)
                except NotFoundError:
                    raise IntegrityError(
                        f"the blob of {what} ({digest}) is missing from the store: it was "
                        "removed outside safepoint; restore it or delete the version"
                    ) from None
            else:
                try:
                    data = self.blobs.read(digest)
                except NotFoundError:
                    raise IntegrityError(
                        f"the blob of {what} ({digest}) is missing from {self.url!r}"
                    ) from None
                reader = open_reader(data)
            with contextlib.closing(reader):
                if reader.digest != digest:
                    raise IntegrityError(
                        f"the blob of {what} does not match its recorded digest "
                        f"({reader.digest} != {digest}): it was changed after the put"
                    )
                return _api._construct(
                    reader,
                    reader.manifest.get("root"),
                    trusted=trusted,
                    env=env,
                    key=key,
                    mmap=bool(mmap and path is not None),
                    # mapped or read, a version's buffers are checked before it is used
                    verify_mapped=True,
                )
        except FormatError as exc:
            raise IntegrityError(
                f"the blob of {what} ({digest}) is corrupt: {exc}. It was valid when stored: "
                "the storage changed it; restore it from a backup or delete the version"
            ) from None

    @contextlib.contextmanager
    def open_blob(self, name: str, version: SupportsIndex | str | None = None) -> Iterator[Any]:
        """A path (local stores) or bytes of a version's blob, for ``sp.inspect``/``verify``."""
        mv = self.info(name, version)
        path = self.blobs.local_path(mv.digest)
        if path is not None:
            if not os.path.exists(path):
                raise IntegrityError(f"the blob of {mv.ref} ({mv.digest}) is missing")
            yield path
        else:
            yield self.blobs.read(mv.digest)

    def inspect(self, ref: str, **kwargs: Any) -> _api.Inspection:
        """:func:`safepoint.inspect` of ``NAME[@VERSION|@ALIAS]``."""
        name, sel = parse_ref(ref)
        with self.open_blob(name, sel) as src:
            return _api.inspect(src, **kwargs)

    def verify(self, ref: str, **kwargs: Any) -> _api.VerifyReport:
        """:func:`safepoint.verify` of ``NAME[@VERSION|@ALIAS]`` plus the digest check.

        The report is recorded in the catalog (see :meth:`last_verify`), so that the
        console and the CLI can show it without loading the model.
        """
        name, sel = parse_ref(ref)
        mv = self.info(name, sel)
        with self.open_blob(name, sel) as src:
            report = _api.verify(src, **kwargs)
            with contextlib.closing(open_reader(src)) as reader:
                if reader.digest != mv.digest:
                    report.ok = False
                    report.problems.append(
                        f"blob digest {reader.digest} != recorded {mv.digest}: it was replaced"
                    )
        self._record_verify(mv, report)
        return report

    def _record_verify(self, mv: ModelVersion, report: _api.VerifyReport) -> None:
        from .catalog import T_VERIFY

        row = {"at": time.time(), "ok": bool(report.ok), "report": dumps_json(report.to_dict())}
        with self.catalog.tx(write=True) as conn:
            mid = self.catalog.model_id(conn, mv.name)
            conn.execute(
                sa.delete(T_VERIFY).where(
                    T_VERIFY.c.model_id == mid, T_VERIFY.c.version == mv.version
                )
            )
            conn.execute(sa.insert(T_VERIFY).values(model_id=mid, version=mv.version, **row))

    def last_verify(self, name: str, version: int | str | None = None) -> dict[str, Any] | None:
        """The last :meth:`verify` report of a version (``at`` added), or None if never."""
        from .catalog import T_VERIFY

        mv = self.info(name, version)
        with self.catalog.tx() as conn:
            mid = self.catalog.model_id(conn, mv.name)
            row = conn.execute(
                sa.select(T_VERIFY).where(
                    T_VERIFY.c.model_id == mid, T_VERIFY.c.version == mv.version
                )
            ).first()
        if row is None:
            return None
        report: dict[str, Any] = loads_json(row.report, {})
        report["at"] = datetime.fromtimestamp(float(row.at), UTC).isoformat()[:19]
        return report

    # -- lineage -------------------------------------------------------------------------
    def lineage(self, name: str, version: SupportsIndex | str | None = None) -> dict[str, Any]:
        """Parents, data and code digests, run and children (versions naming this one)."""
        mv = self.info(name, version)
        children = [v.ref for v in self.find(parent=mv.ref)]
        return {
            "ref": mv.ref,
            "parents": mv.parents,
            "data_digest": mv.data_digest,
            "code_digest": mv.code_digest,
            "run_id": mv.run_id,
            "children": children,
        }

    def find(
        self,
        *,
        data_digest: str | None = None,
        code_digest: str | None = None,
        parent: str | None = None,
        run_id: str | None = None,
        tag: str | None = None,
    ) -> list[ModelVersion]:
        """Versions matching every given criterion (lineage queries)."""
        q = sa.select(T_VERSIONS, T_MODELS.c.name.label("model_name")).join(
            T_MODELS, T_MODELS.c.id == T_VERSIONS.c.model_id
        )
        if data_digest is not None:
            q = q.where(T_VERSIONS.c.data_digest == data_digest)
        if code_digest is not None:
            q = q.where(T_VERSIONS.c.code_digest == code_digest)
        if run_id is not None:
            q = q.where(T_VERSIONS.c.run_id == run_id)
        if parent is not None:
            q = q.where(T_VERSIONS.c.parents.contains(json.dumps(parent)))
        with self.catalog.tx() as conn:
            rows = conn.execute(q.order_by(T_MODELS.c.name, T_VERSIONS.c.version)).all()
            out = []
            for r in rows:
                mv = self._version(r, r.model_name, [])
                if parent is not None and parent not in mv.parents:
                    continue
                if tag is not None and tag not in mv.tags:
                    continue
                out.append(mv)
        return out

    # -- deletion and retention ---------------------------------------------------------
    def delete(
        self, name: str, version: SupportsIndex | str | None = None, *, force: bool = False
    ) -> list[int]:
        """Delete one version (or, with ``version=None``, every version) of ``name``.

        A version that an alias points at is refused unless ``force=True`` (then the
        alias goes too). Blobs are removed later by :meth:`gc`. Returns the deleted
        version numbers.
        """
        name = check_name(name)
        with self.catalog.tx(write=True) as conn:
            mid = self.catalog.model_id(conn, name, create_by=None)
            # lock the model row so that a concurrent put does not interleave on PostgreSQL
            conn.execute(sa.select(T_MODELS.c.id).where(T_MODELS.c.id == mid).with_for_update())
            if version is None:
                targets = [
                    int(v)
                    for v in conn.execute(
                        sa.select(T_VERSIONS.c.version).where(T_VERSIONS.c.model_id == mid)
                    ).scalars()
                ]
            else:
                v = self._resolve(conn, mid, name, version)
                self._row(conn, mid, name, v)
                targets = [v]
            amap = self._alias_map(conn, mid)
            held = {a: v for v in targets for a in amap.get(v, [])}
            if held and not force:
                raise AliasConflictError(
                    f"cannot delete {name}: "
                    + ", ".join(f"alias {a!r} points at version {v}" for a, v in held.items())
                    + "; move the alias first or pass force=True"
                )
            for a in held:
                conn.execute(
                    T_ALIASES.delete().where(T_ALIASES.c.model_id == mid, T_ALIASES.c.alias == a)
                )
            for v in targets:
                conn.execute(
                    T_VERSIONS.delete().where(
                        T_VERSIONS.c.model_id == mid, T_VERSIONS.c.version == v
                    )
                )
                self.catalog.audit(
                    conn,
                    actor=self.actor,
                    host=self.host,
                    action="delete",
                    name=name,
                    version=v,
                    aliases=[a for a, hv in held.items() if hv == v],
                )
        return sorted(targets)

    def gc(
        self,
        keep_last: int | None = None,
        keep_best: tuple[str, str] | tuple[str, str, int] | None = None,
        keep_aliases: bool = True,
        dry_run: bool = False,
        grace: float | None = None,
    ) -> GcReport:
        """Apply retention, then remove unreferenced blobs and abandoned temporary objects.

        Args:
            keep_last: keep the newest N versions of every model (None: no version is
                deleted unless ``keep_best`` is given).
            keep_best: ``("metric", "max"|"min")`` or ``("metric", "max", k)``: also keep
                the k (default 1) best versions by that metric.
            keep_aliases: never delete a version an alias points at.
            dry_run: report, change nothing.
            grace: seconds (default: the store's, 1 hour): unreferenced blobs and
                temporary objects younger than this are kept (a writer may still be
                streaming or committing them). Independently, a blob that a put or a
                checkpoint set has leased (between promoting it and committing its
                version) is never removed while the lease lives: until the commit, the
                store's ``lease_ttl`` (6 hours), or until its holder is seen dead (a
                process of this host that no longer runs, e.g. after ``kill -9``).

        Example:
            >>> store.gc(keep_last=3, keep_best=("auc", "max"))   # doctest: +SKIP
        """
        grace = self.grace if grace is None else float(grace)
        if grace < 0 or math.isnan(grace):
            raise StoreError(f"grace must be >= 0 seconds, not {grace!r}")
        report = GcReport(dry_run=dry_run)
        if keep_last is not None and (isinstance(keep_last, bool) or int(keep_last) < 0):
            raise StoreError(f"keep_last must be a non-negative int, not {keep_last!r}")
        best = self._keep_best_arg(keep_best)
        if keep_last is not None or best is not None:
            for name in self.models():
                for v in self._retention(name, keep_last, best, keep_aliases):
                    report.deleted_versions.append(f"{name}@{v}")
                    if not dry_run:
                        with contextlib.suppress(NotFoundError):
                            self.delete(name, v, force=not keep_aliases)
        now = time.time()
        for b in list(self.blobs.list_blobs()):
            if b.mtime > now - grace:
                report.kept_blobs += 1
                continue
            if dry_run:
                with self.catalog.tx() as conn:
                    used = self.catalog.referenced(conn, b.key)
                if used:
                    report.kept_blobs += 1
                else:
                    report.deleted_blobs.append(b.key)
                    report.freed_bytes += b.size
                continue
            if not self.catalog.claim_for_delete(
                b.key, b.size, grace, self.lease_ttl, self._lease_dead
            ):
                report.kept_blobs += 1
                continue
            self.blobs.delete(b.key)
            self.catalog.forget_blob(b.key)
            report.deleted_blobs.append(b.key)
            report.freed_bytes += b.size
        temps = list(self.blobs.list_temps())
        if temps:
            # listed first, then the leases: a temporary object's lease predates its file
            live = {
                t
                for t, h, p in self.catalog.temp_leases(self.lease_ttl)
                if not self._lease_dead(h, p)
            }
            for t in temps:
                if t.mtime <= now - grace and t.key not in live:
                    report.deleted_temps += 1
                    report.freed_bytes += t.size
                    if not dry_run:
                        self.blobs.delete_temp(t.key)
        if not dry_run:
            self._gc_catalog(grace)
            with self.catalog.tx(write=True) as conn:
                self.catalog.audit(
                    conn,
                    actor=self.actor,
                    host=self.host,
                    action="gc",
                    name="*",
                    versions=len(report.deleted_versions),
                    blobs=len(report.deleted_blobs),
                    freed=report.freed_bytes,
                )
        return report

    def _gc_catalog(self, grace: float) -> None:
        """Drop stale leases and blob rows whose blob is gone and unreferenced."""
        from .catalog import T_BLOBS, T_LEASES

        cutoff = time.time() - grace
        with self.catalog.tx(write=True) as conn:
            conn.execute(
                T_LEASES.delete().where(T_LEASES.c.created_at < time.time() - self.lease_ttl)
            )
            for lid, host, pid in conn.execute(
                sa.select(T_LEASES.c.id, T_LEASES.c.host, T_LEASES.c.pid)
            ).all():
                if self._lease_dead(host, int(pid)):
                    conn.execute(T_LEASES.delete().where(T_LEASES.c.id == lid))
        with self.catalog.tx() as conn:
            rows = (
                conn.execute(sa.select(T_BLOBS.c.digest).where(T_BLOBS.c.state_at < cutoff))
                .scalars()
                .all()
            )
        for d in rows:
            if not self.blobs.exists(d) and self.catalog.claim_for_delete(
                d, 0, grace, self.lease_ttl, self._lease_dead
            ):
                self.catalog.forget_blob(d)

    def _lease_dead(self, host: str, pid: int) -> bool:
        """True if the lease holder is known to be gone: a process of this host that no
        longer runs. Holders on other hosts count as alive until the lease expires."""
        if host != self.host or pid <= 0 or pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by someone else
            return False
        return _is_zombie(pid)

    @staticmethod
    def _keep_best_arg(keep_best: Any) -> tuple[str, str, int] | None:
        if keep_best is None:
            return None
        if (
            isinstance(keep_best, tuple | list)
            and len(keep_best) in (2, 3)
            and isinstance(keep_best[0], str)
            and keep_best[1] in ("max", "min")
        ):
            k = int(keep_best[2]) if len(keep_best) == 3 else 1
            return (keep_best[0], keep_best[1], k)
        raise StoreError(
            f"keep_best must be ('metric', 'max'|'min') or ('metric', 'max'|'min', k), "
            f"not {keep_best!r}"
        )

    def _retention(
        self,
        name: str,
        keep_last: int | None,
        best: tuple[str, str, int] | None,
        keep_aliases: bool,
    ) -> list[int]:
        vs = self.versions(name)
        keep: set[int] = set()
        if keep_last is not None:
            keep |= {v.version for v in vs[len(vs) - int(keep_last) :]} if keep_last else set()
        if best is not None:
            metric, mode, k = best
            scored = [v for v in vs if metric in v.metrics and not math.isnan(v.metrics[metric])]
            scored.sort(key=lambda v: v.metrics[metric], reverse=(mode == "max"))
            keep |= {v.version for v in scored[:k]}
        if keep_aliases:
            keep |= {v.version for v in vs if v.aliases}
        return [v.version for v in vs if v.version not in keep]

    # -- copy between stores -------------------------------------------------------------
    def copy(
        self,
        name: str,
        version: SupportsIndex | str | None = None,
        *,
        to: Store | str,
        new_name: str | None = None,
        alias: str | None = None,
    ) -> ModelVersion:
        """Copy one version (blob, metadata, metrics, tags and lineage) into store ``to``.

        The blob streams from one backend to the other and is validated on arrival; the
        copy becomes the next version of ``new_name`` (default: the same name) there.

        Example:
            >>> team = sp.Store("s3://team/models", metadata="postgresql://db/m")  # doctest: +SKIP
            >>> local.copy("fraud/scorer", "staging", to=team, alias="candidate")  # doctest: +SKIP
        """
        target = Store(to) if isinstance(to, str) else to
        if not isinstance(target, Store):
            raise StoreError(f"to= must be a Store or a store URL, not {type(to).__name__}")
        mv = self.info(name, version)
        dest = check_name(new_name) if new_name is not None else mv.name
        fields = {
            "metrics": mv.metrics,
            "tags": mv.tags,
            "alias": None if alias is None else check_alias(alias),
            "parents": mv.parents,
            "data_digest": mv.data_digest,
            "code_digest": mv.code_digest,
        }
        with self.blobs.open(mv.digest) as src:
            staged = target._stage_stream(src)
        assert staged.inspection is not None
        if staged.digest != mv.digest:
            target._release(*staged.lease_ids)
            raise IntegrityError(
                f"the copy of {mv.ref} has digest {staged.digest}, expected {mv.digest}: the "
                "source blob is damaged"
            )
        out = target._commit(
            dest,
            staged,
            mv.metadata,
            fields,
            run_id=mv.run_id,
            action="copy",
            detail={"source": f"{self.url}::{mv.ref}"},
            environment=mv.environment,
            root_type=mv.root_type,
        )
        with self.catalog.tx(write=True) as conn:
            self.catalog.audit(
                conn,
                actor=self.actor,
                host=self.host,
                action="copy-out",
                name=mv.name,
                version=mv.version,
                target=f"{target.url}::{out.ref}",
            )
        return out

    # -- audit log -------------------------------------------------------------------------
    def log(
        self, name: str | None = None, *, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The audit log, newest first: puts, alias moves, deletes, copies, gc runs."""
        q = sa.select(T_AUDIT).order_by(T_AUDIT.c.id.desc()).limit(int(limit))
        if name is not None:
            q = q.where(T_AUDIT.c.name == check_name(name))
        if action is not None:
            q = q.where(T_AUDIT.c.action == action)
        with self.catalog.tx() as conn:
            rows = conn.execute(q).all()
        return [
            AuditEntry(
                id=int(r.id),
                at=_ts(r.at),  # type: ignore[arg-type]
                actor=r.actor,
                host=r.host,
                action=r.action,
                name=r.name,
                version=r.version,
                detail=loads_json(r.detail, {}),
            )
            for r in rows
        ]

    # -- checkpointer and runs ---------------------------------------------------------
    def checkpointer(self, name: str, description: str = "", **kwargs: Any) -> Checkpointer:
        """A key/value checkpointer named ``name`` in this store (created on first use)."""
        from .checkpointer import Checkpointer

        return Checkpointer(self, name, description=description, **kwargs)

    @property
    def runs(self) -> Runs:
        """The runs table: workflow, search and scoring runs (status, progress, state)."""
        if self._runs is None:
            from .runs import Runs

            self._runs = Runs(self)
        return self._runs


def _reopen(
    url: str,
    metadata: str | None,
    storage_options: dict[str, Any] | None,
    grace: float,
    lease_ttl: float,
) -> Store:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)  # said once where it was opened
        return Store(
            url, metadata, storage_options=storage_options, grace=grace, lease_ttl=lease_ttl
        )


def _is_zombie(pid: int) -> bool:
    # a killed child that its parent has not reaped yet still answers kill(pid, 0)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def is_store_url(value: str) -> bool:
    """True for URLs that name blob storage (``s3://``, ``memory://``, ...)."""
    return bool(scheme_of(value))
