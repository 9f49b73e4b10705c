"""The one typed columnar codec for sequences of strings with missing values.

Used for object arrays of str (OneHotEncoder's ``categories_``), numpy
StringDType arrays, pandas string arrays, large lists of str and the keys of
large str->number dicts (a TfidfVectorizer vocabulary). Strings are joined by
NUL into one UTF-8 buffer (split back at C speed); if a string contains NUL,
they are concatenated and their lengths stored (``t`` + ``l``: one to four
bytes per item; older files hold int64 offsets, ``b`` + ``o``, still read).
Missing values are kept by kind.
Arrow-backed pandas strings take a fast path to and from the same node
(:func:`encode_arrow_strings`, :func:`decode_strings_arrow`).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import spec

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

__all__ = [
    "NULL_KINDS",
    "decode_strings",
    "decode_strings_arrow",
    "encode_arrow_strings",
    "encode_strings",
    "null_code",
    "strings_only",
]

#: a lengths buffer ("l") of this many items or more could overflow int64 offsets
_MAX_LENGTHS_ITEMS = 1 << 31

#: code -> kind of missing value; the code is what the nulls buffer stores
NULL_KINDS = {1: "None", 2: "nan", 3: "pd.NA", 4: "pd.NaT"}


def null_code(x: Any) -> int:
    """The missing-value code of ``x``, or 0 if it is not a missing value we keep."""
    if x is None:
        return 1
    if type(x) is float and math.isnan(x):
        return 2
    t = type(x)
    if t.__module__.startswith("pandas"):
        name = t.__name__
        if name == "NAType":
            return 3
        if name == "NaTType":
            return 4
    if isinstance(x, np.floating) and np.isnan(x):
        return 2
    return 0


def null_value(code: int) -> Any:
    if code == 1:
        return None
    if code == 2:
        return float("nan")
    import pandas as pd

    return pd.NA if code == 3 else pd.NaT


def strings_only(values: list[Any]) -> bool:
    """True if every item is a str (exactly) or a missing value, and at least one is a str."""
    any_str = False
    for x in values:
        if type(x) is str:
            any_str = True
        elif null_code(x) == 0:
            return False
    return any_str


def encode_strings(values: list[Any], enc: Encoder) -> dict[str, Any]:
    """Encode a list of str / missing values. Caller checked :func:`strings_only`."""
    n = len(values)
    nulls: np.ndarray[Any, Any] | None = None
    strs = values
    if not all(type(x) is str for x in values):
        nulls = np.zeros(n, dtype=np.uint8)
        strs = list(values)
        for i, x in enumerate(values):
            if type(x) is not str:
                nulls[i] = null_code(x)
                strs[i] = ""
    text = "\x00".join(strs)
    node: dict[str, Any] = {"n": n}
    if n and text.count("\x00") != n - 1:
        lengths = np.fromiter((len(s) for s in strs), dtype=np.int64, count=n)
        node.update(_text_and_lengths("".join(strs).encode("utf-8", "surrogatepass"), lengths, enc))
    else:
        node["b"] = enc.buffer(text.encode("utf-8", "surrogatepass"))
    if nulls is not None:
        node["z"] = enc.buffer(nulls)
    return node


def _length_width(longest: int, n: int) -> int:
    """Bytes (1, 2 or 4) of the narrowest unsigned integer that holds every one of ``n``
    lengths up to ``longest``; 0: store int64 offsets instead (items of 4 GiB or more,
    or too many items)."""
    width = next((w for w in (1, 2, 4) if longest < 1 << (8 * w)), 0)
    return 0 if n >= _MAX_LENGTHS_ITEMS else width


def _text_and_lengths(data: Any, lengths: np.ndarray[Any, Any], enc: Encoder) -> dict[str, Any]:
    """The concatenated form: ``t`` the UTF-8 text, ``l`` each item's length in
    characters as the narrowest unsigned integer that holds the longest (``lw``
    bytes: 1, 2 or 4). Items of 4 GiB or more fall back to int64 offsets (``b`` + ``o``)."""
    n = lengths.size
    width = _length_width(int(lengths.max()) if n else 0, n)
    if not width:
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return {"o": enc.buffer(offsets), "b": enc.buffer(data)}
    return {"l": enc.buffer(lengths.astype(f"<u{width}")), "lw": width, "t": enc.buffer(data)}


#: items whose lengths are worked out at a time from a column's offsets (a scratch of
#: 512 KiB at most: it stays in the cache, and is little fresh memory to fault in)
_LENGTHS_BLOCK = 1 << 16


def _text_and_offsets(data: Any, offsets: np.ndarray[Any, Any], enc: Encoder) -> dict[str, Any]:
    """:func:`_text_and_lengths` of the n + 1 character ``offsets`` of an Arrow column
    (any integer dtype, the first not necessarily 0): the same node, without an int64
    array of every length. Ten million strings' lengths are 80 MB that a first save
    in a fresh process faults in only to narrow them to one byte each; here they are
    worked out a block at a time, then written straight into the narrow array."""
    n = offsets.size - 1
    longest = 0
    scratch = np.empty(min(n, _LENGTHS_BLOCK), dtype=offsets.dtype)
    for lo in range(0, n, _LENGTHS_BLOCK):
        hi = min(lo + _LENGTHS_BLOCK, n)
        block = np.subtract(offsets[lo + 1 : hi + 1], offsets[lo:hi], out=scratch[: hi - lo])
        longest = max(longest, int(block.max()))
    width = _length_width(longest, n)
    if not width:
        rebased = offsets.astype(np.int64) - int(offsets[0])
        return {"o": enc.buffer(rebased), "b": enc.buffer(data)}
    lengths = np.empty(n, dtype=f"<u{width}")
    # every length fits the narrow type (its maximum was just found)
    np.subtract(offsets[1:], offsets[:-1], out=lengths, casting="unsafe")
    return {"l": enc.buffer(lengths), "lw": width, "t": enc.buffer(data)}


def _char_offsets(node: dict[str, Any], dec: Decoder, n: int, chars: int) -> np.ndarray[Any, Any]:
    """The n + 1 character offsets of a column in the concatenated form (``l``
    lengths or ``o`` offsets), checked to split exactly ``chars`` characters."""
    if "l" in node:
        if "o" in node:
            raise dec.fail("a string column holds both lengths and offsets")
        width = node.get("lw")
        if type(width) is not int or width not in (1, 2, 4):
            raise dec.fail(f"string lengths of width {width!r} (1, 2 or 4 bytes)")
        if n >= _MAX_LENGTHS_ITEMS:
            raise dec.fail(f"string column of {n} items stores lengths (offsets needed)")
        lengths = dec.array(
            dec.field(node, "l", int), np.dtype(f"<u{width}"), (n,), structural=True
        )
        # unsigned lengths: the offsets increase by construction, and cannot overflow
        offsets = np.empty(n + 1, dtype=np.int64)
        offsets[0] = 0
        offsets[1:] = lengths
        np.cumsum(offsets, out=offsets)
        if offsets[-1] != chars:
            raise dec.fail(
                f"string lengths add up to {int(offsets[-1])} characters, the text holds {chars}"
            )
        return offsets
    offsets = dec.array(dec.field(node, "o", int), np.dtype("<i8"), (n + 1,), structural=True)
    if offsets[0] != 0 or offsets[-1] != chars or np.any(offsets[1:] < offsets[:-1]):
        raise dec.fail("string offsets are not increasing within the text")
    return offsets


def decode_strings(node: dict[str, Any], dec: Decoder) -> list[Any]:
    n = dec.field(node, "n", int)
    if n < 0 or n > dec.max_items:
        raise dec.fail(f"string column declares {n} items")
    # a list of n Python strings, before its text is read (a small compressed buffer
    # of zeros could otherwise become tens of millions of empty strings)
    dec.reader.charge(spec.OBJECT_COST * n, f"a column of {n} strings")
    lengths_form = "l" in node
    try:
        raw = dec.raw(dec.field(node, "t" if lengths_form else "b", int))
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise dec.fail(f"string column is not valid UTF-8: {exc}") from None
    if lengths_form or "o" in node:
        bounds = _char_offsets(node, dec, n, len(text)).tolist()
        out: list[Any] = [text[a:b] for a, b in itertools.pairwise(bounds)]
    else:
        out = text.split("\x00") if n else []
        if len(out) != n and not (n == 0 and text == ""):
            raise dec.fail(f"string column holds {len(out)} items, declares {n}")
    if "z" in node:
        nulls = dec.array(dec.field(node, "z", int), np.dtype("u1"), (n,), structural=True)
        idx = np.flatnonzero(nulls)
        if idx.size:
            codes = nulls[idx]
            if codes.max() > max(NULL_KINDS):
                raise dec.fail("unknown missing-value code in a string column")
            for i, c in zip(idx.tolist(), codes.tolist(), strict=True):
                out[i] = null_value(c)
    return out


# -- the Arrow fast path ------------------------------------------------------------
# pandas' default string dtype keeps its strings in an Arrow (large_)string array.
# Turning ten million of them into Python str objects and back costs seconds, so
# these two functions write and read the very same node (UTF-8 text plus the
# character lengths of the "t" + "l" form) straight from Arrow's buffers with numpy.
# Arrow's byte offsets are the character offsets for ASCII text; otherwise they
# are shifted by the number of UTF-8 continuation bytes before them.


def _continuation_bytes(data: np.ndarray[Any, Any], ascii_only: bool | None = None) -> Any:
    """Positions of UTF-8 continuation bytes (0b10xxxxxx); empty for ASCII text."""
    if ascii_only is None:
        ascii_only = not data.size or int(data.max()) < 0x80
    if ascii_only:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero((data & 0xC0) == 0x80)


def encode_arrow_strings(array: Any, enc: Encoder) -> dict[str, Any]:
    """Encode a pyarrow ``string``/``large_string`` (chunked) array: the node that
    :func:`encode_strings` writes for ``array.to_pylist()``, always in the
    concatenated form (``t`` + ``l``), which decodes to Arrow without a scan."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    if pa.types.is_large_string(array.type):
        off_dtype: Any = np.int64
    elif pa.types.is_string(array.type):
        off_dtype = np.int32
    else:
        raise TypeError(f"not an Arrow string array: {array.type}")
    n = len(array)
    if n == 0:
        return {"n": 0, "b": enc.buffer(b"")}
    missing = None
    if array.null_count:
        missing = ~array.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.frombuffer(array.buffers()[1], dtype=off_dtype, count=array.offset + n + 1)
    offsets = offsets[array.offset :]
    if missing is not None and np.any(offsets[1:][missing] != offsets[:-1][missing]):
        # Arrow lets a null slot hold bytes; the codec stores "" there
        array = pc.if_else(array.is_valid(), array, pa.scalar("", array.type))
        offsets = np.frombuffer(array.buffers()[1], dtype=off_dtype, count=array.offset + n + 1)
        offsets = offsets[array.offset :]
    start, end = int(offsets[0]), int(offsets[-1])
    data_buf = array.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)[start:end]
        if data_buf is not None
        else np.empty(0, dtype=np.uint8)
    )
    cont = _continuation_bytes(data)
    if cont.size:
        chars = offsets.astype(np.int64) - start
        chars -= np.searchsorted(cont, chars, side="left")
        offsets = chars
    node: dict[str, Any] = {"n": n, **_text_and_offsets(data, offsets, enc)}
    if missing is not None:
        node["z"] = enc.buffer(missing.astype(np.uint8))  # code 1: None
    return node


def decode_strings_arrow(node: dict[str, Any], dec: Decoder) -> Any:
    """Decode a string column node into a pyarrow ``large_string`` array, never
    creating Python str objects; validated like :func:`decode_strings` (offsets,
    item count, UTF-8, missing-value codes)."""
    import pyarrow as pa

    n = dec.field(node, "n", int)
    if n < 0 or n > dec.max_items:
        raise dec.fail(f"string column declares {n} items")
    lengths_form = "l" in node
    b_index = dec.field(node, "t" if lengths_form else "b", int)
    size = dec.reader.entry(b_index).raw_length
    # held in memory (never mapped): Arrow trusts the validated offsets later
    data = dec.array(b_index, np.dtype("u1"), (size,), structural=True)
    ascii_only = not size or int(data.max()) < 0x80
    if lengths_form or "o" in node:
        cont = _continuation_bytes(data, ascii_only)
        offsets = _char_offsets(node, dec, n, size - cont.size)
        if cont.size:
            # character offset -> byte offset: add the continuation bytes before it
            offsets = offsets + np.searchsorted(cont - np.arange(cont.size), offsets, side="right")
    elif n == 0:
        if size:
            raise dec.fail("string column holds 1 items, declares 0")
        offsets = np.zeros(1, dtype=np.int64)
    else:
        seps = np.flatnonzero(data == 0)
        if seps.size != n - 1:
            raise dec.fail(f"string column holds {seps.size + 1} items, declares {n}")
        offsets = np.empty(n + 1, dtype=np.int64)
        offsets[0] = 0
        offsets[1:n] = seps - np.arange(n - 1)
        offsets[n] = size - (n - 1)
        if seps.size:
            data = np.delete(data, seps)
    validity = None
    null_count = 0
    if "z" in node:
        nulls = dec.array(dec.field(node, "z", int), np.dtype("u1"), (n,), structural=True)
        if nulls.size and nulls.max() > max(NULL_KINDS):
            raise dec.fail("unknown missing-value code in a string column")
        valid = nulls == 0
        null_count = n - int(np.count_nonzero(valid))
        if null_count:
            validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    out = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(data), validity, null_count
    )
    try:
        # ASCII text is valid UTF-8 and the offsets were checked above (or built
        # from the separators): the cheap structural validation is enough then
        out.validate(full=not ascii_only)
    except pa.ArrowInvalid as exc:
        raise dec.fail(f"string column is not valid UTF-8: {exc}") from None
    return out
