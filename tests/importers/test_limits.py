"""Bounded sizes and malformed streams: refused before allocation, never a crash."""

from __future__ import annotations

import bz2
import gzip
import io
import pickle
import random
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import pytest

import safepoint as sp
from safepoint.errors import FormatError, LimitExceededError, SafepointError
from safepoint.importers import ConvertLimits
from safepoint.importers.audit import audit
from safepoint.importers.construct import Constructor
from safepoint.importers.pickle_parser import PickleParser


def parse(data: bytes) -> object:
    return PickleParser(data, joblib=True).parse()


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b".",  # BINBYTES8
        b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b".",  # BINUNICODE8
        b"\x80\x05\x96" + struct.pack("<Q", 2**63) + b".",  # BYTEARRAY8
        b"\x80\x03B" + struct.pack("<I", 2**32 - 1) + b".",  # BINBYTES
        b"\x80\x02T" + struct.pack("<i", 2**31 - 1) + b".",  # BINSTRING
        b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b".",  # LONG4
        b"\x80\x04\x95" + struct.pack("<Q", 2**60) + b"N.",  # FRAME
    ],
)
def test_absurd_lengths_are_refused_before_allocation(data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"declares|remain|LONG4"):
            parse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_big_integers_are_bounded() -> None:
    with pytest.raises(LimitExceededError):
        parse(b"\x80\x02\x8b" + struct.pack("<i", 70_000) + b"\x01" * 70_000 + b".")
    with pytest.raises(SafepointError):
        parse(b"I" + b"9" * 5000 + b"\n.")
    assert parse(b"\x80\x02\x8b" + struct.pack("<i", 300) + b"\x01" * 300 + b".") > 2**2000


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x02",
        b"R.",
        b"\x80\x02.",
        b"t.",
        b"(.",
        b"\xff.",
        b"\x80\x06N.",
        b"\x80\x02h\x05.",
        b"\x80\x05\x97.",
        b"\x80\x02N\x98.",
        b"\x80\x04K\x01K\x02\x93.",
        b"\x80\x02]N\x90.",
        b"\x80\x02Nb.",
        b"\x80\x02(K\x01d.",
        b"cos\nsystem",
        b"S'unterminated\n.",
        b"I12x\n.",
        b"F1.5.3\n.",
        b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
    ],
)
def test_malformed_streams(data: bytes) -> None:
    with pytest.raises(FormatError):
        root = parse(data)
        res = audit(root)
        if res.safe:
            Constructor(res).build(root)


def _mutations(seed: int, n: int) -> list[bytes]:
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(max_depth=2).fit([[0, 1], [1, 0], [1, 1], [0, 0]], [0, 1, 1, 0])
    rng = random.Random(seed)
    out = []
    for protocol in (0, 2, 5):
        base = bytearray(pickle.dumps({"m": model, "v": [1.5, "x", b"y"]}, protocol=protocol))
        for _ in range(n):
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            out.append(bytes(data))
        out += [bytes(base[:k]) for k in range(0, len(base), max(1, len(base) // 60))]
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupted_and_truncated_streams_never_crash() -> None:
    """Random byte flips and truncations: a SafepointError or a valid object, nothing else
    (no IndexError/KeyError/MemoryError/segfault from deep inside)."""
    refused = 0
    for data in _mutations(7, 150):
        try:
            root = parse(data)
            res = audit(root)
            if res.safe:
                Constructor(res).build(root)
        except SafepointError:
            refused += 1
    assert refused > 0


def test_deep_nesting_is_bounded() -> None:
    data = b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."
    root = parse(data)
    res = audit(root)  # iterative: no recursion limit
    assert res.safe
    with pytest.raises(LimitExceededError):
        Constructor(res).build(root)


def test_reference_cycles_are_refused() -> None:
    a: list[object] = []
    a.append(a)
    root = parse(pickle.dumps(a, protocol=4))
    with pytest.raises(FormatError, match="cycle"):
        Constructor(audit(root)).build(root)


def test_memo_fan_out_is_not_exponential() -> None:
    # each level refers to the previous one twice: 2**40 leaves if expanded
    level: list[object] = [1]
    for _ in range(40):
        level = [level, level]
    data = pickle.dumps(level, protocol=4)
    root = parse(data)
    res = audit(root)
    assert res.n_nodes == 41
    out = Constructor(res).build(root)
    assert out[0] is out[1]


def test_joblib_wrapper_with_absurd_shape(tmp: Path) -> None:
    src = tmp / "a.joblib"
    joblib.dump(np.arange(4.0), src)
    data = src.read_bytes()
    # rewrite the shape tuple (4,) as (2**40,): the data would need 8 TiB
    needle = b"K\x04\x85"
    assert data.count(needle) == 1
    bad = data.replace(needle, b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85")
    src.write_bytes(bad)
    with pytest.raises(FormatError, match="joblib array"):
        sp.convert(src, tmp / "a.sp")


def test_array_data_must_match_shape(tmp: Path) -> None:
    data = pickle.dumps(np.arange(4.0), protocol=5)
    bad = data.replace(b"K\x04\x85", b"K\x05\x85")
    src = tmp / "a.pkl"
    src.write_bytes(bad)
    with pytest.raises(FormatError, match="bytes"):
        sp.convert(src, tmp / "a.sp")


def test_too_many_dimensions(tmp: Path) -> None:
    src = tmp / "a.joblib"
    joblib.dump(np.zeros((1,) * 20), src)
    with pytest.raises(LimitExceededError):
        sp.convert(src, tmp / "a.sp", limits=ConvertLimits(max_ndim=8))
    # plain pickles: checked when the array call is classified
    root = PickleParser(pickle.dumps(np.zeros((1,) * 40), protocol=2)).parse()
    assert any("dimensions" in p for p in audit(root).problems)


def _zlib_bomb(path: Path, total: int) -> None:
    comp = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(comp.compress(b"\x80\x04\x8e" + struct.pack("<Q", total)))
        chunk = bytes(1 << 20)
        for _ in range(total >> 20):
            f.write(comp.compress(chunk))
        f.write(comp.flush())


@pytest.mark.slow
def test_decompression_bomb_stops_at_the_limit(tmp: Path) -> None:
    src = tmp / "bomb.joblib"
    _zlib_bomb(src, 72 << 20)
    assert src.stat().st_size < 200_000
    with pytest.raises(LimitExceededError, match=r"decompress|expands"):
        sp.convert(src, tmp / "b.sp", limits=ConvertLimits(max_bytes=32 << 20))
    with pytest.raises(LimitExceededError, match="expands"):
        sp.convert(src, tmp / "b.sp", limits=ConvertLimits(max_compression_ratio=100))
    [res] = sp.scan([src], limits=ConvertLimits(max_bytes=32 << 20))
    assert res.verdict == "refused"


def test_bz2_bomb(tmp: Path) -> None:
    src = tmp / "bomb.pkl.bz2"
    comp = bz2.BZ2Compressor(1)
    parts = [comp.compress(b"\x80\x04")]
    parts += [comp.compress(bytes(1 << 20)) for _ in range(16)]
    parts.append(comp.flush())
    src.write_bytes(b"".join(parts))
    with pytest.raises(LimitExceededError):
        sp.convert(src, tmp / "b.sp", limits=ConvertLimits(max_bytes=4 << 20))


def test_zip_bomb_member(tmp: Path) -> None:
    src = tmp / "bomb.zip"
    with (
        zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("model.pkl", "w", force_zip64=True) as f,
    ):
        f.write(b"\x80\x04")
        for _ in range(80):
            f.write(bytes(1 << 20))
    with pytest.raises(LimitExceededError):
        sp.convert(src, tmp / "b.sp", limits=ConvertLimits(max_compression_ratio=100))
    with pytest.raises(LimitExceededError):
        sp.convert(src, tmp / "b.sp", limits=ConvertLimits(max_bytes=8 << 20))


def test_truncated_compressed_streams(tmp: Path) -> None:
    src = tmp / "m.joblib"
    joblib.dump({"w": np.arange(1000.0)}, src, compress=("gzip", 3))
    src.write_bytes(src.read_bytes()[:-40])
    with pytest.raises(FormatError):
        sp.convert(src, tmp / "m.sp")


def test_file_size_limit_checked_before_reading(tmp: Path) -> None:
    src = tmp / "big.pkl"
    src.write_bytes(pickle.dumps(np.zeros(10_000), protocol=5))
    with pytest.raises(LimitExceededError, match="bytes"):
        sp.convert(src, tmp / "b.sp", limits=ConvertLimits(max_bytes=1000))


def test_not_a_model_file(tmp: Path) -> None:
    src = tmp / "notes.txt"
    src.write_text("hello world\n")
    with pytest.raises(FormatError, match="not a pickle"):
        sp.convert(src, tmp / "x.sp")
    with pytest.raises(sp.NotFoundError):
        sp.convert(tmp / "missing.pkl", tmp / "x.sp")
    sp.dump({"a": 1}, tmp / "already.sp")
    with pytest.raises(FormatError, match="already a safepoint"):
        sp.convert(tmp / "already.sp", tmp / "y.sp")
    bad_zip = io.BytesIO()
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("a.txt", "no models here")
    (tmp / "empty.zip").write_bytes(bad_zip.getvalue())
    with pytest.raises(FormatError, match="0 pickle"):
        sp.convert(tmp / "empty.zip", tmp / "z.sp")


def _skops_mutations(seed: int, n: int) -> list[bytes]:
    import json

    sio = pytest.importorskip("skops.io")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    X = np.random.RandomState(0).rand(30, 3)
    model = make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=2))
    bio = io.BytesIO()
    sio.dump(model.fit(X, (X[:, 0] > 0.5).astype(int)), bio)
    with zipfile.ZipFile(io.BytesIO(bio.getvalue())) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(members["schema.json"])
    rng = random.Random(seed)
    junk = [None, 1, "x", [], {}, {"__loader__": "ObjectNode"}, -1, 1e300, [1, [2]], True]

    def nodes(obj: object, out: list[tuple[object, object]]) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.append((obj, k))
                nodes(v, out)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                out.append((obj, i))
                nodes(v, out)

    out = []
    for _ in range(n):
        mutated = json.loads(json.dumps(schema))
        places: list[tuple[object, object]] = []
        nodes(mutated, places)
        for _ in range(rng.randint(1, 3)):
            parent, key = rng.choice(places)
            parent[key] = rng.choice(junk)  # type: ignore[index]
        zbio = io.BytesIO()
        with zipfile.ZipFile(zbio, "w") as zf:
            for name, raw in members.items():
                zf.writestr(name, json.dumps(mutated) if name == "schema.json" else raw)
        out.append(zbio.getvalue())
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupted_skops_schemas_never_crash(tmp: Path) -> None:
    refused = 0
    src = tmp / "m.skops"
    for data in _skops_mutations(3, 120):
        src.write_bytes(data)
        try:
            sp.convert(src, tmp / "m.sp")
        except SafepointError:
            refused += 1
    assert refused > 0


# -- every count that expands is bounded -------------------------------------------------
def _g0(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


_N = 20_000
#: streams of one-byte (or few-byte) opcodes, each creating or keeping something
FLOODS = {
    "empty_list": b"\x80\x04(" + b"]" * _N + b"l.",
    "empty_dict": b"\x80\x04(" + b"}" * _N + b"l.",
    "empty_set": b"\x80\x04(" + b"\x8f" * _N + b"l.",
    "empty_tuple": b"\x80\x04(" + b")" * _N + b"l.",
    "marks": b"\x80\x04" + b"(" * _N + b"N.",
    "dup": b"\x80\x04](N" + b"2" * _N + b"e.",
    "memoize": b"\x80\x04]" + b"\x94" * _N + b".",
    "binput": b"\x80\x02]" + b"".join(b"r" + struct.pack("<I", i) for i in range(_N // 5)) + b".",
    "nested_tuple1": b"\x80\x04N" + b"\x85" * _N + b".",
    "short_binbytes": b"\x80\x04(" + b"C\x00" * (_N // 2) + b"l.",
    "reduce": b"\x80\x04" + _g0("collections", "OrderedDict") + b"q\x00(" + b"h\x00)R" * (_N // 4),
    "stack_global": b"\x80\x04\x8c\x01a\x94\x8c\x01b\x94(" + b"h\x00h\x01\x93" * (_N // 5) + b"l.",
}
FLOODS["reduce"] += b"l."


@pytest.mark.parametrize("name", sorted(FLOODS))
@pytest.mark.slow
def test_parse_and_audit_memory_is_a_bounded_multiple_of_the_stream(name: str) -> None:
    """Parsing and auditing take at most ~250 bytes per byte of stream, whatever its
    opcodes (the bound docs/import.md states); pickle itself takes ~60."""
    from safepoint.importers.audit import audit_stream

    data = FLOODS[name]
    tracemalloc.start()
    try:
        p = PickleParser(data, joblib=True)
        try:
            root = p.parse()
            audit_stream(root, p.created, leftover=p.leftover, open_marks=p.open_marks)
        except SafepointError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 250 * len(data), peak / len(data)


@pytest.mark.parametrize("name", ["empty_list", "marks", "memoize", "reduce", "stack_global"])
def test_node_count_is_bounded(tmp: Path, name: str) -> None:
    """Apart from the file's size, ConvertLimits.max_nodes caps what one stream creates
    (and memoises), so a large flood cannot take memory without end."""
    limits = ConvertLimits(max_nodes=1000)
    with pytest.raises(LimitExceededError, match="max_nodes"):
        PickleParser(FLOODS[name], limits=limits).parse()
    src = tmp / "flood.pkl"
    src.write_bytes(FLOODS[name])
    [res] = sp.scan([src], limits=limits)
    assert res.verdict == "refused"
    with pytest.raises(LimitExceededError):
        sp.convert(src, tmp / "f.sp", limits=limits)
    # an ordinary model stays far below the default
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.RandomState(0).rand(60, 4)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, X[:, 0] > 0.5)
    p = PickleParser(pickle.dumps(model, protocol=5))
    p.parse()
    assert p.n_nodes < 2000


@pytest.mark.slow
def test_decompression_bomb_refused_with_default_limits(tmp: Path) -> None:
    """A zlib/gzip stream expands at most ~1000x: the default ratio (200x beyond the
    first 64 MiB) refuses such a bomb long before it fills memory."""
    src = tmp / "bomb.joblib"
    _zlib_bomb(src, 80 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceededError, match="expands more than 200x"):
            sp.convert(src, tmp / "b.sp")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20
    [res] = sp.scan([src])
    assert res.verdict == "refused"
    gz = tmp / "bomb.pkl.gz"
    with gzip.open(gz, "wb", compresslevel=9) as f:
        f.write(b"\x80\x04\x8e" + struct.pack("<Q", 80 << 20))
        for _ in range(80):
            f.write(bytes(1 << 20))
    with pytest.raises(LimitExceededError, match="expands"):
        sp.convert(gz, tmp / "g.sp")
    # the CLI names its option
    from click.testing import CliRunner

    from safepoint.cli.main import _register_commands, cli

    _register_commands()
    out = CliRunner().invoke(cli, ["scan", str(src), "--max-ratio", "100000"])
    assert out.exit_code == 1
    assert "expands" not in out.output  # the ratio no longer stops it: the stream does
