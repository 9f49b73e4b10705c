"""Streaming writer: one pass, buffers first, manifest and footer last."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO

import xxhash

from ..errors import SerializationError
from . import _parallel_io as _pio
from . import spec
from .integrity import Signer, checksum, encode_auth_block, strong_digest

__all__ = ["BufferSink", "WriteResult"]

#: buffers smaller than this are never compressed (the frame overhead eats the gain)
MIN_COMPRESS = 4096
#: share of the raw size a compressed buffer must stay under to be kept compressed
KEEP_RATIO = 0.9
_SAMPLE = 1 << 20
#: buffers larger than this are compressed by zstd's own worker threads, in order;
#: smaller ones (from MIN_COMPRESS on) on the shared pool, while encoding goes on
_LARGE = 4 * _SAMPLE
_ZEROS = bytes(spec.ALIGN)
_HEADER = spec.HEADER.pack(spec.MAGIC, spec.FORMAT_MAJOR, spec.FORMAT_MINOR, 0)

#: what a compression task hands back: the packed bytes (or None: store raw),
#: their checksum and digest (None when not signing)
_Packed = tuple[bytes | None, str, str | None]


@dataclass(frozen=True)
class WriteResult:
    """What a write produced: the size and a content digest of the file.

    ``digest`` is the xxh3-128 of the manifest, which holds the checksum of every
    buffer: two writes of the same object give the same digest.
    """

    size: int
    digest: str
    n_buffers: int

    @classmethod
    def _make(cls, size: int, digest: str, n_buffers: int) -> WriteResult:
        """``cls(size, digest, n_buffers)`` without the frozen ``__init__``'s three
        ``object.__setattr__`` calls (a third of a microsecond of every save)."""
        out = object.__new__(cls)
        out.__dict__.update(size=size, digest=digest, n_buffers=n_buffers)
        return out


def _make_manifest_json() -> Any:
    """``json.dumps(m, separators=(",", ":"), allow_nan=True)`` as one call of json's
    C encoder, made once: json.dumps builds an encoder object per call.

    Without a check for cycles: the encoder's nodes are new dicts and lists, the
    metadata was checked by json.dumps when the call began.
    """
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return plain.encode
    iterencode = make(
        None,
        plain.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def dumps(obj: Any) -> str:
        if type(obj) is not dict:  # pragma: no cover - a manifest is a dict
            return plain.encode(obj)
        return "".join(iterencode(obj, 0))

    return dumps


_manifest_json = _make_manifest_json()

_HAVE_WRITEV = hasattr(os, "writev")
#: parts per writev call (Linux's IOV_MAX)
_IOV_MAX = 1024


def _head(views: list[memoryview], size: int) -> list[memoryview]:
    """The first ``size`` bytes of ``views`` end to end, as views."""
    out = []
    for mv in views:
        if size <= 0:
            break
        out.append(mv[:size])
        size -= len(out[-1])
    return out


def _plain_fd(f: Any) -> int | None:
    """The descriptor of a buffered or raw local file we may write around, else None."""
    # not BufferedRandom: its read-ahead would leave the descriptor's offset elsewhere
    if type(f) not in (io.BufferedWriter, io.FileIO):
        return None
    try:
        fd = f.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


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
        self._level = level
        self._zraw = self._zstored = 0
        # buffers handed to compression tasks, in the order of their indices; they
        # are written (and given offsets) in that order, so the file is the same
        # whatever the threads do
        self._pending: deque[tuple[memoryview, Future[_Packed]]] = deque()
        # threads only serve compression and large buffers: a small uncompressed save
        # (the fixed cost of every call) does not read the setting (io_threads)
        self._threads_n = 0
        if compress == "zstd":
            self._local = threading.local()
            self._window = 4 * max(self._threads, 2)
            import zstandard

            # level 2: within 3% of level 3's size on model data (M2, M6 in bench/),
            # no larger than joblib's compress=3, in about two thirds of the time;
            # zstd's worker threads only pay off on large buffers
            self._cctx = zstandard.ZstdCompressor(level=level, threads=-1)
            self._probe = zstandard.ZstdCompressor(level=1)
        # through _write_all: a raw file may take less than the 64 bytes at once
        self._write_all(_HEADER)
        self.pos = spec.HEADER_SIZE
        self._fd = _plain_fd(f) if _HAVE_WRITEV else None

    @property
    def _threads(self) -> int:
        n = self._threads_n
        if not n:
            n = self._threads_n = _pio.io_threads()
        return n

    def _write_all(self, data: Any) -> None:
        n = self.f.write(data)
        # raw (unbuffered) files may write less than asked
        if n is not None and n != len(data):
            self._write_rest(data, n)

    def _write_rest(self, data: Any, n: int) -> None:
        """Write what follows the first ``n`` bytes of ``data`` (after a short write)."""
        mv = memoryview(data).cast("B")[n:]
        while len(mv):
            k = self.f.write(mv)
            mv = mv[k or 0 :]

    def _write_parts(self, parts: Sequence[memoryview]) -> None:
        """Write ``parts`` end to end (no position update; any thread).

        Through the file object, a part smaller than its buffer is first copied
        into that buffer: a forest's trees are 300 arrays of 70-300 KiB, so that
        copy cost as much as the write. A plain file gets them by ``os.writev``
        on its descriptor instead, up to IOV_MAX parts per call, after a flush.
        """
        fd = self._fd
        if fd is None:
            for part in parts:
                self._write_all(part)
            return
        self.f.flush()
        for lo in range(0, len(parts), _IOV_MAX):
            batch = list(parts[lo : lo + _IOV_MAX])
            while batch:
                k = os.writev(fd, batch)
                if k <= 0:
                    raise OSError(errno.EIO, "writev wrote nothing", getattr(self.f, "name", None))
                # a short write (a signal, a 2 GiB cap): drop what went out
                while batch and k >= len(batch[0]):
                    k -= len(batch[0])
                    batch.pop(0)
                if batch and k:
                    batch[0] = batch[0][k:]

    def _write(self, data: Any) -> None:
        self._write_all(data)
        self.pos += len(data)

    def _compressor(self) -> Any:
        """This thread's compressor for buffers up to _LARGE (contexts are not shared)."""
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            import zstandard

            if self._level == 2:
                # level 2 picks zstd's "fast" strategy with small tables for inputs
                # under 256 KiB; "dfast" with these tables compresses model buffers
                # (M2: 1,200 buffers of 64-512 KiB) about 2.5% smaller in about 20%
                # less CPU time. Fixed parameters: the same bytes from every thread.
                params = zstandard.ZstdCompressionParameters(
                    window_log=20,
                    chain_log=14,
                    hash_log=15,
                    search_log=1,
                    min_match=5,
                    target_length=0,
                    strategy=zstandard.STRATEGY_DFAST,
                )
                cctx = zstandard.ZstdCompressor(compression_params=params)
            else:
                cctx = zstandard.ZstdCompressor(level=self._level)
            self._local.cctx = cctx
        return cctx

    def _compress(self, mv: memoryview) -> bytes | None:
        """The zstd frame of a buffer worth compressing, else None (any thread)."""
        n = len(mv)
        if n > _LARGE:
            return self._compress_large([mv], n)
        out: bytes = self._compressor().compress(mv)
        return None if len(out) > KEEP_RATIO * n else out

    def _compress_large(self, views: list[memoryview], n: int) -> bytes | None:
        """The frame of the ``n`` bytes of ``views`` end to end, by zstd's own threads,
        if a sample shows they shrink (else None). Fed part by part through the
        streaming API with the size given up front: the same frame as compressing
        the joined bytes, without joining them."""
        sample = b"".join(_head(views, _SAMPLE))
        if len(self._probe.compress(sample)) > KEEP_RATIO * len(sample):
            return None
        co = self._cctx.compressobj(size=n)
        chunks = [co.compress(mv) for mv in views]
        chunks.append(co.flush())
        out = b"".join(chunks)
        return None if len(out) > KEEP_RATIO * n else out

    def _pack(self, mv: memoryview) -> _Packed:
        """A compression task: the frame with its checksum and digest."""
        return self._packed(self._compress(mv))

    def _packed(self, out: bytes | None) -> _Packed:
        if out is None:
            return None, "", None
        return out, checksum(out), strong_digest(out) if self.signer is not None else None

    def _accept(self, n: int, out: bytes | None) -> bool:
        """Keep ``out`` (the frame of ``n`` bytes)? Decided in file order."""
        if out is None:
            return False
        # keep the file loadable under the reader's default bomb limits (per buffer
        # and summed over all compressed buffers): store raw what would cross them
        ratio = spec.DEFAULT_LIMITS.max_compression_ratio
        if n > spec.BOMB_ALLOWANCE and n > ratio * len(out):
            return False
        if self._zraw + n > ratio * (self._zstored + len(out)) + spec.BOMB_ALLOWANCE:
            return False
        self._zraw += n
        self._zstored += len(out)
        return True

    def add(self, data: Any) -> int:
        """Append one buffer (any C-contiguous bytes-like object); returns its index.

        With ``compress="zstd"`` a medium buffer may be compressed on a worker
        thread and written by a later call (or :meth:`finish`); until then the
        caller must not change its bytes.
        """
        mv = memoryview(data)
        if not mv.c_contiguous:
            raise SerializationError("internal: buffers must be C-contiguous")
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = len(mv)
        if self._cctx is None and n <= _pio.HASH_CHUNK:
            # stored as it is, in one write: what _store does for it, inline (every
            # small array of a model comes here: most of a small save's per-buffer
            # cost). Larger ones are written chunk by chunk (_write_raw)
            pos = self.pos
            pad = -pos % spec.ALIGN
            write = self.f.write
            if pad:
                k = write(_ZEROS[:pad])
                if k is not None and k != pad:
                    self._write_rest(_ZEROS[:pad], k)
                pos += pad
            entry: list[Any] = [pos, n, n, "raw", xxhash.xxh3_64_hexdigest(mv)]
            if self.signer is not None:
                entry.append(strong_digest(mv))
            k = write(mv)
            if k is not None and k != n:
                self._write_rest(mv, k)
            self.pos = pos + n
            buffers = self.buffers
            buffers.append(entry)
            return len(buffers) - 1
        index = len(self.buffers) + len(self._pending)
        if self._cctx is not None and MIN_COMPRESS <= n <= _LARGE and self._threads > 1:
            pool = _pio.executor(self._threads)
            self._pending.append((mv, pool.submit(self._pack, mv)))
            self._flush_pending(self._window)
            return index
        self._flush_pending(0)
        if self._cctx is not None and n >= MIN_COMPRESS:
            self._store([mv], n, self._pack(mv))
        else:
            self._store([mv], n, (None, "", None))
        return index

    def add_parts(self, parts: list[Any]) -> int:
        """Append one buffer made of ``parts`` (C-contiguous bytes-like objects) end
        to end, without joining them in memory first; returns its index.

        An object table's column is hundreds of arrays: joining a forest's 77 MB of
        tree nodes into one new array costs more (first-touch page faults) than
        writing them. A large compressed column is fed to zstd part by part (the
        same frame as compressing the joined bytes); only small columns are joined.
        """
        views = []
        for p in parts:
            mv = memoryview(p)
            if not mv.c_contiguous:
                raise SerializationError("internal: buffers must be C-contiguous")
            if mv.ndim != 1 or mv.itemsize != 1:
                if not mv.nbytes:
                    continue  # adds nothing (and a view with a 0 in its shape cannot be cast)
                mv = mv.cast("B")
            views.append(mv)
        n = sum(len(mv) for mv in views)
        if self._cctx is not None and n > _LARGE:
            packed = self._packed(self._compress_large(views, n))
        elif self._cctx is not None or n <= _pio.HASH_CHUNK:
            return self.add(b"".join(views))
        else:
            packed = (None, "", None)
        self._flush_pending(0)
        index = len(self.buffers)
        self._store(views, n, packed)
        return index

    def _flush_pending(self, keep: int) -> None:
        """Write the pending buffers whose compression is done, and more while over ``keep``."""
        pending = self._pending
        while pending and (len(pending) > keep or pending[0][1].done()):
            mv, fut = pending.popleft()
            self._store([mv], len(mv), fut.result())

    def _store(self, views: list[memoryview], n: int, packed: _Packed) -> None:
        """Write one buffer, the ``n`` bytes of ``views`` end to end or their frame
        in ``packed`` (if kept), at the end of the file and record its entry."""
        out, crc, digest = packed
        pad = spec.pad_to(self.pos)
        if pad:
            self._write(_ZEROS[:pad])
        offset = self.pos
        if self._accept(n, out):
            assert out is not None
            self._write(out)
            entry: list[Any] = [offset, len(out), n, "zstd", crc]
        else:
            crc, digest = self._write_raw(views, n)
            entry = [offset, n, n, "raw", crc]
        if self.signer is not None:
            entry.append(digest)
        self.buffers.append(entry)

    def _write_raw(self, views: list[memoryview], n: int) -> tuple[str, str | None]:
        """Write ``views`` as they are; returns their checksum and digest (None: not signing).

        A large buffer (or a column of parts) is hashed while it is written, chunk
        by chunk, each chunk hashed right after its write while it is in the CPU's
        cache, in chunks that end at aligned file offsets
        (:func:`_parallel_io.write_hashed_inline`): one pass over memory. A
        signed file's BLAKE2b digest, four times slower than the write, is computed
        on a worker meanwhile when there is a core for it.
        """
        signing = self.signer is not None
        # in chunks of the write size (see _parallel_io.write_chunk): one write of a
        # few MiB is what costs on a VM that hands free memory back to its host
        if n > _pio.HASH_CHUNK or len(views) != 1:
            h = xxhash.xxh3_64()
            strong = hashlib.blake2b(digest_size=32) if signing else None
            _pio.write_hashed_inline(
                self._write_parts,
                views,
                (h,),
                background=(strong,) if strong else (),
                threads=self._threads,
                start=self.pos,
            )
            self.pos += n
            return h.hexdigest(), strong.hexdigest() if strong else None
        (mv,) = views
        crc = checksum(mv)
        digest = strong_digest(mv) if signing else None
        self._write(mv)
        return crc, digest

    def finish(
        self,
        manifest: dict[str, Any],
        *,
        env: str | None = None,
        tail: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Write manifest, optional auth block and footer.

        ``env`` is the environment record as JSON text (cached: the same for every
        save of a process), and ``tail`` the items after it: the manifest is then
        the items of ``manifest``, ``"env"`` and those of ``tail``, the same bytes as
        one dict in that order. The buffer table goes last.
        """
        self._flush_pending(0)
        try:
            if env is None:
                manifest["buffers"] = self.buffers
                text = _manifest_json(manifest)
            else:
                tail = {} if tail is None else tail
                tail["buffers"] = self.buffers
                head = _manifest_json(manifest)
                text = f'{head[:-1]}{"," if manifest else ""}"env":{env},{_manifest_json(tail)[1:]}'
            raw = text.encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"metadata is not JSON-serializable: {exc}") from None
        flags = 0
        body = raw
        if len(raw) > 1 << 16:
            import zstandard

            body = zstandard.ZstdCompressor(level=3).compress(raw)
            flags |= spec.FLAG_MANIFEST_ZSTD
        pad = -self.pos % spec.ALIGN
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
        # spec.Footer(...).pack(), without building the dataclass
        footer = spec.FOOTER.pack(
            m_off,
            len(body),
            len(raw),
            xxhash.xxh3_64_intdigest(body),
            a_off,
            a_len,
            spec.FORMAT_MAJOR,
            spec.FORMAT_MINOR,
            flags,
            spec.END_MAGIC,
        )
        self._write(footer)
        return WriteResult._make(self.pos, xxhash.xxh3_128_hexdigest(body), len(self.buffers))
