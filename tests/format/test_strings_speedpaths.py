"""The string column's concatenated form (``t`` text + ``l`` narrow lengths) and
the columnar dict's build.

New files store concatenated strings as per-item lengths of 1, 2 or 4 bytes
instead of int64 offsets; files holding offsets (``b`` + ``o``) still load.
Both decoders (Python str list, Arrow) read every form and refuse crafted
lengths before anything is allocated from them. Large columnar dicts are built
through a table that keeps hashes; they must equal ``dict(zip(keys, values))``
item for item and in order, and refuse duplicate or missing keys as before.
Categorical codes are range-checked in one pass when none is missing; crafted
codes of every integer width are refused as before.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint.errors import FormatError
from safepoint.format.decoder import Decoder
from safepoint.format.handlers import strings as strings_mod
from safepoint.format.handlers.builtins import DictHandler
from safepoint.format.handlers.strings import (
    decode_strings,
    decode_strings_arrow,
    encode_arrow_strings,
    encode_strings,
)
from safepoint.format.reader import open_reader
from safepoint.format.writer import BufferSink

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")


def _crafted(fields: dict[str, Any], buffers: dict[str, Any]) -> tuple[dict[str, Any], Decoder]:
    """A node of ``fields`` plus one buffer per entry of ``buffers``, in a real file."""
    bio = io.BytesIO()
    sink = BufferSink(bio)
    node = dict(fields)
    for key, data in buffers.items():
        node[key] = sink.add(data)
    sink.finish({"format": [1, 0], "root": None, "types": [], "shared": []})
    return node, Decoder(open_reader(bio.getvalue()), [])


def _both(fields: dict[str, Any], buffers: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Decode the crafted column with the Python and the Arrow decoder."""
    as_list = decode_strings(*_crafted(fields, buffers))
    as_arrow = decode_strings_arrow(*_crafted(fields, buffers))
    return as_list, as_arrow.to_pylist()


def _encoded(values: list[Any], arrow: bool = False) -> tuple[dict[str, Any], Decoder]:
    """Encode ``values`` with the general (or Arrow) encoder into a real file."""
    from safepoint.format.encoder import Encoder

    bio = io.BytesIO()
    sink = BufferSink(bio)
    enc = Encoder(sink)
    data = pa.array(values, type=pa.large_string()) if arrow else values
    node = encode_arrow_strings(data, enc) if arrow else encode_strings(values, enc)
    sink.finish({"format": [1, 0], "root": None, "types": [], "shared": []})
    return node, Decoder(open_reader(bio.getvalue()), [])


# -- the concatenated form, written ------------------------------------------------------
@pytest.mark.parametrize(
    ("longest", "width"), [(1, 1), (255, 1), (256, 2), (65_535, 2), (65_536, 4)]
)
def test_nul_inside_strings_use_the_narrowest_lengths(longest: int, width: int) -> None:
    values = ["a\x00b", "x" * longest, "", "é\x00"]
    node, dec = _encoded(values)
    assert node["lw"] == width and "o" not in node and "b" not in node
    assert decode_strings(node, dec) == values
    node, dec = _encoded(values)
    assert decode_strings_arrow(node, dec).to_pylist() == values


@pytest.mark.parametrize(
    "values",
    [
        ["a", "bb", "", "ccc"],
        ["é", "日本語", "", "a\u00e9b", "😀x"],
        ["x", None, "yz", None, ""],
        ["a\x00b", "", "\x00"],
        ["y" * 300, "z"],
    ],
)
def test_arrow_encoder_writes_lengths_that_both_decoders_read(values: list[Any]) -> None:
    node, dec = _encoded(values, arrow=True)
    assert {"t", "l", "lw"} <= set(node) and "o" not in node
    assert decode_strings(node, dec) == values
    node, dec = _encoded(values, arrow=True)
    assert decode_strings_arrow(node, dec).to_pylist() == values


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()])
@pytest.mark.parametrize("longest", [3, 300, 70_000])
@pytest.mark.parametrize("sliced", [False, True])
def test_arrow_lengths_worked_out_by_blocks_match_the_list_encoder(
    monkeypatch: pytest.MonkeyPatch, arrow_type: Any, longest: int, sliced: bool
) -> None:
    """Lengths found a block at a time (blocks of 7 items here, so that the longest
    item falls in a later block and a block ends mid-column), for both Arrow offset
    widths and for a slice whose offsets do not start at 0: the node the list
    encoder's lengths form would hold for the same values, byte for byte."""
    monkeypatch.setattr(strings_mod, "_LENGTHS_BLOCK", 7)
    values = [f"v{i}" * (i % 5) for i in range(40)] + ["é" * longest] + ["a", "", "日本"]
    array = pa.array(["skipped", "x" * 9, *values], type=arrow_type)
    array = array.slice(2) if sliced else pa.array(values, type=arrow_type)
    node, dec = _encoded_array(array)
    width = 1 if longest < 256 else 2 if longest < 65_536 else 4
    assert node["lw"] == width
    lengths = np.array([len(v) for v in values], dtype=f"<u{width}")
    assert bytes(dec.raw(node["l"])) == lengths.tobytes()
    assert bytes(dec.raw(node["t"])) == "".join(values).encode()
    # a decoder reads each buffer once: a fresh file for each decoder
    node, dec = _encoded_array(array)
    assert decode_strings(node, dec) == values
    node, dec = _encoded_array(array)
    assert decode_strings_arrow(node, dec).to_pylist() == values


def test_arrow_offsets_form_past_the_lengths_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Columns of too many items for lengths store int64 offsets from 0 (a slice's
    offsets rebased), which both decoders read."""
    monkeypatch.setattr(strings_mod, "_MAX_LENGTHS_ITEMS", 3)
    values = ["ab", "", "é€", "z" * 10]
    array = pa.array(["skip", *values], type=pa.string()).slice(1)
    node, dec = _encoded_array(array)
    assert "o" in node and "l" not in node
    offsets = np.frombuffer(bytes(dec.raw(node["o"])), dtype="<i8")
    assert offsets.tolist() == [0, 2, 2, 4, 14]
    node, dec = _encoded_array(array)
    assert decode_strings(node, dec) == values
    node, dec = _encoded_array(array)
    assert decode_strings_arrow(node, dec).to_pylist() == values


def _encoded_array(array: Any) -> tuple[dict[str, Any], Decoder]:
    from safepoint.format.encoder import Encoder

    bio = io.BytesIO()
    sink = BufferSink(bio)
    node = encode_arrow_strings(array, Encoder(sink))
    sink.finish({"format": [1, 0], "root": None, "types": [], "shared": []})
    return node, Decoder(open_reader(bio.getvalue()), [])


def test_pandas_str_column_round_trips_through_lengths() -> None:
    s = pd.Series([f"user_{i}" for i in range(50_000)] + ["é", None, "a\x00"], dtype="str")
    out = sp.loads(sp.dumps(s))
    pd.testing.assert_series_equal(out, s)


# -- the older offsets form still reads ------------------------------------------------
def test_offsets_form_of_older_files_still_reads() -> None:
    text = "aé\x00b".encode()
    offsets = np.array([0, 2, 2, 4], dtype="<i8")
    got = _both({"n": 3}, {"b": text, "o": offsets})
    assert got == (["aé", "", "\x00b"], ["aé", "", "\x00b"])


def test_lengths_and_offsets_agree() -> None:
    text = "aé\x00b".encode()
    lengths = np.array([2, 0, 2], dtype="<u1")
    got = _both({"n": 3, "lw": 1}, {"t": text, "l": lengths})
    assert got == (["aé", "", "\x00b"], ["aé", "", "\x00b"])


# -- crafted lengths are refused, by both decoders ---------------------------------------
def _u(values: list[int], width: int = 1) -> np.ndarray[Any, Any]:
    return np.array(values, dtype=f"<u{width}")


@pytest.mark.parametrize(
    ("fields", "buffers", "message"),
    [
        ({"n": 2, "lw": 1}, {"t": b"abcd", "l": _u([1, 2])}, "add up to 3"),  # too few
        ({"n": 2, "lw": 1}, {"t": b"abcd", "l": _u([3, 2])}, "add up to 5"),  # past the end
        ({"n": 2, "lw": 1}, {"t": b"ab", "l": _u([255, 255])}, "add up to 510"),
        ({"n": 2, "lw": 2}, {"t": b"ab", "l": _u([1, 1], 1)}, "holds 2 bytes"),  # wrong size
        ({"n": 3, "lw": 1}, {"t": b"abc", "l": _u([1, 1])}, "holds 2 bytes"),  # too short
        ({"n": 2, "lw": 3}, {"t": b"ab", "l": b"\x01\x00\x00\x01\x00\x00"}, "width 3"),
        ({"n": 2, "lw": 8}, {"t": b"ab", "l": _u([1, 1], 8)}, "width 8"),
        ({"n": 2, "lw": True}, {"t": b"ab", "l": _u([1, 1])}, "width True"),
        ({"n": 2, "lw": "1"}, {"t": b"ab", "l": _u([1, 1])}, "width '1'"),
        ({"n": 2}, {"t": b"ab", "l": _u([1, 1])}, "width None"),
        ({"n": 2, "lw": 1}, {"b": b"ab", "l": _u([1, 1])}, "'t'"),  # text under the old key
        ({"n": 2, "lw": 1}, {"t": b"ab", "l": _u([1, 1]), "o": _u([0, 1, 2], 8)}, "both"),
        ({"n": 2, "lw": 1}, {"t": b"a\xff", "l": _u([1, 1])}, "UTF-8"),
        ({"n": 1, "lw": 1}, {"t": b"\xc3(", "l": _u([2])}, "UTF-8"),
        ({"n": -1, "lw": 1}, {"t": b"", "l": b""}, "declares -1"),
    ],
)
def test_crafted_lengths_are_refused(
    fields: dict[str, Any], buffers: dict[str, Any], message: str
) -> None:
    for decode in (decode_strings, decode_strings_arrow):
        with pytest.raises(FormatError, match=message):
            decode(*_crafted(fields, buffers))


def test_lengths_beyond_int64_offsets_are_refused_before_reading() -> None:
    for decode in (decode_strings, decode_strings_arrow):
        node, dec = _crafted({"n": 1 << 31, "lw": 4}, {"t": b"", "l": b"\x01"})
        dec.max_items = 1 << 40  # the item limit would refuse first otherwise
        with pytest.raises(FormatError, match=r"offsets needed|max_expansion"):
            decode(node, dec)


def _attacker() -> Any:
    """The adversarial suite's file editor (recomputes every checksum)."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adversarial"))
    try:
        return importlib.import_module("spcraft").Crafted
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize(
    ("lengths", "lw", "message"),
    [
        (b"\x02\x02\x03", 1, "add up to 7 characters"),  # overruns the text
        (b"\x02\x00\x02\x00\x01\x00", 2, "add up to 5 characters"),  # falls short
        (b"\x02\x02\x02", 3, "width 3"),
        (b"\x02\x02", 1, "holds 2 bytes"),
    ],
)
def test_crafted_lengths_in_a_whole_file_are_refused(lengths: bytes, lw: int, message: str) -> None:
    # checksums recomputed, as an attacker would: only the column's own checks stand
    c = _attacker().from_bytes(sp.dumps(pd.Series(["aa", "bb", "cc"], dtype="str")))
    (node,) = [x for x in c.walk() if x.get("@") == "pd.str"]
    c.set_raw(node["l"], lengths)
    node["lw"] = lw
    with pytest.raises(FormatError, match=message):
        sp.loads(c.to_bytes())


def test_crafted_columnar_dict_in_a_whole_file_is_refused() -> None:
    c = _attacker().from_bytes(sp.dumps({f"k{i:05d}": i for i in range(5_000)}))
    (node,) = [x for x in c.walk() if x.get("@") == "dict" and "ks" in x]
    text = c.raw(node["ks"]["b"]).replace(b"k00001", b"k00000")
    c.set_raw(node["ks"]["b"], text)
    with pytest.raises(FormatError, match="duplicate keys"):
        sp.loads(c.to_bytes())


# -- columnar dicts ----------------------------------------------------------------------
@pytest.mark.parametrize("n", [32, 4095, 4096, 50_000])
@pytest.mark.parametrize("kind", [int, float])
def test_columnar_dict_keeps_items_and_order(n: int, kind: type) -> None:
    rng = np.random.default_rng(n)
    keys = [f"t{j}" for j in rng.permutation(n).tolist()]
    d = {k: kind(v) for k, v in zip(keys, rng.permutation(n).tolist(), strict=True)}
    out = sp.loads(sp.dumps({"vocab": d}))["vocab"]
    assert type(out) is dict
    assert list(out.items()) == list(d.items())
    assert all(type(v) is kind for v in out.values())
    assert None not in out and out["t0"] == d["t0"]
    out["new"] = kind(1)  # an ordinary dict afterwards
    del out["t1"]
    assert len(out) == n


def _crafted_dict(keys: list[Any], vk: str = "int") -> tuple[dict[str, Any], Decoder]:
    from safepoint.format.encoder import Encoder

    bio = io.BytesIO()
    sink = BufferSink(bio)
    enc = Encoder(sink)
    node = {"ks": encode_strings(keys, enc), "vk": vk}
    node["vn"] = sink.add(np.arange(len(keys), dtype="<i8" if vk == "int" else "<f8"))
    sink.finish({"format": [1, 0], "root": None, "types": [], "shared": []})
    return node, Decoder(open_reader(bio.getvalue()), [])


@pytest.mark.parametrize("n", [40, 5_000])
def test_columnar_dict_with_duplicate_keys_is_refused(n: int) -> None:
    keys = [f"k{i}" for i in range(n)]
    keys[-1] = keys[0]
    with pytest.raises(FormatError, match="duplicate keys"):
        DictHandler.decode(*_crafted_dict(keys))


@pytest.mark.parametrize("n", [40, 5_000])
@pytest.mark.parametrize("missing", [None, float("nan")])
def test_columnar_dict_with_missing_keys_is_refused(n: int, missing: Any) -> None:
    keys: list[Any] = [f"k{i}" for i in range(n)]
    keys[n // 2] = missing
    with pytest.raises(FormatError, match="missing keys"):
        DictHandler.decode(*_crafted_dict(keys))


def test_columnar_dict_of_nul_keys_reads_through_lengths() -> None:
    keys = [f"k\x00{i}" for i in range(5_000)]
    node, dec = _crafted_dict(keys)
    assert "l" in node["ks"]
    out = DictHandler.decode(node, dec)
    assert list(out) == keys and list(out.values()) == list(range(5_000))


# -- categorical codes, checked in one pass --------------------------------------------
@pytest.mark.parametrize("dtype", ["<i1", "<i2", ">i2", "<i4", "<i8"])
@pytest.mark.parametrize(
    ("n_cats", "bad"),
    [(3, 3), (3, -2), (3, -128), (200, -5), (1000, -5), (1000, 1000), (1000, -1000)],
)
def test_crafted_categorical_codes_are_refused(dtype: str, n_cats: int, bad: int) -> None:
    codes = np.array([0, 1, bad, -1], dtype="<i8")
    if codes.astype(dtype).astype("<i8").tolist() != codes.tolist():
        pytest.skip("the code does not fit the dtype")
    cats = [f"c{i}" for i in range(n_cats)]
    c = _attacker().from_bytes(sp.dumps(pd.Categorical.from_codes([0, 1, 2, -1], cats)))
    (node,) = [x for x in c.walk() if x.get("@") == "pd.cat"]
    c.set_array(node["k"], codes.astype(dtype))
    with pytest.raises(FormatError, match="codes out of range"):
        sp.loads(c.to_bytes())


@pytest.mark.parametrize("dtype", ["<i1", ">i2", "<i4"])
def test_categorical_codes_with_and_without_missing_load(dtype: str) -> None:
    for codes in ([0, 1, 2, 0], [0, -1, 2, -1], [-1, -1, -1, -1]):
        cat = pd.Categorical.from_codes(codes, ["a", "b", "c"])
        c = _attacker().from_bytes(sp.dumps(cat))
        (node,) = [x for x in c.walk() if x.get("@") == "pd.cat"]
        c.set_array(node["k"], np.array(codes, dtype=dtype))
        out = sp.loads(c.to_bytes())
        assert out.codes.tolist() == codes and list(out.categories) == ["a", "b", "c"]
