"""The built-in blob backends pass the public blob backend suite (BlobStoreTests), each
checked against its storage read and written without the backend."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from safepoint.errors import NotFoundError
from safepoint.stores.blobs import BlobInfo, BlobStore, FsspecBlobs, LocalBlobs, TempBlob
from safepoint.testing import BlobStoreTests


class TestLocalBlobs(BlobStoreTests):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return LocalBlobs(str(tmp_path / "store"))

    def _path(self, blobs: BlobStore, digest: str) -> Path:
        # the documented layout: blobs/ab/ab12...ef.sp under the store folder
        return Path(blobs.url) / "blobs" / digest[:2] / f"{digest}.sp"

    def raw_put(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        path = self._path(blobs, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def raw_get(self, blobs: BlobStore, digest: str) -> bytes | None:
        path = self._path(blobs, digest)
        return path.read_bytes() if path.exists() else None


class TestMemoryBlobs(BlobStoreTests):
    @pytest.fixture
    def blobs(self) -> BlobStore:
        return FsspecBlobs(f"memory://blob-tests-{uuid.uuid4().hex}")

    def raw_put(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        import fsspec

        fsspec.filesystem("memory").pipe_file(self._key(blobs, digest), data)

    def raw_get(self, blobs: BlobStore, digest: str) -> bytes | None:
        import fsspec

        fs = fsspec.filesystem("memory")
        key = self._key(blobs, digest)
        return bytes(fs.cat_file(key)) if fs.exists(key) else None

    def _key(self, blobs: BlobStore, digest: str) -> str:
        root = blobs.url[len("memory://") :]
        return f"/{root}/blobs/{digest[:2]}/{digest}.sp"


class TestS3Blobs(BlobStoreTests):
    """Against a moto S3 server, checked with a boto3 client of its own."""

    @pytest.fixture
    def blobs(self, s3_storage_options: dict[str, Any], s3_bucket: str) -> BlobStore:
        self.bucket = s3_bucket
        return FsspecBlobs(f"s3://{s3_bucket}/models", s3_storage_options)

    @pytest.fixture(autouse=True)
    def _client(self, s3_client: Any) -> None:
        self.client = s3_client

    def _key(self, digest: str) -> str:
        return f"models/blobs/{digest[:2]}/{digest}.sp"

    def raw_put(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(digest), Body=data)

    def raw_get(self, blobs: BlobStore, digest: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(digest))
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(obj["Body"].read())


def test_every_abstract_method_is_public() -> None:
    # a third party implements these: none may be private
    assert BlobStore.__abstractmethods__, "BlobStore declares its contract"
    assert all(not m.startswith("_") for m in BlobStore.__abstractmethods__)


class DictBlobs(BlobStore):
    """A third-party backend written from the public ABC alone: blobs in dicts."""

    is_local = False
    is_remote = False
    supports_objects = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.blobs: dict[str, tuple[bytes, float]] = {}
        self.temps: dict[str, tuple[bytes, float]] = {}
        self.objects: dict[str, tuple[bytes, float]] = {}

    def begin(self, tmp_id: str | None = None) -> TempBlob:
        tmp_id = tmp_id or uuid.uuid4().hex
        self.temps[tmp_id] = (b"", time.time())
        return TempBlob(self, tmp_id, io.BytesIO())

    def close_temp(self, tmp: TempBlob, durable: bool) -> None:
        self.temps[tmp.id] = (tmp.file.getvalue(), time.time())  # type: ignore[attr-defined]

    def promote_temp(self, tmp_id: str, digest: str, durable: bool) -> None:
        self.blobs[digest] = (self.temps.pop(tmp_id)[0], time.time())

    def open_temp(self, tmp_id: str) -> BinaryIO:
        return io.BytesIO(self.temps[tmp_id][0])

    def open(self, digest: str) -> BinaryIO:
        if digest not in self.blobs:
            raise NotFoundError(f"no blob {digest}")
        return io.BytesIO(self.blobs[digest][0])

    def exists(self, digest: str) -> bool:
        return digest in self.blobs

    def delete(self, digest: str) -> None:
        self.blobs.pop(digest, None)

    def list_blobs(self) -> Iterator[BlobInfo]:
        return iter([BlobInfo(k, len(v), t) for k, (v, t) in sorted(self.blobs.items())])

    def list_temps(self) -> Iterator[BlobInfo]:
        return iter([BlobInfo(k, len(v), t) for k, (v, t) in sorted(self.temps.items())])

    def delete_temp(self, tmp_id: str) -> None:
        self.temps.pop(tmp_id, None)

    def check(self) -> None:
        pass

    def write_object(self, key: str, data: bytes) -> None:
        self.objects[key] = (bytes(data), time.time())

    def create_object(self, key: str, data: bytes) -> bool:
        if key in self.objects:
            return False
        self.write_object(key, data)
        return True

    def read_object(self, key: str) -> bytes | None:
        return self.objects[key][0] if key in self.objects else None

    def list_objects(self, prefix: str) -> Iterator[BlobInfo]:
        return iter(
            [
                BlobInfo(k, len(v), t)
                for k, (v, t) in sorted(self.objects.items())
                if k.startswith(prefix + "/")
            ]
        )

    def delete_object(self, key: str) -> None:
        self.objects.pop(key, None)


class TestDictBlobs(BlobStoreTests):
    @pytest.fixture
    def blobs(self) -> BlobStore:
        return DictBlobs("dict://tests")

    def raw_put(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(blobs, DictBlobs)
        blobs.blobs[digest] = (data, time.time())

    def raw_get(self, blobs: BlobStore, digest: str) -> bytes | None:
        assert isinstance(blobs, DictBlobs)
        return blobs.blobs[digest][0] if digest in blobs.blobs else None


def test_a_third_party_backend_serves_a_whole_store(tmp_path: Path) -> None:
    """A backend built from the public ABC alone: put, put_file, get, gc, check."""
    import numpy as np

    import safepoint as sp
    from safepoint.stores import register_blob_backend

    shared: dict[str, DictBlobs] = {}

    def factory(url: str, opts: Any, create: bool = True) -> BlobStore:
        return shared.setdefault(url, DictBlobs(url))

    register_blob_backend("dicttest", factory)
    store = sp.Store("dicttest://one", metadata=f"sqlite:///{tmp_path}/catalog.db")
    mv = store.put("p/m", {"w": np.arange(4)})
    assert shared["dicttest://one"].exists(mv.digest)
    src = tmp_path / "file.sp"
    sp.dump({"w": np.arange(3)}, str(src))
    assert store.put_file("p/f", str(src)).version == 1
    np.testing.assert_array_equal(store.get("p/f")["w"], np.arange(3))
    store.delete("p/m", 1)
    assert store.gc(grace=0).deleted_blobs == [mv.digest]
    assert store.check().ok
