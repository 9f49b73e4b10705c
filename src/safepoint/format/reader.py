"""Parse and validate a file: header, footer, manifest, buffer table (the *parse* step).

Nothing here imports a type named in the file or allocates more than the
validated, limit-checked sizes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import math
import mmap as _mmap
import os
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import xxhash

from .._io import kind_of
from ..errors import FormatError, IntegrityError, LimitExceededError, UnsupportedFormatVersionError
from . import _parallel_io as _pio
from . import spec
from .integrity import checksum, strong_digest

__all__ = ["BufferEntry", "Reader", "in_private_memory", "open_reader", "problems_against"]


class BufferEntry(NamedTuple):
    """One row of the buffer table (a tuple: files hold thousands of them)."""

    offset: int
    length: int
    raw_length: int
    codec: str
    checksum: str
    digest: str | None


_new_entry = tuple.__new__
_xxh3_hex = xxhash.xxh3_64_hexdigest


class _Source:
    """Random access to the file's bytes (a path, a seekable file, or bytes)."""

    def __init__(
        self,
        f: BinaryIO | None,
        data: memoryview | None,
        path: str | None,
        size: int | None = None,
    ) -> None:
        self.f = f
        self.data = data
        self.path = path
        self._mm: _mmap.mmap | None = None
        if data is not None:
            self.size = len(data)
        else:
            assert f is not None
            if size is None:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(0)
            # else: a path's size, from the fstat that checked it is a regular file,
            # opened just now (at offset 0)
            self.size = size
            if path is not None and self.size <= min(_WHOLE_FILE_MAX, _pio.PARALLEL_FROM):
                # a small file: one read of all of it, then the in-memory paths (one
                # system call instead of one per buffer); its buffers are all far
                # below the memory-mapping threshold
                whole = f.read(self.size + 1)
                if not isinstance(whole, bytes) or len(whole) != self.size:
                    raise FormatError(f"{path!r} changed size while it was read")
                f.close()
                self.f = None
                self.data = memoryview(whole)
        data = self.data
        #: the bytes, when they cannot change (a ``bytes`` object: the caller's or one
        #: read here): buffers are then checked where they lie and copied in one call
        self.frozen: memoryview | None = (
            data if data is not None and type(data.obj) is bytes else None
        )

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return bytes(self.data[offset : offset + n])
        assert self.f is not None
        self.f.seek(offset)
        out = self.f.read(n)
        if not isinstance(out, bytes):
            raise FormatError("the file object must be opened in binary mode ('rb')")
        if len(out) != n:
            raise FormatError(f"the file ended early: wanted {n} bytes at offset {offset}")
        return out

    def readinto(self, offset: int, mv: memoryview) -> None:
        n = len(mv)
        if self.data is not None:
            mv[:] = self.data[offset : offset + n]
            return
        assert self.f is not None
        self.f.seek(offset)
        got = 0
        while got < n:
            k = self.f.readinto(mv[got:])  # type: ignore[attr-defined]
            if not k:
                raise FormatError(f"the file ended early: wanted {n} bytes at offset {offset}")
            got += k

    def fd(self) -> int | None:
        """The descriptor of a real file whose bytes are this source's, else None.

        Only files opened here or plain binary files (``io.FileIO``, a
        ``BufferedReader`` over one): a wrapper's ``fileno()`` (gzip, say) may
        name a file holding other bytes.
        """
        f = self.f
        if f is None:
            return None
        if self.path is None:
            raw = f.raw if type(f) is io.BufferedReader else f
            if type(raw) is not io.FileIO:
                return None
        try:
            return f.fileno()
        except (OSError, ValueError):
            return None

    def view(self, offset: int, n: int) -> memoryview:
        """A zero-copy read-only view (memory-mapped for files)."""
        if self.data is not None:
            return self.data[offset : offset + n]
        if self._mm is None:
            assert self.f is not None
            self._mm = _mmap.mmap(self.f.fileno(), 0, access=_mmap.ACCESS_READ)
        return memoryview(self._mm)[offset : offset + n]

    def close(self) -> None:
        # the mmap stays open while arrays reference it; it closes when they are gone
        self._mm = None
        if self.f is not None and self.path is not None:
            self.f.close()


#: files at most this large (and below the parallel-read threshold) are read whole
_WHOLE_FILE_MAX = 256 << 10


def _as_source(src: Any) -> _Source:
    if isinstance(src, bytes | bytearray | memoryview):
        return _Source(None, memoryview(src).cast("B"), None)
    if isinstance(src, str | os.PathLike):
        path = os.fspath(src)
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by Reader.close
        except FileNotFoundError:
            from ..errors import NotFoundError

            raise NotFoundError(f"no such file: {path!r}") from None
        except IsADirectoryError:
            raise FormatError(f"{path!r} is a directory, not a safepoint file") from None
        st = os.fstat(f.fileno())
        kind = kind_of(st.st_mode)
        if kind is not None:
            # a pipe or device has no size and no random access (and /dev/zero no end)
            f.close()
            raise FormatError(
                f"{path!r} is a {kind}, not a regular file: safepoint files are read by "
                "random access; pass the file's bytes (sp.loads) or an open file object"
            )
        return _Source(f, None, path, st.st_size)
    if hasattr(src, "read"):
        if isinstance(src, io.TextIOBase):
            raise FormatError("the file object must be opened in binary mode ('rb'), not text")
        try:
            seekable = bool(getattr(src, "seekable", lambda: False)())
        except (OSError, ValueError):
            seekable = False  # closed or odd file objects: read them as a stream
        if seekable:
            return _Source(src, None, None)
        data = src.read()
        if not isinstance(data, bytes | bytearray):
            raise FormatError("the file object must be opened in binary mode ('rb')")
        return _Source(None, memoryview(data), None)
    raise FormatError(
        f"cannot read a safepoint file from a {type(src).__name__}: "
        "pass a path, a binary file object or bytes"
    )


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise FormatError(f"duplicate key {k!r} in the manifest")
            seen.add(k)
    return out


def _parse_manifest(raw: bytes) -> Any:
    """The manifest's JSON, refusing duplicate keys (:func:`_strict_object` sees
    every object's pairs).

    The writer's JSON is ASCII (ensure_ascii) with no white space: the C scanner
    is called directly (json.loads costs more than a small manifest's parse in
    argument handling and set-up). Anything else (white space, UTF-8, invalid JSON)
    goes through json.loads with the same hook, for the same result or its message.
    A hook call per object costs less than the re-encoding that used to prove the
    absence of duplicates: measured with callgrind on the iris KNN manifest (1.8 kB,
    ~60 objects), 270k instructions against 460k (scan 190k + re-encoding 270k).
    """
    try:
        text = raw.decode("ascii")
        manifest, end = _SCAN(text, 0)
        if end == len(text):
            return manifest
    except FormatError:
        raise
    except (ValueError, TypeError, StopIteration, RecursionError):
        pass
    return json.loads(raw, object_pairs_hook=_strict_object)


_SCAN: Any = json.JSONDecoder(object_pairs_hook=_strict_object).scan_once  # type: ignore[attr-defined]
_HEADER_UNPACK = spec.HEADER.unpack_from
_FOOTER_UNPACK = spec.FOOTER.unpack_from


class Reader:
    """A parsed, validated file. Buffers are read on demand."""

    def __init__(self, source: _Source, limits: spec.Limits) -> None:
        self.source = source
        self.limits = limits
        size = source.size
        if size < spec.HEADER_SIZE + spec.FOOTER_SIZE:
            head = source.read(0, size)
            raise FormatError(
                f"not a safepoint file: {size} bytes is shorter than header + footer"
                + _guess(head, head)
            )
        data = source.data
        if data is not None:
            # unpacked where the bytes lie: no copies of header and footer
            magic, major, minor, _flags = _HEADER_UNPACK(data, 0)
        else:
            magic, major, minor, _flags = spec.HEADER.unpack(source.read(0, spec.HEADER_SIZE))
        if magic != spec.MAGIC:
            head = source.read(0, spec.HEADER_SIZE)
            tail = source.read(size - 8, 8)
            raise FormatError(
                "not a safepoint file: the magic bytes are wrong" + _guess(head, tail)
            )
        self._check_version(major, minor)
        if data is not None:
            fields = _FOOTER_UNPACK(data, size - spec.FOOTER_SIZE)
        else:
            fields = spec.FOOTER.unpack(source.read(size - spec.FOOTER_SIZE, spec.FOOTER_SIZE))
        if fields[9] != spec.END_MAGIC:
            raise FormatError(
                "the footer magic is missing: the file is truncated or not a safepoint file"
            )
        #: the footer's fields (:attr:`footer` makes the spec.Footer when asked)
        self._footer_fields = fields[:9]
        if (fields[6], fields[7]) != (major, minor):
            raise FormatError("header and footer disagree on the format version")
        self.version = (major, minor)
        mo, ml, manifest_raw_length, manifest_checksum, ao, al, _, _, flags = fields[:9]
        end = size - spec.FOOTER_SIZE
        if not (mo >= spec.HEADER_SIZE and mo + ml <= end):
            raise FormatError("the footer points outside the file: truncated or corrupt")
        if al and (not (mo + ml <= ao and ao + al <= end) or al > 1 << 16):
            raise FormatError("the signature block lies outside the file")
        if manifest_raw_length > limits.max_manifest_bytes:
            raise LimitExceededError(
                f"the manifest declares {manifest_raw_length} bytes, more than "
                f"Limits.max_manifest_bytes={limits.max_manifest_bytes}"
            )
        body = source.read(mo, ml)
        if xxhash.xxh3_64_intdigest(body) != manifest_checksum:
            raise IntegrityError("the manifest checksum does not match: the file is corrupt")
        self.manifest_bytes = body
        self.auth_block = source.read(ao, al) if al else None
        raw = body
        if flags & spec.FLAG_MANIFEST_ZSTD:
            raw = self._decompress_manifest(body, manifest_raw_length)
        if len(raw) != manifest_raw_length:
            raise FormatError("the manifest size does not match the footer")
        #: bytes of Python objects this load may still build (Limits.max_expansion)
        self.budget = limits.max_expansion * size + spec.EXPANSION_ALLOWANCE
        # every JSON object and array becomes a Python dict or list, and the decoder
        # builds about one object per node: counted before json.loads allocates them
        self.charge(
            2 * spec.OBJECT_COST * (raw.count(b"{") + raw.count(b"[")) + len(raw),
            "the manifest's nodes",
        )
        try:
            manifest = _parse_manifest(raw)
        except RecursionError:
            raise LimitExceededError("the manifest nests too deeply") from None
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            if isinstance(exc, FormatError):
                raise
            raise FormatError(f"the manifest is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise FormatError("the manifest is not a JSON object")
        self.manifest = manifest
        #: indices of the buffers read_array memory-mapped (their checksums unchecked)
        self.mapped: list[int] = []
        self.buffers = self._parse_buffers(manifest.get("buffers"), mo)
        shared = manifest.get("shared", [])
        if not isinstance(shared, list):
            raise FormatError("malformed manifest: 'shared' must be a list")
        self.manifest_shared: list[Any] = shared
        types = manifest.get("types", [])
        if not isinstance(types, list) or not all(
            isinstance(t, list)
            and len(t) == 3
            and all(isinstance(x, str) for x in t)
            and t[2] in ("obj", "red", "pyx", "ref", "adapter")
            for t in types
        ):
            raise FormatError("malformed manifest: 'types' must be [module, qualname, kind] rows")
        self.types: list[tuple[str, str, str]] = [(t[0], t[1], t[2]) for t in types]

    @functools.cached_property
    def footer(self) -> spec.Footer:
        """The footer (made when asked: a load reads its fields only)."""
        return spec.Footer(*self._footer_fields)

    @functools.cached_property
    def digest(self) -> str:
        """The file's identity: the xxh3-128 of its stored manifest (which holds every
        buffer's checksum). Worked out when asked: a load does not need it."""
        return xxhash.xxh3_128_hexdigest(self.manifest_bytes)

    def _decompress_manifest(self, body: bytes, raw_length: int) -> bytes:
        if raw_length > self.limits.max_compression_ratio * len(body) + spec.BOMB_ALLOWANCE:
            raise LimitExceededError(
                f"the manifest would expand {len(body)} bytes to {raw_length}: refused as a "
                "decompression bomb (raise Limits.max_compression_ratio if the file is trusted)"
            )
        import zstandard

        # zstd allocates what the frame header declares, whatever max_output_size says:
        # the declared size must be the one the footer promised (and limit-checked)
        _check_frame(body, raw_length, "the manifest")
        try:
            return zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise FormatError(f"the manifest does not decompress: {exc}") from None

    def _check_version(self, major: int, minor: int) -> None:
        if (major, minor) not in spec.READABLE_VERSIONS:
            newest = max(spec.READABLE_VERSIONS)
            if (major, minor) > newest:
                raise UnsupportedFormatVersionError(
                    f"the file uses format {major}.{minor}; this safepoint reads up to "
                    f"{newest[0]}.{newest[1]}: upgrade safepoint (pip install -U safepoint)"
                )
            raise UnsupportedFormatVersionError(f"unknown format version {major}.{minor}")

    def _parse_buffers(self, table: Any, manifest_offset: int) -> list[BufferEntry]:
        if not isinstance(table, list):
            raise FormatError("malformed manifest: 'buffers' must be a list")
        if len(table) > self.limits.max_buffers:
            raise LimitExceededError(f"the file declares {len(table)} buffers")
        out: list[BufferEntry] = []
        total = 0
        packed_total = packed_raw = 0
        # the writer stores buffers in order: while each non-empty one starts at or
        # after the end of the one before, none overlaps (else: the sort below)
        last_end = 0
        in_order = True
        align = spec.ALIGN
        for i, row in enumerate(table):
            # exact type checks: JSON gives int (never bool), str and list, nothing derived
            if not (
                type(row) is list
                and len(row) in (5, 6)
                and type(row[0]) is int
                and type(row[1]) is int
                and type(row[2]) is int
                and row[3] in ("raw", "zstd")
                and type(row[4]) is str
                and (len(row) == 5 or type(row[5]) is str)
            ):
                raise FormatError(f"malformed buffer entry {i}")
            off, length, raw_len, codec = row[0], row[1], row[2], row[3]
            if off < spec.HEADER_SIZE or length < 0 or off + length > manifest_offset:
                raise FormatError(f"buffer {i} lies outside the data region of the file")
            if off % align:
                raise FormatError(f"buffer {i} is not aligned to {spec.ALIGN} bytes")
            if codec == "raw":
                if raw_len != length:
                    raise FormatError(f"buffer {i}: raw size and stored size differ")
            else:
                if raw_len < 0:
                    raise FormatError(f"buffer {i}: negative size")
                if raw_len > spec.BOMB_ALLOWANCE and raw_len > (
                    self.limits.max_compression_ratio * max(length, 1)
                ):
                    raise LimitExceededError(
                        f"buffer {i} would expand {length} bytes to {raw_len}: refused as a "
                        "decompression bomb (raise Limits.max_compression_ratio if trusted)"
                    )
                packed_total += length
                packed_raw += raw_len
            total += raw_len
            if length:
                if off < last_end:
                    in_order = False
                last_end = off + length
            # tuple.__new__: the row's checked values, without NamedTuple's Python __new__
            out.append(_new_entry(BufferEntry, row if len(row) == 6 else (*row, None)))
        # many buffers, each under the threshold, must not add up to a bomb either
        if packed_raw > self.limits.max_compression_ratio * packed_total + spec.BOMB_ALLOWANCE:
            raise LimitExceededError(
                f"the compressed buffers would expand {packed_total} bytes to {packed_raw}: "
                "refused as a decompression bomb (raise Limits.max_compression_ratio if the "
                "file is trusted)"
            )
        if total > self.limits.max_total_bytes:
            raise LimitExceededError(
                f"the file declares {total} bytes of data, more than "
                f"Limits.max_total_bytes={self.limits.max_total_bytes}"
            )
        if not in_order:
            spans = sorted((b.offset, b.offset + b.length) for b in out if b.length)
            for (_, end), (start, _) in itertools.pairwise(spans):
                if start < end:
                    raise FormatError("two buffers overlap: the file is crafted or corrupt")
        return out

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` of Python objects against the load's budget: a file may make
        a load build at most ``Limits.max_expansion`` x its size (+ 64 MiB) of them, so
        that no count it declares can expand beyond the bytes really present."""
        self.budget -= nbytes
        if self.budget < 0:
            limit = self.limits.max_expansion
            raise LimitExceededError(
                f"{what} would make this {self.source.size}-byte file build more Python "
                f"objects than {limit} x its size + {spec.EXPANSION_ALLOWANCE >> 20} MiB "
                f"(Limits.max_expansion={limit}): refused as a crafted expansion (raise "
                "Limits.max_expansion if the file is trusted)"
            )

    def describe(self) -> str:
        """The file, for messages: its path, or how many bytes it has."""
        if self.source.path is not None:
            return repr(self.source.path)
        return f"a file of {self.source.size} bytes"

    # -- buffers ----------------------------------------------------------------
    def entry(self, index: int) -> BufferEntry:
        if not 0 <= index < len(self.buffers):
            raise FormatError(f"malformed manifest: buffer index {index} out of range")
        return self.buffers[index]

    def _check(self, b: BufferEntry, data: Any, index: int) -> None:
        self._compare(b, index, checksum(data), lambda: strong_digest(data))

    def _compare(self, b: BufferEntry, index: int, got: str, digest: Any) -> None:
        if got != b.checksum:
            raise IntegrityError(
                f"buffer {index} fails its checksum: the file is corrupt (bit rot, a bad copy)"
            )
        if self.strong and b.digest is not None and digest() != b.digest:
            raise IntegrityError(f"buffer {index} does not match its signed digest: tampered")

    strong = False

    def check_mapped(self) -> None:
        """Check the checksum (and, with a key, the signed digest) of every buffer that
        was memory-mapped instead of read: one read pass over the mapped pages."""
        for index in self.mapped:
            b = self.buffers[index]
            self._check(b, self.source.view(b.offset, b.length), index)

    def read_bytes(self, index: int) -> bytes:
        b = self.entry(index)
        if b.codec == "raw":
            return self._raw_bytes(index, b)
        packed = self._packed(index, b)
        out = bytearray(b.raw_length)
        self._fill(index, b, memoryview(out), packed)
        return bytes(out)

    def _raw_bytes(self, index: int, b: BufferEntry) -> bytes:
        out = self.source.read(b.offset, b.length)
        self._check(b, out, index)
        return out

    def _packed(self, index: int, b: BufferEntry) -> bytes:
        """The stored bytes of a compressed buffer, checked *before* anything is
        allocated for its decoded form."""
        packed = self.source.read(b.offset, b.length)
        self._check(b, packed, index)
        _check_frame(packed, b.raw_length, f"buffer {index}")
        return packed

    def _fill(
        self, index: int, b: BufferEntry, mv: memoryview, packed: bytes | None = None
    ) -> None:
        if b.codec == "raw":
            fd = self.source.fd() if _pio.HAVE_PREADV and len(mv) >= _pio.PARALLEL_FROM else None
            if fd is not None:
                self._pread(index, b, mv, fd)
                return
            self.source.readinto(b.offset, mv)
            self._check(b, mv, index)
            return
        if packed is None:
            packed = self._packed(index, b)
        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True) as r:
                got = 0
                while got < len(mv):
                    k = r.readinto(mv[got:])
                    if not k:
                        break
                    got += k
                extra = r.read(1)
        except zstandard.ZstdError as exc:
            raise FormatError(f"buffer {index} does not decompress: {exc}") from None
        if got != len(mv) or extra:
            raise FormatError(f"buffer {index} decompresses to a size other than declared")

    def _hashers(self, b: BufferEntry) -> tuple[Any, Any]:
        """Streaming hashers for buffer ``b``: its checksum's, and its digest's when
        the digest is to be checked (else None)."""
        strong = self.strong and b.digest is not None
        return xxhash.xxh3_64(), hashlib.blake2b(digest_size=32) if strong else None

    def _pread(self, index: int, b: BufferEntry, mv: memoryview, fd: int) -> None:
        """A large raw buffer: read by a few threads, checked while it arrives."""
        h, strong = self._hashers(b)
        _pio.pread_into(fd, b.offset, mv, (h, strong) if strong else (h,), _pio.io_threads())
        self._compare(b, index, h.hexdigest(), lambda: strong.hexdigest() if strong else None)

    def read_array(
        self,
        index: int,
        dtype: np.dtype[Any],
        shape: tuple[int, ...],
        *,
        mmap: bool = False,
        mmap_threshold: int = 1 << 20,
    ) -> np.ndarray[Any, Any]:
        buffers = self.buffers
        if type(index) is int and 0 <= index < len(buffers):
            b = buffers[index]
        else:
            b = self.entry(index)
        count = math.prod(shape)
        n = b.raw_length
        if count * dtype.itemsize != n or not n or n >= 2**62:
            # the general check, with its messages and its care for empty shapes
            count = _checked_count(index, b, dtype, shape)
        else:
            frozen = self.source.frozen
            if frozen is not None and b.codec == "raw":
                # bytes that cannot change (see _Source.frozen): the buffer is checked
                # where it lies, then copied in one call into a new array that owns
                # its memory (never a view of the caller's bytes)
                off = b.offset
                view = frozen[off : off + n]
                if len(view) != n:  # the parse placed it inside the file: never
                    raise FormatError(f"the file ended early: wanted {n} bytes at {off}")
                if _xxh3_hex(view) != b.checksum or (self.strong and b.digest is not None):
                    self._check(b, view, index)  # raises, or checks the signed digest
                arr = np.frombuffer(view, dtype, count)
                sub = dtype.shape  # a sub-array dtype adds its dimensions, as np.empty does
                if sub:
                    arr = arr.reshape((*shape, *sub))
                elif len(shape) != 1:
                    arr = arr.reshape(shape)
                return arr.copy()
        packed = self._packed(index, b) if b.codec != "raw" and count else None
        if (
            mmap
            and b.codec == "raw"
            and b.length >= mmap_threshold
            and self.source.path
            and self.source.data is None
        ):
            view = self.source.view(b.offset, b.length)
            arr = np.frombuffer(view, dtype=dtype, count=count).reshape(shape)
            self.mapped.append(index)
            return arr
        flat: Any
        if (
            b.codec == "raw"
            and b.length >= _pio.PARALLEL_FROM
            and _pio.HAVE_PREADV
            and self.source.fd() is not None
        ):
            arr, flat = _aligned_empty(shape, dtype, b.length)
        else:
            if b.raw_length >= _PLAIN_PAGES_FROM:
                arr = _empty(shape, dtype)
            else:
                arr = np.empty(shape, dtype)
            flat = arr.reshape(-1).view(np.uint8) if count else None
        if count:
            self._fill(index, b, memoryview(flat), packed)
        elif b.codec == "raw":
            self._check(b, b"", index)
        return arr

    def stream(self, index: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> BufferStream:
        """Read the raw buffer ``index`` (an array of ``shape``) piece by piece, in
        order; :meth:`BufferStream.close` checks its checksum at the end. For a
        column of many objects' arrays whose class copies them: one object's
        piece at a time, never the whole column in memory at once."""
        b = self.entry(index)
        _checked_count(index, b, dtype, shape)
        if b.codec != "raw":
            raise FormatError(f"buffer {index} is compressed and cannot be streamed")
        return BufferStream(self, index, b)

    def verify_all(self) -> list[str]:
        """Check every buffer's checksum (and digest); returns problems, empty if none."""
        problems: list[str] = []
        for i, b in enumerate(self.buffers):
            try:
                if b.codec == "raw" and self.source.path:
                    self._check(b, self.source.view(b.offset, b.length), i)
                else:
                    self._check(b, self.source.read(b.offset, b.length), i)
            except IntegrityError as exc:
                problems.append(str(exc))
        return problems

    def close(self) -> None:
        self.source.close()


def _checked_count(index: int, b: BufferEntry, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
    """The item count of an array of ``shape`` stored in buffer ``b``, checked against
    the buffer's size before anything is allocated."""
    count = math.prod(shape)
    if count * dtype.itemsize != b.raw_length:
        raise FormatError(
            f"buffer {index} holds {b.raw_length} bytes but shape {list(shape)} of "
            f"{dtype} needs {count * dtype.itemsize}"
        )
    # numpy refuses an empty shape whose other dimensions overflow: say so first
    if math.prod(s for s in shape if s) * max(dtype.itemsize, 1) >= 2**62:
        raise FormatError(f"buffer {index}: shape {list(shape)} is impossibly large")
    return count


class BufferStream:
    """Consecutive pieces of one raw buffer, hashed as they are read."""

    def __init__(self, reader: Reader, index: int, entry: BufferEntry) -> None:
        self.reader = reader
        self.index = index
        self.entry = entry
        self.pos = 0
        self.hash, self.strong = reader._hashers(entry)

    def read_into(self, mv: memoryview) -> None:
        """Fill ``mv`` (bytes) with the buffer's next ``len(mv)`` bytes."""
        n = len(mv)
        if self.pos + n > self.entry.length:
            raise FormatError(f"buffer {self.index} is shorter than its pieces")
        self.reader.source.readinto(self.entry.offset + self.pos, mv)
        self.hash.update(mv)
        if self.strong is not None:
            self.strong.update(mv)
        self.pos += n

    def close(self) -> None:
        """Check that every byte was read and matches the checksum (and digest)."""
        if self.pos != self.entry.length:
            raise FormatError(f"buffer {self.index} holds more than its pieces")
        strong = self.strong
        self.reader._compare(
            self.entry,
            self.index,
            self.hash.hexdigest(),
            lambda: strong.hexdigest() if strong is not None else None,
        )


#: arrays at least this large are allocated without MADV_HUGEPAGE (see _empty)
_PLAIN_PAGES_FROM = 1 << 22
_set_madvise_hugepage: Any = getattr(
    getattr(getattr(np, "_core", getattr(np, "core", None)), "multiarray", None),
    "_set_madvise_hugepage",
    None,
)


def _empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """``np.empty`` on ordinary pages, as pickle's buffers are.

    numpy asks for transparent huge pages on large allocations; where the kernel
    zeroes each 2 MiB page at the first touch under contention (THP
    ``defrag=madvise``, common on virtual machines), reading a file into such
    memory is several times slower than into ordinary pages (measured on the
    benchmark machine: 512 MiB in 1.9-2.9 s vs 0.74-0.83 s). The switch is
    numpy's own and only changes how this one allocation is advised.
    """
    if _set_madvise_hugepage is None:
        return np.empty(shape, dtype=dtype)
    previous = _set_madvise_hugepage(False)
    try:
        return np.empty(shape, dtype=dtype)
    finally:
        _set_madvise_hugepage(previous)


def _aligned_empty(
    shape: tuple[int, ...], dtype: np.dtype[Any], nbytes: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """An uninitialised array whose data starts on a page boundary, and its bytes.

    The kernel copies from the page cache into a page-aligned destination much
    faster than into malloc's (which starts 16 bytes into a page): 1 GiB in
    0.93-1.0 s vs 1.2-1.4 s on the benchmark machine. The array is a view of a
    slightly larger ``np.empty`` (ordinary pages, see :func:`_empty`): it does not
    own its data, but its base does (see :func:`in_private_memory`).
    """
    base = _empty((nbytes + _PAGE,), np.dtype(np.uint8))
    # the address from the array interface (numpy's .ctypes would import ctypes)
    start = -base.__array_interface__["data"][0] % _PAGE
    flat = base[start : start + nbytes]
    return flat.view(dtype).reshape(shape), flat


_PAGE = _mmap.PAGESIZE


def in_private_memory(arr: np.ndarray[Any, Any]) -> bool:
    """Whether ``arr`` is writeable and its memory comes from numpy's allocator.

    True for arrays that own their data and for views of an array that does
    (as :meth:`Reader.read_array` returns for large buffers); False for
    memory-mapped files (``mmap=True`` loads, ``np.memmap``) and foreign buffers.
    """
    if not arr.flags.writeable:
        return False
    if arr.flags.owndata:
        return True
    base = arr.base
    return type(base) is np.ndarray and base.flags.owndata


def _check_frame(packed: bytes, raw_length: int, what: str) -> None:
    """A zstd frame must declare the decoded size the file promised (or none)."""
    import zstandard

    try:
        params = zstandard.get_frame_parameters(packed)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{what} is not a zstd frame: {exc}") from None
    declared = params.content_size
    # ZSTD_CONTENTSIZE_UNKNOWN: the decoded size is checked while decompressing
    if declared != raw_length and declared != 2**64 - 1:
        raise FormatError(
            f"{what}: the zstd frame declares {declared} decoded bytes, the file "
            f"{raw_length}: the size is wrong (crafted or corrupt)"
        )


def _looks_like_pickle(head: bytes, tail: bytes) -> bool:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    # protocols 0 and 1 start with one of a few opcodes and end with STOP
    return bool(head) and head[:1] in b"(c]}ldINSVFLG" and tail.rstrip(b"\n")[-1:] == b"."


def _guess(head: bytes, tail: bytes = b"") -> str:
    if _looks_like_pickle(head, tail):
        return (
            " (it looks like a pickle: convert it with `safepoint convert`, which never "
            "executes it)"
        )
    if head[:4] == b"PK\x03\x04":
        return " (it looks like a zip archive, e.g. a .skops file: use `safepoint convert`)"
    if head[:6] == b"\x93NUMPY":
        return " (it looks like a .npy file: use numpy.load(..., allow_pickle=False))"
    return ""


def open_reader(src: Any, limits: spec.Limits = spec.DEFAULT_LIMITS) -> Reader:
    source = _as_source(src)
    try:
        return Reader(source, limits)
    except BaseException:
        source.close()
        raise


def problems_against(src: Any, digest: str) -> list[str]:
    """What is wrong with the safepoint file ``src`` (a path or bytes) as the stored blob
    ``digest``: a different digest first, then every buffer that fails its checksum;
    empty if it verifies. A file that cannot be read as safepoint raises
    :class:`FormatError` / :class:`IntegrityError`, as :func:`open_reader` does."""
    with contextlib.closing(open_reader(src)) as reader:
        problems = reader.verify_all()
        if reader.digest != digest:
            problems.insert(0, f"its digest is {reader.digest}")
    return problems
