"""The read cache of remote stores (stores/cache.py) against a real moto S3 server.

Concurrent fills run in real processes; a full disk is injected at the cache writer
(``os.pwrite`` of the fill raises ENOSPC), the way test_faults injects it at the blob
writer; corruption is real bytes changed in the cached file.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint.errors import InvalidArgumentError, SafepointWarning
from safepoint.stores import Store
from safepoint.stores.cache import BlobCache, parse_size, read_parallel


def _store(bucket: str, opts: dict[str, Any], tmp_path: Path, cache: Any) -> Store:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)  # the one-user catalog note
        return Store(
            f"s3://{bucket}/m",
            metadata=f"sqlite:///{tmp_path}/catalog.db",
            storage_options=opts,
            cache=cache,
        )


def _model(n: int = 300_000, seed: int = 0) -> dict[str, Any]:
    return {"w": np.random.default_rng(seed).random(n), "name": f"m{seed}"}


def test_second_get_reads_the_cache_and_mmap_maps_it(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes="1G")
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    mv = store.put("a/m", _model())
    first = store.get("a/m")
    assert cache.fills == 1
    entry = cache.path(mv.digest)
    assert os.path.getsize(entry) == mv.size
    second = store.get("a/m")
    assert cache.fills == 1  # read from the cache, no second download
    np.testing.assert_array_equal(first["w"], second["w"])
    mapped = store.get("a/m", mmap=True)
    assert cache.fills == 1
    # the array is a map of the cached file, not a copy in memory
    assert not mapped["w"].flags.owndata
    with open(f"/proc/{os.getpid()}/maps") as f:
        assert entry in f.read()
    np.testing.assert_array_equal(mapped["w"], first["w"])
    # inspect and open_blob (the scoring handle's path) read the same entry
    assert store.inspect("a/m").digest == mv.digest
    assert cache.fills == 1


def test_corrupted_entry_is_detected_and_refetched(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes="1G")
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    mv = store.put("a/m", _model())
    want = store.get("a/m")["w"]
    entry = cache.path(mv.digest)
    # flip bytes in the middle of the array data (same size: the size check passes,
    # the format's checksum must catch it)
    with open(entry, "r+b") as f:
        f.seek(mv.size // 2)
        chunk = f.read(64)
        f.seek(mv.size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    got = store.get("a/m")
    np.testing.assert_array_equal(got["w"], want)
    assert cache.fills == 2  # dropped and downloaded again
    # a truncated entry (a power loss) fails the size check and is fetched again
    with open(entry, "r+b") as f:
        f.truncate(mv.size - 100)
    np.testing.assert_array_equal(store.get("a/m", mmap=True)["w"], want)
    assert cache.fills == 3
    assert os.path.getsize(entry) == mv.size


def test_damaged_remote_blob_is_not_cached(
    s3_storage_options: dict[str, Any], s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes="1G")
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    mv = store.put("a/m", _model())
    key = f"m/blobs/{mv.digest[:2]}/{mv.digest}.sp"
    body = bytearray(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[mv.size // 2] ^= 0xFF
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    with pytest.raises(sp.IntegrityError, match="corrupt"):
        store.get("a/m")
    assert cache.info()["entries"] == 0  # an unverified download never becomes an entry


def test_lru_eviction_under_the_size_bound(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    nocache = _store(s3_bucket, s3_storage_options, tmp_path, False)
    mvs = [nocache.put(f"a/m{i}", _model(100_000, seed=i)) for i in range(4)]
    size = mvs[0].size
    assert all(abs(mv.size - size) < 1000 for mv in mvs)
    # room for two entries and a half
    cache = BlobCache(tmp_path / "cache", max_bytes=int(size * 2.5))
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    assert store.cache is cache
    store.get("a/m0")
    os.utime(cache.path(mvs[0].digest), (1_000_000, 1_000_000))  # long ago
    store.get("a/m1")
    os.utime(cache.path(mvs[1].digest), (2_000_000, 2_000_000))
    store.get("a/m0")  # a hit: m0 becomes the most recently used
    store.get("a/m2")  # over the bound: the least recently used (m1) goes
    cached = {mv.digest for mv in mvs if os.path.exists(cache.path(mv.digest))}
    assert cached == {mvs[0].digest, mvs[2].digest}
    assert cache.info()["bytes"] <= cache.max_bytes
    # an open reader of an evicted entry keeps reading (POSIX unlink semantics)
    mapped = store.get("a/m2", mmap=True)
    os.utime(cache.path(mvs[2].digest), (1, 1))
    store.get("a/m3")
    assert not os.path.exists(cache.path(mvs[2].digest))
    np.testing.assert_array_equal(mapped["w"], _model(100_000, seed=2)["w"])
    # a blob bigger than the whole bound is read from the network, not cached
    tiny = BlobCache(tmp_path / "tiny", max_bytes=size // 2)
    small = _store(s3_bucket, s3_storage_options, tmp_path, tiny)
    assert small.get("a/m1")["name"] == "m1"
    assert tiny.info()["entries"] == 0


def test_disk_full_during_fill_reads_from_the_network(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes="1G")
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    store.put("a/m", _model(1_500_000))  # 12 MB: two ranged requests, two writes
    want = store.get("a/m", mmap=False)["w"]
    cache.clear()
    real_pwrite = os.pwrite
    calls = {"n": 0}

    def full_pwrite(fd: int, data: Any, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] >= 2:  # the disk fills up in the middle of the fill
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_pwrite)
    got = store.get("a/m", mmap=True)  # no StorageFullError: served from the network
    np.testing.assert_array_equal(got["w"], want)
    assert cache.skipped == 1 and "no space left" in (cache.last_skip or "")
    assert cache.info()["entries"] == 0
    assert cache.info()["temporary_files"] == 0  # the partial file is removed
    monkeypatch.undo()
    store.get("a/m")
    assert cache.info()["entries"] == 1


def test_unwritable_cache_folder_reads_from_the_network(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = BlobCache(tmp_path / "file" / "cache")
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    store.put("a/m", {"x": 1})
    assert store.get("a/m") == {"x": 1}
    assert cache.skipped == 1


def _child_get(
    bucket: str, opts: dict[str, Any], tmp: str, folder: str, barrier: Any, q: Any
) -> None:
    from safepoint.stores.blobs import FsspecBlobs

    real = FsspecBlobs.read_range

    def slow(self: Any, digest: str, start: int, end: int) -> bytes:
        import time

        time.sleep(0.3)  # a slow network: the fills of all processes overlap
        return real(self, digest, start, end)

    FsspecBlobs.read_range = slow  # type: ignore[method-assign]
    cache = BlobCache(folder, max_bytes="1G")
    store = _store(bucket, opts, Path(tmp), cache)
    barrier.wait(60)
    value = store.get("a/m")
    q.put((os.getpid(), cache.fills, float(value["w"].sum())))


@pytest.mark.slow  # four fresh processes: ~30 s on a loaded machine
def test_concurrent_fill_from_several_processes_downloads_once(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    store = _store(s3_bucket, s3_storage_options, tmp_path, False)
    model = _model(1_500_000)  # 12 MB: two ranged requests of 8 MB
    mv = store.put("a/m", model)
    folder = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")
    n = 4
    barrier, q = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=_child_get,
            args=(s3_bucket, s3_storage_options, str(tmp_path), folder, barrier, q),
        )
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(fills for _, fills, _ in results) == 1  # one download for the machine
    assert {s for _, _, s in results} == {float(model["w"].sum())}
    assert BlobCache(folder).info()["entries"] == 1
    assert os.path.getsize(BlobCache(folder).path(mv.digest)) == mv.size


def test_store_pickles_with_its_cache_and_defaults(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    import pickle

    cache = BlobCache(tmp_path / "cache", max_bytes="2G")
    store = _store(s3_bucket, s3_storage_options, tmp_path, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)
        again = pickle.loads(pickle.dumps(store))
    assert again.cache == cache
    monkeypatch.setenv("SAFEPOINT_CACHE_DIR", str(tmp_path / "envcache"))
    monkeypatch.setenv("SAFEPOINT_CACHE_SIZE", "3G")
    default = _store(s3_bucket, s3_storage_options, tmp_path, None)
    assert default.cache == BlobCache(tmp_path / "envcache", 3 * 1024**3)
    assert _store(s3_bucket, s3_storage_options, tmp_path, False).cache is None
    monkeypatch.setenv("SAFEPOINT_CACHE_SIZE", "0")
    assert _store(s3_bucket, s3_storage_options, tmp_path, None).cache is None
    # local and in-memory stores have no cache: their blobs are here already
    assert Store(tmp_path / "local").cache is None
    assert Store("memory://no-cache").cache is None
    with pytest.raises(InvalidArgumentError, match="cache must be"):
        _store(s3_bucket, s3_storage_options, tmp_path, 3.5)
    with pytest.raises(InvalidArgumentError, match="cache must be"):
        Store(tmp_path / "refused", cache=123)  # wrong for a local store too
    assert not (tmp_path / "refused").exists()  # refused before anything is created


def test_parse_size_and_read_parallel() -> None:
    assert parse_size("1GiB") == 1024**3 and parse_size("2.5K") == 2560
    with pytest.raises(InvalidArgumentError, match="not a size"):
        parse_size("lots")
    with pytest.raises(InvalidArgumentError, match="negative"):
        parse_size(-1)
    data = os.urandom(100_003)
    out = bytearray(len(data))

    def put(offset: int, piece: bytes) -> None:
        out[offset : offset + len(piece)] = piece

    read_parallel(lambda s, e: data[s:e], len(data), put, chunk=7_000)
    assert bytes(out) == data
    with pytest.raises(sp.IntegrityError, match="shorter than its recorded size"):
        read_parallel(lambda s, e: data[s : e - 1], len(data), put, chunk=7_000)


def _cli(*args: str, env: dict[str, str]) -> Any:
    from click.testing import CliRunner

    from safepoint.cli.main import _register_commands, cli

    _register_commands()
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_cache_info_and_clear(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    store = _store(s3_bucket, s3_storage_options, tmp_path, BlobCache(folder))
    mv = store.put("a/m", _model(10_000))
    store.get("a/m")
    env = {"SAFEPOINT_CACHE_DIR": str(folder), "SAFEPOINT_CACHE_SIZE": "5G"}
    r = _cli("cache", "info", "--json", env=env)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["folder"] == str(folder) and info["entries"] == 1
    assert info["bytes"] == mv.size and info["limit"] == 5 * 1024**3
    r = _cli("cache", "info", env=env)
    assert r.exit_code == 0 and str(folder) in r.stdout and "1 entry" in r.stdout
    r = _cli("cache", "clear", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["removed"] == 1
    assert BlobCache(folder).info()["entries"] == 0
    r = _cli("cache", "--help", env=env)
    assert r.exit_code == 0 and "info" in r.stdout and "clear" in r.stdout
    r = _cli("cache", "info", "--dir", str(tmp_path / "other"), "--json", env=env)
    assert r.exit_code == 0 and json.loads(r.stdout)["entries"] == 0
    # a real process: a bad setting is one error on stderr and exit code 1
    bad = subprocess.run(
        [sys.executable, "-m", "safepoint.cli", "cache", "info", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "SAFEPOINT_CACHE_SIZE": "lots"},
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert json.loads(bad.stderr)["type"] == "InvalidArgumentError"
    # clearing a folder this user cannot change fails with exit code 1
    if os.geteuid() != 0:
        (folder / "blobs" / "ab").mkdir(parents=True, exist_ok=True)
        (folder / "blobs" / "ab" / ("ab" * 16 + ".sp")).write_bytes(b"x")
        os.chmod(folder / "blobs" / "ab", 0o500)
        try:
            r = _cli("cache", "clear", env=env)
            assert r.exit_code == 1 and "safepoint: error:" in r.stderr
        finally:
            os.chmod(folder / "blobs" / "ab", 0o700)


def test_scoring_handle_downloads_the_model_once(
    s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """A scoring worker (Dask, `serve`) loads its model through StoreModelHandle: the
    inspect, the framework probe and the load all read the one cached file."""
    from sklearn.linear_model import LogisticRegression

    from safepoint.stores.blobs import FsspecBlobs
    from safepoint.workflows.scoring.model import open_model

    X = np.random.default_rng(0).random((50, 3))
    clf = LogisticRegression().fit(X, X[:, 0] > 0.5)
    folder = tmp_path / "cache"
    store = _store(s3_bucket, s3_storage_options, tmp_path, BlobCache(folder))
    store.put("fraud/clf", clf, alias="production")
    full_reads = {"n": 0}
    real_read = FsspecBlobs.read

    def counting_read(self: FsspecBlobs, digest: str) -> bytes:
        full_reads["n"] += 1
        return real_read(self, digest)

    monkeypatch.setattr(FsspecBlobs, "read", counting_read)
    # a worker process opens the store from its pickled arguments, as Dask does
    import pickle

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)
        worker_store = pickle.loads(pickle.dumps(store))
    handle = open_model("fraud/clf@production", store=worker_store)
    assert worker_store.cache.fills == 1 and full_reads["n"] == 0
    second = open_model("fraud/clf@production", store=worker_store)  # another worker
    assert worker_store.cache.fills == 1 and full_reads["n"] == 0
    np.testing.assert_array_equal(handle.current()[0].predict(X), second.current()[0].predict(X))


@pytest.mark.slow  # starts its own moto server
def test_bench_cache_runs(tmp_path: Path) -> None:
    """bench/bench_cache.py at a tiny size: it runs and reports; no timing asserted."""
    pytest.importorskip("s3fs")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bench.json"
    args = ["--mb", "2", "--repeat", "1", "--dir", str(tmp_path), "--json", str(out)]
    r = subprocess.run(
        [sys.executable, "-m", "bench.bench_cache", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["fills"] == 2 and set(data["median_s"]) == {
        "first",
        "fill",
        "second",
        "mmap",
        "s3fs_get",
    }
    assert "second get speed-up" in r.stdout
