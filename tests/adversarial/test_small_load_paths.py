"""The fast paths of a small load stay as strict as the general ones.

A file given as ``bytes`` (or a small file, read whole) has buffers that cannot
change: each raw buffer is checked where it lies and copied in one call
(reader.Reader.read_array, ``frozen``). Every attack here runs on that path, and
the general path (``Reader._fill``) is made to fail loudly, so that a refusal
proves the fast path refused it. The manifest is parsed by the C scanner with the
duplicate-key hook (tests/adversarial/test_corpus.py covers its duplicates).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spcraft import Crafted

import safepoint as sp
from safepoint.errors import FormatError, IntegrityError, SafepointError
from safepoint.format import reader as reader_mod
from safepoint.format.reader import Reader, open_reader

OBJ = {"w": np.arange(64, dtype=np.float64), "b": np.arange(12, dtype=np.int32).reshape(3, 4)}


@pytest.fixture
def fast_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The general read path raises: whatever loads or is refused took the fast one."""

    def general_path(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the general read path was taken")

    monkeypatch.setattr(Reader, "_fill", general_path)


def _nd_nodes(c: Crafted) -> list[dict[str, Any]]:
    return [n for n in c.walk() if n.get("@") == "nd"]


def _refused(data: Any, exc: type[SafepointError], match: str) -> None:
    with pytest.raises(exc) as info:
        sp.loads(data) if not isinstance(data, Path) else sp.load(data)
    assert match.lower() in str(info.value).lower(), str(info.value)


def test_bytes_take_the_fast_path_and_give_private_writable_arrays(fast_only: None) -> None:
    data = sp.dumps(OBJ)
    assert open_reader(data).source.frozen is not None
    out = sp.loads(data)
    for key, want in OBJ.items():
        arr = out[key]
        np.testing.assert_array_equal(arr, want)
        assert arr.dtype == want.dtype and arr.shape == want.shape
        assert arr.flags.writeable and arr.flags.owndata and arr.base is None
    before = bytes(data)
    out["w"][:] = -1.0  # the file's bytes are not the array's memory
    assert data == before


def test_a_flipped_byte_fails_its_checksum_on_the_fast_path(fast_only: None) -> None:
    data = bytearray(sp.dumps(OBJ))
    c = Crafted.from_bytes(bytes(data))
    node = _nd_nodes(c)[0]
    offset = open_reader(bytes(data)).buffers[node["b"]].offset
    data[offset + 3] ^= 0x40
    _refused(bytes(data), IntegrityError, "fails its checksum")


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ([65], None),  # one item more than the buffer holds
        ([8, 9], None),
        ([64], "<f4"),  # half the bytes: a dtype lie
        ([64], "<c16"),  # twice the bytes
        ([2**40, 2**40], None),  # a product far beyond the buffer
        ([0, 2**61], None),  # empty, yet impossibly large
    ],
)
def test_shape_and_dtype_lies_are_refused_before_allocation(
    fast_only: None, shape: list[int], dtype: str | None
) -> None:
    c = Crafted.from_bytes(sp.dumps(OBJ))
    node = next(n for n in _nd_nodes(c) if n["d"] == "<f8")
    node["s"] = shape
    if dtype is not None:
        node["d"] = dtype
    _refused(c.to_bytes(), FormatError, "buffer")


def test_a_buffer_used_twice_is_refused_on_the_fast_path(fast_only: None) -> None:
    c = Crafted.from_bytes(sp.dumps(OBJ))
    first, second = _nd_nodes(c)
    second.update(s=first["s"], d=first["d"], b=first["b"])
    _refused(c.to_bytes(), FormatError, "referenced twice")


@pytest.mark.parametrize("where", ["past_manifest", "in_header", "past_end"])
def test_a_buffer_outside_the_data_region_is_refused(fast_only: None, where: str) -> None:
    c = Crafted.from_bytes(sp.dumps(OBJ))

    def move(table: list[list[Any]]) -> None:
        row = table[0]
        if where == "in_header":
            row[0] = 0
        elif where == "past_manifest":
            row[0] += 1 << 20
        else:
            row[1] = row[2] = 1 << 40  # runs far past the end of the file

    _refused(c.to_bytes(table_hook=move), FormatError, "outside the data region")


def test_overlapping_buffers_out_of_order_are_refused(fast_only: None) -> None:
    """The table check skips its sort when offsets ascend: out of order, it sorts."""
    c = Crafted.from_bytes(sp.dumps(OBJ))

    def overlap(table: list[list[Any]]) -> None:
        # the second buffer starts where the first does: two views of one span
        table[0], table[1] = table[1], table[0]
        table[0][0] = table[1][0]

    _refused(c.to_bytes(table_hook=overlap), FormatError, "overlap")


def test_a_truncated_file_is_refused_before_any_buffer() -> None:
    data = sp.dumps(OBJ)
    for cut in (1, 64, len(data) // 2):
        with pytest.raises(FormatError):
            sp.loads(data[:-cut])


def test_a_truncated_buffer_view_is_refused_on_the_fast_path(
    fast_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a row ever to pass the table check and still run past the bytes, the fast
    path's own length check refuses it (defence in depth under the table check)."""
    data = sp.dumps(OBJ)
    original = Reader._parse_buffers

    def lengthen(self: Reader, table: Any, manifest_offset: int) -> Any:
        rows = original(self, table, manifest_offset)
        last = rows[-1]
        stretched = self.source.size - last.offset + 8
        rows[-1] = last._replace(length=stretched, raw_length=stretched)
        return rows

    monkeypatch.setattr(Reader, "_parse_buffers", lengthen)
    c = Crafted.from_bytes(data)
    node = next(n for n in _nd_nodes(c) if n["b"] == len(c.payloads) - 1)
    itemsize = np.dtype(node["d"]).itemsize
    stretched = len(data) - open_reader(data).buffers[-1].offset + 8
    assert stretched % itemsize == 0
    node["s"] = [stretched // itemsize]
    with pytest.raises(FormatError, match="ended early"):
        sp.loads(c.to_bytes())


def test_mutable_bytes_take_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bytearray (or a view of one) may change under the load: its buffers are
    copied first and the copy is checked, as before."""
    data = sp.dumps(OBJ)
    calls: list[int] = []
    original = Reader._fill

    def counted(self: Reader, index: int, *args: Any) -> None:
        calls.append(index)
        original(self, index, *args)

    monkeypatch.setattr(Reader, "_fill", counted)
    for src in (bytearray(data), memoryview(bytearray(data))):
        assert open_reader(src).source.frozen is None
        calls.clear()
        out = sp.loads(src)
        np.testing.assert_array_equal(out["w"], OBJ["w"])
        assert sorted(calls) == [0, 1]


def test_a_small_file_is_read_whole_and_checked(tmp_path: Path, fast_only: None) -> None:
    path = tmp_path / "m.sp"
    sp.dump(OBJ, path)
    r = open_reader(path)
    try:
        assert r.source.frozen is not None and r.source.f is None
    finally:
        r.close()
    np.testing.assert_array_equal(sp.load(path)["b"], OBJ["b"])
    c = Crafted.from_bytes(path.read_bytes())
    offset = open_reader(path.read_bytes()).buffers[_nd_nodes(c)[1]["b"]].offset
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1
    path.write_bytes(bytes(raw))
    _refused(path, IntegrityError, "fails its checksum")


def test_a_file_above_the_whole_read_size_is_read_by_buffer(tmp_path: Path) -> None:
    path = tmp_path / "big.sp"
    sp.dump({"x": np.zeros(reader_mod._WHOLE_FILE_MAX // 8 + 64)}, path)
    assert os.path.getsize(path) > reader_mod._WHOLE_FILE_MAX
    r = open_reader(path)
    try:
        assert r.source.frozen is None and r.source.f is not None
    finally:
        r.close()
    assert sp.load(path)["x"].shape == (reader_mod._WHOLE_FILE_MAX // 8 + 64,)


def test_a_signed_file_checks_digests_on_the_fast_path(fast_only: None) -> None:
    key = b"0123456789abcdef0123456789abcdef"
    data = sp.dumps(OBJ, key=key)
    np.testing.assert_array_equal(sp.loads(data, key=key)["w"], OBJ["w"])
    c = Crafted.from_bytes(data)
    node = _nd_nodes(c)[0]
    arr = c.array(node)
    arr[0] += 1  # fresh checksum, stale signed digest and signature
    c.set_array(node, arr)
    with pytest.raises(IntegrityError):
        sp.loads(c.to_bytes(), key=key)


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((2, 3), "M8[s]"),  # no buffer protocol: frombuffer, not a memoryview
        np.zeros((2,), np.dtype(("<f8", (3,)))),  # a sub-array dtype adds dimensions
        np.zeros((4,), [("a", "<i4"), ("b", "u1")]),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(6, dtype=">u4"),
        np.zeros((0, 5)),  # empty: the general path
        np.array(["ab", "c"]),
    ],
)
def test_every_dtype_round_trips_through_the_fast_path(arr: np.ndarray[Any, Any]) -> None:
    out = sp.loads(sp.dumps({"a": arr}))["a"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
