"""The performance fast paths of the format give the same results as the general ones.

Arrow-backed pandas strings are encoded from and decoded into Arrow buffers
without Python str objects; the node they produce must be the node the general
codec reads (and vice versa), for every shape of input: ASCII and not, missing
values (with and without bytes under them), sliced and chunked arrays, NUL
inside strings, empty arrays.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest

import safepoint as sp
from safepoint.errors import FormatError
from safepoint.format.decoder import Decoder
from safepoint.format.encoder import Encoder
from safepoint.format.handlers.strings import (
    decode_strings,
    decode_strings_arrow,
    encode_arrow_strings,
    encode_strings,
)
from safepoint.format.reader import open_reader
from safepoint.format.writer import BufferSink

pa = pytest.importorskip("pyarrow")

CASES = {
    "ascii": ["a", "bb", "", "ccc"],
    "unicode": ["é", "日本語", "", "a\u00e9b", "😀x", "plain"],
    "nulls": ["x", None, "yz", None, ""],
    "nul-inside": ["a\x00b", "", "\x00", "c"],
    "all-null": [None, None],
    "single": ["only"],
    "empty-strings": ["", "", ""],
}


def _series(values: list[str | None], dtype: str) -> pd.Series:
    return pd.Series(values, dtype=dtype)


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_arrow_strings_round_trip(case: str, dtype: str) -> None:
    s = _series(CASES[case], dtype)
    out = sp.loads(sp.dumps(s))
    assert out.dtype == s.dtype
    pd.testing.assert_series_equal(out, s)
    assert out.array._pa_array.type == pa.large_string()


def _codec_round_trip(encode: Any, decode: Any, values: Any) -> Any:
    """Encode with one codec function and decode with another, through a real file."""
    bio = io.BytesIO()
    sink = BufferSink(bio)
    node = encode(values, Encoder(sink))
    sink.finish({"format": [1, 0], "root": None, "types": [], "shared": []})
    return decode(node, Decoder(open_reader(bio.getvalue()), []))


@pytest.mark.parametrize("case", sorted(CASES))
def test_arrow_and_general_codec_read_each_other(case: str) -> None:
    values = CASES[case]
    arrow = pa.array(values, type=pa.large_string())
    # written by the Arrow path, read by the general codec
    assert _codec_round_trip(encode_arrow_strings, decode_strings, arrow) == values
    # written by the general codec (NUL-joined or offsets), read by the Arrow path
    got = _codec_round_trip(encode_strings, decode_strings_arrow, values)
    assert got.equals(arrow)


def test_sliced_and_chunked_arrow_arrays() -> None:
    base = pa.chunked_array(
        [
            pa.array(["zero", "one", None, "three"], type=pa.large_string()),
            pa.array(["four", "fünf", None], type=pa.large_string()),
        ],
    )
    s = pd.Series(pd.array(base, dtype="str"))
    for part in (s, s.iloc[1:], s.iloc[3:6], s.iloc[:0]):
        out = sp.loads(sp.dumps(part))
        pd.testing.assert_series_equal(out, part)
    small = pa.array(["ab", "c", "dé"], type=pa.string()).slice(1)
    s2 = pd.Series(pd.array(pa.chunked_array([small]), dtype="string[pyarrow]"))
    pd.testing.assert_series_equal(sp.loads(sp.dumps(s2)), s2)


def test_null_slot_holding_bytes_is_stored_as_empty() -> None:
    # Arrow allows data under a null; the codec stores "" there (and keeps the null)
    offsets = pa.py_buffer(np.array([0, 2, 5, 6], dtype=np.int64))
    data = pa.py_buffer(b"abXYZc")
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little"))
    arr = pa.LargeStringArray.from_buffers(3, offsets, data, validity, 1)
    s = pd.Series(pd.array(pa.chunked_array([arr]), dtype="str"))
    out = sp.loads(sp.dumps(s))
    assert out.tolist()[0] == "ab" and out.tolist()[2] == "c" and pd.isna(out.tolist()[1])


def test_dataframe_with_arrow_strings_and_categories() -> None:
    rng = np.random.default_rng(0)
    n = 10_000
    df = pd.DataFrame(
        {
            "user": pd.array([f"user_{i}" if i % 7 else None for i in range(n)], dtype="str"),
            "city": pd.Categorical.from_codes(
                rng.integers(0, 3, n), categories=["Zürich", "Genève", "Bern"]
            ),
            "x": rng.standard_normal(n),
        }
    )
    out = sp.loads(sp.dumps(df))
    pd.testing.assert_frame_equal(out, df)
    out = sp.loads(sp.dumps(df, compress="zstd"))
    pd.testing.assert_frame_equal(out, df)


def test_mmap_load_keeps_strings_in_memory(tmp_path) -> None:
    s = _series([f"v{i}" for i in range(100_000)], "str")
    path = tmp_path / "s.sp"
    sp.dump(s, path)
    out = sp.load(path, mmap=True)
    pd.testing.assert_series_equal(out, s)


def _corrupt_text(blob: bytes, old: bytes, new: bytes) -> bytes:
    # flip bytes of the string payload and repair nothing: the buffer checksum must fail
    i = blob.index(old)
    return blob[:i] + new + blob[i + len(new) :]


def test_damaged_string_payload_is_refused() -> None:
    s = _series(["hello", "world"], "str")
    blob = _corrupt_text(sp.dumps(s), b"helloworld", b"\xff\xfe")
    with pytest.raises(sp.SafepointError):
        sp.loads(blob)


def _decode_crafted(n: int, text: bytes, offsets: list[int] | None) -> Any:
    bio = io.BytesIO()
    sink = BufferSink(bio)
    node: dict[str, Any] = {"n": n, "b": sink.add(text)}
    if offsets is not None:
        node["o"] = sink.add(np.array(offsets, dtype="<i8"))
    sink.finish({"format": [1, 0], "root": None, "types": [], "shared": []})
    return decode_strings_arrow(node, Decoder(open_reader(bio.getvalue()), []))


@pytest.mark.parametrize(
    ("n", "text", "offsets"),
    [
        (3, b"abcd", [0, 3, 1, 4]),  # decreasing offsets (ASCII: no full UTF-8 pass)
        (2, b"abcd", [0, 2, 5]),  # past the end of the text
        (2, b"abcd", [1, 2, 4]),  # not starting at 0
        (2, b"ab\xffd", [0, 2, 4]),  # not UTF-8
        (2, b"a\x00b\x00c", None),  # three items, two declared
        (1, b"\xc3(", None),  # a broken two-byte sequence
    ],
)
def test_crafted_string_columns_are_refused(n: int, text: bytes, offsets: list[int] | None) -> None:
    with pytest.raises(FormatError):
        _decode_crafted(n, text, offsets)


def test_crafted_decoder_reads_a_valid_column() -> None:
    assert _decode_crafted(2, "aé".encode() + b"b", [0, 2, 3]).to_pylist() == ["aé", "b"]


def test_large_buffers_checksummed_while_read(tmp_path) -> None:
    # above the pipelining threshold: read in chunks, hashed by a helper thread
    arr = np.random.default_rng(1).standard_normal(5_000_000)  # 40 MB
    path = tmp_path / "big.sp"
    sp.dump({"a": arr, "b": arr[:10].copy()}, path)
    np.testing.assert_array_equal(sp.load(path)["a"], arr)
    raw = bytearray(path.read_bytes())
    needle = arr[4_000_000:4_000_001].tobytes()
    at = raw.index(needle)
    raw[at] ^= 0x01  # one bit flipped deep inside the large buffer
    path.write_bytes(bytes(raw))
    with pytest.raises(sp.IntegrityError):
        sp.load(path)
