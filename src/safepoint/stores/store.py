"""``sp.Store``: versioned models in a folder, on object storage, with a shared catalog.

>>> import safepoint as sp, numpy as np, tempfile
>>> store = sp.Store(tempfile.mkdtemp())                 # a local folder + embedded SQLite
>>> data = store.put("demo/data", {"rows": np.arange(10)})
>>> mv = store.put("demo/weights", {"w": np.arange(3)}, alias="production",
...                metrics={"auc": 0.91}, parents=[data])
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
  lease_ttl=21600, create=True)`` (``create=False``: only an existing store opens, else
  NotFoundError): ``url`` a
  folder or an fsspec URL (``file://``, ``memory://``, ``s3://bucket/prefix``; default
  ``$SAFEPOINT_STORE`` or ``.safepoint``); ``metadata`` a SQLAlchemy URL
  (``sqlite:///...``, ``postgresql://...``). Without ``metadata`` a local store keeps its
  catalog in ``<url>/catalog.db``; remote blobs then get a local SQLite catalog in
  ``~/.safepoint/catalogs/`` and a warning that it serves one user. ``cache``: remote
  blobs are read through a local read cache (:mod:`safepoint.stores.cache`; a folder,
  a ``BlobCache``, or False for none; default ``$SAFEPOINT_CACHE_DIR`` or the user cache
  folder), so each blob is downloaded once per machine and ``get(mmap=True)`` maps it.
* ``put(name, obj, *, metadata, metrics, tags, alias, parents, data_digest, code_digest,
  run_id, compress, golden, key) -> ModelVersion``; ``put_file(name, path, ...)``.
* ``get(name, version=None|int|"alias", *, trusted, mmap, env, key)``: the object.
* ``info(name, version)``, ``versions(name)``, ``models()``, ``aliases(name)``,
  ``lineage(name, version)``, ``find(data_digest=, code_digest=, parent=, tag=)``.
* ``set_alias(name, alias, version, *, expected=None)``: compare-and-swap; ``expected``
  must equal the alias's current version (None: the alias must not exist yet).
  ``delete_alias(name, alias, *, expected=None)``.
* ``edit(name, version, *, metrics, tags, description, remove_metrics, remove_tags)``.
* ``delete(name, version=None, *, force=False)``; ``gc(keep_last, keep_best, keep_aliases,
  dry_run, grace) -> GcReport``; ``copy(name, version, *, to, new_name, alias)`` (a
  version the target has already is not copied again: ``find_copy``).
* ``log(name=None, *, action=None, limit=100) -> list[AuditEntry]``: puts, alias moves,
  edits, deletes, copies, gc runs, recoveries (who, when, from which host).
* ``check(repair=False) -> CheckReport`` (fsck); ``recover(force=False) -> RecoverReport``
  rebuilds a lost or damaged catalog from the version records and journal beside the
  blobs (see :mod:`safepoint.stores.recover`).
* ``checkpointer(name, description="")``: see :mod:`safepoint.stores.checkpointer`.
* ``runs``: see :mod:`safepoint.stores.runs`.
* ``inspect(ref)``, ``verify(ref)``: like ``sp.inspect``/``sp.verify`` on ``NAME[@V|@ALIAS]``.

Guarantees: a version becomes visible only once its blob and its version record are
durable (written to a temporary object, fsynced, atomically promoted to its content
address, the record written, then the catalog transaction); concurrent puts of one name
get distinct increasing versions; ``gc`` never removes a blob that a commit holds a
lease on, that a live version record names, or that is younger than ``grace``; a
catalog that does not match the blobs refuses writes and gc until ``recover``.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, SupportsIndex

import sqlalchemy as sa

from .._types import EnvPolicy
from ..errors import (
    AliasConflictError,
    CatalogDamagedError,
    FormatError,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    RecoveryNeededError,
    SafepointError,
    SafepointWarning,
    StoreError,
)
from ..format import api as _api
from ..format.file import open as open_file
from ..format.reader import problems_against
from . import intents
from .arguments import (
    count_arg,
    digest_arg,
    json_dict_arg,
    kind_arg,
    metrics_arg,
    names_arg,
    parents_arg,
    run_id_arg,
    seconds_arg,
    tags_arg,
    text_arg,
)
from .blobs import BlobStore, open_blobs, scheme_of
from .cache import check_cache_arg, load_cached, read_blob, resolve_cache
from .catalog import (
    Catalog,
    dumps_json,
    loads_json,
    memory_catalog,
    open_catalog,
)
from .faults import os_error, os_errors
from .gc import GcReport
from .names import MAX_VERSION, check_alias, check_name, check_version, parse_ref
from .records import JournalEntry, VersionRecord, record_key
from .staging import BlobStaging, Staged

if TYPE_CHECKING:
    from .check import CheckReport
    from .checkpointer import Checkpointer
    from .recover import RecoverReport
    from .runs import Run, Runs

__all__ = ["AuditEntry", "GcReport", "ModelVersion", "Store", "default_store_url"]

DEFAULT_URL = ".safepoint"
#: the actions the audit log records (``Store.log(action=...)``)
AUDIT_ACTIONS = (
    "put",
    "alias",
    "unalias",
    "edit",
    "delete",
    "copy",
    "copy-out",
    "gc",
    "recover",
)


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
    description: str = ""
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


def version_row(rec: VersionRecord) -> dict[str, Any]:
    """The ``versions`` columns (but ``model_id``) of a version record."""
    return {
        "version": rec.version,
        "digest": rec.digest,
        "size": rec.size,
        "created_at": rec.created_at,
        "created_by": rec.created_by[:100],
        "host": rec.host[:255],
        "root_type": rec.root_type[:255],
        "environment": dumps_json(rec.environment),
        "metadata": dumps_json(rec.metadata),
        "metrics": dumps_json(rec.metrics),
        "tags": dumps_json(rec.tags),
        "parents": dumps_json(rec.parents),
        "data_digest": rec.data_digest,
        "code_digest": rec.code_digest,
        "run_id": rec.run_id,
        "description": rec.description,
    }


def _mv_from_record(rec: VersionRecord, aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        name=rec.name,
        version=rec.version,
        digest=rec.digest,
        size=rec.size,
        created=_ts(rec.created_at),  # type: ignore[arg-type]
        created_by=rec.created_by,
        host=rec.host,
        root_type=rec.root_type,
        environment=rec.environment,
        metadata=rec.metadata,
        metrics=rec.metrics,
        tags=rec.tags,
        parents=rec.parents,
        data_digest=rec.data_digest,
        code_digest=rec.code_digest,
        run_id=rec.run_id,
        description=rec.description,
        aliases=aliases,
    )


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
        cache: Any = None,
    ) -> None:
        if url is not None and not isinstance(url, str | os.PathLike):
            raise InvalidArgumentError(
                f"the store url must be a path or URL, not {type(url).__name__}"
            )
        url = default_store_url() if url is None else os.fspath(url)
        if not isinstance(url, str) or not url or "\x00" in url:
            raise InvalidNameError(f"store url must be a non-empty path or URL, not {url!r}")
        self.url = url
        # what it takes to open this store again elsewhere (pickling, e.g. to Dask workers)
        grace, lease_ttl = seconds_arg(grace, "grace"), seconds_arg(lease_ttl, "lease_ttl")
        if storage_options is not None and not isinstance(storage_options, dict):
            raise InvalidArgumentError(
                f"storage_options must be a dict, not {type(storage_options).__name__}"
            )
        check_cache_arg(cache)
        self._args = (url, metadata, storage_options, grace, lease_ttl, cache)
        self.grace = grace
        self.lease_ttl = lease_ttl
        self.blobs: BlobStore = open_blobs(url, storage_options, create=create)
        self.blobs.check()
        #: writes blobs, leased until their catalog rows commit (puts, checkpointers)
        self.staging = BlobStaging(self)
        #: the local read cache of remote blobs (stores/cache.py), or None
        self.cache = resolve_cache(cache, self.blobs)
        self.actor = _actor()
        self.host = socket.gethostname()[:255]
        self._runs: Runs | None = None
        self._catalog_error: SafepointError | None = None
        #: why writes and gc are refused (the catalog does not match the blobs), or None
        self.problem: str | None = None
        #: the id shared by the blobs' ``store.json`` and the catalog (None if unknown)
        self.store_id: str | None = None
        if metadata is not None and not isinstance(metadata, str):
            raise InvalidArgumentError(f"metadata must be a database URL string, not {metadata!r}")
        self.metadata_url = metadata
        try:
            self._catalog: Catalog | None = self._open_catalog(metadata, create)
        except CatalogDamagedError as exc:
            # the store still opens: recover() rebuilds the catalog from the blobs
            self._catalog, self._catalog_error = None, exc
            self.problem = str(exc)
        if self._catalog is not None and self.blobs.is_remote and self._catalog.is_sqlite:
            warnings.warn(
                SafepointWarning(
                    f"store {url!r} keeps blobs on shared storage but its catalog is a local "
                    f"SQLite file ({self._catalog.url}): it serves one user on this machine. "
                    "Teams should pass metadata='postgresql://...' so that everyone sees the "
                    "same versions."
                ),
                stacklevel=2,
            )
        if self._catalog is not None:
            self._establish(create)
        if self.problem is not None:
            warnings.warn(
                SafepointWarning(f"store {url!r} is open for reading only: {self.problem}"),
                stacklevel=2,
            )

    def _open_catalog(self, metadata: str | None, create: bool) -> Catalog:
        if metadata is not None:
            try:
                return open_catalog(metadata, create=create or self.blobs.is_local)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"no store at {self.url} with catalog {metadata}: {exc}; check --store "
                    "and --metadata"
                ) from None
        if self.blobs.is_local:
            # a store folder exists (LocalBlobs checked): a missing catalog file is created
            # empty, and the store id check then says that it needs `recover`
            return open_catalog("sqlite:///" + os.path.join(self.blobs.url, "catalog.db"))
        if not self.blobs.is_remote:
            return memory_catalog(self.url)
        home = os.environ.get("SAFEPOINT_HOME") or os.path.expanduser("~/.safepoint")
        folder = os.path.join(home, "catalogs")
        with os_errors(folder, "create the folder of local catalogs"):
            os.makedirs(folder, exist_ok=True)
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        try:
            return open_catalog("sqlite:///" + os.path.join(folder, key + ".db"), create=create)
        except NotFoundError:
            raise NotFoundError(
                f"no store at {self.url} known on this machine (no local catalog for it): "
                "check --store / $SAFEPOINT_STORE, pass --metadata for a shared catalog, or "
                "run `safepoint recover` to rebuild a catalog from its blobs"
            ) from None

    def _establish(self, create: bool) -> None:
        """Check that catalog and blobs belong to one store (see :mod:`.identity`)."""
        from .identity import establish

        try:
            ident = establish(self.blobs, self.catalog, create=create)
        except CatalogDamagedError as exc:
            self._catalog_error, self.problem = exc, str(exc)
            self._catalog = None
            return
        self.store_id, self.problem = ident.store_id, ident.problem
        self._catalog_file = self.catalog.file_id()
        if ident.adopted:
            from .recover import write_missing_records

            write_missing_records(self)
        if self.problem is None and self.records_enabled and not self.catalog.read_only:
            # undo or finish what crashed writers left half-way (usually nothing to do)
            with contextlib.suppress(SafepointError):
                intents.heal(self)

    @property
    def catalog(self) -> Catalog:
        """The catalog database (raises the error that made it unusable, if any)."""
        if self._catalog is None:
            assert self._catalog_error is not None
            raise self._catalog_error
        return self._catalog

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """The fsspec options this store's blobs were opened with."""
        return self._args[2]

    @property
    def records_enabled(self) -> bool:
        """True if this store writes version records and a journal beside its blobs."""
        return self.blobs.supports_objects

    def require_writable(self) -> None:
        """Refuse a write or gc while the catalog does not match the blobs."""
        self._refresh_catalog()
        if self.problem is not None and self._catalog is not None:
            self._establish(create=False)  # another process may have recovered it since
        if self.problem is not None:
            if self._catalog_error is not None:
                raise self._catalog_error
            raise RecoveryNeededError(f"refusing to write to store {self.url!r}: {self.problem}")

    def _refresh_catalog(self) -> None:
        """Reopen a SQLite catalog whose file was deleted or replaced since it was opened
        (by ``recover`` in another process, or by accident) and check it again."""
        cat = self._catalog
        if cat is None or cat.path is None or cat.file_id() == self._catalog_file:
            return
        self._catalog = open_catalog("sqlite:///" + cat.path)
        self._establish(create=False)

    def check_identity(self, conn: sa.Connection) -> None:
        """Inside a write transaction: the catalog is still this store's (its SQLite file
        was not deleted or replaced under this process, its store id did not change)."""
        cat = self.catalog
        if cat.path is not None and cat.file_id() != self._catalog_file:
            raise RecoveryNeededError(
                f"the catalog {cat.path} was deleted or replaced while store {self.url!r} was "
                "open: nothing was committed. Open the store again; if the catalog is gone, "
                "run `safepoint recover` (Store.recover()) to rebuild it from the blobs"
            )
        if self.store_id is None:
            return
        sid = cat.store_id(conn)
        if sid != self.store_id:
            raise RecoveryNeededError(
                f"the catalog {cat.url} no longer belongs to store {self.url!r} (its store id "
                f"is {sid or 'missing'}, not {self.store_id}): nothing was committed; run "
                "`safepoint recover` (Store.recover()) to rebuild it from the blobs"
            )

    def __repr__(self) -> str:
        cat = self._catalog.url if self._catalog is not None else "<damaged>"
        return f"Store({self.url!r}, metadata={cat!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # a Store travels as the arguments that open it (connections do not pickle)
        return (_reopen, self._args)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release database connections (the store stays usable: they reopen on demand)."""
        if self._catalog is not None and not self._catalog.in_memory:
            self._catalog.close()

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
        description: str = "",
        compress: str | None = None,
        golden: Any = None,
        key: Any = None,
    ) -> ModelVersion:
        """Save ``obj`` as the next version of ``name``; returns the new version.

        The object streams straight into a temporary blob (checksums computed while
        writing), which is fsynced and promoted to its content address before the
        catalog transaction makes the version visible. ``alias`` moves (or creates) that
        alias to the new version in the same transaction; ``metadata`` is also written
        into the file's manifest, so ``sp.inspect`` of the blob shows it. ``parents``
        must exist: versions of this store (``"name@3"``, ``"name@prod"``, a
        ModelVersion) or runs in its runs table.

        Example:
            >>> mv = store.put("fraud/scorer", model, alias="staging",     # doctest: +SKIP
            ...                metrics={"auc": 0.93}, parents=["fraud/features@4"])
        """
        name = check_name(name)
        meta = json_dict_arg(metadata, "metadata")
        fields = self._version_fields(
            metrics, tags, alias, parents, data_digest, code_digest, description
        )
        rid = run_id_arg(run_id)
        self.require_writable()
        self._check_parents(fields["parents"])
        staged = self.staging.stage_object(
            obj, compress=compress, metadata=meta, golden=golden, key=key
        )
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
        description: str = "",
    ) -> ModelVersion:
        """Store an existing safepoint file (validated, never loaded) as a new version."""
        name = check_name(name)
        meta = json_dict_arg(metadata, "metadata")
        fields = self._version_fields(
            metrics, tags, alias, parents, data_digest, code_digest, description
        )
        rid = run_id_arg(run_id)
        if not isinstance(path, str | os.PathLike):
            raise InvalidArgumentError(f"path must be a file path, not {type(path).__name__}")
        self.require_writable()
        self._check_parents(fields["parents"])
        try:
            src = open(os.fspath(path), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise NotFoundError(f"no such file: {os.fspath(path)!r}") from None
        except IsADirectoryError:
            raise FormatError(f"{os.fspath(path)!r} is a directory, not a safepoint file") from None
        except OSError as exc:
            raise os_error(exc, os.fspath(path), "read") from None
        except ValueError:  # a NUL in the path
            raise InvalidArgumentError(f"not a file path: {os.fspath(path)!r}") from None
        with src:
            staged = self.staging.stage_stream(src)
        assert staged.inspection is not None
        meta = {**staged.inspection.metadata, **meta}
        return self._commit(name, staged, meta, fields, run_id=rid, action="put")

    def _version_fields(
        self,
        metrics: Any,
        tags: Any,
        alias: str | None,
        parents: Any,
        data_digest: Any,
        code_digest: Any,
        description: Any = "",
    ) -> dict[str, Any]:
        return {
            "metrics": metrics_arg(metrics),
            "tags": tags_arg(tags),
            "alias": None if alias is None else check_alias(alias),
            "parents": parents_arg(parents),
            "data_digest": digest_arg(data_digest, "data_digest"),
            "code_digest": digest_arg(code_digest, "code_digest"),
            "description": text_arg(description, "description"),
        }

    def _check_parents(self, parents: list[str]) -> None:
        """Every parent names a version of this store or a run of its runs table."""
        missing = []
        for p in parents:
            try:
                pname, sel = parse_ref(p)
            except InvalidNameError:
                pname, sel = "", None
            if pname and ("@" in p or sel is not None):
                try:
                    self.info(pname, sel)
                    continue
                except NotFoundError:
                    pass
            elif pname:
                with self.catalog.tx(single=True) as conn:
                    has = self.catalog.has_versions(conn, pname)
                if has:
                    continue
            with self.catalog.tx(single=True) as conn:
                run = self.catalog.run_exists(conn, p)
            if not run:
                missing.append(p)
        if missing:
            raise NotFoundError(
                f"parents {missing} are neither versions of this store ('name@3', "
                "'name@alias') nor runs in its runs table: lineage may only name what exists. "
                "Put the parent first, or record an outside source with data_digest= / "
                "code_digest= or metadata="
            )

    @staticmethod
    def _kind_of(tags: dict[str, str]) -> str:
        # outputs of step workflows carry this tag (workflows/steps.py RECORD_KEY)
        return "step" if "safepoint.step" in tags else "model"

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
        """Make a staged blob version ``name@N`` visible (see docs/store.md, "Guarantees").

        1. reserve N: the model's counter moves under the model row's lock (a short,
           relaxed transaction: a number is never handed out twice, and is never reused);
        2. write the version record ``records/<name>/@N.<digest>.json`` (durable);
        3. commit the version row (with its alias move, journaled before the commit, and
           the audit entry), dropping the blob's leases.

        A crash after 2 leaves a record without a version row: the reserved number is
        skipped, ``gc`` removes the record and blob, and ``recover`` (which cannot tell it
        from a committed version) restores it as a version.
        """
        insp = staged.inspection
        env = environment if environment is not None else (insp.environment if insp else {})
        rtype = (root_type or (insp.root_type if insp else "?"))[:255]
        alias = fields["alias"]
        kind = self._kind_of(fields["tags"])
        written: list[str] = []
        pending: list[str] = []
        try:
            self.require_writable()
            with self.catalog.tx(write=True, durable=False) as conn:
                self.check_identity(conn)
                mid = self.catalog.model_id(conn, name, create_by=self.actor, kind=kind)
                version = self.catalog.last_version(conn, mid) + 1
                if version > MAX_VERSION:
                    raise StoreError(f"model {name!r} has used every version number")
                self.catalog.set_last_version(conn, mid, version)
                pending = []
                if self.records_enabled:
                    key = record_key(name, version, staged.digest)
                    pending.append(intents.add(self.catalog, conn, "record", name, key))
                    if alias is not None:
                        pending.append(intents.add(self.catalog, conn, "journal", name))
            now = time.time()
            rec = VersionRecord(
                name=name,
                version=version,
                digest=staged.digest,
                size=staged.size,
                created_at=now,
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
                description=fields["description"],
                kind=kind,
                store_id=self.store_id or "",
            )
            if self.records_enabled:
                self.blobs.write_object(rec.key, rec.to_bytes())
                written.append(rec.key)
            with self.catalog.tx(write=True) as conn:
                self.check_identity(conn)
                mid = self.catalog.model_id(conn, name, lock=True)
                self.catalog.insert_version(conn, mid, version_row(rec))
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
                    self._move_alias(conn, mid, name, alias, version, check=self._ANY, out=written)
                self.catalog.drop_lease(conn, *staged.lease_ids)
                intents.drop(self.catalog, conn, *pending)
        except BaseException:
            self.staging.release(*staged.lease_ids)
            self._unwrite(written)
            if self._catalog is not None:
                intents.release(self._catalog, *pending)
            raise
        return _mv_from_record(rec, [alias] if alias else [])

    def _unwrite(self, keys: list[str]) -> None:
        """Remove records and journal entries of a change that did not commit (best effort:
        one left behind is found by ``check`` and removed by ``gc``)."""
        for key in reversed(keys):
            with contextlib.suppress(SafepointError):
                self.blobs.delete_object(key)

    def journal(
        self,
        conn: sa.Connection,
        mid: int,
        name: str,
        op: str,
        *,
        out: list[str] | None = None,
        write: bool = True,
        **values: Any,
    ) -> JournalEntry:
        """The model's next journal entry (its counter moves in ``conn``); written now
        (before the commit) when ``write``, else the caller writes it after the commit."""
        seq = self.catalog.next_journal_seq(conn, mid)
        entry = JournalEntry(name=name, seq=seq, op=op, actor=self.actor, host=self.host, **values)
        if write and self.records_enabled:
            self.blobs.write_object(entry.key, entry.to_bytes())
            if out is not None:
                out.append(entry.key)
        return entry

    def _journal_after(self, entries: list[JournalEntry]) -> None:
        """Write journal entries of a committed change (deletes: a crash before this
        leaves the version restorable by ``recover``, never lost)."""
        if not self.records_enabled:
            return
        for entry in entries:
            try:
                self.blobs.write_object(entry.key, entry.to_bytes())
            except SafepointError as exc:
                warnings.warn(
                    SafepointWarning(
                        f"{entry.name}@{entry.version} was deleted, but the deletion could not "
                        f"be journaled ({exc}); the next writer that opens the store, or "
                        "`safepoint check --repair`, journals it"
                    ),
                    stacklevel=3,
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
        out: list[str] | None = None,
    ) -> int | None:
        """Set (an int ``version``) or remove (``None``) an alias in transaction ``conn``,
        which holds the model row's lock.

        ``check`` is the compare-and-swap expectation: the version the alias must point
        at now (``None``: it must not exist), or ``_ANY`` when the caller owns the target
        (put's own alias, inside its commit). The move is journaled before the commit.
        """
        cur = self.catalog.alias_version(conn, mid, alias)
        if check is not self._ANY and cur != check:
            if check is None:
                raise AliasConflictError(
                    f"alias {name}@{alias} already points at version {cur}; pass "
                    f"expected={cur} to move it (compare-and-swap)"
                )
            raise AliasConflictError(
                f"alias {name}@{alias} points at "
                f"{'nothing' if cur is None else f'version {cur}'}, not version {check}: it "
                "moved since you read it; re-read it and retry with expected=<current version>"
            )
        if version is None and cur is None:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        self.journal(conn, mid, name, "alias", alias=alias, version=version, previous=cur, out=out)
        moved = self.catalog.move_alias(
            conn, mid, alias, current=cur, version=version, actor=self.actor
        )
        if not moved:
            raise AliasConflictError(
                f"alias {name}@{alias} changed while it was being moved; re-read it and retry"
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

    @contextlib.contextmanager
    def change(self, model: str) -> Iterator[tuple[sa.Connection, list[str], list[JournalEntry]]]:
        """A write transaction of a change to ``model``: ``(conn, written, after)``.

        ``written`` collects journal keys written before the commit (removed if it does
        not commit); ``after`` entries are written once it has committed. Both are
        covered by intents (:mod:`.intents`), so that a crash in between is undone or
        finished by the next writer that opens the store.
        """
        self.require_writable()
        written: list[str] = []
        after: list[JournalEntry] = []
        before = intents.begin(self.catalog, "journal", model) if self.records_enabled else None
        after_ids: list[str] = []
        try:
            with self.catalog.tx(write=True) as conn:
                self.check_identity(conn)
                yield conn, written, after
                if before is not None:
                    intents.drop(self.catalog, conn, before)
                after_ids = [
                    intents.add(self.catalog, conn, "journal-after", model, e.key, e.to_bytes())
                    for e in after
                ]
        except BaseException:
            self._unwrite(written)
            if before is not None:
                intents.release(self.catalog, before)
            raise
        self._journal_after(after)
        intents.release(self.catalog, *after_ids)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: SupportsIndex | str,
        *,
        expected: SupportsIndex | None = None,
    ) -> ModelVersion:
        """Point ``name@alias`` at ``version`` by compare-and-swap.

        ``expected`` is the version the alias must point at now (``None``: the alias must
        not exist yet); otherwise :class:`AliasConflictError` and nothing changes. Of
        several callers racing with the same ``expected``, exactly one wins (the model
        row is locked, and a new alias is inserted only if no other was). ``version``
        may be ``"latest"``.

        Example:
            >>> store.set_alias("fraud/scorer", "production", 4, expected=3)  # doctest: +SKIP
        """
        name = check_name(name)
        alias = check_alias(alias)
        if not (isinstance(version, str) and version == "latest"):
            version = check_version(version, "version")
        if expected is not None:
            expected = check_version(expected, "expected")
        with self.change(name) as (conn, written, _):
            mid = self.catalog.model_id(conn, name, lock=True)
            v = self._resolve(conn, mid, name, version)
            self._row(conn, mid, name, v)
            self._move_alias(conn, mid, name, alias, v, check=expected, out=written)
        return self.info(name, v)

    def delete_alias(self, name: str, alias: str, *, expected: SupportsIndex | None = None) -> int:
        """Remove ``name@alias``; returns the version it pointed at.

        With ``expected``, only if it still points at that version (compare-and-swap;
        else :class:`AliasConflictError`). Audited (``unalias``) and journaled.
        """
        name = check_name(name)
        alias = check_alias(alias)
        check = self._ANY if expected is None else check_version(expected, "expected")
        with self.change(name) as (conn, written, _):
            mid = self.catalog.model_id(conn, name, lock=True)
            cur = self._move_alias(conn, mid, name, alias, None, check=check, out=written)
        assert cur is not None
        return cur

    def edit(
        self,
        name: str,
        version: SupportsIndex | str | None = None,
        *,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | Iterable[str] | None = None,
        description: str | None = None,
        remove_metrics: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
    ) -> ModelVersion:
        """Change a version's metrics, tags or description after the put (audited, journaled).

        ``metrics`` and ``tags`` are merged into the existing ones; ``remove_metrics`` and
        ``remove_tags`` drop names; ``description`` replaces the description. The blob,
        its metadata and lineage never change.

        Example:
            >>> store.edit("fraud/scorer@3", metrics={"auc_holdout": 0.91},   # doctest: +SKIP
            ...            description="retrained on March data")
        """
        if isinstance(name, str) and "@" in name and version is None:
            name, version = parse_ref(name)
        name = check_name(name)
        new_metrics = metrics_arg(metrics)
        new_tags = tags_arg(tags)
        drop_m = names_arg(remove_metrics, "remove_metrics")
        drop_t = names_arg(remove_tags, "remove_tags")
        desc = None if description is None else text_arg(description, "description")
        with self.change(name) as (conn, written, _):
            mid = self.catalog.model_id(conn, name, lock=True)
            v = self._resolve(conn, mid, name, version)
            row = self._row(conn, mid, name, v)
            old_m, old_t = loads_json(row.metrics, {}), loads_json(row.tags, {})
            m = {k: x for k, x in {**old_m, **new_metrics}.items() if k not in drop_m}
            t = {k: x for k, x in {**old_t, **new_tags}.items() if k not in drop_t}
            d = row.description if desc is None else desc
            self.journal(
                conn, mid, name, "edit", version=v, metrics=m, tags=t, description=d, out=written
            )
            self.catalog.update_version(conn, mid, v, metrics=m, tags=t, description=d)
            changes = {
                "metrics": {k: m.get(k) for k in set(old_m) | set(m) if old_m.get(k) != m.get(k)},
                "tags": {k: t.get(k) for k in set(old_t) | set(t) if old_t.get(k) != t.get(k)},
            }
            self.catalog.audit(
                conn,
                actor=self.actor,
                host=self.host,
                action="edit",
                name=name,
                version=v,
                **{k: x for k, x in changes.items() if x},
                **({"description": d} if d != row.description else {}),
            )
        return self.info(name, v)

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of model ``name``."""
        name = check_name(name)
        with self.catalog.tx() as conn:
            mid = self.catalog.model_id(conn, name)
            rows = self.catalog.aliases_of(conn, mid)
        return dict(rows)

    # -- reading -------------------------------------------------------------------------
    def _resolve(self, conn: sa.Connection, mid: int, name: str, version: Any) -> int:
        if isinstance(version, str):
            if version[:1].isdigit():
                version = check_version(version)
            elif version == "latest":
                version = None
        if version is None:
            v = self.catalog.latest_version(conn, mid)
            if v is None:
                raise NotFoundError(f"model {name!r} has no versions")
            return int(v)
        if isinstance(version, bool):
            raise InvalidNameError(f"version must be an int, an alias or None, not {version!r}")
        if not isinstance(version, str) and hasattr(version, "__index__"):
            return check_version(version)
        if isinstance(version, str):
            alias = check_alias(version)
            v = self.catalog.alias_version(conn, mid, alias)
            if v is None:
                known = [a for a, _ in self.catalog.aliases_of(conn, mid)]
                raise NotFoundError(
                    f"model {name!r} has no alias {alias!r} (aliases: "
                    f"{', '.join(sorted(known)) or 'none'})"
                )
            return int(v)
        raise InvalidNameError(
            f"version must be an int, an alias name or None, not {type(version).__name__}"
        )

    def _row(self, conn: sa.Connection, mid: int, name: str, version: int) -> sa.Row[Any]:
        row = self.catalog.version_row(conn, mid, version)
        if row is None:
            have = self.catalog.version_range(conn, mid)
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
            description=row.description or "",
            aliases=aliases,
        )

    def _alias_map(self, conn: sa.Connection, mid: int) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for alias, version in self.catalog.aliases_of(conn, mid):
            out.setdefault(version, []).append(alias)
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
            rows = self.catalog.version_rows(conn, mid)
        return [self._version(r, name, amap.get(int(r.version), [])) for r in rows]

    def models(self, prefix: str | None = None, *, kind: str | None = None) -> list[str]:
        """Names of the models that have at least one version (optionally under ``prefix/``).

        ``kind``: only models of that kind: ``"model"`` (put by users) or ``"step"``
        (outputs of step workflows); None: every kind.
        """
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidNameError(f"prefix must be a str like 'project', not {prefix!r}")
        p = check_name(prefix.rstrip("/"), "prefix") if prefix else None
        k = None if kind is None else kind_arg(kind)
        with self.catalog.tx() as conn:
            return self.catalog.model_names(conn, p, k)

    def summary(self, *, kind: str | None = None) -> list[dict[str, Any]]:
        """One row per model: name, kind, number of versions, latest version and its time,
        total size, aliases. ``kind`` as for :meth:`models`."""
        k = None if kind is None else kind_arg(kind)
        with self.catalog.tx() as conn:
            rows = self.catalog.model_summary(conn, k)
            aliases: dict[int, dict[str, int]] = {}
            for mid, alias, version in self.catalog.all_aliases(conn):
                aliases.setdefault(mid, {})[alias] = version
        return [
            {
                "name": r.name,
                "kind": r.kind,
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
        env: EnvPolicy = "warn",
        key: Any = None,
    ) -> Any:
        """Load a version (``None``: the latest; an int; or an alias name).

        The blob is checked against the digest recorded in the catalog and every buffer
        against its checksum while reading; a mismatch raises :class:`IntegrityError`.
        ``trusted``, ``mmap``, ``env`` and ``key`` are as for :func:`safepoint.load`
        (``mmap`` maps a local store's blob, or a remote store's cached copy).
        """
        mv = self.info(name, version)
        return self.load_blob(
            mv.digest, mv.ref, trusted=trusted, mmap=mmap, env=env, key=key, size=mv.size
        )

    def load_blob(
        self,
        digest: str,
        what: str,
        *,
        trusted: Any = (),
        mmap: bool = False,
        env: str = "warn",
        key: Any = None,
        size: int | None = None,
    ) -> Any:
        path = self.blobs.local_path(digest)
        kw: dict[str, Any] = {"trusted": trusted, "mmap": mmap, "env": env, "key": key}
        if path is None and self.cache is not None:
            # remote blobs: read (and map) the local cached copy, downloaded once
            return load_cached(
                self.cache,
                self.blobs,
                digest,
                size,
                lambda p: self._load_path(digest, what, p, size=size, **kw),
            )
        return self._load_path(digest, what, path, size=size, **kw)

    def _load_path(
        self,
        digest: str,
        what: str,
        path: str | None,
        *,
        trusted: Any = (),
        mmap: bool = False,
        env: str = "warn",
        key: Any = None,
        size: int | None = None,
    ) -> Any:
        """Load blob ``digest`` from the local file ``path``, or (None) from the backend."""
        try:
            if path is not None:
                try:
                    sf = open_file(path)
                except NotFoundError:
                    raise IntegrityError(
                        f"the blob of {what} ({digest}) is missing from the store: it was "
                        "removed outside safepoint; restore it or delete the version"
                    ) from None
            else:
                try:
                    data = read_blob(self.blobs, digest, size)
                except NotFoundError:
                    raise IntegrityError(
                        f"the blob of {what} ({digest}) is missing from {self.url!r}"
                    ) from None
                sf = open_file(data)
            with sf:
                if sf.digest != digest:
                    raise IntegrityError(
                        f"the blob of {what} does not match its recorded digest "
                        f"({sf.digest} != {digest}): it was changed after the put"
                    )
                return sf.load(
                    trusted=trusted,
                    env=env,  # type: ignore[arg-type]  # a str from the checkpointer: checked by the load
                    key=key,
                    mmap=bool(mmap and path is not None),
                    # mapped or read, a version's buffers are checked before it is used
                    verify_mapped=True,
                )
        except (FormatError, SafepointError) as exc:
            if not isinstance(exc, FormatError):
                raise
            damage = self._damage(digest, path)
            if damage is None:
                # the blob verifies: the error is about this environment (a type that is
                # refused, a module that is not importable), not about the stored bytes
                raise
            raise IntegrityError(
                f"the blob of {what} ({digest}) is corrupt: {damage}. It was valid when "
                "stored: the storage changed it; restore it from a backup or delete the version"
            ) from None
        except OSError as exc:
            raise os_error(exc, path or self.url, "read the blob") from None

    def _damage(self, digest: str, path: str | None) -> str | None:
        """What is wrong with the stored bytes of blob ``digest`` (None: they verify)."""
        try:
            src: Any = path if path is not None else self.blobs.read(digest)
            problems = problems_against(src, digest)
        except (FormatError, IntegrityError) as exc:
            return str(exc)
        return "; ".join(problems) or None

    @contextlib.contextmanager
    def open_blob(
        self, name: str, version: SupportsIndex | str | None = None, *, cached: bool = True
    ) -> Iterator[Any]:
        """A path (local stores) or bytes of a version's blob, for ``sp.inspect``/``verify``.

        A remote store's blob is read through its cache (a path) unless ``cached=False``.
        """
        mv = self.info(name, version)
        path = self.blobs.local_path(mv.digest)
        if path is None and cached and self.cache is not None:
            with contextlib.suppress(NotFoundError):  # gone: the read below says so
                path = self.cache.ensure(self.blobs, mv.digest, mv.size)
        if path is not None:
            if not os.path.exists(path):
                raise IntegrityError(f"the blob of {mv.ref} ({mv.digest}) is missing")
            yield path
        else:
            yield self.blobs.read(mv.digest)

    def inspect(self, ref: str, **kwargs: Any) -> _api.Inspection:
        """:func:`safepoint.inspect` of ``NAME[@VERSION|@ALIAS]``."""
        name, sel = parse_ref(ref)
        with (
            self.open_blob(name, sel) as src,
            open_file(src, limits=kwargs.pop("limits", None)) as sf,
        ):
            return sf.inspect(**kwargs)

    def verify(self, ref: str, **kwargs: Any) -> _api.VerifyReport:
        """:func:`safepoint.verify` of ``NAME[@VERSION|@ALIAS]`` plus the digest check.

        The report is recorded in the catalog (see :meth:`last_verify`), so that the
        console and the CLI can show it without loading the model.
        """
        name, sel = parse_ref(ref)
        mv = self.info(name, sel)
        # verify reads the stored bytes themselves, not the cache's copy of them
        with self.open_blob(name, sel, cached=False) as src, open_file(src) as sf:
            report = sf.verify(**kwargs)
            if sf.digest != mv.digest:
                report.ok = False
                report.problems.append(
                    f"blob digest {sf.digest} != recorded {mv.digest}: it was replaced"
                )
        self._record_verify(mv, report)
        return report

    def _record_verify(self, mv: ModelVersion, report: _api.VerifyReport) -> None:
        at, ok, text = time.time(), bool(report.ok), dumps_json(report.to_dict())
        if self.catalog.read_only:
            return  # verify still reports; a read-only store cannot remember the result
        with self.catalog.tx(write=True) as conn:
            mid = self.catalog.model_id(conn, mv.name)
            self.catalog.record_verify(conn, mid, mv.version, at=at, ok=ok, report=text)

    def last_verify(self, name: str, version: int | str | None = None) -> dict[str, Any] | None:
        """The last :meth:`verify` report of a version (``at`` added), or None if never."""
        mv = self.info(name, version)
        with self.catalog.tx() as conn:
            mid = self.catalog.model_id(conn, mv.name)
            row = self.catalog.verify_row(conn, mid, mv.version)
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
        data_digest = digest_arg(data_digest, "data_digest")
        code_digest = digest_arg(code_digest, "code_digest")
        run_id = run_id_arg(run_id)
        for value, what in ((parent, "parent"), (tag, "tag")):
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(f"{what} must be a str, not {type(value).__name__}")
        with self.catalog.tx() as conn:
            rows = self.catalog.find_versions(
                conn,
                data_digest=data_digest,
                code_digest=code_digest,
                run_id=run_id,
                parent=parent,
            )
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
        version numbers. Each deletion is audited and journaled beside the blobs.
        """
        name = check_name(name)
        with self.change(name) as (conn, written, after):
            mid = self.catalog.model_id(conn, name, lock=True)
            if version is None:
                targets = self.catalog.version_numbers(conn, mid)
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
            for a, v in held.items():
                self._move_alias(conn, mid, name, a, None, check=v, out=written)
            for v in targets:
                self.catalog.delete_version(conn, mid, v)
                self.catalog.audit(
                    conn,
                    actor=self.actor,
                    host=self.host,
                    action="delete",
                    name=name,
                    version=v,
                    aliases=[a for a, hv in held.items() if hv == v],
                )
                after.append(self.journal(conn, mid, name, "delete", version=v, write=False))
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
        from .gc import collect

        return collect(self, keep_last, keep_best, keep_aliases, dry_run, grace)

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
        copy becomes the next version of ``new_name`` (default: the same name) there. If
        the target already has a version of that name with the same digest, nothing is
        copied: that version is returned (and ``alias``, if given, moved to it); compare
        its ``ref`` or :meth:`find_copy` to tell.

        Example:
            >>> team = sp.Store("s3://team/models", metadata="postgresql://db/m")  # doctest: +SKIP
            >>> local.copy("fraud/scorer", "staging", to=team, alias="candidate")  # doctest: +SKIP
        """
        target = Store(to) if isinstance(to, str) else to
        if not isinstance(target, Store):
            raise InvalidArgumentError(
                f"to= must be a Store or a store URL, not {type(to).__name__}"
            )
        mv = self.info(name, version)
        dest = check_name(new_name) if new_name is not None else mv.name
        alias = None if alias is None else check_alias(alias)
        existing = target.find_copy(mv, dest)
        if existing is not None:
            if alias is not None and alias not in existing.aliases:
                current = target.aliases(dest).get(alias)
                target.set_alias(dest, alias, existing.version, expected=current)
                existing = target.info(dest, existing.version)
            return existing
        fields = {
            "metrics": mv.metrics,
            "tags": mv.tags,
            "alias": alias,
            "parents": mv.parents,
            "data_digest": mv.data_digest,
            "code_digest": mv.code_digest,
            "description": mv.description,
        }
        target.require_writable()
        with self.blobs.open(mv.digest) as src:
            staged = target.staging.stage_stream(src)
        assert staged.inspection is not None
        if staged.digest != mv.digest:
            target.staging.release(*staged.lease_ids)
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
        if not self.catalog.read_only:
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

    def find_copy(self, mv: ModelVersion, name: str | None = None) -> ModelVersion | None:
        """The newest version of ``name`` (default ``mv.name``) in this store with the same
        digest as ``mv``: a copy that :meth:`copy` would not make again. None if none."""
        name = check_name(name if name is not None else mv.name)
        with self.catalog.tx() as conn:
            v = self.catalog.latest_with_digest(conn, name, mv.digest)
        return None if v is None else self.info(name, int(v))

    # -- recovery and checks ---------------------------------------------------------------
    def recover(self, *, force: bool = False, dry_run: bool = False) -> RecoverReport:
        """Rebuild a lost, emptied or damaged catalog from the version records and journal
        kept beside the blobs; returns what was restored and what could not be.

        A damaged SQLite file is moved aside (never deleted). ``force=True`` also replaces
        the contents of a catalog that belongs to another store, or drops and rebuilds
        damaged PostgreSQL tables. ``dry_run``: report, change nothing. See
        :mod:`safepoint.stores.recover`.

        Example:
            >>> report = store.recover()          # doctest: +SKIP
            >>> report.versions_restored, report.not_restored   # doctest: +SKIP
        """
        from .recover import recover

        return recover(self, force=bool(force), dry_run=bool(dry_run))

    def check(
        self, *, repair: bool = False, verify_blobs: bool = True, grace: float | None = None
    ) -> CheckReport:
        """Check the store (fsck): every blob against its digest, the catalog against the
        version records and journal; missing, orphaned and damaged items are reported.

        ``repair=True`` applies the safe fixes (see :mod:`safepoint.stores.check`).
        ``verify_blobs=False`` checks blobs exist with the recorded size, without reading
        them.
        """
        from .check import check

        grace = None if grace is None else seconds_arg(grace, "grace")
        return check(self, repair=bool(repair), verify_blobs=bool(verify_blobs), grace=grace)

    # -- audit log -------------------------------------------------------------------------
    def log(
        self, name: str | None = None, *, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The audit log, newest first: puts, alias moves, deletes, copies, gc runs."""
        limit = count_arg(limit, "limit", 1, 10**7)
        if action is not None and action not in AUDIT_ACTIONS:
            raise InvalidArgumentError(
                f"action must be one of {', '.join(AUDIT_ACTIONS)}, not {action!r}"
            )
        name = None if name is None else check_name(name)
        with self.catalog.tx() as conn:
            rows = self.catalog.audit_rows(conn, name, action, limit)
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
    cache: Any = None,
) -> Store:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)  # said once where it was opened
        return Store(
            url,
            metadata,
            storage_options=storage_options,
            grace=grace,
            lease_ttl=lease_ttl,
            cache=cache,
        )


def is_store_url(value: str) -> bool:
    """True for URLs that name blob storage (``s3://``, ``memory://``, ...)."""
    return bool(scheme_of(value))
