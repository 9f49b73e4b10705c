"""Backend selection and failures: unreachable servers, missing buckets, one-user catalogs."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from safepoint.errors import (
    BackendUnavailableError,
    NotFoundError,
    SafepointError,
    SafepointWarning,
    StorageIOError,
    StoreError,
)
from safepoint.stores import Store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgres(tmp_path: Path) -> None:
    url = f"postgresql://nobody:secret@127.0.0.1:{_closed_port()}/test"
    with pytest.raises(BackendUnavailableError, match="cannot reach the catalog") as exc:
        Store(tmp_path / "s", metadata=url)
    assert "secret" not in str(exc.value)  # passwords are masked in messages


def test_bad_metadata_urls(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        Store(tmp_path / "s", metadata="not a url")
    with pytest.raises(StoreError, match="no catalog backend"):
        Store(tmp_path / "s", metadata="oracle://x/y")


def test_unreachable_s3(tmp_path: Path) -> None:
    pytest.importorskip("s3fs")
    opts = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{_closed_port()}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        "skip_instance_cache": True,
    }
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        Store("s3://bucket/x", metadata=f"sqlite:///{tmp_path}/c.db", storage_options=opts)


@pytest.mark.slow
def test_missing_bucket_and_one_user_warning(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError, match="create it first"):
        Store(
            "s3://no-such-bucket-here/x",
            metadata=f"sqlite:///{tmp_path}/c.db",
            storage_options=s3_storage_options,
        )
    with pytest.warns(SafepointWarning, match="serves one user"):
        store = Store(
            f"s3://{s3_bucket}/m",
            metadata=f"sqlite:///{tmp_path}/c.db",
            storage_options=s3_storage_options,
        )
    store.put("a/b", 1)
    assert store.get("a/b") == 1


def test_default_remote_catalog_location(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SAFEPOINT_HOME", str(tmp_path / "home"))
    with pytest.warns(SafepointWarning, match="serves one user"):
        store = Store(f"s3://{s3_bucket}/m", storage_options=s3_storage_options)
    assert str(tmp_path / "home" / "catalogs") in store.catalog.url


def test_local_folder_not_creatable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageIOError, match="cannot create the store folder") as exc:
        Store(tmp_path / "file" / "store")
    assert isinstance(exc.value, OSError) and exc.value.filename


def test_default_url_from_env(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SAFEPOINT_STORE", str(tmp_path / "envstore"))
    store = Store()
    store.put("a/b", 1)
    assert (tmp_path / "envstore" / "catalog.db").exists()
    monkeypatch.delenv("SAFEPOINT_STORE")
    monkeypatch.chdir(tmp_path)
    assert Store().blobs.url == str(tmp_path / ".safepoint")


def test_store_errors_are_safepoint_errors(tmp_path: Path) -> None:
    with pytest.raises(SafepointError):
        Store("")


def test_mmap_get_on_local_store(tmp_path: Path) -> None:
    import numpy as np

    store = Store(tmp_path / "s")
    store.put("a/big", {"w": np.arange(1_000_000, dtype=np.float64)})
    got = store.get("a/big", mmap=True)
    assert not got["w"].flags.writeable  # mapped read-only from the blob
    assert float(got["w"][-1]) == 999_999.0


@pytest.mark.postgres
def test_team_setup_s3_blobs_postgres_catalog(
    s3_storage_options: dict[str, Any], s3_bucket: str, pg_url: str, tmp_path: Path
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SafepointWarning)  # a shared catalog: no warning
        alice = Store(f"s3://{s3_bucket}/team", metadata=pg_url, storage_options=s3_storage_options)
    bob = Store(f"s3://{s3_bucket}/team", metadata=pg_url, storage_options=s3_storage_options)
    local = Store(tmp_path / "laptop")
    local.put("fraud/scorer", {"w": [1, 2, 3]}, metrics={"auc": 0.9})
    mv = local.copy("fraud/scorer", to=alice, alias="candidate")
    assert bob.get("fraud/scorer", "candidate") == {"w": [1, 2, 3]}
    bob.set_alias("fraud/scorer", "production", mv.version)
    assert [e.action for e in alice.log("fraud/scorer")][:2] == ["alias", "alias"]
    assert alice.gc(grace=0).deleted_blobs == []


def test_store_and_checkpointer_pickle(tmp_path: Path) -> None:
    import pickle

    store = Store(tmp_path / "s")
    ckpt = store.checkpointer("job/state")
    ckpt.set("offset", 3)
    store.put("a/m", 1, alias="prod")
    again = pickle.loads(pickle.dumps(store))
    assert again.get("a/m", "prod") == 1
    assert pickle.loads(pickle.dumps(ckpt)).get("offset") == 3


def test_store_used_in_forked_children(tmp_path: Path) -> None:
    import multiprocessing as mp

    store = Store(tmp_path / "s")
    store.put("a/m", 0)  # the parent holds pooled connections now
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_child_put, args=(store, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store.put("a/m", 99)  # the parent's connections still work
    assert sorted(v.version for v in store.versions("a/m")) == [1, 2, 3, 4, 5]


def _child_put(store: Store, i: int) -> None:
    store.put("a/m", i)  # the store object inherited from the parent


def test_store_folder_removed_and_recreated(tmp_path: Path) -> None:
    import shutil

    Store(tmp_path / "s").put("a/m", 1)
    shutil.rmtree(tmp_path / "s")
    fresh = Store(tmp_path / "s")  # the process-wide catalog cache notices the new file
    assert fresh.models() == []
    fresh.put("a/m", 2)
    assert Store(tmp_path / "s").get("a/m") == 2
    assert [v.version for v in Store(tmp_path / "s").versions("a/m")] == [1]


def test_open_existing_only_on_s3(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SAFEPOINT_HOME", str(tmp_path / "home"))
    with pytest.raises(NotFoundError, match="no store at"):
        Store(f"s3://{s3_bucket}/typo", storage_options=s3_storage_options, create=False)
    with pytest.raises(NotFoundError, match="no store at"):
        Store(
            f"s3://{s3_bucket}/typo",
            metadata=f"sqlite:///{tmp_path}/c.db",
            storage_options=s3_storage_options,
            create=False,
        )
    assert not (tmp_path / "c.db").exists()
    with pytest.warns(SafepointWarning):
        made = Store(f"s3://{s3_bucket}/real", storage_options=s3_storage_options)
    made.put("a/b", 1)
    with pytest.warns(SafepointWarning):
        again = Store(f"s3://{s3_bucket}/real", storage_options=s3_storage_options, create=False)
    assert again.get("a/b") == 1
    assert not any("typo" in k for k in made.blobs.fs.find(s3_bucket))


def test_memory_store_open_existing_only() -> None:
    with pytest.raises(NotFoundError, match="no store at"):
        Store("memory://never-made-here", create=False)


def test_s3_defaults_surface_outages_fast_and_can_be_changed() -> None:
    from safepoint.stores.blobs import S3_DEFAULTS, s3_defaults

    opts = s3_defaults({"config_kwargs": {"read_timeout": 60}})
    assert opts["retries"] == S3_DEFAULTS["retries"] == 2
    assert opts["config_kwargs"]["connect_timeout"] == 3
    assert opts["config_kwargs"]["read_timeout"] == 60  # what the user set wins
    assert opts["config_kwargs"]["retries"] == {"max_attempts": 2, "mode": "standard"}
    assert s3_defaults({"retries": 7})["retries"] == 7
