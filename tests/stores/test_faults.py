"""Faults a store must survive and name truthfully: full disks, read-only folders, lost,
emptied or garbled catalogs, PostgreSQL sessions terminated mid-transaction, an S3
server killed mid-put, a locked SQLite file.

Full and read-only disks are real: a small tmpfs this test mounts (it needs root; skipped
otherwise), remounted read-only where needed. An ENOSPC injected at the blob writer
covers machines where nothing can be mounted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from safepoint.errors import (
    BackendUnavailableError,
    CatalogBusyError,
    CatalogDamagedError,
    ReadOnlyStoreError,
    RecoveryNeededError,
    SafepointError,
    SafepointWarning,
    StorageFullError,
)
from safepoint.stores import Store
from safepoint.stores.blobs import LocalBlobs
from safepoint.stores.catalog import Catalog

PG_URL = os.environ.get("SAFEPOINT_TEST_PG", "postgresql://127.0.0.1:5432/test")


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


# -- a small file system of our own ------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def _quiet_store(*args: Any, **kwargs: Any) -> Store:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)
        return Store(*args, **kwargs)


# -- disk full ----------------------------------------------------------------------------
def test_disk_full_is_a_clear_oserror_and_loses_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "3m") as root:
        store = Store(root / "store")
        (root / "ballast").write_bytes(bytes(400_000))  # what the user frees later
        kept = store.put("p/m", {"w": np.arange(1000)})
        ck = store.checkpointer("job/x")
        ck.set("offset", 1)
        rng = np.random.default_rng(0)
        failures: list[BaseException] = []
        for i in range(40):  # random data does not compress: the disk fills up
            try:
                store.put("p/m", {"i": i, "w": rng.random(60_000)})
            except SafepointError as exc:
                failures.append(exc)
            try:
                ck.set("big", rng.random(50_000))
                ck.set("offset", i)
            except SafepointError as exc:
                failures.append(exc)
        assert failures, "the disk never filled up"
        for exc in failures:
            assert isinstance(exc, StorageFullError) and isinstance(exc, OSError), repr(exc)
            assert exc.errno == errno.ENOSPC and "no space left" in str(exc)
            assert str(root) in str(exc)  # names the path
        # nothing half-written: every visible version loads, and the first is intact
        for mv in store.versions("p/m"):
            store.get("p/m", mv.version)
        assert store.get("p/m", 1)["w"].tolist() == list(range(1000)) and kept.version == 1
        assert isinstance(ck.get("offset"), int)
        # once space is freed, the store works again
        (root / "ballast").unlink()
        store.delete("p/m")
        store.gc(grace=0)
        assert store.put("p/m", {"ok": True}).version > 1
        assert store.check().ok


class _FullFile:
    """A file object whose writes fail as on a full disk once ``budget`` bytes are in."""

    def __init__(self, f: Any, budget: int) -> None:
        self.f, self.budget = f, budget

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= n
        return int(self.f.write(data))

    def __getattr__(self, name: str) -> Any:
        if name == "fileno":
            raise AttributeError(name)  # plain writes only
        return getattr(self.f, name)


def test_disk_full_injected_at_the_blob_writer(tmp_path: Path, monkeypatch: Any) -> None:
    store = Store(tmp_path / "s")
    store.put("p/m", 1)
    begin = LocalBlobs.begin

    def full_begin(self: LocalBlobs, tmp_id: str | None = None) -> Any:
        tmp = begin(self, tmp_id)
        tmp.file = _FullFile(tmp.file, 1000)  # type: ignore[assignment]
        return tmp

    monkeypatch.setattr(LocalBlobs, "begin", full_begin)
    with pytest.raises(StorageFullError, match="no space left") as exc:
        store.put("p/m", {"w": np.arange(10_000)})
    assert isinstance(exc.value, OSError) and exc.value.filename
    with pytest.raises(StorageFullError):
        store.checkpointer("c/x").set("big", np.arange(100_000))
    monkeypatch.undo()
    assert [v.version for v in store.versions("p/m")] == [1]
    assert list(store.blobs.list_temps()) == []  # the partial upload was removed
    assert store.put("p/m", 2).version == 2  # a put that failed before its commit took no number
    assert store.check().ok


# -- read-only folder -----------------------------------------------------------------------
def test_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "20m") as root:
        store = Store(root / "store")
        store.put("p/m", {"w": np.arange(10)}, alias="prod")
        store.checkpointer("job/x").set("k", 5)
        store.close()
        _remount(root, "ro")
        ro = Store(root / "store", create=False)
        assert ro.catalog.read_only
        assert ro.get("p/m", "prod")["w"].tolist() == list(range(10))
        assert [r["name"] for r in ro.summary()] == ["p/m"]
        assert ro.info("p/m@prod").version == 1
        assert ro.inspect("p/m@1").root_type == "builtins.dict"
        assert ro.verify("p/m@1").ok
        assert ro.checkpointer("job/x").get("k") == 5
        with pytest.raises(ReadOnlyStoreError, match="read-only") as exc:
            ro.put("p/m", {"w": 1})
        assert isinstance(exc.value, PermissionError)
        with pytest.raises(ReadOnlyStoreError):
            ro.set_alias("p/m", "stage", 1)
        with pytest.raises(ReadOnlyStoreError):
            ro.gc(grace=0)
        _remount(root, "rw")
        assert [v.version for v in Store(root / "store").versions("p/m")] == [1]


@pytest.mark.slow
def test_cli_reads_a_read_only_store(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "20m") as root:
        store = Store(root / "store")
        store.put("p/m", {"w": np.arange(3)})
        store.close()  # a file open for writing keeps the mount busy
        _remount(root, "ro")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        base = [sys.executable, "-m", "safepoint.cli", "--store", str(root / "store")]
        for args in (["ls"], ["show", "p/m@1"], ["verify", "p/m@1"]):
            res = subprocess.run(
                base[:3] + args + base[3:], capture_output=True, text=True, env=env
            )
            assert res.returncode == 0, (args, res.stderr)
            assert "database server" not in res.stderr
        res = subprocess.run(
            [*base[:3], "alias", "p/m", "prod", "1", *base[3:]],
            capture_output=True,
            text=True,
            env=env,
        )
        assert res.returncode == 1 and "read-only" in res.stderr and "Traceback" not in res.stderr


# -- a lost, emptied or garbled catalog ------------------------------------------------------
def _fill(store: Store) -> dict[str, Any]:
    for i in range(3):
        store.put("p/m", {"i": i}, metrics={"auc": i / 10})
    store.set_alias("p/m", "prod", 2)
    store.edit("p/m@2", description="the good one")
    store.delete("p/m", 1)
    return {
        "versions": [(v.version, v.digest, v.description) for v in store.versions("p/m")],
        "aliases": store.aliases("p/m"),
    }


def test_garbled_catalog_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    before = _fill(store)
    db = tmp_path / "s" / "catalog.db"
    store.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(db) + suffix)
    db.write_bytes(os.urandom(64 * 1024))
    with pytest.warns(SafepointWarning, match="damaged"):
        broken = Store(tmp_path / "s")
    with pytest.raises(CatalogDamagedError, match="recover"):
        broken.versions("p/m")
    with pytest.raises(CatalogDamagedError, match="recover"):
        broken.put("p/m", 1)
    report = broken.recover()
    assert report.moved_aside and os.path.exists(report.moved_aside)  # kept, not deleted
    fixed = Store(tmp_path / "s")
    assert [(v.version, v.digest, v.description) for v in fixed.versions("p/m")] == before[
        "versions"
    ]
    assert fixed.aliases("p/m") == before["aliases"]


def test_emptied_catalog_then_recover_and_gc_keeps_everything(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    before = _fill(store)
    store.close()
    (tmp_path / "s" / "catalog.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(tmp_path / "s" / "catalog.db") + suffix)
    blobs = {b.key for b in LocalBlobs(str(tmp_path / "s")).list_blobs()}
    empty = _quiet_store(tmp_path / "s")
    with pytest.raises(RecoveryNeededError, match="recover"):
        empty.gc(grace=0)  # the routine gc that once deleted every blob
    assert {b.key for b in empty.blobs.list_blobs()} == blobs
    empty.recover()
    assert [(v.version, v.digest, v.description) for v in empty.versions("p/m")] == before[
        "versions"
    ]


def test_catalog_deleted_under_an_open_store(tmp_path: Path) -> None:
    a = Store(tmp_path / "s")
    a.put("p/m", {"i": 0})
    os.unlink(tmp_path / "s" / "catalog.db")
    # the process holding the store must not commit into a file no one else sees
    with pytest.raises(RecoveryNeededError, match="recover"):
        a.put("p/m", {"i": 1})
    b = _quiet_store(tmp_path / "s")
    assert b.recover().versions_restored == ["p/m@1"]
    assert a.put("p/m", {"i": 2}).version == 2  # the first process picks the new file up
    assert [v.version for v in Store(tmp_path / "s").versions("p/m")] == [1, 2]


def test_cli_check_and_recover(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from safepoint.cli.main import _register_commands, cli

    _register_commands()
    store = Store(tmp_path / "s")
    _fill(store)
    os.unlink(tmp_path / "s" / "catalog.db")
    run = CliRunner().invoke
    url = ["--store", str(tmp_path / "s")]
    res = run(cli, ["put", str(tmp_path / "x.sp"), "p/m", *url])
    assert res.exit_code != 0
    res = run(cli, ["check", *url])
    assert res.exit_code == 1 and "recover" in res.output
    res = run(cli, ["recover", "--dry-run", "--json", *url])
    assert res.exit_code == 0, res.output
    res = run(cli, ["recover", *url])
    assert res.exit_code == 0 and "2 version(s) of 1 model(s) restored" in res.output
    assert "not restored: checkpointer values" in res.output
    res = run(cli, ["check", "--json", *url])
    assert res.exit_code == 0, res.output


# -- SQLite locked ----------------------------------------------------------------------------
def test_locked_sqlite_is_busy_not_unreachable(tmp_path: Path) -> None:
    Store(tmp_path / "s")
    url = f"sqlite:///{tmp_path}/s/catalog.db"
    holder = Catalog(url)
    fast = Catalog(url, connect_args={"timeout": 0.2})
    with (
        holder.tx(write=True),
        pytest.raises(CatalogBusyError, match="locked") as exc,
        fast.tx(write=True),
    ):
        pass
    assert isinstance(exc.value, TimeoutError) and "database server" not in str(exc.value)


# -- PostgreSQL sessions terminated mid-transaction -----------------------------------------
@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_sessions_terminated_mid_transaction(tmp_path: Path, pg_url: str) -> None:
    app = "sp-fault-" + uuid.uuid4().hex[:8]
    url = f"{pg_url}&application_name={app}"
    store = Store(tmp_path / "s", metadata=url)
    killer = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    stop = threading.Event()
    kills = [0]

    def terminate() -> None:
        while not stop.is_set():
            with killer.begin() as c:
                n = c.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :a"
                    ),
                    {"a": app},
                ).scalar()
            kills[0] += int(n or 0)
            time.sleep(0.03)

    t = threading.Thread(target=terminate)
    t.start()
    committed, failed = [], []
    try:
        for i in range(150):
            try:
                committed.append(store.put("p/m", {"i": i}).version)
                if i % 5 == 0:
                    current = store.aliases("p/m").get("prod")
                    store.set_alias("p/m", "prod", committed[-1], expected=current)
            except SafepointError as exc:  # a raw psycopg/SQLAlchemy error fails the test
                failed.append(exc)
    finally:
        stop.set()
        t.join()
        killer.dispose()
    assert kills[0] > 0 and failed, "no transaction was interrupted"
    unclear = [e for e in failed if not isinstance(e, BackendUnavailableError)]
    assert not unclear, unclear[:3]
    fresh = Store(tmp_path / "s", metadata=pg_url)
    have = {v.version for v in fresh.versions("p/m")}
    assert set(committed) <= have  # every put that returned is there
    for v in have:
        assert fresh.get("p/m", v)["i"] >= 0
    assert fresh.check().ok


# -- S3 server killed mid-put ------------------------------------------------------------------
@pytest.mark.slow
def test_s3_server_killed_mid_put(tmp_path: Path) -> None:
    pytest.importorskip("s3fs")
    from safepoint.errors import MissingDependencyError
    from safepoint.testing.s3 import start_moto_server

    try:
        proc, endpoint = start_moto_server()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    try:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket="killed")
        store = _quiet_store(
            "s3://killed/m",
            metadata=f"sqlite:///{tmp_path}/c.db",
            storage_options=s3_options(endpoint),
        )
        store.put("p/m", {"w": np.arange(10)})
        result: list[BaseException | int] = []

        def put() -> None:
            try:
                result.append(store.put("p/m", {"w": np.random.rand(4_000_000)}).version)
            except BaseException as exc:
                result.append(exc)

        t = threading.Thread(target=put)
        t.start()
        time.sleep(0.3)  # the upload is under way
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t.join(120)
        assert not t.is_alive(), "the put hung after the server died"
        (outcome,) = result
        if isinstance(outcome, int):
            pytest.skip("the put finished before the server was killed")
        assert isinstance(outcome, BackendUnavailableError), repr(outcome)
        assert "unreachable" in str(outcome)
        # the catalog committed nothing: the version that failed is not visible
        assert [v.version for v in store.versions("p/m")] == [1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
