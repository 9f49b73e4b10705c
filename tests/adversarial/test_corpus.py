"""The hostile corpus: every file here is built by code, attacked, and must be refused
with a :class:`safepoint.SafepointError` subclass carrying a useful message; never
another exception, never a hang (pytest-timeout), never a crash, never code execution.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import resource
import struct
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spcraft import FOOTER, HEADER, MAGIC, Crafted, regions, rle_bomb, zstd_frame

import safepoint as sp
from safepoint.errors import (
    FormatError,
    IntegrityError,
    LimitExceededError,
    NotFoundError,
    SafepointError,
    UnsupportedFormatVersionError,
    UntrustedTypesError,
)
from safepoint.format import spec
from safepoint.format.spec import END_MAGIC

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore")]

MiB = 2**20
#: SAFEPOINT_FULL=1 runs the exhaustive variants (minutes instead of seconds)
FULL = os.environ.get("SAFEPOINT_FULL") == "1"


def refused(
    data: Any,
    exc: type[BaseException] = SafepointError,
    match: str | None = None,
    **kw: Any,
) -> SafepointError:
    """``sp.load`` refuses ``data`` with ``exc``; the message says something."""
    with pytest.raises(SafepointError) as info:
        sp.load(data, **kw)
    err = info.value
    assert isinstance(err, exc), f"expected {exc.__name__}, got {type(err).__name__}: {err}"
    msg = str(err)
    assert len(msg) >= 20, f"message too short to help: {msg!r}"
    if match is not None:
        assert match.lower() in msg.lower(), msg
    return err


def parse_refused(data: Any, exc: type[BaseException] = SafepointError, match: str | None = None):
    """Refused already by the parse step: load, inspect, untrusted_types and verify agree."""
    err = refused(data, exc, match)
    for fn in (sp.inspect, sp.untrusted_types, sp.verify):
        with pytest.raises(SafepointError) as info:
            fn(data)
        assert isinstance(info.value, exc), (fn.__name__, type(info.value), info.value)
    return err


@contextmanager
def no_big_allocation(limit: int = 32 * MiB) -> Iterator[None]:
    """Fail if the block allocates more than ``limit`` bytes (Python and numpy
    allocations through tracemalloc, C allocations through the peak RSS)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert peak < limit, f"{peak} bytes were allocated"
    assert grew < 8 * limit, f"peak RSS grew by {grew} bytes"


def edited(base: bytes, fn: Callable[[Crafted], Any], **kw: Any) -> bytes:
    c = Crafted.from_bytes(base)
    fn(c)
    return c.to_bytes(**kw)


def root_edited(base: bytes, root: Any) -> bytes:
    def fn(c: Crafted) -> None:
        c.manifest["root"] = root

    return edited(base, fn)


# -- not safepoint files at all -----------------------------------------------------
class Evil:
    """Pickles to ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_renamed_to_sp_never_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.sp"
    path.write_bytes(pickle.dumps(Evil(marker), protocol=protocol))
    err = parse_refused(str(path), FormatError, match="pickle")
    assert "convert" in str(err)
    refused(path.read_bytes(), FormatError, match="pickle")
    with open(path, "rb") as f:
        refused(f, FormatError)
    assert not marker.exists(), "the pickle payload ran"


def test_pickle_padded_to_look_like_a_file(tmp_path: Path) -> None:
    # big enough to pass the size check, so the magic check must catch it
    marker = tmp_path / "pwned"
    payload = pickle.dumps([Evil(marker), b"x" * 500], protocol=5)
    refused(payload, FormatError, match="pickle")
    assert not marker.exists()


def test_pickle_behind_a_safepoint_header(tmp_path: Path) -> None:
    """A real header and footer around a pickle instead of a manifest."""
    marker = tmp_path / "pwned"
    body = pickle.dumps(Evil(marker))
    c = Crafted({}, [], [], [])
    refused(c.to_bytes(manifest_bytes=body), FormatError, match="manifest")
    assert not marker.exists()


def test_zip_and_skops_files(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("schema.json", json.dumps({"__class__": "LogisticRegression"}))
        z.writestr("pad.bin", b"\0" * 200)
    parse_refused(str(path), FormatError, match="zip")
    if not FULL:
        return  # importing skops takes seconds
    skops_io = pytest.importorskip("skops.io")
    from sklearn.linear_model import LogisticRegression

    real = tmp_path / "real.skops"
    skops_io.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), real)
    refused(str(real), FormatError, match="zip")


def test_npy_file() -> None:
    bio = io.BytesIO()
    np.save(bio, np.arange(100))
    refused(bio.getvalue(), FormatError, match="npy")


@pytest.mark.parametrize("size", [0, 1, 7, 8, 63, 64, 127])
def test_tiny_files(tmp_path: Path, size: int) -> None:
    data = (MAGIC + bytes(200))[:size]
    path = tmp_path / "tiny.sp"
    path.write_bytes(data)
    parse_refused(str(path), FormatError, match="not a safepoint file")


def test_directory_and_missing_file(tmp_path: Path) -> None:
    parse_refused(str(tmp_path), FormatError, match="directory")
    refused(str(tmp_path / "nope.sp"), NotFoundError)
    refused(tmp_path / "nope.sp", NotFoundError)


def test_wrong_argument_types() -> None:
    for bad in (None, 42, 1.5, object(), ["x"]):
        refused(bad, FormatError)
    with pytest.raises(FormatError):
        sp.loads("a string")  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        sp.load(io.StringIO("text mode"))


def test_random_and_text_bytes() -> None:
    rng = np.random.default_rng(1)
    for n in (128, 1000, 5000):
        refused(rng.bytes(n), FormatError)
    refused(b"hello world\n" * 50, FormatError)
    refused(b"\x00" * 4096, FormatError)


def test_non_seekable_stream(small_bytes: bytes) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.bio = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.bio.readinto(b)

    assert sp.load(Pipe(small_bytes))["b"] == [1.5, "x", None]
    refused(Pipe(small_bytes[:-1]), FormatError)


# -- header and footer -----------------------------------------------------------
@pytest.mark.parametrize("version", [(0, 9), (1, 2), (2, 0), (65535, 65535), (0, 0)])
def test_unknown_format_versions(small_bytes: bytes, version: tuple[int, int]) -> None:
    data = Crafted.from_bytes(small_bytes).to_bytes(header_version=version)
    err = parse_refused(data, UnsupportedFormatVersionError)
    assert f"{version[0]}.{version[1]}" in str(err)
    if version > max(spec.READABLE_VERSIONS):
        assert "upgrade" in str(err)


def test_header_footer_version_mismatch(small_bytes: bytes) -> None:
    data = Crafted.from_bytes(small_bytes).to_bytes(footer_version=(1, 0))
    parse_refused(data, FormatError, match="disagree")


def test_footer_magic(small_bytes: bytes) -> None:
    data = bytearray(small_bytes)
    data[-1] ^= 0xFF
    parse_refused(bytes(data), FormatError, match="footer")


def _with_footer(data: bytes, **fields: int) -> bytes:
    names = ["mo", "ml", "mr", "mc", "ao", "al", "major", "minor", "flags", "magic"]
    vals = dict(zip(names, FOOTER.unpack_from(data, len(data) - 64), strict=True))
    vals.update(fields)
    return data[:-64] + FOOTER.pack(*(vals[n] for n in names))


@pytest.mark.parametrize(
    "fields",
    [
        {"mo": 0},
        {"mo": 10},
        {"mo": 2**64 - 1},
        {"ml": 2**64 - 1},
        {"ml": 2**63},
        {"mo": 2**63, "ml": 2**63},
        {"ml": 0},
        {"mr": 2**64 - 1},
        {"mr": 0},
        {"mc": 0},
        {"al": 100, "ao": 0},
        {"al": 2**32 - 1, "ao": 64},
        {"al": 10, "ao": 2**64 - 5},
        {"flags": 1},
        {"flags": 0xFFFF},
    ],
    ids=str,
)
def test_footer_fields(small_bytes: bytes, fields: dict[str, int]) -> None:
    with no_big_allocation():
        parse_refused(_with_footer(small_bytes, **fields))


def test_manifest_declares_a_giant_size(small_bytes: bytes) -> None:
    data = _with_footer(small_bytes, mr=2**40)
    with no_big_allocation():
        parse_refused(data, LimitExceededError, match="max_manifest_bytes")


def test_manifest_zstd_frame_lies_about_its_size(small_bytes: bytes) -> None:
    """The zstd frame header claims 1 TiB: nothing may be allocated for it."""
    c = Crafted.from_bytes(small_bytes)
    raw = json.dumps({**c.manifest, "buffers": []}).encode()
    frame = zstd_frame(2**40, [(0, raw, len(raw))])
    data = c.to_bytes(manifest_bytes=raw)
    regs = regions(data)
    mo = regs["manifest"][0]
    crafted = data[:mo] + frame
    crafted += FOOTER.pack(mo, len(frame), len(raw), _xxh(frame), 0, 0, *c.version, 1, END_MAGIC)
    with no_big_allocation():
        parse_refused(crafted, FormatError, match="frame declares")


def test_manifest_bomb(small_bytes: bytes) -> None:
    """A real manifest bomb: 300 MiB of spaces from a few KiB (valid JSON after all)."""
    c = Crafted.from_bytes(small_bytes)
    raw = json.dumps({**c.manifest, "buffers": []}).encode()
    size = 300 * MiB
    blocks = [(0, raw, len(raw))]
    left = size - len(raw)
    while left:
        n = min(left, 128 * 1024)
        blocks.append((1, b" ", n))
        left -= n
    frame = zstd_frame(size, blocks)
    data = c.to_bytes(manifest_bytes=raw)
    mo = regions(data)["manifest"][0]
    crafted = data[:mo] + frame
    crafted += FOOTER.pack(mo, len(frame), size, _xxh(frame), 0, 0, *c.version, 1, END_MAGIC)
    with no_big_allocation():
        parse_refused(crafted, LimitExceededError, match="bomb")


def _xxh(b: bytes) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(b)


# -- the manifest as JSON --------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b'{"a": 1',
        b"[]",
        b"null",
        b"42",
        b'"string"',
        b'{"buffers": {}}',
        b'{"buffers": [], "types": {}}',
        b'{"buffers": [], "types": [["os", "system"]]}',
        b'{"buffers": [], "types": [["os", "system", "exec"]]}',
        b'{"buffers": [], "types": [[1, 2, 3]]}',
        b'{"buffers": [], "shared": {}}',
        b'{"buffers": [], "root": 1, "root": 2}',
        b'{"buffers": [], "root": {"@": "dict", "s": {"a": 1, "a": 2}}}',
        b'{"buffers": [], "buffers": []}',
        b'{"buffers": [], "root": ' + b"1" * 5000 + b"}",
        b'{"buffers": [], "root": 1e999999}',
        b'{"buffers": [], "root": "\\ud800"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=lambda b: repr(b[:40]),
)
def test_manifest_json(body: bytes) -> None:
    data = Crafted({}, [], [], []).to_bytes(manifest_bytes=body)
    try:
        out = sp.loads(data)
    except SafepointError as exc:
        assert len(str(exc)) >= 20
        if b'"root": 1, "root"' in body or b'"a": 1, "a"' in body or b'[], "buffers' in body:
            assert isinstance(exc, FormatError) and "duplicate" in str(exc)
        return
    # a few bodies are valid files holding a scalar (or nothing: None)
    assert out is None or isinstance(out, int | float | str)


@pytest.mark.parametrize("depth", [300, 900])
def test_deep_object_tree(small_bytes: bytes, depth: int) -> None:
    c = Crafted.from_bytes(small_bytes)
    c.manifest["root"] = "ROOT"
    body = json.dumps({**c.manifest, "buffers": []})
    deep = '{"@":"list","v":[' * depth + "1" + "]}" * depth
    data = c.to_bytes(manifest_bytes=body.replace('"ROOT"', deep).encode())
    refused(data, LimitExceededError, match="deep")


def test_max_depth_is_enforced(small_bytes: bytes) -> None:
    node: Any = 1
    for _ in range(20):
        node = {"@": "tuple", "v": [node, 2]}
    data = root_edited(small_bytes, node)
    refused(data, LimitExceededError, match="max_depth", limits=sp.Limits(max_depth=10))
    assert isinstance(sp.loads(data), tuple)


def test_deep_tree_through_shared_references(small_bytes: bytes) -> None:
    """Depth hidden in a chain of memo references still counts."""

    def fn(c: Crafted) -> None:
        n = 400
        c.manifest["shared"] = [{"@": "list", "v": [{"@": "memo", "i": i + 1}]} for i in range(n)]
        c.manifest["shared"].append({"@": "list", "v": [1]})
        c.manifest["root"] = {"@": "memo", "i": 0}

    refused(edited(small_bytes, fn), LimitExceededError, match="deep")


def test_exponential_sharing_stays_linear(small_bytes: bytes) -> None:
    """A 'billion laughs' of memo references is built in linear time and memory."""

    def fn(c: Crafted) -> None:
        n = 60
        c.manifest["shared"] = [
            {"@": "list", "v": [{"@": "memo", "i": i + 1}, {"@": "memo", "i": i + 1}]}
            for i in range(n)
        ]
        c.manifest["shared"].append({"@": "list", "v": ["lol"]})
        c.manifest["root"] = {"@": "memo", "i": 0}

    with no_big_allocation():
        out = sp.loads(edited(small_bytes, fn))
    assert out[0] is out[1]


@pytest.mark.parametrize(
    "shared, root, match",
    [
        ([{"@": "list", "v": [{"@": "memo", "i": 0}]}], {"@": "memo", "i": 0}, "cycle"),
        (
            [
                {"@": "list", "v": [{"@": "memo", "i": 1}]},
                {"@": "list", "v": [{"@": "memo", "i": 0}]},
            ],
            {"@": "memo", "i": 0},
            "cycle",
        ),
        ([{"@": "memo", "i": 0}], {"@": "memo", "i": 0}, "not an object node"),
        ([], {"@": "memo", "i": 0}, "out of range"),
        ([{"@": "list", "v": []}], {"@": "memo", "i": -1}, "out of range"),
        ([{"@": "list", "v": []}], {"@": "memo", "i": 2**70}, "out of range"),
        ([{"@": "list", "v": []}], {"@": "memo", "i": "0"}, "wrong type"),
        ([{"@": "list", "v": []}], {"@": "memo", "i": True}, "wrong type"),
        ([{"@": "list", "v": []}], {"@": "memo"}, "lacks"),
        (["just a string"], {"@": "memo", "i": 0}, "not an object node"),
    ],
)
def test_memo_attacks(small_bytes: bytes, shared: Any, root: Any, match: str) -> None:
    def fn(c: Crafted) -> None:
        c.manifest["shared"] = shared
        c.manifest["root"] = root

    refused(edited(small_bytes, fn), FormatError, match=match)


def test_memo_cycle_through_an_object(small_bytes: bytes) -> None:
    from sklearn.linear_model import LinearRegression

    c = Crafted.from_bytes(sp.dumps(LinearRegression()))
    c.manifest["shared"] = [copy.deepcopy(c.manifest["root"])]
    c.manifest["shared"][0]["s"]["s"]["fit_intercept"] = {"@": "memo", "i": 0}
    c.manifest["root"] = {"@": "memo", "i": 0}
    refused(c.to_bytes(), FormatError, match="cycle")


@pytest.mark.parametrize(
    "root, match",
    [
        ({"@": "nope"}, "unknown node tag"),
        ({"@": None}, "unknown node tag"),
        ({"@": 1}, "unknown node tag"),
        ({"@": ["list"]}, "unknown node tag"),
        ({"no": "tag"}, "unknown node tag"),
        ({"@": "obj", "t": 0}, "out of range"),
        ({"@": "obj", "t": -1}, "out of range"),
        ({"@": "obj", "t": "0"}, "wrong type"),
        ({"@": "ref", "t": 2**80}, "out of range"),
        ({"@": "list"}, "lacks"),
        ({"@": "list", "v": {"a": 1}}, "wrong type"),
        ({"@": "dict", "p": [[1]]}, "pair"),
        ({"@": "dict", "p": [[[], 1]]}, "where a node was expected"),
        ({"@": "dict", "p": [[{"@": "list", "v": []}, 1]]}, "plain values"),
        ({"@": "set", "v": [{"@": "list", "v": []}]}, "plain values"),
        ({"@": "bigint", "v": "0x" + "f" * 10_000}, "too long"),
        ({"@": "bigint", "v": "zz"}, "bad integer"),
        ({"@": "complex", "v": [1]}, "complex"),
        ({"@": "slice", "v": [1, 2, 3, 4]}, "slice"),
        ({"@": "slice", "v": [0, 5, 0], "r": True}, "range"),
        ({"@": "bytes", "b": 0.5}, "wrong type"),
        ({"@": "bytes", "b": 99}, "out of range"),
        ({"@": "bytes", "b": -1}, "out of range"),
    ],
    ids=str,
)
def test_bad_nodes(small_bytes: bytes, root: Any, match: str) -> None:
    refused(root_edited(small_bytes, root), FormatError, match=match)


# -- arrays: dtypes, shapes, buffers ----------------------------------------------
def _nd(d: Any, s: Any, b: Any = 0, **kw: Any) -> dict[str, Any]:
    return {"@": "nd", "d": d, "s": s, "b": b, **kw}


@pytest.mark.parametrize(
    "node, exc, match",
    [
        (_nd("|O", [10]), FormatError, "dtype"),
        (_nd("O", [10]), FormatError, "dtype"),
        (_nd("<O8", [10]), FormatError, "dtype"),
        (_nd({"fields": [["a", "|O", 0]], "size": 8}, [10]), FormatError, "dtype"),
        (_nd({"sub": "|O", "shape": [2]}, [5]), FormatError, "dtype"),
        (
            _nd({"sub": {"sub": {"sub": "<i8", "shape": [1]}, "shape": [1]}, "shape": [1]}, [10]),
            None,
            None,
        ),
        (_nd({"fields": [["a", "<i8", 0], ["b", "<i8", 0]], "size": 8}, [10]), None, None),
        (_nd({"fields": [["a", "<i8", 4]], "size": 8}, [10]), FormatError, "dtype"),
        (_nd({"fields": [["a", "<i8", 0]] * 5000, "size": 8}, [10]), FormatError, "fields"),
        (_nd("<i8; import os", [10]), FormatError, "dtype"),
        (_nd("object", [10]), FormatError, "dtype"),
        (_nd("V999999999", [1]), FormatError, "needs"),
        (_nd("<U999999999", [1]), FormatError, "dtype"),
        (_nd("<U99999999", [1]), FormatError, "needs"),
        (_nd("<i8", [11]), FormatError, "needs"),
        (_nd("<i8", [9]), FormatError, "needs"),
        (_nd("<i8", [2**61, 2**61]), FormatError, "needs"),
        (_nd("<i8", [0, 2**61, 2**61]), FormatError, None),
        (_nd("<i8", [2**62]), FormatError, "shape"),
        (_nd("<i8", [-10]), FormatError, "shape"),
        (_nd("<i8", [10.0]), FormatError, "shape"),
        (_nd("<i8", [True] * 10), FormatError, "shape"),
        (_nd("<i8", [1] * 33), FormatError, "dimensions"),
        (_nd("<i8", "10"), FormatError, "wrong type"),
        (_nd("<i8", [10], f=True), None, None),
        (_nd("<i8", [10], b=1), FormatError, "needs"),
        (_nd("<i8", [10], b=True), FormatError, "wrong type"),
        (_nd("<i8", [10], b=10**30), FormatError, "out of range"),
        (_nd("<M8[Y]", [10]), None, None),
        (_nd("<M8[xyz]", [10]), FormatError, "dtype"),
        (_nd({"fields": [["a", "<i8", 0]], "size": 2**40}, [0]), FormatError, "dtype"),
        (_nd({"sub": "<i8", "shape": [2**30, 2**30]}, [0]), FormatError, None),
    ],
    ids=lambda x: json.dumps(x)[:60] if isinstance(x, dict) else str(x),
)
def test_array_nodes(small_bytes: bytes, node: Any, exc: Any, match: str | None) -> None:
    c = Crafted.from_bytes(small_bytes)
    assert c.raw_lengths[0] == 80  # buffer 0 holds 10 int64
    data = root_edited(small_bytes, node)
    with no_big_allocation():
        if exc is None:
            out = sp.loads(data)  # a benign reinterpretation of the same 80 bytes
            assert isinstance(out, np.ndarray) and out.nbytes == 80
        else:
            refused(data, exc, match=match)


def test_buffer_referenced_twice(small_bytes: bytes) -> None:
    root = {"@": "list", "v": [_nd("<i8", [10], 0), _nd("<i8", [10], 0)]}
    refused(root_edited(small_bytes, root), FormatError, match="twice")
    root = {"@": "list", "v": [_nd("<i8", [10], 0), {"@": "bytes", "b": 0}]}
    refused(root_edited(small_bytes, root), FormatError, match="twice")


@pytest.mark.parametrize(
    "tag, extra, match",
    [
        ("strs", {"k": "O", "s": [3], "n": 10**12, "b": 1}, "items"),
        ("strs", {"k": "O", "s": [3], "n": -1, "b": 1}, "items"),
        ("strs", {"k": "O", "s": [2**40], "n": 3, "b": 1}, "declares"),
        ("strs", {"k": "X", "s": [1], "n": 1, "b": 1}, "kind"),
        ("strs", {"k": "T", "s": [1], "n": 1, "b": 1, "na": 99}, "na_object"),
        ("strs", {"k": "O", "s": [1], "n": 1, "b": 1, "o": 0}, "needs"),
        ("strs", {"k": "O", "s": [10], "n": 10, "b": 1, "z": 0}, "declares"),
        ("strs", {"k": "O", "s": [10], "n": 10, "b": 1, "o": 0}, "needs"),
        ("strs", {"k": "O", "s": [9], "n": 9, "b": 1, "o": 0}, "offsets"),
        ("objarr", {"s": [2**40], "v": [1]}, "shape"),
        ("objarr", {"s": [1], "v": [{"@": "nope"}]}, "unknown node tag"),
        ("rng", {"bg": "os.system", "st": {}}, "bit generator"),
        ("rng", {"bg": "MT19937", "st": {"@": "dict", "s": {"state": 1}}}, "random state"),
        ("npsc", {"d": "<f8", "h": "00"}, "bytes"),
        ("npsc", {"d": "<f8", "h": "zz" * 8}, "hex"),
        ("npsc", {"d": "|O", "h": "00" * 8}, "dtype"),
        ("dtype", {"d": "|O"}, "dtype"),
        ("sparse", {"f": "csr", "sh": [2**62, 3], "d": _nd("<i8", [10], 0)}, "shape"),
        ("sparse", {"f": "evil", "sh": [3, 3]}, "format"),
    ],
    ids=lambda x: json.dumps(x)[:50] if isinstance(x, dict) else str(x),
)
def test_typed_nodes(small_bytes: bytes, tag: str, extra: dict[str, Any], match: str) -> None:
    with no_big_allocation():
        refused(root_edited(small_bytes, {"@": tag, **extra}), FormatError, match=match)


# -- the buffer table -------------------------------------------------------------
def _table(small_bytes: bytes, hook: Callable[[list[list[Any]]], None]) -> bytes:
    return Crafted.from_bytes(small_bytes).to_bytes(table_hook=hook)


def _row(i: int, col: int, value: Any) -> Callable[[list[list[Any]]], None]:
    def hook(t: list[list[Any]]) -> None:
        t[i][col] = value

    return hook


@pytest.mark.parametrize(
    "hook, exc, match",
    [
        (_row(0, 0, 0), FormatError, "outside"),
        (_row(0, 0, 32), FormatError, "outside"),
        (_row(0, 0, 96), FormatError, "aligned"),
        (_row(0, 0, -64), FormatError, "outside"),
        (_row(0, 0, 2**64), FormatError, "outside"),
        (_row(0, 1, 2**40), FormatError, "outside"),
        (_row(0, 1, -1), FormatError, "outside"),
        (_row(0, 2, 81), FormatError, "raw size"),
        (_row(0, 0, "64"), FormatError, "malformed buffer"),
        (_row(0, 0, 64.0), FormatError, "malformed buffer"),
        (_row(0, 0, True), FormatError, "malformed buffer"),
        (_row(0, 3, "gzip"), FormatError, "malformed buffer"),
        (_row(0, 3, "pickle"), FormatError, "malformed buffer"),
        (_row(0, 4, 1234), FormatError, "malformed buffer"),
        (_row(0, 4, "0" * 16), IntegrityError, "checksum"),
        (lambda t: t[0].extend(["x", "y"]), FormatError, "malformed buffer"),
        (lambda t: t[0].pop(), FormatError, "malformed buffer"),
        (lambda t: t.__setitem__(0, {"offset": 64}), FormatError, "malformed buffer"),
        (lambda t: t.__setitem__(1, list(t[0])), FormatError, "overlap"),
        (_row(1, 0, 128), FormatError, "overlap"),
        (lambda t: t.append([64, 0, 2**40, "zstd", "0" * 16]), LimitExceededError, "bomb"),
        (lambda t: t.extend([[64, 0, 2**39, "raw", "0" * 16]]), FormatError, "raw size"),
    ],
)
def test_buffer_table(small_bytes: bytes, hook: Any, exc: Any, match: str | None) -> None:
    data = _table(small_bytes, hook)
    with no_big_allocation():
        refused(data, exc, match=match)


def test_overlapping_buffers(small_bytes: bytes) -> None:
    def hook(t: list[list[Any]]) -> None:
        t[1][0] = t[0][0]  # both start at the same offset
        t[1][1] = t[1][2] = t[0][1]

    parse_refused(_table(small_bytes, hook), FormatError, match="overlap")


def test_limits_on_counts_and_totals(small_bytes: bytes) -> None:
    refused(small_bytes, LimitExceededError, match="buffers", limits=sp.Limits(max_buffers=1))
    refused(small_bytes, LimitExceededError, limits=sp.Limits(max_total_bytes=10))
    refused(small_bytes, LimitExceededError, limits=sp.Limits(max_manifest_bytes=100))
    refused(small_bytes, LimitExceededError, limits=sp.Limits(max_depth=1))
    # containers too large for max_items are malformed (the dict handler says so)
    refused(small_bytes, FormatError, match="items", limits=sp.Limits(max_items=1))


def test_many_empty_buffers_declared(small_bytes: bytes) -> None:
    """A million table rows cost manifest bytes, and are bounded by max_buffers."""

    def hook(t: list[list[Any]]) -> None:
        t.extend([[64, 0, 0, "raw", "2d06800538d394c2"]] * 20_000)

    data = _table(small_bytes, hook)
    refused(data, LimitExceededError, limits=sp.Limits(max_buffers=1000))
    assert sp.loads(data)["c"] == b"xyz"  # empty rows are harmless under the default limits


# -- decompression bombs ---------------------------------------------------------
def _zstd_root(payload: bytes, raw_length: int) -> bytes:
    c = Crafted({"format": [1, 0], "types": [], "shared": []}, [], [], [])
    i = c.add_buffer(payload, "zstd", raw_length)
    c.manifest["root"] = {"@": "bytes", "b": i}
    return c.to_bytes()


def test_zstd_buffer_declaring_a_huge_raw_size() -> None:
    frame = zstd_frame(100, [(0, b"x" * 100, 100)])
    with no_big_allocation():
        refused(_zstd_root(frame, 2**40), LimitExceededError, match="bomb")
        # under the bomb limits, the frame's own size gives the lie away before allocation
        refused(_zstd_root(frame, 60 * MiB), FormatError, match="size")
        c = Crafted.from_bytes(_zstd_root(frame, 60 * MiB))
        c.manifest["root"] = _nd("<f8", [60 * MiB // 8])
        refused(c.to_bytes(), FormatError, match="size")


def test_zstd_frame_lying_about_its_size() -> None:
    frame = zstd_frame(2**40, [(0, b"x" * 100, 100)])
    with no_big_allocation():
        refused(_zstd_root(frame, 100), FormatError, match="size")


def test_zstd_buffer_shorter_or_longer_than_declared() -> None:
    frame = zstandard_compress(b"y" * 5000)
    refused(_zstd_root(frame, 4000), FormatError, match="size")
    refused(_zstd_root(frame, 6000), FormatError, match="size")
    refused(_zstd_root(frame + frame, 10000), FormatError, match="size")
    refused(_zstd_root(b"\x28\xb5\x2f\xfd garbage", 5000), FormatError)
    unknown_size = zstd_frame(None, [(1, b"y", 5000)])
    refused(_zstd_root(unknown_size, 4000), FormatError, match="size")
    assert sp.loads(_zstd_root(unknown_size, 5000)) == b"y" * 5000


def zstandard_compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def test_real_bomb_1_to_10000() -> None:
    """1 GiB of zeros from ~32 KiB: refused from the table, before decompressing."""
    bomb = rle_bomb(2**30)
    assert len(bomb) * 10_000 < 2**30
    with no_big_allocation():
        refused(_zstd_root(bomb, 2**30), LimitExceededError, match="bomb")


def test_many_small_bombs() -> None:
    """Each buffer stays under the per-buffer threshold; together they would be 6 GiB."""
    c = Crafted({"format": [1, 0], "types": [], "shared": []}, [], [], [])
    bomb = rle_bomb(60 * MiB)
    idx = [c.add_buffer(bomb, "zstd", 60 * MiB) for _ in range(100)]
    c.manifest["root"] = {"@": "list", "v": [{"@": "bytes", "b": i} for i in idx]}
    with no_big_allocation():
        refused(c.to_bytes(), LimitExceededError, match="bomb")


# -- bit flips and truncation ------------------------------------------------------
def _flip_positions(data: bytes, per_region: int) -> Iterator[tuple[str, int]]:
    rng = np.random.default_rng(42)
    for name, (a, b) in regions(data).items():
        if b <= a:
            continue
        picks = set(rng.integers(a, b, size=min(per_region, b - a)).tolist())
        picks |= {a, b - 1}
        for p in sorted(picks):
            yield name, p


def _load_all_ways(data: bytes) -> None:
    """Every public reader either works or raises a SafepointError."""
    try:
        sp.loads(data)
    except SafepointError as exc:
        assert str(exc)
    for fn in (sp.inspect, sp.untrusted_types):
        try:
            fn(data)
        except SafepointError:
            pass
    try:
        sp.verify(data)
    except SafepointError:
        pass


def test_bit_flips_in_every_region(rich_bytes: bytes) -> None:
    detected = {}
    for name, pos in _flip_positions(rich_bytes, 200 if FULL else 40):
        for bit in (0, 7) if FULL else ((pos % 8),):
            data = bytearray(rich_bytes)
            data[pos] ^= 1 << bit
            try:
                sp.loads(bytes(data))
            except SafepointError:
                detected[name] = detected.get(name, 0) + 1
            _load_all_ways(bytes(data))
    # flips in the manifest and the footer are always caught (checksum, magic, offsets);
    # in the buffer region only those in a buffer are (padding between them is inert)
    assert detected.get("manifest", 0) >= 40 and detected.get("buffers", 0) >= 10
    assert detected.get("footer", 0) >= 10


def test_every_flip_in_buffers_is_an_integrity_error(small_bytes: bytes) -> None:
    data = Crafted.from_bytes(small_bytes).to_bytes()
    table = json.loads(data[slice(*regions(data)["manifest"])])["buffers"]
    for off, length, *_ in table:
        for pos in range(off, off + length):
            flipped = bytearray(data)
            flipped[pos] ^= 0x10
            refused(bytes(flipped), IntegrityError, match="checksum")


def test_truncation_at_many_offsets(rich_bytes: bytes, tmp_path: Path) -> None:
    n = len(rich_bytes)
    cuts = sorted(set(range(0, 200)) | set(range(n - 200, n)) | set(range(0, n, max(1, n // 300))))
    path = tmp_path / "cut.sp"
    for cut in cuts:
        data = rich_bytes[:cut]
        refused(data, FormatError)
        if cut % 7 == 0:
            path.write_bytes(data)
            refused(str(path), FormatError)


def test_insertions_and_deletions(small_bytes: bytes) -> None:
    for pos in range(0, len(small_bytes), 13):
        refused(small_bytes[:pos] + b"\0" + small_bytes[pos:], SafepointError)
        refused(small_bytes[:pos] + small_bytes[pos + 1 :], SafepointError)


# -- types that would run code ----------------------------------------------------
@pytest.mark.parametrize(
    "row",
    [
        ["os", "system", "ref"],
        ["posix", "system", "ref"],
        ["builtins", "eval", "ref"],
        ["builtins", "exec", "ref"],
        ["builtins", "getattr", "ref"],
        ["subprocess", "Popen", "obj"],
        ["subprocess", "Popen", "red"],
        ["numpy", "load", "ref"],
        ["numpy", "ndarray", "red"],
        ["sklearn.base", "os.system", "ref"],
        ["sklearn", "base.os.system", "ref"],
        ["builtins", "object.__subclasses__", "ref"],
        ["joblib", "load", "ref"],
        ["pickle", "loads", "ref"],
    ],
)
def test_dangerous_types_are_untrusted(tmp_path: Path, row: list[str]) -> None:
    marker = tmp_path / "pwned"

    def fn(c: Crafted) -> None:
        c.manifest["types"] = [row]
        node = {"@": row[2], "t": 0, "a": {"@": "list", "v": [f"touch {marker}"]}}
        c.manifest["root"] = {"@": "list", "v": [node]}

    data = edited(sp.dumps(1), fn)
    err = refused(data, UntrustedTypesError)
    assert f"{row[0]}.{row[1]}" in str(err) and "trusted=" in str(err)
    assert sp.untrusted_types(data) == [f"{row[0]}.{row[1]}"]
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, qualname",
    [("sklearn.utils._show_versions", "platform.system"), ("sklearn.utils.fixes", "np.load")],
)
def test_trusting_an_alias_by_name_still_refuses_it(module: str, qualname: str) -> None:
    """A name reached through another module's namespace is refused even when trusted."""
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)  # the alias really exists

    def fn(c: Crafted) -> None:
        c.manifest["types"] = [[module, qualname, "ref"]]
        c.manifest["root"] = {"@": "ref", "t": 0}

    data = edited(sp.dumps(1), fn)
    refused(data, UntrustedTypesError)
    refused(data, FormatError, match="elsewhere", trusted=[f"{module}.{qualname}"])


def test_kind_mismatch_for_a_trusted_function() -> None:
    """A trusted function named as a class ('obj') is refused, not called."""

    def fn(c: Crafted) -> None:
        c.manifest["types"] = [["numpy", "add", "obj"]]
        c.manifest["root"] = {"@": "obj", "t": 0}

    refused(edited(sp.dumps(1), fn), UntrustedTypesError)


def test_sklearn_header_only_file_is_fine() -> None:
    """Sanity: the crafting helper itself produces loadable files."""
    c = Crafted.from_bytes(sp.dumps({"x": np.arange(3)}))
    assert np.array_equal(sp.loads(c.to_bytes())["x"], np.arange(3))
    assert np.array_equal(sp.loads(c.to_bytes(zstd_manifest=True))["x"], np.arange(3))
    assert HEADER.size == 64 and struct.calcsize("<Q") == 8


# -- wrong types in every field of every node ------------------------------------
HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**70,
    1.5,
    "x",
    [],
    {},
    [[]],
    [1, 2, 3],
    {"@": "memo", "i": 0},
    {"@": "nd"},
    {"@": "nope"},
    [-1],
    [2**62],
]


@pytest.mark.slow
def test_wrong_types_in_every_node_field(rich_bytes: bytes) -> None:
    """Every field of every node gets hostile values (all of them with SAFEPOINT_FULL=1,
    two per field, rotating through the list, otherwise)."""
    base = Crafted.from_bytes(rich_bytes)
    n_nodes = len(list(base.walk()))
    assert n_nodes > 50
    cases = loaded = 0
    for ni in range(n_nodes):
        for key in list(list(base.walk())[ni]):
            if FULL:
                values = HOSTILE_VALUES
            else:
                values = [HOSTILE_VALUES[(cases + k) % len(HOSTILE_VALUES)] for k in (0, 7)]
            for value in values:
                c = Crafted(
                    copy.deepcopy(base.manifest), base.payloads, base.codecs, base.raw_lengths
                )
                list(c.walk())[ni][key] = copy.deepcopy(value)
                cases += 1
                try:
                    sp.loads(c.to_bytes())
                    loaded += 1
                except SafepointError as exc:
                    assert str(exc)
    # most mutations are refused; some are harmless data changes (a dict value)
    assert cases > 300 and loaded < cases // 2


def test_shape_and_dtype_swaps_between_nodes(rich_bytes: bytes) -> None:
    """Give every array node another array's buffer, shape or dtype."""
    base = Crafted.from_bytes(rich_bytes)
    nds = [i for i, n in enumerate(base.walk()) if n.get("@") == "nd"]
    for i in nds:
        for j in nds if FULL else nds[:3]:
            if i == j:
                continue
            for key in ("b", "s", "d"):
                c = Crafted(
                    copy.deepcopy(base.manifest), base.payloads, base.codecs, base.raw_lengths
                )
                nodes = list(c.walk())
                nodes[i][key] = copy.deepcopy(nodes[j][key])
                try:
                    sp.loads(c.to_bytes())
                except SafepointError:
                    pass


def test_warnings_are_not_errors_here() -> None:
    # the suite ignores warnings (env drift) on purpose; make sure errors still surface
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SafepointError):
            sp.loads(b"")


# -- the other top-level fields of the manifest ------------------------------------
TOP_LEVEL = ["format", "root_type", "env", "signature", "metadata", "golden", "signed", "root"]


@pytest.mark.parametrize("key", TOP_LEVEL)
def test_wrong_types_in_top_level_fields(small_bytes: bytes, key: str) -> None:
    for value in [*HOSTILE_VALUES, {"outputs": [1, "a"]}, {"outputs": 5, "X": {"@": "nope"}}]:
        c = Crafted.from_bytes(small_bytes)
        c.manifest[key] = copy.deepcopy(value)
        _load_all_ways(c.to_bytes())


@pytest.mark.parametrize(
    "packages",
    [
        {"": "1.0"},
        {"a/b": "1", "\x00": "2", "../..": "3", "numpy.": "x"},
        {"numpy": 1, "scipy": None, "x": ["1"]},
        {f"fake-package-{i}": "1.0" for i in range(20_000)},
    ],
    ids=["empty name", "odd names", "odd versions", "20000 packages"],
)
def test_hostile_environment_records(small_bytes: bytes, packages: dict[str, Any]) -> None:
    """The environment record is compared with the installed packages at load: odd
    names must not escape as a ValueError, and a huge list must not stall the load."""
    c = Crafted.from_bytes(small_bytes)
    c.manifest["env"]["packages"] = packages
    data = c.to_bytes()
    _load_all_ways(data)
    diff = sp.inspect(data).environment_diff
    if any(isinstance(v, str) for v in packages.values()):
        # names that are not installed here are reported, whatever they look like
        assert diff
        with pytest.raises(sp.EnvironmentMismatchError):
            sp.loads(data, env="error")
    if len(packages) > 1000:
        assert any("only the first" in d for d in diff)
        assert len(diff) <= 300


# -- the manifest's fast parse (the C parser, checked by re-encoding) stays as strict ----
def _written_manifest(data: bytes) -> dict[str, Any]:
    """The manifest as the file holds it (buffer table included)."""
    from safepoint.format.reader import open_reader

    r = open_reader(data)
    try:
        return r.manifest
    finally:
        r.close()


def _compact(manifest: dict[str, Any]) -> str:
    """The manifest as the writer encodes it (the fast parse's canonical form)."""
    return json.dumps(manifest, separators=(",", ":"), allow_nan=True)


@pytest.mark.parametrize(
    "inject",
    [
        # a key of the top object twice: the later value would win in a plain parse
        lambda body: body.replace('{"format":', '{"root":1,"format":', 1),
        # a key twice inside a node
        lambda body: body.replace('"@":"dict"', '"@":"dict","@":"dict"', 1),
        # the same key and value twice: re-encoding drops one
        lambda body: body.replace('"shared":[]', '"shared":[],"shared":[]', 1),
    ],
)
def test_duplicate_keys_in_a_compact_manifest(small_bytes: bytes, inject: Any) -> None:
    c = Crafted.from_bytes(small_bytes)
    body = _compact(_written_manifest(small_bytes))
    crafted = inject(body)
    assert crafted != body
    data = c.to_bytes(manifest_bytes=crafted.encode())
    refused(data, FormatError, match="duplicate key")


def test_a_valid_manifest_formatted_otherwise_still_loads(small_bytes: bytes) -> None:
    """Spaces, key order, escapes: not the writer's bytes, so parsed by the strict
    path, which accepts them as before."""
    c = Crafted.from_bytes(small_bytes)
    manifest = _written_manifest(small_bytes)
    expected = sp.loads(small_bytes)
    for body in (
        json.dumps(manifest, indent=1),
        json.dumps(manifest, sort_keys=True, ensure_ascii=False),
        _compact(manifest),
    ):
        out = sp.loads(c.to_bytes(manifest_bytes=body.encode()))
        assert out.keys() == expected.keys()
        np.testing.assert_array_equal(out["a"], expected["a"])


def test_a_written_manifest_takes_the_fast_parse(
    small_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safepoint.format import reader

    def hook(pairs: Any) -> Any:
        raise AssertionError("the strict hook ran on a manifest the writer wrote")

    monkeypatch.setattr(reader, "_strict_object", hook)
    assert sp.loads(small_bytes).keys() == {"a", "b", "c"}
