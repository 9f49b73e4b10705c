"""A pytest suite that any blob backend (:class:`safepoint.stores.BlobStore`) must pass.

Subclass :class:`BlobStoreTests` and provide a ``blobs`` fixture (a new, empty backend)
and the two *raw* hooks, which reach the storage without going through the backend
(the way zarr's ``StoreTests`` checks a store against what is really stored)::

    import pytest
    from safepoint.testing import BlobStoreTests

    class TestMyBlobs(BlobStoreTests):
        @pytest.fixture
        def blobs(self, tmp_path):
            return MyBlobs(f"myfs://{tmp_path}")

        def raw_put(self, blobs, digest, data):
            ...  # write data where MyBlobs keeps blob `digest`, with your own client

        def raw_get(self, blobs, digest):
            ...  # the bytes stored for blob `digest`, or None if there are none

A whole store over the backend then passes
:class:`safepoint.testing.store_conformance.StoreConformance`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import pytest

from ..errors import NotFoundError, SafepointError
from ..stores.blobs import BlobStore

__all__ = ["BlobStoreTests"]

D1 = "0123456789abcdef0123456789abcdef"
D2 = "fedcba9876543210fedcba9876543210"


class BlobStoreTests(ABC):
    """The contract of a blob backend (see the module docstring)."""

    @abstractmethod
    def raw_put(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        """Store ``data`` as blob ``digest`` without going through ``blobs``."""

    @abstractmethod
    def raw_get(self, blobs: BlobStore, digest: str) -> bytes | None:
        """The bytes stored for blob ``digest`` (None if none), not through ``blobs``."""

    # -- writing: temporary object, close, promote ------------------------------------------
    def test_promote_stores_the_bytes(self, blobs: BlobStore) -> None:
        tmp = blobs.begin()
        tmp.file.write(b"hello ")
        tmp.file.write(b"world")
        assert self.raw_get(blobs, D1) is None  # nothing visible before the promotion
        tmp.promote(D1)
        assert self.raw_get(blobs, D1) == b"hello world"
        assert blobs.exists(D1)
        assert [b.key for b in blobs.list_temps()] == []

    def test_a_temporary_object_is_listed_until_promoted(self, blobs: BlobStore) -> None:
        tmp = blobs.begin("t" * 32)
        tmp.file.write(b"partial")
        tmp.close()
        assert [t.key for t in blobs.list_temps()] == ["t" * 32]
        assert [b.key for b in blobs.list_blobs()] == []
        with contextlib.closing(blobs.open_temp(tmp.id)) as f:
            assert f.read() == b"partial"
        tmp.promote(D1)
        assert [t.key for t in blobs.list_temps()] == []
        assert [b.key for b in blobs.list_blobs()] == [D1]

    def test_abort_drops_the_temporary_object(self, blobs: BlobStore) -> None:
        tmp = blobs.begin()
        tmp.file.write(b"never")
        tmp.abort()
        assert list(blobs.list_temps()) == []
        assert list(blobs.list_blobs()) == []

    def test_delete_temp(self, blobs: BlobStore) -> None:
        tmp = blobs.begin()
        tmp.file.write(b"left by a crash")
        tmp.close()
        blobs.delete_temp(tmp.id)
        blobs.delete_temp(tmp.id)  # missing is fine
        assert list(blobs.list_temps()) == []

    def test_promoting_an_existing_digest_replaces_it(self, blobs: BlobStore) -> None:
        # same digest, same content in real use; the backend must not refuse it
        blobs.write_bytes(b"first", D1)
        blobs.write_bytes(b"second", D1)
        assert self.raw_get(blobs, D1) == b"second"
        assert [b.key for b in blobs.list_blobs()] == [D1]

    def test_a_bad_digest_is_refused(self, blobs: BlobStore) -> None:
        tmp = blobs.begin()
        tmp.file.write(b"x")
        with pytest.raises(SafepointError):
            tmp.promote("../../etc/passwd")
        tmp.abort()

    # -- reading --------------------------------------------------------------------------
    def test_read_what_was_stored_raw(self, blobs: BlobStore) -> None:
        data = bytes(range(256)) * 100
        self.raw_put(blobs, D2, data)
        assert blobs.exists(D2)
        assert blobs.read(D2) == data
        with contextlib.closing(blobs.open(D2)) as f:
            f.seek(256)
            assert f.read(4) == bytes(range(4))
            f.seek(-2, 2)
            assert f.read() == bytes([254, 255])
        assert [(b.key, b.size) for b in blobs.list_blobs()] == [(D2, len(data))]
        path = blobs.local_path(D2)
        if path is not None:
            with open(path, "rb") as f:
                assert f.read() == data

    def test_a_missing_blob(self, blobs: BlobStore) -> None:
        assert not blobs.exists(D1)
        with pytest.raises(NotFoundError):
            blobs.read(D1)

    def test_delete(self, blobs: BlobStore) -> None:
        blobs.write_bytes(b"gone soon", D1)
        blobs.write_bytes(b"stays", D2)
        blobs.delete(D1)
        blobs.delete(D1)  # missing is fine
        assert not blobs.exists(D1) and self.raw_get(blobs, D1) is None
        assert [b.key for b in blobs.list_blobs()] == [D2]

    def test_listing_gives_sizes_and_times(self, blobs: BlobStore) -> None:
        blobs.write_bytes(b"12345", D1)
        (info,) = list(blobs.list_blobs())
        assert (info.key, info.size) == (D1, 5)
        assert info.mtime > 0

    def test_check(self, blobs: BlobStore) -> None:
        blobs.check()  # a reachable backend does not raise

    # -- small objects: store marker, version records, journal ------------------------------
    def _objects(self, blobs: BlobStore) -> None:
        if not blobs.supports_objects:
            pytest.skip("this backend keeps no small objects (its stores cannot be recovered)")

    def test_objects_round_trip(self, blobs: BlobStore) -> None:
        self._objects(blobs)
        assert blobs.read_object("records/p/m/@1.json") is None
        blobs.write_object("records/p/m/@1.json", b"one")
        blobs.write_object("records/p/m/@1.json", b"one, again")  # replaces
        assert blobs.read_object("records/p/m/@1.json") == b"one, again"
        assert blobs.create_object("records/p/x.json", b"first") is True
        assert blobs.create_object("records/p/x.json", b"second") is False
        assert blobs.read_object("records/p/x.json") == b"first"
        keys = sorted(o.key for o in blobs.list_objects("records"))
        assert keys == ["records/p/m/@1.json", "records/p/x.json"]
        assert blobs.any_object("records") and not blobs.any_object("journal")
        blobs.delete_object("records/p/x.json")
        blobs.delete_object("records/p/x.json")  # missing is fine
        assert [o.key for o in blobs.list_objects("records")] == ["records/p/m/@1.json"]

    def test_objects_are_not_blobs(self, blobs: BlobStore) -> None:
        self._objects(blobs)
        blobs.write_object("journal/p/m/1.json", b"{}")
        assert list(blobs.list_blobs()) == [] and list(blobs.list_temps()) == []
        assert list(blobs.list_parts("journal")) == []
