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
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ..errors import (
    AliasConflictError,
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    SafepointError,
    SerializationError,
)
from ..stores.blobs import FsspecBlobs, LocalBlobs
from ..stores.checkpointer import INLINE_MAX
from ..stores.store import Store

__all__ = ["BAD_NAMES", "StoreConformance", "rewrite_blob"]

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
    """Replace a blob's bytes in place, behind the store's back (to test corruption)."""
    blobs = store.blobs
    if isinstance(blobs, LocalBlobs):
        path = blobs.path(digest)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(change(data))
    elif isinstance(blobs, FsspecBlobs):
        path = blobs._blob(digest)
        blobs.fs.pipe_file(path, change(blobs.fs.cat_file(path)))
    else:  # pragma: no cover
        raise NotImplementedError(type(blobs).__name__)


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
        tmp = store._begin()  # what a put in progress holds
        tmp.file.write(b"first half")
        tmp.file.flush()
        assert store.gc(grace=0).deleted_temps == 0
        tmp.file.write(b" second half")
        store._abort(tmp)
        assert list(store.blobs.list_temps()) == []

    def test_gc_respects_commit_lease(self, store: Store) -> None:
        # a put that promoted its blob but has not committed its version yet holds a
        # lease: even gc(grace=0) must keep the blob
        staged = store._stage_object({"x": np.arange(5)})
        assert store.gc(grace=0).deleted_blobs == []
        assert store.blobs.exists(staged.digest)
        store._release(*staged.lease_ids)
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
