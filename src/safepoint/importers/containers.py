"""Reading an import source: format detection by magic bytes, bounded decompression,
zip members.

Detection never trusts the file name. Compressed joblib files (zlib, gzip, bz2,
xz, lzma, lz4: the whole stream is compressed) are decompressed with a running
bound on the output, so a decompression bomb stops at the limit instead of
filling memory.

>>> sniff(b"\\x80\\x05\\x95")
'pickle'
>>> sniff(b"\\x1f\\x8b\\x08")
'gzip'
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable
from typing import Any

from ..errors import FormatError, LimitExceededError, NotFoundError
from ..format import spec
from .limits import ConvertLimits
from .pickle_parser import looks_like_pickle

__all__ = ["COMPRESSIONS", "decompress", "read_bounded", "sniff", "zip_members", "zip_names"]

COMPRESSIONS = ("zlib", "gzip", "bz2", "xz", "lzma", "lz4")
_CHUNK = 1 << 24
_RATIO_FREE = 64 << 20


def sniff(head: bytes) -> str:
    """The container format of a file from its first bytes."""
    if head.startswith(spec.MAGIC):
        return "safepoint"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if head.startswith(b"ZF"):
        return "joblib-compat"
    if looks_like_pickle(head):
        return "pickle"
    return "unknown"


def read_bounded(path: str | os.PathLike[str], limits: ConvertLimits) -> bytes:
    """The bytes of ``path``; refuses files above ``limits.max_bytes`` before reading."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {os.fspath(path)!r}") from None
    except OSError as exc:
        raise FormatError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    if os.path.isdir(path):
        raise FormatError(f"{os.fspath(path)!r} is a directory, not a model file")
    if size > limits.max_bytes:
        raise LimitExceededError(
            f"{os.fspath(path)!r} has {size} bytes (limit {limits.max_bytes}); raise "
            "ConvertLimits.max_bytes if it is expected to be this large"
        )
    with open(path, "rb") as f:
        # read(n) allocates n bytes up front: ask for what stat said (+1 to see growth)
        data = f.read(size + 1)
    if len(data) > limits.max_bytes:
        raise LimitExceededError(f"{os.fspath(path)!r} grew beyond {limits.max_bytes} bytes")
    return data


class _Bounded:
    def __init__(self, compressed: int, limits: ConvertLimits, what: str) -> None:
        self.parts: list[bytes] = []
        self.total = 0
        self.compressed = max(compressed, 1)
        self.limits = limits
        self.what = what

    def room(self) -> int:
        return min(_CHUNK, self.limits.max_bytes - self.total + 1)

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.limits.max_bytes:
            raise LimitExceededError(
                f"the {self.what} stream decompresses to more than {self.limits.max_bytes} "
                "bytes (a decompression bomb, or raise ConvertLimits.max_bytes)"
            )
        if (
            self.total > _RATIO_FREE
            and self.total > self.compressed * self.limits.max_compression_ratio
        ):
            raise LimitExceededError(
                f"the {self.what} stream expands more than "
                f"{self.limits.max_compression_ratio}x beyond its first 64 MiB (a "
                "decompression bomb?); if the file is trusted, raise "
                "ConvertLimits.max_compression_ratio (CLI: --max-ratio)"
            )
        self.parts.append(chunk)

    def result(self) -> bytes:
        return b"".join(self.parts)


def _stream(data: bytes, new: Callable[[], Any], out: _Bounded, *, chained: bool = True) -> bytes:
    """Run decompressor objects with ``max_length`` so that output grows in bounded steps."""
    rest = data
    while True:
        d = new()
        buf = rest
        while True:
            chunk = d.decompress(buf, max_length=out.room())
            buf = b""
            out.add(chunk)
            if d.eof:
                break
            if d.needs_input:
                raise FormatError(f"the {out.what} stream is truncated")
        rest = d.unused_data
        if not chained or not rest or not rest.strip(b"\x00"):
            return out.result()


def _zlib(data: bytes, out: _Bounded, wbits: int) -> bytes:
    rest = data
    while True:
        d = zlib.decompressobj(wbits)
        buf = rest
        while True:
            chunk = d.decompress(buf, out.room())
            out.add(chunk)
            buf = d.unconsumed_tail
            if d.eof:
                break
            if not buf and not chunk:
                tail = d.flush()
                out.add(tail)
                if not d.eof:
                    raise FormatError(f"the {out.what} stream is truncated")
                break
        rest = d.unused_data
        # data after the first stream is decompressed too (for gzip: more members), so
        # that whatever it holds is seen: a pickle after the first one is refused
        if not rest or not rest.strip(b"\x00"):
            return out.result()


def decompress(data: bytes, kind: str, limits: ConvertLimits) -> bytes:
    """Decompress a whole-file stream with a bound on its output."""
    import bz2
    import lzma

    out = _Bounded(len(data), limits, kind)
    try:
        if kind == "zlib":
            return _zlib(data, out, 15)
        if kind == "gzip":
            return _zlib(data, out, 31)
        if kind == "bz2":
            return _stream(data, bz2.BZ2Decompressor, out)
        if kind in ("xz", "lzma"):
            fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
            return _stream(data, lambda: lzma.LZMADecompressor(format=fmt), out)
        if kind == "lz4":
            try:
                import lz4.frame
            except ImportError:
                raise FormatError(
                    "the file is lz4-compressed and the lz4 package is not installed: "
                    "pip install lz4"
                ) from None
            return _stream(data, lz4.frame.LZ4FrameDecompressor, out)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, RuntimeError) as exc:
        raise FormatError(f"the {kind} stream is corrupt: {exc}") from None
    raise FormatError(f"unknown compression {kind!r}")


def _zip_errors() -> tuple[type[BaseException], ...]:
    """What zipfile raises on a malformed archive: more than BadZipFile (found by the
    fuzzing campaign: NotImplementedError for a made-up "version needed", zlib.error
    from a corrupt deflate member, EOFError, struct.error)."""
    import lzma
    import struct
    import zipfile

    return (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
        RuntimeError,
        zlib.error,
        lzma.LZMAError,
        struct.error,
    )


def zip_members(data: bytes, limits: ConvertLimits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file in a zip archive, sizes checked before reading."""
    import zipfile

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _zip_errors() as exc:
        raise FormatError(f"not a valid zip archive: {exc}") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_zip_members:
            raise LimitExceededError(
                f"the zip archive has {len(infos)} members (limit {limits.max_zip_members})"
            )
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise FormatError("the zip archive has duplicate member names (crafted?)")
        total = 0
        out = []
        for info in infos:
            total += info.file_size
            if total > limits.max_bytes:
                raise LimitExceededError(
                    f"the zip archive's members declare more than {limits.max_bytes} bytes"
                )
            if (
                info.file_size > _RATIO_FREE
                and info.file_size > max(info.compress_size, 1) * limits.max_compression_ratio
            ):
                raise LimitExceededError(
                    f"zip member {info.filename!r} expands more than "
                    f"{limits.max_compression_ratio}x (a decompression bomb?); if the file "
                    "is trusted, raise ConvertLimits.max_compression_ratio (CLI: --max-ratio)"
                )
            try:
                with zf.open(info) as f:
                    # the declared size bounds the read; a member longer than it fails its CRC
                    raw = f.read(info.file_size + 1)
            except _zip_errors() as exc:
                raise FormatError(f"zip member {info.filename!r} cannot be read: {exc}") from None
            if len(raw) != info.file_size:
                raise FormatError(f"zip member {info.filename!r} does not match its size")
            out.append((info.filename, raw))
        return out


def zip_names(data: bytes) -> list[str]:
    """The file names of a zip archive (nothing is decompressed); [] if it is not one."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    except _zip_errors():
        return []
