"""Streaming writer: one pass, buffers first, manifest and footer last."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

import xxhash

from ..errors import SerializationError
from . import spec
from .integrity import Signer, checksum, encode_auth_block, strong_digest

__all__ = ["BufferSink", "WriteResult"]

#: buffers smaller than this are never compressed (the frame overhead eats the gain)
MIN_COMPRESS = 4096
#: share of the raw size a compressed buffer must stay under to be kept compressed
KEEP_RATIO = 0.9
_SAMPLE = 1 << 20
_ZEROS = bytes(spec.ALIGN)


@dataclass(frozen=True)
class WriteResult:
    """What a write produced: the size and a content digest of the file.

    ``digest`` is the xxh3-128 of the manifest, which holds the checksum of every
    buffer: two writes of the same object give the same digest.
    """

    size: int
    digest: str
    n_buffers: int


class BufferSink:
    """Writes the header at once, then each buffer as the encoder meets it."""

    def __init__(
        self,
        f: BinaryIO,
        *,
        compress: str | None = None,
        signer: Signer | None = None,
        level: int = 2,
    ) -> None:
        if compress not in (None, "zstd"):
            raise SerializationError(f"compress must be None or 'zstd', not {compress!r}")
        self.f = f
        self.signer = signer
        self.buffers: list[list[Any]] = []
        self._cctx: Any = None
        self._probe: Any = None
        self._cctx_small: Any = None
        self._zraw = self._zstored = 0
        if compress == "zstd":
            import zstandard

            # level 2: within 3% of level 3's size on model data (M2, M6 in bench/),
            # no larger than joblib's compress=3, in about two thirds of the time;
            # worker threads only pay off on large buffers
            self._cctx = zstandard.ZstdCompressor(level=level, threads=-1)
            self._cctx_small = zstandard.ZstdCompressor(level=level)
            self._probe = zstandard.ZstdCompressor(level=1)
        f.write(spec.HEADER.pack(spec.MAGIC, spec.FORMAT_MAJOR, spec.FORMAT_MINOR, 0))
        self.pos = spec.HEADER_SIZE

    def _write(self, data: Any) -> None:
        n = self.f.write(data)
        # raw (unbuffered) files may write less than asked
        if n is not None and n != len(data):
            mv = memoryview(data)[n:]
            while len(mv):
                k = self.f.write(mv)
                mv = mv[k or 0 :]
        self.pos += len(data)

    def _maybe_compress(self, mv: memoryview) -> bytes | None:
        n = len(mv)
        if self._cctx is None or n < MIN_COMPRESS:
            return None
        if n > 4 * _SAMPLE:
            sample = mv[:_SAMPLE]
            if len(self._probe.compress(sample)) > KEEP_RATIO * len(sample):
                return None
        out: bytes = (self._cctx if n > 4 * _SAMPLE else self._cctx_small).compress(mv)
        if len(out) > KEEP_RATIO * n:
            return None
        # keep the file loadable under the reader's default bomb limits (per buffer
        # and summed over all compressed buffers): store raw what would cross them
        ratio = spec.DEFAULT_LIMITS.max_compression_ratio
        if n > spec.BOMB_ALLOWANCE and n > ratio * len(out):
            return None
        if self._zraw + n > ratio * (self._zstored + len(out)) + spec.BOMB_ALLOWANCE:
            return None
        self._zraw += n
        self._zstored += len(out)
        return out

    def add(self, data: Any) -> int:
        """Append one buffer (any C-contiguous bytes-like object); returns its index."""
        mv = memoryview(data)
        if not mv.c_contiguous:
            raise SerializationError("internal: buffers must be C-contiguous")
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        pad = spec.pad_to(self.pos)
        if pad:
            self._write(_ZEROS[:pad])
        raw_len = len(mv)
        packed = self._maybe_compress(mv)
        payload = mv if packed is None else packed
        entry: list[Any] = [
            self.pos,
            len(payload),
            raw_len,
            "zstd" if packed is not None else "raw",
            checksum(payload),
        ]
        if self.signer is not None:
            entry.append(strong_digest(payload))
        self._write(payload)
        self.buffers.append(entry)
        return len(self.buffers) - 1

    def finish(self, manifest: dict[str, Any]) -> WriteResult:
        """Write manifest, optional auth block and footer."""
        manifest["buffers"] = self.buffers
        try:
            raw = json.dumps(manifest, separators=(",", ":"), allow_nan=True).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"metadata is not JSON-serializable: {exc}") from None
        flags = 0
        body = raw
        if len(raw) > 1 << 16:
            import zstandard

            body = zstandard.ZstdCompressor(level=3).compress(raw)
            flags |= spec.FLAG_MANIFEST_ZSTD
        pad = spec.pad_to(self.pos)
        if pad:
            self._write(_ZEROS[:pad])
        m_off = self.pos
        self._write(body)
        a_off = a_len = 0
        if self.signer is not None:
            block = encode_auth_block(self.signer, body)
            a_off = self.pos
            a_len = len(block)
            self._write(block)
        footer = spec.Footer(
            manifest_offset=m_off,
            manifest_length=len(body),
            manifest_raw_length=len(raw),
            manifest_checksum=xxhash.xxh3_64_intdigest(body),
            auth_offset=a_off,
            auth_length=a_len,
            major=spec.FORMAT_MAJOR,
            minor=spec.FORMAT_MINOR,
            flags=flags,
        )
        self._write(footer.pack())
        return WriteResult(
            size=self.pos, digest=xxhash.xxh3_128_hexdigest(body), n_buffers=len(self.buffers)
        )
