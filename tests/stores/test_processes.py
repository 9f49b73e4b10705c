"""Real processes against one store: concurrent puts, kill -9 at random instants, gc racing puts.

The workers are forked processes (so that they start in milliseconds with the imports
done) that build their own Store after the fork; SIGKILL is a real SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safepoint.errors import AliasConflictError, NotFoundError, SafepointWarning
from safepoint.stores import Store
from safepoint.testing.recovery import compare, snapshot
from safepoint.testing.store_conformance import lose_catalog

FULL = os.environ.get("SAFEPOINT_FULL") == "1"
CTX = mp.get_context("fork")


# -- 8 processes putting the same name ---------------------------------------------------
def _putter(url: str, metadata: str | None, go: Any, n: int, out: Any) -> None:
    store = Store(url, metadata=metadata)
    go.wait()
    got = []
    for i in range(n):
        mv = store.put("team/model", {"pid": os.getpid(), "i": i, "w": np.full(100, i)})
        got.append((mv.version, os.getpid(), i))
    out.put(got)


def _concurrent_puts(url: str, metadata: str | None, n_procs: int = 8, n: int = 5) -> None:
    go, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_putter, args=(url, metadata, go, n, out)) for _ in range(n_procs)]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    versions = sorted(v for r in results for v, _, _ in r)
    # distinct and consecutive: none lost, none duplicated
    assert versions == list(range(1, n_procs * n + 1))
    store = Store(url, metadata=metadata)
    assert [v.version for v in store.versions("team/model")] == versions
    for r in results:
        for v, pid, i in r:
            got = store.get("team/model", v)
            assert (got["pid"], got["i"]) == (pid, i)
    assert [e.action for e in store.log("team/model", limit=1000)].count("put") == n_procs * n


@pytest.mark.slow
def test_concurrent_puts_sqlite(tmp_path: Path) -> None:
    _concurrent_puts(str(tmp_path / "store"), None)


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_puts_postgres(tmp_path: Path, pg_url: str) -> None:
    _concurrent_puts(str(tmp_path / "store"), pg_url)


def _alias_mover(url: str, go: Any, n: int, out: Any) -> None:
    from safepoint.errors import AliasConflictError

    store = Store(url)
    go.wait()
    wins = 0
    for _ in range(n):
        cur = store.aliases("team/model").get("prod")
        try:
            store.set_alias("team/model", "prod", 1 + (cur or 0) % 3, expected=cur)
            wins += 1
        except AliasConflictError:
            pass
    out.put(wins)


@pytest.mark.slow
def test_alias_cas_under_contention(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    store = Store(url)
    for i in range(3):
        store.put("team/model", i)
    go, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_alias_mover, args=(url, go, 10, out)) for _ in range(4)]
    for p in procs:
        p.start()
    go.set()
    wins = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    moves = [e for e in store.log("team/model", action="alias", limit=1000)]
    # every successful CAS is one audited move, and each move starts where the last ended
    assert len(moves) == wins
    chain = sorted(moves, key=lambda e: e.id)
    for before, after in itertools.pairwise(chain):
        assert after.detail["previous"] == before.version


# -- kill -9 at random instants ------------------------------------------------------------
def _crash_writer(url: str, seed: int, ready: Any, w: Any) -> None:
    store = Store(url)
    ckpt = store.checkpointer("crash/state")
    rng = np.random.default_rng(seed)
    ready.set()
    i = 0
    while True:
        size = int(rng.integers(1, 400_000))
        mv = store.put("crash/model", {"seed": seed, "i": i, "w": rng.random(size)})
        os.write(w, f"V {mv.version} {mv.digest}\n".encode())
        if i % 3 == 2:  # alias moves and deletes are journaled: recovery must replay them
            current = store.aliases("crash/model").get("prod")
            store.set_alias("crash/model", "prod", mv.version, expected=current)
        elif i % 4 == 3:
            os.write(w, f"d {mv.version - 1} -\n".encode())  # about to delete it
            with contextlib.suppress(AliasConflictError, NotFoundError):
                store.delete("crash/model", mv.version - 1)
                os.write(w, f"D {mv.version - 1} -\n".encode())
        key = f"k{i % 3}"
        value = rng.random(int(rng.integers(1, 60_000)))  # inline or blob
        ckpt.set(key, value)
        os.write(w, f"K {key} {float(value.sum())!r}\n".encode())
        i += 1


@pytest.mark.slow
def test_kill9_writer_at_random_instants(tmp_path: Path) -> None:
    trials = 200 if FULL else 20
    url = str(tmp_path / "store")
    Store(url)  # create the catalog once
    rng = random.Random(1234)
    committed: dict[int, str] = {}
    deleted: set[int] = set()
    deleting: set[int] = set()
    ckpt_last: dict[str, float] = {}
    for t in range(trials):
        r, w = os.pipe()
        ready = CTX.Event()
        p = CTX.Process(target=_crash_writer, args=(url, t, ready, w))
        p.start()
        os.close(w)
        assert ready.wait(60)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        with os.fdopen(r) as f:
            lines = f.read().splitlines()
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                continue  # a line cut by the kill
            if parts[0] == "V":
                committed[int(parts[1])] = parts[2]
            elif parts[0] == "D":  # the writer deleted it itself: it must be gone
                deleted.add(int(parts[1]))
            elif parts[0] == "d":  # a delete started: it may or may not have happened
                deleting.add(int(parts[1]))
            else:
                ckpt_last[parts[1]] = float(parts[2])
    store = Store(url)
    versions = {v.version: v for v in store.versions("crash/model")}
    # every put that returned is there, with the digest it returned, unless the writer itself
    # deleted it afterwards; a delete that a kill cut short may have happened or not
    for v, digest in committed.items():
        if v in deleted:
            assert v not in versions
        elif v in versions:
            assert versions[v].digest == digest
        else:
            assert v in deleting, f"version {v} was committed, never deleted, and is gone"
    # every visible version loads and verifies (no partial version)
    for v in versions.values():
        got = store.get("crash/model", v.version)
        assert got["w"].ndim == 1
        assert store.verify(v.ref).ok
    # checkpoints: each key holds a complete value (the last set, or one a kill interrupted)
    ckpt = store.checkpointer("crash/state")
    for key in ckpt:
        assert ckpt.get(key).ndim == 1
    # the catalog is lost: recover rebuilds it from the records and journal, losing nothing
    before = snapshot(store)
    lose_catalog(store)
    with pytest.warns(SafepointWarning, match="recover"):
        store = Store(url)
    report = store.recover()
    diff = compare(before, snapshot(store))
    assert diff.lost == [] and diff.changed == [], (diff, report.not_restored)
    for ref in diff.extra:  # a put killed after its record, or a delete before its journal
        assert store.verify(ref).ok
    # at most the move in flight when the last writer was killed (journaled, not committed)
    assert len(diff.alias_changes) <= 1, diff.alias_changes
    print(f"recovered: {report.summary()}; extra {diff.extra}, aliases {diff.alias_changes}")
    # gc removes every orphan: leftover temporary files, uncommitted blobs, dead leases
    with store.catalog.tx() as conn:
        leftover_leases = len(store.catalog.leases(conn))
    rep = store.gc(grace=0)
    print(
        f"{trials} kills, {len(committed)} commits; left by the kills: {leftover_leases} "
        f"leases, {rep.deleted_temps} temp files, {len(rep.deleted_blobs)} orphan blobs"
    )
    # checkpoint values are not kept beside the blobs: after recovery their blobs are orphans
    used = {v.digest for v in store.versions("crash/model")}
    assert {b.key for b in store.blobs.list_blobs()} == used
    assert list(store.blobs.list_temps()) == []
    with store.catalog.tx() as conn:
        assert store.catalog.leases(conn) == []
        assert set(store.catalog.blob_rows_before(conn, float("inf"))) <= used
    assert len(committed) >= 1


# -- gc racing with puts --------------------------------------------------------------------
def _churner(url: str, seed: int, go: Any, seconds: float, out: Any) -> None:
    try:
        _churn(url, seed, go, seconds, out)
    except BaseException:
        out.put((0, [traceback.format_exc()]))
        raise


def _churn(url: str, seed: int, go: Any, seconds: float, out: Any) -> None:
    store = Store(url)
    rng = random.Random(seed)
    # a few contents shared by all workers: identical digests, so that a put often re-uses a
    # blob that a delete just orphaned and a concurrent gc wants to remove
    contents = [{"c": c, "w": np.arange(20_000) * c} for c in range(4)]
    go.wait()
    problems, puts = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        c = rng.randrange(len(contents) + 1)
        # now and then a content of its own, deleted at once: an orphan for gc for sure
        # (the shared ones stay referenced once some version of each is kept)
        unique = c == len(contents)
        content = {"c": c, "w": np.arange(20_000) * rng.random()} if unique else contents[c]
        mv = store.put(f"gc/m{seed}", content)
        puts += 1
        try:
            got = store.get(mv.name, mv.version)
            if got["c"] != c:
                problems.append(f"{mv.ref}: wrong content")
        except Exception as exc:
            problems.append(f"{mv.ref}: {type(exc).__name__}: {exc}")
        if unique or rng.random() < 0.7:
            store.delete(mv.name, mv.version)
    out.put((puts, problems))


def _collector(url: str, go: Any, stop: Any, out: Any) -> None:
    try:
        _collect_loop(url, go, stop, out)
    except BaseException:
        out.put((-1, traceback.format_exc()))
        raise


def _collect_loop(url: str, go: Any, stop: Any, out: Any) -> None:
    store = Store(url)
    go.wait()
    runs = deleted = 0
    while not stop.is_set():
        rep = store.gc(grace=0)  # only leases protect the blobs in flight
        runs += 1
        deleted += len(rep.deleted_blobs) + rep.deleted_temps
    out.put((runs, deleted))


@pytest.mark.slow
def test_gc_concurrent_with_puts_never_removes_committing_blob(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    Store(url)
    seconds = 30.0 if FULL else 6.0
    go, stop, out, gc_out = CTX.Event(), CTX.Event(), CTX.Queue(), CTX.Queue()
    workers = [CTX.Process(target=_churner, args=(url, s, go, seconds, out)) for s in range(3)]
    gcs = [CTX.Process(target=_collector, args=(url, go, stop, gc_out)) for _ in range(2)]
    for p in workers + gcs:
        p.start()
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in workers]
    stop.set()
    gc_results = [gc_out.get(timeout=120) for _ in gcs]
    assert all(runs >= 0 for runs, _ in gc_results), gc_results
    gc_runs, gc_deleted = zip(*gc_results, strict=True)
    for p in workers + gcs:
        p.join(60)
        assert p.exitcode == 0
    problems = [p for _, probs in results for p in probs]
    assert problems == []
    assert sum(n for n, _ in results) > 0 and sum(gc_runs) > 0
    assert sum(gc_deleted) > 0  # the race was real: gc did remove orphaned blobs meanwhile
    store = Store(url)
    for name in store.models():
        for v in store.versions(name):
            assert store.get(name, v.version)["w"].shape == (20_000,)
    # gc never removed the record of a version committing while it looked
    lost_records = ("missing-record", "damaged-record", "record-mismatch", "missing-row")
    assert not [f for f in store.check(verify_blobs=False).findings if f.kind in lost_records]
    before = snapshot(store)
    lose_catalog(store)
    with pytest.warns(SafepointWarning):
        store = Store(url)
    store.recover()
    assert compare(before, snapshot(store)).lost == []


# -- concurrent verify (its result is upserted) ----------------------------------------------
def _verifier(url: str, metadata: str | None, go: Any, n: int, out: Any) -> None:
    try:
        store = Store(url, metadata=metadata)
        go.wait()
        for _ in range(n):
            assert store.verify("team/model@1").ok
        out.put("ok")
    except BaseException:
        out.put(traceback.format_exc())


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_verify_postgres(tmp_path: Path, pg_url: str) -> None:
    url = str(tmp_path / "store")
    Store(url, metadata=pg_url).put("team/model", {"w": np.arange(10)})
    go, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_verifier, args=(url, pg_url, go, 15, out)) for _ in range(6)]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert results == ["ok"] * len(procs), results
    assert Store(url, metadata=pg_url).last_verify("team/model", 1)["ok"] is True
