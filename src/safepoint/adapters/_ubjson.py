"""Find the byte range of one member of a UBJSON object, without decoding it.

XGBoost pickles a booster as its "memory snapshot": a UBJSON object
``{"Config": {...}, "Model": {...}}`` whose ``Model`` value is byte for byte what
``Booster.save_raw("ubj")`` writes. This walker skips values by their markers and
declared lengths (every length checked against the bytes present, nesting bounded)
so that the model can be cut out and handed to XGBoost's model loader, the same
path as a booster saved by safepoint::

    >>> member_span(b"{L\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01ai\\x05}", "a")
    (11, 13)
"""

from __future__ import annotations

import struct

from ..errors import FormatError

__all__ = ["member_span"]

_MAX_DEPTH = 64
_FIXED = {"Z": 0, "N": 0, "T": 0, "F": 0, "i": 1, "U": 1, "C": 1, "I": 2, "l": 4, "L": 8}
_FIXED.update({"d": 4, "D": 8})
_INTS = {"i": ">b", "U": ">B", "I": ">h", "l": ">i", "L": ">q"}


def _fail(msg: str) -> FormatError:
    return FormatError(f"xgboost model: the pickled booster is not valid UBJSON ({msg})")


class _Walker:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.mv = memoryview(data).cast("B")
        self.end = len(self.mv)

    def _need(self, pos: int, n: int) -> None:
        if n < 0 or pos + n > self.end:
            raise _fail(f"{n} bytes declared at byte {pos}, {self.end - pos} remain")

    def marker(self, pos: int) -> tuple[str, int]:
        self._need(pos, 1)
        return chr(self.mv[pos]), pos + 1

    def length(self, pos: int) -> tuple[int, int]:
        kind, pos = self.marker(pos)
        fmt = _INTS.get(kind)
        if fmt is None:
            raise _fail(f"a length of type {kind!r}")
        size = struct.calcsize(fmt)
        self._need(pos, size)
        (n,) = struct.unpack(fmt, self.mv[pos : pos + size])
        if n < 0:
            raise _fail("a negative length")
        return n, pos + size

    def key(self, pos: int) -> tuple[str, int]:
        n, pos = self.length(pos)
        self._need(pos, n)
        try:
            return str(self.mv[pos : pos + n], "utf-8"), pos + n
        except UnicodeDecodeError:
            raise _fail("a key that is not UTF-8") from None

    def value(self, pos: int, kind: str | None = None, depth: int = 0) -> int:
        """The end of the value at ``pos`` (``kind`` when its marker was given by a
        typed container)."""
        if depth > _MAX_DEPTH:
            raise _fail("nested too deeply")
        if kind is None:
            kind, pos = self.marker(pos)
        if kind in _FIXED:
            self._need(pos, _FIXED[kind])
            return pos + _FIXED[kind]
        if kind in ("S", "H"):
            n, pos = self.length(pos)
            self._need(pos, n)
            return pos + n
        if kind in ("[", "{"):
            return self.container(pos, kind, depth + 1)
        raise _fail(f"unknown marker {kind!r} at byte {pos - 1}")

    def header(self, pos: int) -> tuple[str | None, int | None, int]:
        """Optional ``$type`` and ``#count`` of a container."""
        typ: str | None = None
        count: int | None = None
        kind, nxt = self.marker(pos)
        if kind == "$":
            typ, pos = self.marker(nxt)
            kind, nxt = self.marker(pos)
            if kind != "#":
                raise _fail("a typed container without a count")
        if kind == "#":
            count, pos = self.length(nxt)
        return typ, count, pos

    def container(self, pos: int, kind: str, depth: int) -> int:
        typ, count, pos = self.header(pos)
        if typ is not None and count is not None and typ in _FIXED and kind == "[":
            # a typed array of fixed-size items: skipped in one step
            n = count * _FIXED[typ]
            self._need(pos, n)
            return pos + n
        i = 0
        while count is None or i < count:
            if count is None:
                closing, nxt = self.marker(pos)
                if closing == ("]" if kind == "[" else "}"):
                    return nxt
            if kind == "{":
                _, pos = self.key(pos)
            pos = self.value(pos, typ, depth)
            i += 1
        return pos

    def members(self) -> dict[str, tuple[int, int]]:
        kind, pos = self.marker(0)
        if kind != "{":
            raise _fail("it is not an object")
        typ, count, pos = self.header(pos)
        out: dict[str, tuple[int, int]] = {}
        i = 0
        while count is None or i < count:
            if count is None:
                closing, nxt = self.marker(pos)
                if closing == "}":
                    pos = nxt
                    break
            name, pos = self.key(pos)
            start = pos
            pos = self.value(pos, typ, 1)
            out[name] = (start, pos)
            i += 1
        if pos != self.end:
            raise _fail(f"{self.end - pos} bytes after the object")
        return out


def member_span(data: bytes | bytearray | memoryview, name: str) -> tuple[int, int]:
    """(start, end) of the value of ``name`` in the top-level UBJSON object ``data``.

    Raises :class:`~safepoint.FormatError` when ``data`` is not one complete UBJSON
    object or has no such member.
    """
    spans = _Walker(data).members()
    if name not in spans:
        raise _fail(f"no {name!r} member (found {', '.join(sorted(spans)) or 'none'})")
    return spans[name]
