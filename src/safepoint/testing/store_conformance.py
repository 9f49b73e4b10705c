"""A pytest conformance suite for store backends (blobs x catalog).

Subclass :class:`StoreConformance` in a test module and provide a ``store_factory``
fixture: a callable returning a *new* :class:`safepoint.Store` object over the same
backends each time it is called (so that the suite can check that what one client writes
another one sees)::

    import pytest
    import safepoint as sp
    from safepoint.testing.store_conformance import StoreConformance

    class TestMyBackend(StoreConformance):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return lambda: sp.Store(f"myfs://{tmp_path}", metadata="sqlite:///...")

Every test uses real files, a real catalog and the public API only (plus
:func:`rewrite_blob` to damage a blob the way a faulty disk would).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from ..errors import (
    AliasConflictError,
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    RecoveryNeededError,
    SafepointError,
    SafepointWarning,
    SerializationError,
)
from ..stores.catalog import forget_catalog
from ..stores.checkpointer import INLINE_MAX
from ..stores.owners import this_owner
from ..stores.store import Store

__all__ = ["BAD_NAMES", "CAS_ROUNDS", "StoreConformance", "lose_catalog", "rewrite_blob"]

#: rounds of the multi-process compare-and-swap test (8 processes each)
CAS_ROUNDS = int(os.environ.get("SAFEPOINT_CAS_ROUNDS", "100"))

BAD_NAMES = [
    "",
    "/abs/path",
    "a//b",
    "a/../b",
    "..",
    "./a",
    "a/",
    "a\\b",
    "a b",
    "a/b?c",
    "x" * 300,
    "é/model",
]


def rewrite_blob(store: Store, digest: str, change: Callable[[bytes], bytes]) -> None:
    """Replace a blob's bytes under its digest, behind the catalog's back (to test
    corruption), through the backend's public API: a promotion may replace a blob, which
    is what a faulty disk or a careless hand does too."""
    store.blobs.write_bytes(change(store.blobs.read(digest)), digest)


def lose_catalog(store: Store) -> None:
    """Make the store's catalog vanish the way a lost database does: a SQLite file is
    deleted (with its WAL), a server catalog loses its tables, an in-memory one is emptied."""
    cat = store.catalog
    if cat.path is not None:
        forget_catalog(cat)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(cat.path + suffix):
                os.unlink(cat.path + suffix)
        return
    if cat.in_memory:
        cat.wipe(keep_schema=False)
        return
    cat.drop_tables()
    forget_catalog(cat)


def _populate(store: Store) -> None:
    """Versions, aliases moved and removed, an edit, deletions, a step output."""
    for i in range(4):
        store.put("p/m", {"i": i}, metrics={"auc": 0.5 + i / 10}, tags=["t"])
    store.put("p/other", {"w": np.arange(50)}, alias="prod", description="other model")
    store.set_alias("p/m", "prod", 1)
    store.set_alias("p/m", "prod", 2, expected=1)
    store.set_alias("p/m", "stage", 4)
    store.edit("p/m", 2, metrics={"holdout": 0.9}, description="the one")
    store.delete("p/m", 4, force=True)  # also removes the alias stage
    store.delete("p/m", 1)
    store.put("p/flow/v1/prep", {"x": 1}, tags={"safepoint.step": "{}"})
    store.checkpointer("job/state").set("offset", 10)


def _snapshot(store: Store) -> dict[str, Any]:
    return {
        name: [
            (
                v.version,
                v.digest,
                v.metrics,
                v.tags,
                v.description,
                v.aliases,
                v.parents,
                v.created_by,
                round(v.created.timestamp(), 3),
            )
            for v in store.versions(name)
        ]
        for name in store.models()
    } | {"@kinds": {r["name"]: r["kind"] for r in store.summary()}}


def _cas_worker(
    factory: Callable[[], Store], rank: int, rounds: int, barrier: Any, out: Any
) -> None:
    try:
        store = factory()
        results: list[tuple[Any, ...]] = []
        for r in range(rounds):
            alias = f"new{r}" if r % 2 == 0 else "moving"
            barrier.wait(120)
            expected = None if r % 2 == 0 else store.aliases("p/race").get("moving")
            barrier.wait(120)
            # never the current value: a "move" to where the alias points changes nothing
            target = [v for v in (1, 2, 3) if v != expected][(rank + r) % 2]
            try:
                store.set_alias("p/race", alias, target, expected=expected)
                results.append((r, rank, "won", target, expected))
            except AliasConflictError as exc:
                results.append((r, rank, "lost", None, expected, str(exc)[:80]))
        out.put(("ok", results))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def _cas_race(factory: Callable[[], Store], store: Store, n_procs: int, rounds: int) -> None:
    ctx = mp.get_context("fork")
    for i in range(3):
        store.put("p/race", {"v": i})
    store.set_alias("p/race", "moving", 1)
    barrier, out = ctx.Barrier(n_procs), ctx.Queue()
    procs = [
        ctx.Process(target=_cas_worker, args=(factory, k, rounds, barrier, out))
        for k in range(n_procs)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [g[1] for g in got if g[0] != "ok"]
    assert not errors, errors[0]
    by_round: dict[int, list[tuple[int, str, int | None]]] = {}
    for _, results in got:
        for r, rank, outcome, target, *rest in results:
            by_round.setdefault(r, []).append((rank, outcome, target, *rest))
    assert sorted(by_round) == list(range(rounds))
    for r, rows in by_round.items():
        winners = [t for _, outcome, t, *_ in rows if outcome == "won"]
        assert len(rows) == n_procs and len(winners) == 1, (r, rows)
    # the catalog holds exactly the winners' values, and the journal agrees
    final = store.aliases("p/race")
    for r in range(0, rounds, 2):
        assert final[f"new{r}"] == next(t for _, o, t, *_ in by_round[r] if o == "won")
    moves = [
        e
        for e in store.log("p/race", action="alias", limit=10 * rounds)
        if e.detail.get("alias") == "moving"
    ]
    assert len(moves) == 1 + rounds // 2
    assert store.check(verify_blobs=False).ok


def _flip(offset_from_end: int | None = None, at: int | None = None) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        b = bytearray(data)
        i = at if at is not None else len(b) - int(offset_from_end or 1)
        b[i] ^= 0xFF
        return bytes(b)

    return change


def _model() -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return LogisticRegression().fit(X, y), X


class StoreConformance:
    """The behaviour every backend combination must show (see the module docstring)."""

    @pytest.fixture
    def store_factory(self) -> Callable[[], Store]:  # pragma: no cover - overridden
        raise NotImplementedError("subclasses provide a store_factory fixture")

    @pytest.fixture
    def store(self, store_factory: Callable[[], Store]) -> Store:
        return store_factory()

    # -- versions ------------------------------------------------------------------------
    def test_put_get_roundtrip(self, store: Store) -> None:
        model, X = _model()
        mv = store.put("proj/clf", model, metadata={"owner": "ds"}, metrics={"auc": 0.9})
        assert (mv.name, mv.version, mv.aliases) == ("proj/clf", 1, [])
        assert mv.size > 0 and len(mv.digest) == 32
        assert mv.root_type == "sklearn.linear_model._logistic.LogisticRegression"
        assert "scikit-learn" in mv.environment["packages"]
        loaded = store.get("proj/clf")
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
        info = store.info("proj/clf", 1)
        assert info.metadata == {"owner": "ds"} and info.metrics == {"auc": 0.9}
        assert info.digest == mv.digest and info.created == mv.created
        # the metadata is also in the blob's own manifest
        assert store.inspect("proj/clf@1").metadata == {"owner": "ds"}

    def test_versions_are_consecutive_and_immutable(self, store: Store) -> None:
        for i in range(3):
            assert store.put("p/m", {"i": i}).version == i + 1
        assert [v.version for v in store.versions("p/m")] == [1, 2, 3]
        assert store.get("p/m") == {"i": 2}
        assert store.get("p/m", 1) == {"i": 0}
        assert store.get("p/m", "2") == {"i": 1}
        assert store.get("p/m", "latest") == {"i": 2}
        assert store.info("p/m@1").version == 1
        store.delete("p/m", 3)
        # a deleted version number is never reused
        assert store.put("p/m", {"i": 3}).version == 4
        assert [v.version for v in store.versions("p/m")] == [1, 2, 4]

    def test_identical_content_shares_one_blob(self, store: Store) -> None:
        a = store.put("p/a", {"w": np.arange(10)})
        b = store.put("p/b", {"w": np.arange(10)})
        assert a.digest == b.digest
        assert sum(1 for _ in store.blobs.list_blobs()) == 1
        store.delete("p/a")
        store.gc(grace=0)
        assert store.get("p/b")["w"].tolist() == list(range(10))

    def test_models_and_summary(self, store: Store) -> None:
        store.put("team/a", 1)
        store.put("team/b", 2, alias="prod")
        store.put("other/c", 3)
        assert store.models() == ["other/c", "team/a", "team/b"]
        assert store.models(prefix="team") == ["team/a", "team/b"]
        rows = {r["name"]: r for r in store.summary()}
        assert rows["team/b"]["aliases"] == {"prod": 1} and rows["team/a"]["versions"] == 1

    def test_second_client_sees_writes(self, store_factory: Callable[[], Store]) -> None:
        a, b = store_factory(), store_factory()
        a.put("p/shared", {"x": 1}, alias="prod")
        assert b.get("p/shared", "prod") == {"x": 1}
        b.put("p/shared", {"x": 2})
        assert a.info("p/shared").version == 2

    # -- aliases ---------------------------------------------------------------------------
    def test_alias_compare_and_swap(self, store: Store) -> None:
        for i in range(3):
            store.put("p/m", i)
        store.set_alias("p/m", "prod", 1)
        assert store.get("p/m", "prod") == 0
        with pytest.raises(AliasConflictError, match="expected=1"):
            store.set_alias("p/m", "prod", 2)  # exists: moving needs expected=
        with pytest.raises(AliasConflictError, match="moved since"):
            store.set_alias("p/m", "prod", 2, expected=3)
        assert store.aliases("p/m") == {"prod": 1}
        mv = store.set_alias("p/m", "prod", 2, expected=1)
        assert mv.aliases == ["prod"] and store.get("p/m", "prod") == 1
        with pytest.raises(NotFoundError):
            store.set_alias("p/m", "prod", 9, expected=2)  # no such version
        with pytest.raises(AliasConflictError):
            store.delete_alias("p/m", "prod", expected=1)
        store.delete_alias("p/m", "prod", expected=2)
        assert store.aliases("p/m") == {}

    def test_put_with_alias_moves_it(self, store: Store) -> None:
        store.put("p/m", "a", alias="prod")
        store.put("p/m", "b", alias="prod")
        assert store.get("p/m", "prod") == "b"
        moves = [e for e in store.log("p/m") if e.action == "alias"]
        assert [(e.version, e.detail["previous"]) for e in moves] == [(2, 1), (1, None)]

    # -- bad input -------------------------------------------------------------------------
    def test_unknown_model_version_alias(self, store: Store) -> None:
        store.put("p/m", 1, alias="prod")
        with pytest.raises(NotFoundError, match="no model named 'p/zz'"):
            store.get("p/zz")
        with pytest.raises(NotFoundError, match="no version 7"):
            store.get("p/m", 7)
        with pytest.raises(NotFoundError, match=r"no alias 'staging'.*prod"):
            store.get("p/m", "staging")
        with pytest.raises(NotFoundError):
            store.versions("p/nothing")
        with pytest.raises(NotFoundError):
            store.delete("p/m", 5)

    def test_bad_names_refused(self, store: Store) -> None:
        for bad in BAD_NAMES:
            with pytest.raises(InvalidNameError):
                store.put(bad, 1)
            with pytest.raises(InvalidNameError):
                store.get(bad)
            with pytest.raises(InvalidNameError):
                store.checkpointer(bad)
        assert store.models() == []
        assert list(store.blobs.list_temps()) == []

    def test_bad_arguments(self, store: Store) -> None:
        store.put("p/m", 1)
        with pytest.raises(InvalidNameError):
            store.set_alias("p/m", "3", 1)  # aliases cannot look like versions
        with pytest.raises(InvalidNameError):
            store.set_alias("p/m", "latest", 1)
        with pytest.raises(SerializationError):
            store.put("p/m", 1, metadata={"x": object()})
        with pytest.raises(SerializationError):
            store.put("p/m", 1, metrics={"auc": "high"})  # type: ignore[dict-item]
        with pytest.raises(SafepointError):
            store.gc(keep_best=("auc", "best"))
        with pytest.raises(InvalidNameError):
            store.get("p/m", 1.5)  # type: ignore[arg-type]
        # nothing half-written
        assert [v.version for v in store.versions("p/m")] == [1]
        assert store.gc(grace=0).deleted_blobs == []

    def test_unserializable_object_leaves_nothing(self, store: Store) -> None:
        with pytest.raises(SafepointError):
            store.put("p/m", {"f": lambda x: x})
        assert store.models() == []
        assert list(store.blobs.list_temps()) == []

    # -- integrity -------------------------------------------------------------------------
    def test_corrupt_blob_raises_integrity_error(self, store: Store) -> None:
        mv = store.put("p/m", {"w": np.arange(100_000, dtype=np.float64)})
        rewrite_blob(store, mv.digest, _flip(at=4096))  # inside the array buffer
        with pytest.raises(IntegrityError):
            store.get("p/m")
        assert not store.verify("p/m").ok

    def test_corrupt_manifest_and_truncation(self, store: Store) -> None:
        a = store.put("p/a", {"a": 1})
        b = store.put("p/b", {"b": np.arange(1000)})
        rewrite_blob(store, a.digest, _flip(offset_from_end=70))
        rewrite_blob(store, b.digest, lambda d: d[: len(d) // 2])
        for name in ("p/a", "p/b"):
            with pytest.raises(IntegrityError, match="corrupt"):
                store.get(name)

    def test_swapped_blob_detected(self, store: Store) -> None:
        a = store.put("p/a", {"a": 1})
        b = store.put("p/b", {"b": 2})
        other = store.blobs.read(b.digest)
        rewrite_blob(store, a.digest, lambda _: other)
        with pytest.raises(IntegrityError, match="digest"):
            store.get("p/a")

    def test_missing_blob(self, store: Store) -> None:
        mv = store.put("p/a", {"a": 1})
        store.blobs.delete(mv.digest)
        with pytest.raises(IntegrityError, match="missing"):
            store.get("p/a")

    # -- delete and gc ---------------------------------------------------------------------
    def test_delete_respects_aliases(self, store: Store) -> None:
        store.put("p/m", 1, alias="prod")
        store.put("p/m", 2)
        with pytest.raises(AliasConflictError, match="prod"):
            store.delete("p/m", 1)
        assert store.delete("p/m", 2) == [2]
        assert store.delete("p/m", "prod", force=True) == [1]
        assert store.aliases("p/m") == {}
        assert store.models() == []
        actions = [e.action for e in store.log("p/m")]
        assert actions.count("delete") == 2

    def test_gc_retention(self, store: Store) -> None:
        aucs = [0.7, 0.95, 0.8, 0.6, 0.75]
        for i, auc in enumerate(aucs):
            store.put("p/m", {"i": i}, metrics={"auc": auc})
        store.set_alias("p/m", "prod", 1)
        dry = store.gc(keep_last=2, keep_best=("auc", "max"), dry_run=True, grace=0)
        assert dry.deleted_versions == ["p/m@3"]
        assert [v.version for v in store.versions("p/m")] == [1, 2, 3, 4, 5]
        rep = store.gc(keep_last=2, keep_best=("auc", "max"), grace=0)
        assert rep.deleted_versions == ["p/m@3"] and len(rep.deleted_blobs) == 1
        assert [v.version for v in store.versions("p/m")] == [1, 2, 4, 5]
        rep = store.gc(keep_last=1, keep_aliases=False, grace=0)
        assert [v.version for v in store.versions("p/m")] == [5]
        assert store.get("p/m") == {"i": 4}
        assert sum(1 for _ in store.blobs.list_blobs()) == 1

    def test_gc_grace_protects_young_orphans(self, store: Store) -> None:
        mv = store.put("p/m", {"a": np.arange(10)})
        store.delete("p/m", 1)
        assert store.gc().deleted_blobs == []  # default grace: an hour
        assert store.blobs.exists(mv.digest)
        assert store.gc(grace=0).deleted_blobs == [mv.digest]
        assert not store.blobs.exists(mv.digest)

    def test_gc_removes_abandoned_temp_objects(self, store: Store) -> None:
        tmp = store.blobs.begin()
        tmp.file.write(b"half a model")
        tmp.close()
        assert store.gc().deleted_temps == 0
        assert store.gc(grace=0).deleted_temps == 1
        assert list(store.blobs.list_temps()) == []

    def test_gc_keeps_leased_temp_objects(self, store: Store) -> None:
        tmp = store.staging.begin()  # what a put in progress holds
        tmp.file.write(b"first half")
        tmp.file.flush()
        assert store.gc(grace=0).deleted_temps == 0
        tmp.file.write(b" second half")
        store.staging.abort(tmp)
        assert list(store.blobs.list_temps()) == []

    def test_gc_respects_commit_lease(self, store: Store) -> None:
        # a put that promoted its blob but has not committed its version yet holds a
        # lease: even gc(grace=0) must keep the blob
        staged = store.staging.stage_object({"x": np.arange(5)})
        assert store.gc(grace=0).deleted_blobs == []
        assert store.blobs.exists(staged.digest)
        store.staging.release(*staged.lease_ids)
        assert store.gc(grace=0).deleted_blobs == [staged.digest]

    # -- lineage and copy ------------------------------------------------------------------
    def test_lineage(self, store: Store) -> None:
        base = store.put("p/features", {"f": 1}, data_digest=b"raw data")
        child = store.put(
            "p/model", {"m": 1}, parents=[base], code_digest="abc123", tags=["candidate"]
        )
        lin = store.lineage("p/model")
        assert lin["parents"] == ["p/features@1"] and lin["code_digest"] == "abc123"
        assert store.lineage("p/features")["children"] == [child.ref]
        assert [v.ref for v in store.find(data_digest=base.data_digest)] == ["p/features@1"]
        assert [v.ref for v in store.find(tag="candidate")] == ["p/model@1"]
        run = store.runs.start("steps", "p/pipeline")
        made = store.put("p/model", {"m": 2}, run_id=run)
        assert [v.ref for v in store.find(run_id=run.id)] == [made.ref]
        assert store.lineage("p/model")["run_id"] == run.id
        # numpy integers work wherever a version number does
        assert store.get("p/model", np.int64(1)) == {"m": 1}
        store.set_alias("p/model", "prod", np.int64(2))

    def test_copy_to_another_store(self, store: Store, tmp_path: Any) -> None:
        model, X = _model()
        store.put("p/data", {"rows": 200})
        store.put("p/m", model, metrics={"auc": 0.9}, parents=["p/data@1"], alias="prod")
        other = Store(tmp_path / "other")
        out = store.copy("p/m", "prod", to=other, alias="candidate")
        assert (out.name, out.version, out.aliases) == ("p/m", 1, ["candidate"])
        assert out.metrics == {"auc": 0.9} and out.parents == ["p/data@1"]
        np.testing.assert_array_equal(other.get("p/m", "candidate").predict(X), model.predict(X))
        assert other.log()[-1].action == "copy" or any(e.action == "copy" for e in other.log())
        back = other.copy("p/m", to=store, new_name="p/m-roundtrip")
        assert back.digest == out.digest

    # -- audit -----------------------------------------------------------------------------
    def test_audit_log(self, store: Store) -> None:
        store.put("p/m", 1, alias="prod")
        store.put("p/m", 2)
        store.set_alias("p/m", "prod", 2, expected=1)
        store.delete("p/m", 1)
        log = store.log("p/m")
        assert [e.action for e in log] == ["delete", "alias", "put", "alias", "put"]
        assert all(e.actor == store.actor and e.host == store.host for e in log)
        assert log[1].detail == {"alias": "prod", "previous": 1}
        assert [e.action for e in store.log(action="put", limit=1)] == ["put"]

    # -- checkpointer ----------------------------------------------------------------------
    def test_checkpointer_basics(self, store_factory: Callable[[], Store]) -> None:
        a = store_factory().checkpointer("job/state", description="scoring offsets")
        b = store_factory().checkpointer("job/state")
        assert a.get("offset") is None and a.get("offset", 0) == 0
        a.set("offset", 10)
        assert b.get("offset") == 10  # another client sees it at once
        b.set("offset", 11)
        assert a.get("offset") == 11
        a.set("raw", b"\x00\x01")
        assert b.get("raw") == b"\x00\x01"
        arr = np.arange(INLINE_MAX // 4, dtype=np.float64)  # > INLINE_MAX: goes to a blob
        a.set("big", arr)
        np.testing.assert_array_equal(b.get("big"), arr)
        assert b.info("big")["blob"] is not None and b.info("offset")["blob"] is None
        big_bytes = bytes(INLINE_MAX + 10)
        a.set("bigraw", big_bytes)
        assert b.get("bigraw") == big_bytes
        assert a.keys() == ["big", "bigraw", "offset", "raw"]
        assert "offset" in b and "nope" not in b
        assert a.delete("offset") and not a.delete("offset")
        assert b.get("offset", "gone") == "gone"
        other = store_factory().checkpointer("job/other")
        assert other.keys() == []

    def test_checkpointer_overwrite_and_gc(self, store: Store) -> None:
        ck = store.checkpointer("job/x")
        ck.set("model", np.arange(INLINE_MAX, dtype=np.int64))
        ck.set("model", np.arange(INLINE_MAX, dtype=np.int32))
        rep = store.gc(grace=0)
        assert len(rep.deleted_blobs) == 1  # the overwritten value's blob
        assert ck.get("model").dtype == np.int32

    def test_checkpointer_async(self, store: Store) -> None:
        ck = store.checkpointer("job/async")

        async def main() -> Any:
            await asyncio.gather(*(ck.aset(f"k{i}", i) for i in range(5)))
            return await asyncio.gather(*(ck.aget(f"k{i}") for i in range(5)))

        assert asyncio.run(main()) == [0, 1, 2, 3, 4]

    def test_checkpointer_bad_keys(self, store: Store) -> None:
        ck = store.checkpointer("job/x")
        for bad in ("", "a\x00b", "k" * 2000, 3):
            with pytest.raises(InvalidNameError):
                ck.set(bad, 1)  # type: ignore[arg-type]
        with pytest.raises(NotFoundError):
            ck.info("missing")

    # -- runs ------------------------------------------------------------------------------
    def test_runs(self, store_factory: Callable[[], Store]) -> None:
        store = store_factory()
        run = store.runs.start("search", "p/grid", state={"n": 4})
        run.update(progress=0.25, state={"done": [1]})
        other = store_factory().runs.get(run.id)
        assert (other.status, other.progress, other.state) == (
            "running",
            0.25,
            {"n": 4, "done": [1]},
        )
        before = other.heartbeat
        time.sleep(0.01)
        run.heartbeat()
        assert store.runs.get(run.id).heartbeat > before
        run.update(state={"x": 1}, replace_state=True)
        assert store.runs.get(run.id).state == {"x": 1}
        run.finish()
        with pytest.raises(ValueError), store.runs.start("steps", "p/pipe") as failing:
            raise ValueError("boom")
        info = store.runs.get(failing.id)
        assert info.status == "failed" and "boom" in info.message and info.finished
        assert {r.id for r in store.runs.list()} == {run.id, failing.id}
        assert [r.id for r in store.runs.list(kind="steps")] == [failing.id]
        assert [r.id for r in store.runs.list(status="succeeded")] == [run.id]
        attached = store_factory().runs.attach(run.id)
        attached.update(status="interrupted")
        assert store.runs.get(run.id).status == "interrupted"
        with pytest.raises(NotFoundError):
            store.runs.get("nope")
        with pytest.raises(SafepointError):
            run.update(progress=2.0)
        with pytest.raises(InvalidNameError):
            store.runs.start("Bad Kind", "x")
        assert store.runs.delete(run.id)

    # -- bad input: every case answers with a SafepointError and changes nothing ----------
    def test_bad_input_is_refused_and_changes_nothing(self, store: Store) -> None:
        store.put("p/m", 1)
        deep: Any = 0
        for _ in range(5000):
            deep = {"d": deep}
        cases: list[tuple[Callable[[], Any], str]] = [
            (lambda: store.put("p/m\n", 2), "model name"),
            (lambda: store.put("p/m", 2, alias="prod\n"), "alias"),
            (lambda: store.get("p/m", 2**63), "between 1 and"),
            (lambda: store.get("p/m", 2**31), "between 1 and"),
            (lambda: store.get("p/m", "\u00b2"), "version"),
            (lambda: store.get("p/m", "0"), "between 1 and"),
            (lambda: store.set_alias("p/m", "prod", 2**40), "version"),
            (lambda: store.put("p/m", 2, run_id="x" * 40), "run_id"),
            (lambda: store.put("p/m", 2, run_id="a\x00b"), "run_id"),
            (lambda: store.put("p/m", 2, metadata=deep), "metadata"),
            (lambda: store.put("p/m", 2, parents=5), "parents"),  # type: ignore[arg-type]
            (lambda: store.put("p/m", 2, parents=["p/nope@1"]), "parents"),
            (lambda: store.put("p/m", 2, tags=["a\x00"]), "tags"),
            (lambda: store.put("p/m", 2, description=3), "description"),  # type: ignore[arg-type]
            (lambda: store.gc(keep_last="x"), "keep_last"),  # type: ignore[arg-type]
            (lambda: store.gc(keep_last=1.5), "keep_last"),  # type: ignore[arg-type]
            (lambda: store.gc(keep_last=-1), "keep_last"),
            (lambda: store.gc(grace="x"), "grace"),  # type: ignore[arg-type]
            (lambda: store.gc(grace=float("nan")), "grace"),
            (lambda: store.gc(keep_best=("auc", "max", "x")), "keep_best"),  # type: ignore[arg-type]
            (lambda: store.log(limit="x"), "limit"),  # type: ignore[arg-type]
            (lambda: store.log(action="explode"), "action"),
            (lambda: store.runs.list(status="nope"), "status"),
            (lambda: store.runs.get("a" * 40), "run id"),
            (lambda: store.models(kind="nope"), "kind"),
            (lambda: store.edit("p/m", 1, metrics={"a": "b"}), "metric"),  # type: ignore[dict-item]
        ]
        for call, named in cases:
            with pytest.raises(SafepointError, match=named):
                call()
        assert [v.version for v in store.versions("p/m")] == [1]
        assert store.aliases("p/m") == {}
        assert store.info("p/m", 1).metrics == {}
        assert list(store.blobs.list_temps()) == []

    # -- compare-and-swap across processes ---------------------------------------------------
    @pytest.mark.slow
    def test_alias_cas_many_processes(self, store_factory: Callable[[], Store]) -> None:
        """8 processes x ``CAS_ROUNDS`` rounds race one compare-and-swap each round, on a
        new alias (expected=None) in even rounds and an existing one in odd rounds:
        exactly one wins, the others get AliasConflictError."""
        store = store_factory()
        if not store.blobs.is_local and not store.blobs.is_remote:
            pytest.skip("an in-process backend: other processes cannot see it")
        _cas_race(store_factory, store, n_procs=8, rounds=CAS_ROUNDS)

    # -- the catalog is rebuildable from the blobs ---------------------------------------
    def test_lost_catalog_refuses_writes_then_recovers_everything(
        self, store_factory: Callable[[], Store]
    ) -> None:
        store = store_factory()
        _populate(store)
        before = _snapshot(store)
        digests = {b.key for b in store.blobs.list_blobs()}
        lose_catalog(store)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lost = store_factory()
        assert lost.problem is not None and "recover" in lost.problem
        if not any("recover" in str(w.message) for w in caught):
            pytest.fail("opening a store whose catalog is lost must warn (the factory may hide it)")
        with pytest.raises(RecoveryNeededError, match="recover"):
            lost.put("p/m", {"new": 1})
        with pytest.raises(RecoveryNeededError, match="recover"):
            lost.gc(grace=0)
        with pytest.raises(RecoveryNeededError, match="recover"):
            lost.checkpointer("job/x").set("k", 1)
        with pytest.raises(RecoveryNeededError, match="recover"):
            lost.runs.start("steps", "p/flow")
        assert {b.key for b in lost.blobs.list_blobs()} == digests  # gc deleted nothing
        report = lost.recover()
        assert report.rebuilt and not report.dry_run
        assert sorted(report.versions_restored) == sorted(
            f"{n}@{v[0]}" for n, vs in before.items() if n != "@kinds" for v in vs
        )
        assert any("checkpointer values" in line for line in report.not_restored)
        assert _snapshot(lost) == before
        again = store_factory()  # a new client sees the rebuilt catalog and may write
        assert again.problem is None and _snapshot(again) == before
        assert again.get("p/m", "prod") == {"i": 1}
        assert again.put("p/m", {"i": 9}).version == 5  # numbers are not reused
        actions = [e.action for e in again.log("p/m", limit=100)]
        assert {"put", "alias", "edit", "delete", "unalias"} <= set(actions)
        rep = again.gc(grace=0)  # only the blobs of the deleted versions go
        assert sorted(rep.deleted_records) == ["p/m@1", "p/m@4"]
        for name in again.models():
            for v in again.versions(name):
                assert v.digest not in rep.deleted_blobs
                again.get(name, v.version)
        assert again.check().ok

    def test_foreign_catalog_is_refused(
        self, store_factory: Callable[[], Store], tmp_path: Any
    ) -> None:
        store = store_factory()
        store.put("p/m", {"a": 1})
        if store.catalog.is_sqlite and not store.catalog.in_memory:
            other = Store(tmp_path / "other-store")
            other.put("o/x", 1)
            with pytest.warns(SafepointWarning, match="another store"):
                mixed = Store(
                    store.url,
                    metadata=other.catalog.url,
                    storage_options=store.storage_options,
                )
            with pytest.raises(RecoveryNeededError, match="another store"):
                mixed.put("p/m", {"a": 2})
            with pytest.raises(RecoveryNeededError, match="another store"):
                mixed.gc(grace=0)
            with pytest.raises(RecoveryNeededError, match="force"):
                mixed.recover()
            assert other.models() == ["o/x"]  # untouched
        assert store.get("p/m") == {"a": 1}

    def test_check_reports_and_repairs(self, store: Store) -> None:
        mv = store.put("p/m", {"w": np.arange(1000)}, alias="prod")
        other = store.put("p/n", {"w": np.arange(2000)})
        assert store.check().ok
        # a version record lost, an abandoned upload: both repairable
        key = next(r for r in store.blobs.list_objects("records") if "/p/m/@" in r.key).key
        store.blobs.delete_object(key)
        tmp = store.blobs.begin()
        tmp.file.write(b"half")
        tmp.close()
        rep = store.check(grace=0)
        kinds = {f.kind for f in rep.findings}
        assert {"missing-record", "abandoned-upload"} <= kinds and not rep.ok
        rep = store.check(repair=True, grace=0)
        assert all(f.repaired for f in rep.findings if f.kind == "missing-record")
        assert store.check(grace=0).ok
        # a damaged blob is reported, never "repaired"
        rewrite_blob(store, other.digest, _flip(at=4096))
        rep = store.check(repair=True)
        bad = [f for f in rep.findings if f.kind == "damaged-blob"]
        assert [f.item for f in bad] == ["p/n@1"] and not bad[0].repaired and not rep.ok
        assert store.get("p/m", "prod")["w"].shape == (1000,)
        assert mv.digest != other.digest

    def test_records_let_gc_keep_blobs_the_catalog_forgot(self, store: Store) -> None:
        mv = store.put("p/m", {"w": np.arange(100)})
        # the catalog row vanishes behind the store's back (a damaged catalog)
        with store.catalog.tx(write=True) as conn:
            conn.execute(sa.text("DELETE FROM versions"))
        rep = store.gc(grace=0)
        assert mv.digest not in rep.deleted_blobs and store.blobs.exists(mv.digest)
        assert any(f.kind == "missing-row" for f in store.check().findings)

    # -- leases and gc marks ---------------------------------------------------------------
    def test_lease_of_a_reused_pid_is_dead(self, store: Store) -> None:
        staged = store.staging.stage_object({"x": np.arange(7)})
        store.staging.release(*staged.lease_ids)
        host, boot, ns, pid, start = this_owner().split("|")
        assert int(pid) == os.getpid()
        # the same host, boot and PID, but a process that started at another time: the
        # PID was reused, the holder is gone
        reused = "|".join([host, boot, ns, pid, str(int(start or 0) + 12345)])
        live = this_owner()
        for owner, kept in ((live, True), (reused, False)):
            with store.catalog.tx(write=True) as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO leases (id, digest, created_at, host, pid, owner) "
                        "VALUES (:id, :digest, :at, :host, :pid, :owner)"
                    ),
                    {
                        "id": uuid.uuid4().hex,
                        "digest": staged.digest,
                        "at": time.time(),
                        "host": store.host,
                        "pid": os.getpid(),
                        "owner": owner,
                    },
                )
            if kept:
                assert store.gc(grace=0).deleted_blobs == []
                with store.catalog.tx(write=True) as conn:
                    conn.execute(sa.text("DELETE FROM leases"))
        assert store.gc(grace=0).deleted_blobs == [staged.digest]

    def test_mark_of_a_dead_gc_is_taken_over_at_once(self, store: Store) -> None:
        data = {"x": np.arange(11)}
        mv = store.put("p/m", data)
        store.delete("p/m", 1)
        host, boot, ns, pid, start = this_owner().split("|")
        dead = "|".join([host, boot, ns, pid, str(int(start or 0) + 1)])
        for owner, expect in ((this_owner(), False), (dead, True)):
            with store.catalog.tx(write=True) as conn:
                # what a gc that is deleting the blob has written
                conn.execute(sa.text("DELETE FROM blobs WHERE digest = :d"), {"d": mv.digest})
                conn.execute(
                    sa.text(
                        "INSERT INTO blobs (digest, size, state, state_at, owner) "
                        "VALUES (:d, :size, 'deleting', :at, :owner)"
                    ),
                    {"d": mv.digest, "size": mv.size, "at": time.time(), "owner": owner},
                )
            # False: a live gc holds the mark (the put waits); True: taken over now
            assert store.catalog.lease(mv.digest, mv.size, uuid.uuid4().hex) is expect
        again = store.put("p/m", data)
        assert again.digest == mv.digest
        np.testing.assert_array_equal(store.get("p/m")["x"], data["x"])

    # -- checkpointer values carry checksums -----------------------------------------------
    def test_checkpointer_inline_values_are_checked(self, store: Store) -> None:
        ck = store.checkpointer("job/sums")
        ck.set("raw", b"\x00" * 100)
        ck.set("obj", {"offset": 12})
        for key in ("raw", "obj"):
            with store.catalog.tx(write=True) as conn:
                where = {"name": "job/sums", "key": key}
                value = conn.execute(
                    sa.text('SELECT value FROM checkpoints WHERE name = :name AND "key" = :key'),
                    where,
                ).scalar()
                flipped = bytearray(value or b"")
                flipped[len(flipped) // 2] ^= 0x01
                conn.execute(
                    sa.text(
                        'UPDATE checkpoints SET value = :value WHERE name = :name AND "key" = :key'
                    ),
                    {**where, "value": bytes(flipped)},
                )
            with pytest.raises(IntegrityError, match="checksum"):
                ck.get(key)
        assert {f.kind for f in store.check().findings} == {"damaged-value"}

    # -- what users expect of a store -------------------------------------------------------
    def test_edit_after_put_is_audited_and_journaled(self, store: Store) -> None:
        store.put("p/m", 1, metrics={"auc": 0.8}, tags=["a"], description="first")
        mv = store.edit(
            "p/m@1", metrics={"f1": 0.7}, tags={"b": "x"}, remove_tags=["a"], description="better"
        )
        assert (mv.metrics, mv.tags, mv.description) == (
            {"auc": 0.8, "f1": 0.7},
            {"b": "x"},
            "better",
        )
        mv = store.edit("p/m", 1, remove_metrics=["auc"])
        assert mv.metrics == {"f1": 0.7} and store.get("p/m") == 1
        edits = store.log("p/m", action="edit")
        assert len(edits) == 2 and edits[1].detail["description"] == "better"

    def test_alias_delete_and_latest(self, store: Store) -> None:
        store.put("p/m", 1, alias="prod")
        store.put("p/m", 2)
        assert store.get("p/m@latest") == 2 and store.info("p/m", "latest").version == 2
        assert store.set_alias("p/m", "stage", "latest").version == 2
        assert store.delete_alias("p/m", "stage") == 2
        with pytest.raises(AliasConflictError):
            store.delete_alias("p/m", "prod", expected=2)
        assert store.delete_alias("p/m", "prod", expected=1) == 1
        with pytest.raises(NotFoundError):
            store.delete_alias("p/m", "prod")
        assert store.aliases("p/m") == {}
        assert [e.action for e in store.log("p/m", action="unalias")] == ["unalias", "unalias"]
        assert store.delete("p/m", "latest") == [2]  # @latest deletes one version, not all
        assert [v.version for v in store.versions("p/m")] == [1]

    def test_parents_must_exist(self, store: Store) -> None:
        data = store.put("p/data", {"rows": 3}, alias="current")
        run = store.runs.start("steps", "p/flow")
        mv = store.put("p/m", 1, parents=[data, "p/data@current", "p/data", run.id])
        assert mv.parents == ["p/data@1", "p/data@current", "p/data", run.id]
        for bad in ("p/data@2", "p/data@old", "p/nothing", "0123456789abcdef"):
            with pytest.raises(NotFoundError, match="parents"):
                store.put("p/m", 2, parents=[bad])
        assert [v.version for v in store.versions("p/m")] == [1]

    def test_kinds_keep_step_outputs_apart(self, store: Store) -> None:
        store.put("p/model", 1)
        store.put("p/pipe/v1/prep", 2, tags={"safepoint.step": "{}"})
        assert store.models(kind="model") == ["p/model"]
        assert store.models(kind="step") == ["p/pipe/v1/prep"]
        assert store.models() == ["p/model", "p/pipe/v1/prep"]
        assert {r["name"]: r["kind"] for r in store.summary()} == {
            "p/model": "model",
            "p/pipe/v1/prep": "step",
        }
        assert [r["name"] for r in store.summary(kind="model")] == ["p/model"]

    def test_copy_of_a_version_the_target_has_creates_nothing(
        self, store: Store, tmp_path: Any
    ) -> None:
        mv = store.put("p/m", {"w": np.arange(5)})
        other = Store(tmp_path / "copy-target")
        first = store.copy("p/m", to=other)
        again = store.copy("p/m", 1, to=other, alias="prod")
        assert (first.version, again.version, again.aliases) == (1, 1, ["prod"])
        assert [v.version for v in other.versions("p/m")] == [1]
        found = store.find_copy(mv)
        assert other.find_copy(mv) is not None and found is not None and found.ref == "p/m@1"
        assert store.copy("p/m", to=other, new_name="p/renamed").version == 1  # another name
