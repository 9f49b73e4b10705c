"""Catalog schema: migrations from the first released schema, version checks, names."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import safepoint as sp
from safepoint.errors import InvalidNameError, StoreError
from safepoint.stores import SCHEMA_VERSION, Store
from safepoint.stores.blobs import LocalBlobs
from safepoint.stores.catalog import MIGRATIONS, Catalog
from safepoint.stores.names import check_name, parse_ref


def _write_v1_catalog(url: str, blob_root: Path) -> str:
    """A catalog as the first released schema wrote it, with one model, version and alias."""
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    data = sp.dumps({"w": np.arange(5)})
    digest = sp.inspect(data).digest
    LocalBlobs(str(blob_root)).write_bytes(data, digest)
    now = time.time()
    with eng.begin() as c:
        MIGRATIONS[0](c)
        c.exec_driver_sql(f"INSERT INTO sp_schema (id, version, updated_at) VALUES (1, 1, {now})")
        c.exec_driver_sql(
            "INSERT INTO models (id, name, created_at, created_by) "
            f"VALUES (1, 'old/model', {now}, 'alice')"
        )
        for v in (1, 2):
            c.execute(
                sa.text(
                    "INSERT INTO versions (model_id, version, digest, size, created_at, "
                    "created_by, host, root_type, environment, metadata, metrics, tags, "
                    "parents) VALUES (1, :v, :d, :s, :t, 'alice', 'h', 'builtins.dict', '{}', "
                    ":m, '{}', '{}', '[]')"
                ),
                {"v": v, "d": digest, "s": len(data), "t": now, "m": json.dumps({"v": v})},
            )
        c.exec_driver_sql(
            "INSERT INTO aliases (model_id, alias, version, updated_at, updated_by) "
            f"VALUES (1, 'prod', 2, {now}, 'alice')"
        )
        c.exec_driver_sql(
            "INSERT INTO models (id, name, created_at, created_by) "
            f"VALUES (2, 'old/steps/prep', {now}, 'alice')"
        )
        c.execute(
            sa.text(
                "INSERT INTO versions (model_id, version, digest, size, created_at, "
                "created_by, host, root_type, environment, metadata, metrics, tags, "
                "parents) VALUES (2, 1, :d, :s, :t, 'alice', 'h', 'builtins.dict', '{}', "
                "'{}', '{}', :tags, '[]')"
            ),
            {"d": digest, "s": len(data), "t": now, "tags": json.dumps({"safepoint.step": "{}"})},
        )
        c.exec_driver_sql(
            f"INSERT INTO leases (id, digest, created_at) VALUES ('l1', 'abc', {now - 1e6})"
        )
    eng.dispose()
    return digest


def _check_migrated(store: Store) -> None:
    assert store.catalog.schema_version() == SCHEMA_VERSION
    # a store from before store ids gets one, and a record per version, an alias journal
    assert store.store_id and store.problem is None
    keys = sorted(
        r.key.split("@")[0] + r.key.split("@")[1][:1] for r in store.blobs.list_objects("records")
    )
    assert keys == ["records/old/model/1", "records/old/model/2", "records/old/steps/prep/1"]
    assert store.check(verify_blobs=False).ok
    mv = store.info("old/model", "prod")
    assert (mv.version, mv.metadata, mv.run_id) == (2, {"v": 2}, None)
    assert store.get("old/model", 1)["w"].tolist() == [0, 1, 2, 3, 4]
    store.delete("old/model", 2, force=True)
    # the version counter was back-filled from the old rows: 2 is not reused
    assert store.put("old/model", {"new": True}).version == 3
    run = store.runs.start("steps", "old/pipeline")  # table added by a migration
    run.finish()
    assert store.gc(grace=0).deleted_blobs == []  # the old lease is expired; blob in use
    assert store.models(kind="step") == ["old/steps/prep"]  # kinds back-filled from tags
    # and it can now be recovered from its blobs like any other store
    with store.catalog.tx(write=True) as c:
        for table in ("aliases", "versions", "models", "audit", "sp_store"):
            c.exec_driver_sql(f"DELETE FROM {table}")
    store.problem = "lost"  # as a new opener would find it
    report = store.recover()
    assert sorted(report.versions_restored) == ["old/model@1", "old/model@3", "old/steps/prep@1"]


def test_migrate_sqlite_from_first_schema(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    _write_v1_catalog(f"sqlite:///{root}/catalog.db", root)
    _check_migrated(Store(root))
    # opening again is a no-op
    assert Store(root).catalog.migrate() == SCHEMA_VERSION


@pytest.mark.postgres
def test_migrate_postgres_from_first_schema(tmp_path: Path, pg_url: str) -> None:
    _write_v1_catalog(pg_url, tmp_path / "blobs")
    _check_migrated(Store(tmp_path / "blobs", metadata=pg_url))


def test_newer_schema_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    with store.catalog.tx(write=True) as c:
        c.exec_driver_sql("UPDATE sp_schema SET version = 99")
    with pytest.raises(StoreError, match="upgrade safepoint"):
        Store(tmp_path / "s")


def test_every_migration_step_applies_in_order() -> None:
    cat = Catalog("sqlite://")
    assert cat.schema_version() == SCHEMA_VERSION == len(MIGRATIONS) >= 3


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("a", ("a", None)),
        ("team/proj/model-v2.1_x", ("team/proj/model-v2.1_x", None)),
        ("a/b@12", ("a/b", 12)),
        ("a/b@prod", ("a/b", "prod")),
        ("a/b@latest", ("a/b", "latest")),
    ],
)
def test_parse_ref(ref: str, expected: tuple[str, object]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "a/b@",
        "a/b@-x",
        "@prod",
        "a/../b@1",
        "a@b@c",
        "a/b\n",
        "a/b@prod\n",
        "a/b@1\n",
        "a/b@\u00b2",
        "a/b@0",
        f"a/b@{2**31}",
        f"a/b@{2**63}",
    ],
)
def test_parse_ref_bad(ref: str) -> None:
    with pytest.raises(InvalidNameError):
        parse_ref(ref)


def test_name_messages_say_what_to_do() -> None:
    with pytest.raises(InvalidNameError, match=r"'\.\.'.*project/model"):
        check_name("a/../b")
    with pytest.raises(InvalidNameError, match="backslash"):
        check_name("a\\b")


def test_relaxed_transactions_restore_full_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    cat = store.catalog
    for _ in range(3):  # the pool hands the same connection back
        with cat.tx(write=True, durable=False) as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        with cat.tx(write=True) as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_verify_reports_are_recorded_for_the_console(tmp_path):
    import numpy as np

    import safepoint as sp

    store = sp.Store(tmp_path / "s")
    store.put("a/b", {"w": np.arange(3)})
    assert store.last_verify("a/b") is None
    report = store.verify("a/b@1")
    last = store.last_verify("a/b", 1)
    assert last is not None and last["ok"] is report.ok is True
    assert last["checked_buffers"] == report.checked_buffers and last["at"]
