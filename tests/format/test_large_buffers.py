"""Large buffers: threaded reads, writes hashed in one pass, pooled compression.

The thresholds are module constants; these tests lower them so that small files
take the same paths as the benchmark's gigabyte arrays. The file bytes must not
depend on the path taken (nor on the number of threads).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

import safepoint as sp
from safepoint.errors import FormatError, IntegrityError
from safepoint.format import _parallel_io as pio
from safepoint.format import writer
from safepoint.format.reader import in_private_memory, open_reader

pytestmark = pytest.mark.timeout(120)

KEY = b"0123456789abcdef0123456789abcdef"
BIG = 1 << 16  # the lowered threshold
THREADS = ["1", "2", "3"]


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pio, "PARALLEL_FROM", BIG)
    monkeypatch.setattr(pio, "CHUNK", 3 * 4096)
    monkeypatch.setattr(pio, "_MIN_CHUNK", 4096)
    # not a page multiple: the one-pass write cuts parts at odd offsets
    monkeypatch.setattr(pio, "HASH_CHUNK", 3 * 4096 + 5)


def _obj() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rec = np.zeros(20_000, dtype=[("a", "<i4"), ("b", "<f8"), ("c", "u1")])
    rec["a"] = np.arange(rec.size)
    return {
        "f8": rng.standard_normal((300, 129)),  # not a multiple of the chunk size
        "i4": np.arange(50_001, dtype=np.int32),
        "fortran": np.asfortranarray(rng.standard_normal((200, 90))),
        "rec": rec,
        "be": np.arange(30_000, dtype=">u4"),
        "small": np.arange(10, dtype=np.int16),
        "exact": np.zeros(BIG, dtype=np.uint8),
        "text": "x",
    }


def _check_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            assert b[k].dtype == v.dtype and b[k].shape == v.shape, k
            np.testing.assert_array_equal(b[k], v)
        else:
            assert b[k] == v


def _buffer_of(path: Path, nbytes: int) -> tuple[int, int]:
    """(index, offset) of the first buffer of exactly ``nbytes`` stored raw."""
    r = open_reader(path)
    try:
        for i, b in enumerate(r.buffers):
            if b.codec == "raw" and b.length == nbytes:
                return i, b.offset
    finally:
        r.close()
    raise AssertionError(f"no raw buffer of {nbytes} bytes")


def _saved_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str, **dump: Any
) -> tuple[np.ndarray, Path, int, int]:
    """A file holding one 320 KB array, read with ``threads`` I/O threads: (array,
    path, buffer index, buffer offset)."""
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
    arr = np.arange(40_000, dtype=np.float64)
    path = tmp_path / "m.sp"
    sp.dump({"a": arr}, path, **dump)
    index, offset = _buffer_of(path, arr.nbytes)
    return arr, path, index, offset


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 12288, 12289, 100_000])
def test_chunked_checksum_equals_one_shot(n: int) -> None:
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    mv = memoryview(data)
    for step in (4096, 12288, 1 << 20):
        h = xxhash.xxh3_64()
        for lo in range(0, n, step):
            h.update(mv[lo : lo + step])
        assert h.hexdigest() == xxhash.xxh3_64_hexdigest(data)


@pytest.mark.parametrize("threads", THREADS)
def test_round_trip_threaded_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
    obj = _obj()
    path = tmp_path / "m.sp"
    sp.dump(obj, path)
    back = sp.load(path)
    _check_equal(obj, back)
    for k in ("f8", "i4", "rec", "be", "exact"):
        arr = back[k]
        assert arr.flags.writeable and arr.flags.c_contiguous
        assert arr.ctypes.data % mmap.PAGESIZE == 0, k  # page-aligned destination
        assert in_private_memory(arr)
    back["f8"][0, 0] = 1.0  # a normal writeable array
    # a user's binary file object takes the same path
    with open(path, "rb") as f:
        _check_equal(obj, sp.load(f))
    # in-memory sources keep theirs
    _check_equal(obj, sp.load(io.BytesIO(path.read_bytes())))
    _check_equal(obj, sp.loads(path.read_bytes()))


def test_file_bytes_do_not_depend_on_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = _obj()
    seen: dict[tuple[str, Any, Any], bytes] = {}
    for threads in THREADS:
        monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
        for compress in (None, "zstd"):
            for key in (None, KEY):
                path = tmp_path / f"{threads}-{compress}-{key is not None}.sp"
                sp.dump(obj, path, compress=compress, key=key)
                data = path.read_bytes()
                prev = seen.setdefault((str(compress), key, None), data)
                assert data == prev, (threads, compress, key)
                assert sp.dumps(obj, compress=compress, key=key) == data
                _check_equal(obj, sp.load(path, key=key))


def test_large_buffer_is_checksummed_as_one(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, 5 * BIG + 17, dtype=np.uint8)
    path = tmp_path / "m.sp"
    sp.dump({"d": data}, path)
    r = open_reader(path)
    try:
        (b,) = (b for b in r.buffers if b.length == data.nbytes)
        assert b.checksum == xxhash.xxh3_64_hexdigest(data)
    finally:
        r.close()


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_corrupt_byte_in_large_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str, where: float
) -> None:
    arr, path, _, offset = _saved_array(tmp_path, monkeypatch, threads)
    pos = offset + (arr.nbytes - 1 if where == -1 else int(where * arr.nbytes))
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="checksum"):
        sp.load(path)


@pytest.mark.parametrize("threads", THREADS)
def test_signed_digest_checked_on_threaded_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    arr, path, index, _ = _saved_array(tmp_path, monkeypatch, threads, key=KEY)
    r = open_reader(path)
    try:
        r.strong = True
        good = r.buffers[index]
        np.testing.assert_array_equal(r.read_array(index, arr.dtype, arr.shape), arr)
        r.buffers[index] = good._replace(digest="0" * 64)
        with pytest.raises(IntegrityError, match="signed digest"):
            r.read_array(index, arr.dtype, arr.shape)
        r.buffers[index] = good._replace(checksum="0" * 16)
        with pytest.raises(IntegrityError, match="checksum"):
            r.read_array(index, arr.dtype, arr.shape)
    finally:
        r.close()


@pytest.mark.parametrize("threads", THREADS)
def test_file_truncated_inside_large_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    arr, path, index, offset = _saved_array(tmp_path, monkeypatch, threads)
    r = open_reader(path)
    try:
        # the file shrinks after it was opened (and its footer read)
        os.truncate(path, offset + arr.nbytes // 2 + 5)
        with pytest.raises(FormatError, match="ended early"):
            r.read_array(index, arr.dtype, arr.shape)
    finally:
        r.close()


def test_wrapped_files_are_not_read_by_descriptor(tmp_path: Path) -> None:
    """A wrapper's fileno() may name a file with other bytes (gzip): not used."""
    obj = _obj()
    path = tmp_path / "m.sp"
    sp.dump(obj, path)

    class Wrapper(io.RawIOBase):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def seek(self, pos: int, whence: int = 0) -> int:
            return int(self.inner.seek(pos, whence))

        def tell(self) -> int:
            return int(self.inner.tell())

        def readinto(self, b: Any) -> int:
            return int(self.inner.readinto(b))

        def fileno(self) -> int:
            raise AssertionError("fileno() must not be used")

    with open(path, "rb") as f:
        _check_equal(obj, sp.load(Wrapper(f)))
    with open(path, "rb") as f:
        assert open_reader(f).source.fd() == f.fileno()


def test_mapped_arrays_are_not_private(tmp_path: Path) -> None:
    path = tmp_path / "m.sp"
    sp.dump({"a": np.arange(200_000, dtype=np.float64)}, path)  # > mmap_threshold
    assert not in_private_memory(sp.load(path, mmap=True)["a"])
    assert in_private_memory(sp.load(path)["a"])
    assert in_private_memory(np.arange(3))
    assert not in_private_memory(np.frombuffer(b"abcd", np.uint8))


class ShortWrites(io.RawIOBase):
    """A raw file that writes at most 1000 bytes per call (as raw files may)."""

    def __init__(self) -> None:
        self.out = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        part = bytes(memoryview(b).cast("B")[:1000])
        self.out += part
        return len(part)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_short_writes(monkeypatch: pytest.MonkeyPatch, threads: str, compress: Any) -> None:
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
    obj = _obj()
    f = ShortWrites()
    sp.dump(obj, f, compress=compress)
    assert bytes(f.out) == sp.dumps(obj, compress=compress)
    _check_equal(obj, sp.loads(bytes(f.out)))


@pytest.mark.parametrize("threads", THREADS)
def test_many_medium_compressed_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    """Buffers compressed on the pool are written in index order."""
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
    rng = np.random.default_rng(2)
    obj = {
        f"t{i}": (
            np.repeat(rng.integers(0, 5, 3000), i % 7 + 1)
            if i % 3
            else rng.integers(0, 1 << 62, 2000 + i)  # incompressible: stays raw
        )
        for i in range(60)
    }
    obj["large"] = np.zeros(writer._LARGE + 10, dtype=np.uint8)  # zstd's own threads
    path = tmp_path / "z.sp"
    sp.dump(obj, path, compress="zstd")
    r = open_reader(path)
    try:
        codecs = {b.codec for b in r.buffers}
        offsets = [b.offset for b in r.buffers]
    finally:
        r.close()
    assert codecs == {"raw", "zstd"}
    assert offsets == sorted(offsets)
    _check_equal(obj, sp.load(path))


def test_a_failed_write_waits_for_the_background_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker hashing a signed buffer reads the caller's memory: a write that
    fails must not return (and let the caller free it) before the worker is done."""
    done: list[bool] = []

    class Slow:
        def update(self, data: Any) -> None:
            import time

            time.sleep(0.05)
            done.append(True)

    def failing(batch: Any) -> None:
        raise OSError(28, "No space left on device")

    parts = [memoryview(bytes(10)) for _ in range(3)]
    with pytest.raises(OSError, match="No space"):
        pio.write_hashed_inline(failing, parts, (), (Slow(),), threads=2)
    # finished, or cancelled before it started (the shared pool was busy): never midway
    assert len(done) in (0, 3)


def test_failed_compression_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", "2")

    def boom(self: Any, mv: memoryview) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(writer.BufferSink, "_compress", boom)
    with pytest.raises(RuntimeError, match="boom"):
        sp.dumps({"a": np.arange(10_000)}, compress="zstd")


@pytest.mark.parametrize(
    "sizes",
    [[0], [1], [BIG], [5 * BIG + 17], [10, 0, 3 * 4096 + 5, 7], [100] * 300, [3 * BIG, 1, BIG]],
)
def test_one_pass_write_hashes_and_writes_every_byte_in_order(sizes: list[int]) -> None:
    """``write_hashed_inline``: the bytes written and hashed are the parts end to end,
    in batches that end at multiples of HASH_CHUNK in the file (many small parts go
    together), whatever offset the first byte has."""
    rng = np.random.default_rng(len(sizes))
    parts = [memoryview(rng.integers(0, 256, n, dtype=np.uint8).tobytes()) for n in sizes]
    whole = b"".join(parts)
    out = bytearray()
    batches: list[int] = []

    def write(batch: Any) -> None:
        batches.append(sum(len(b) for b in batch))
        for b in batch:
            out.extend(b)

    step = pio.HASH_CHUNK
    for start in (0, 64, step - 1, step, 5 * step + 4032):
        out.clear()
        batches.clear()
        h = xxhash.xxh3_64()
        pio.write_hashed_inline(write, parts, (h,), start=start)
        assert bytes(out) == whole
        assert h.hexdigest() == xxhash.xxh3_64_hexdigest(whole)
        # every batch but the last ends at an aligned offset, and none is empty
        ends = list(itertools.accumulate(batches, initial=start))[1:]
        assert all(e % step == 0 for e in ends[:-1])
        assert all(0 < b <= step for b in batches)
        assert len(batches) <= -(-len(whole) // step) + 1
    # a slow hasher on a worker (or inline with one thread) sees the same bytes
    for threads in (1, 2):
        strong, quick = hashlib.blake2b(digest_size=32), xxhash.xxh3_64()
        pio.write_hashed_inline(lambda b: None, parts, (quick,), (strong,), threads=threads)
        assert strong.hexdigest() == hashlib.blake2b(whole, digest_size=32).hexdigest()
        assert quick.hexdigest() == h.hexdigest()


@pytest.mark.parametrize("start", [0, 64, 4 * 4096 + 3])
def test_past_the_aligned_part_batches_are_cut_from_the_first_byte(
    start: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From ALIGNED_UPTO on (a VM that hands memory back: the first 128 MiB), a call's
    batches are HASH_CHUNK bytes counted from its first byte, whatever the offset."""
    monkeypatch.setattr(pio, "ALIGNED_UPTO", 0)
    parts = [memoryview(bytes([i % 251]) * n) for i, n in enumerate([7, 40_000, 0, 3, 20_001])]
    batches: list[int] = []
    out = bytearray()

    def write(batch: Any) -> None:
        batches.append(sum(len(b) for b in batch))
        for b in batch:
            out.extend(b)

    h = xxhash.xxh3_64()
    pio.write_hashed_inline(write, parts, (h,), start=start)
    whole = b"".join(parts)
    assert bytes(out) == whole and h.hexdigest() == xxhash.xxh3_64_hexdigest(whole)
    assert batches[:-1] == [pio.HASH_CHUNK] * (len(batches) - 1)
    assert 0 < batches[-1] <= pio.HASH_CHUNK


def test_large_writes_end_at_aligned_file_offsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved file's large buffers reach the kernel in writes that end where the file
    offset is a multiple of the write size (whole page-cache folios), whatever the
    offset a buffer starts at; only a buffer's last write may end elsewhere."""
    calls: list[tuple[int, int]] = []
    real = os.writev

    def recording(fd: int, bufs: Any) -> int:
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        n = real(fd, bufs)
        calls.append((pos, n))
        return n

    monkeypatch.setattr(os, "writev", recording)
    obj = {"text": "x" * 1000, "a": np.arange(40_001, dtype=np.float64), "b": np.ones(30_003)}
    path = tmp_path / "aligned.sp"
    sp.dump(obj, path)
    _check_equal(obj, sp.load(path))
    step = pio.HASH_CHUNK
    # in file order (padding between buffers goes through the file object), and every
    # one of them but a buffer's last is aligned
    assert all(p + n <= q for (p, n), (q, _) in itertools.pairwise(calls))
    unaligned = [(p, n) for p, n in calls if (p + n) % step]
    assert len(calls) > 20 and len(unaligned) <= 2
    assert calls[0][0] % step != 0  # the first buffer did not start aligned


@pytest.mark.parametrize("threads", THREADS)
def test_large_buffers_are_written_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: str
) -> None:
    """Large buffers and columns go through the one-pass write (write a chunk, hash
    it), whatever the threads, with the bytes of the in-memory write."""
    obj = _obj()
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
    calls: list[int] = []
    real = pio.write_hashed_inline

    def counting(write: Any, parts: Any, hashers: Any, **kw: Any) -> None:
        calls.append(len(parts))
        real(write, parts, hashers, **kw)

    monkeypatch.setattr(pio, "write_hashed_inline", counting)
    for key in (None, KEY):
        path = tmp_path / "one.sp"
        sp.dump(obj, path, key=key)
        assert path.read_bytes() == sp.dumps(obj, key=key)
        _check_equal(obj, sp.load(path, key=key))
    assert calls


@pytest.mark.parametrize("value", ["", "0", "-3", "x", "1", "8"])
def test_io_threads_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", value)
    n = pio.io_threads()
    assert n >= 1
    if value in ("1", "8"):
        assert n == int(value)


@pytest.mark.parametrize("n", [1, 4095, 4096, 1 << 20, (5 << 20) + 3])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_chunk_size(n: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pio, "CHUNK", 8 << 20)
    monkeypatch.setattr(pio, "_MIN_CHUNK", 1 << 20)
    step = pio.chunk_size(n, threads)
    assert 0 < step <= 8 << 20
    assert step % 4096 == 0 or step == n


@pytest.fixture(scope="module")
def forest() -> Any:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=1500, flip_y=0.2, random_state=0)
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y), X


def _table_parts(data: bytes) -> int:
    """How many bytes the largest buffer of the file holds (a column of tree nodes)."""
    r = open_reader(data)
    try:
        return max(b.length for b in r.buffers)
    finally:
        r.close()


@pytest.mark.parametrize("threads", THREADS)
def test_a_column_written_in_parts_to_a_file_is_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forest: Any, threads: str
) -> None:
    """A table's column goes to a plain file by writev, array after array, around
    the file object's buffer; in memory it goes through write()."""
    monkeypatch.setenv("SAFEPOINT_IO_THREADS", threads)
    model, X = forest
    want = sp.dumps(model)
    assert _table_parts(want) >= BIG  # the parts path, not the joined one
    path = tmp_path / "f.sp"
    sp.dump(model, path)
    assert path.read_bytes() == want
    np.testing.assert_array_equal(sp.load(path).predict_proba(X), model.predict_proba(X))


def test_writev_short_writes_and_many_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forest: Any
) -> None:
    """A writev that writes less than asked (a signal, the 2 GiB cap) resumes
    mid-part; more parts than IOV_MAX go in several calls."""
    model, _ = forest
    want = sp.dumps(model)
    real = os.writev
    calls: list[int] = []

    def stingy(fd: int, bufs: list[Any]) -> int:
        calls.append(len(bufs))
        # at most 3 parts and 5,000 bytes per call, cut mid-part
        head = [memoryview(b).cast("B") for b in bufs[:3]]
        budget, out = 5000, []
        for b in head:
            out.append(b[:budget])
            budget -= len(out[-1])
            if not budget:
                break
        return real(fd, out)

    monkeypatch.setattr(writer.os, "writev", stingy)
    monkeypatch.setattr(writer, "_IOV_MAX", 7)
    path = tmp_path / "f.sp"
    sp.dump(model, path)
    assert path.read_bytes() == want
    assert calls and max(calls) <= 7


def test_a_file_object_already_written_to_keeps_its_prefix(tmp_path: Path, forest: Any) -> None:
    """Writing around the buffered file object must land where the object is:
    after what the caller wrote (and has not flushed) before the dump."""
    model, _ = forest
    path = tmp_path / "f.bin"
    with open(path, "wb") as f:
        f.write(b"prefix!")
        sp.dump(model, f)
        f.write(b"suffix")
    data = path.read_bytes()
    assert data.startswith(b"prefix!") and data.endswith(b"suffix")
    assert data[7:-6] == sp.dumps(model)


@pytest.mark.parametrize("keep", [0.9, 0.0])  # 0.0: no frame is small enough, all raw
@pytest.mark.parametrize("key", [None, KEY])
def test_a_compressed_column_fed_in_parts_is_the_frame_of_the_whole(
    monkeypatch: pytest.MonkeyPatch, forest: Any, keep: float, key: Any
) -> None:
    """zstd is fed a large column array by array: the file is the one compressing
    the joined column gives (compressed, or stored raw when it does not shrink)."""
    model, X = forest
    monkeypatch.setattr(writer, "_LARGE", 8192)
    monkeypatch.setattr(writer, "_SAMPLE", 2048)
    monkeypatch.setattr(writer, "KEEP_RATIO", keep)
    fed = sp.dumps(model, compress="zstd", key=key)

    def joined(self: Any, parts: list[Any]) -> int:
        return int(self.add(b"".join(memoryview(p).cast("B") for p in parts)))

    monkeypatch.setattr(writer.BufferSink, "add_parts", joined)
    assert sp.dumps(model, compress="zstd", key=key) == fed
    r = open_reader(fed)
    try:
        codecs = {b.codec for b in r.buffers if b.length > 8192}
    finally:
        r.close()
    assert codecs == ({"zstd"} if keep else {"raw"})
    np.testing.assert_array_equal(sp.loads(fed, key=key).predict(X), model.predict(X))


def test_a_writev_that_writes_nothing_fails_instead_of_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forest: Any
) -> None:
    model, _ = forest
    monkeypatch.setattr(writer.os, "writev", lambda fd, bufs: 0)
    with pytest.raises(OSError, match="wrote nothing"):
        sp.dump(model, tmp_path / "f.sp")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_the_write_size_follows_free_page_reporting(tmp_path: Path) -> None:
    """64 KiB writes where the kernel hands free memory back to a hypervisor (the
    module parameter file exists), 1 MiB elsewhere (docs/benchmarks.md)."""
    reporting = tmp_path / "reported_kib"
    assert pio.write_chunk(str(reporting)) == 1 << 20
    reporting.write_text("0\n")
    assert pio.write_chunk(str(reporting)) == 64 << 10


class _RecordingFile(io.FileIO):
    """A real file that records the size of every write made through it."""

    sizes: list[int]

    def write(self, b: Any) -> int:  # type: ignore[override]
        self.sizes.append(len(memoryview(b).cast("B")))
        return super().write(b)


def test_buffers_larger_than_the_write_size_go_out_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A medium array (above the write size, below the large-buffer path) is written in
    chunks of at most twice the write size, and reads back equal."""
    monkeypatch.setattr(pio, "PARALLEL_FROM", 1 << 30)  # not the large-buffer path
    arr = np.arange(10 * pio.HASH_CHUNK // 8 + 3, dtype=np.float64)
    path = tmp_path / "m.sp"
    f = _RecordingFile(path, "wb")
    f.sizes = []
    with f:
        sp.dump({"a": arr}, f)
    assert max(f.sizes) < 2 * pio.HASH_CHUNK
    assert np.array_equal(sp.load(path)["a"], arr)
