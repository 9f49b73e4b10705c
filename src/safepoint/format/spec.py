"""Byte layout of a safepoint file (see docs/format.md).

::

    offset 0      header   64 bytes  MAGIC, major, minor, flags, zero padding
    offset 64     buffers  each starts on a 64-byte boundary (zero padding between)
    ...           manifest UTF-8 JSON, optionally zstd-compressed
    ...           auth     optional signature block (JSON), covers the manifest bytes
    EOF-64        footer   64 bytes  locates manifest and auth block, END_MAGIC

Everything is little-endian. A reader needs only the header, the footer and the
manifest to know every type, size, digest and the environment of a file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"\x89SPT\r\n\x1a\n"
END_MAGIC = b"SPTEND\x00\x01"
FORMAT_MAJOR = 1
FORMAT_MINOR = 1
ALIGN = 64

HEADER = struct.Struct("<8sHHI48x")
FOOTER = struct.Struct("<QQQQQIHHI4x8s")
HEADER_SIZE = HEADER.size
FOOTER_SIZE = FOOTER.size
assert HEADER_SIZE == 64 and FOOTER_SIZE == 64

#: footer flag: the manifest bytes are zstd-compressed
FLAG_MANIFEST_ZSTD = 1

#: every (major, minor) this reader understands; later releases only add to this set.
#: 1.1 added object tables (``objtab`` nodes) and the concatenated string-column
#: form (``t`` + ``l`` + ``lw``); a 1.0 reader refuses 1.1 files ("upgrade").
READABLE_VERSIONS = frozenset({(1, 0), (1, 1)})

#: decoded bytes that compressed data (one buffer, all buffers together, or the
#: manifest) may expand to beyond ``Limits.max_compression_ratio`` x its stored size.
#: Below it any ratio is fine (a zeroed array compresses 1:10000); above it a file
#: is refused as a decompression bomb. The writer stores buffers raw rather than
#: cross it, so every file it writes loads under the default limits.
BOMB_ALLOWANCE = 64 * 2**20


#: what one Python object a load builds is counted as (a list slot, an object header,
#: a small dict or str): an upper estimate for the budget of ``Limits.max_expansion``
OBJECT_COST = 64
#: Python objects (counted as above) any file may make a load build, whatever its size
EXPANSION_ALLOWANCE = 64 * 2**20


def pad_to(n: int, align: int = ALIGN) -> int:
    """Bytes of padding needed after ``n`` to reach the next ``align`` boundary."""
    return (-n) % align


@dataclass(frozen=True)
class Footer:
    manifest_offset: int
    manifest_length: int
    manifest_raw_length: int
    manifest_checksum: int
    auth_offset: int
    auth_length: int
    major: int
    minor: int
    flags: int

    def pack(self) -> bytes:
        return FOOTER.pack(
            self.manifest_offset,
            self.manifest_length,
            self.manifest_raw_length,
            self.manifest_checksum,
            self.auth_offset,
            self.auth_length,
            self.major,
            self.minor,
            self.flags,
            END_MAGIC,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Footer:
        (mo, ml, mr, mc, ao, al, major, minor, flags, magic) = FOOTER.unpack(raw)
        if magic != END_MAGIC:
            from ..errors import FormatError

            raise FormatError(
                "the footer magic is missing: the file is truncated or not a safepoint file"
            )
        return cls(mo, ml, mr, mc, ao, al, major, minor, flags)


@dataclass(frozen=True)
class Limits:
    """Safety limits checked before any memory is allocated.

    The defaults admit every model the project targets (a 1 GB dict of arrays,
    a 10-million-row DataFrame); raise them for larger files::

        sp.load(path, limits=sp.Limits(max_total_bytes=2**40))
    """

    #: bytes of manifest JSON (after decompression)
    max_manifest_bytes: int = 512 * 2**20
    #: nesting depth of the object tree
    max_depth: int = 256
    #: number of buffers
    max_buffers: int = 10_000_000
    #: sum of the declared decoded sizes of all buffers
    max_total_bytes: int = 2**40
    #: decoded/stored size of compressed data beyond :data:`BOMB_ALLOWANCE`
    #: (checked per buffer, over all buffers, and for the manifest)
    max_compression_ratio: int = 1024
    #: number of dimensions of one array
    max_ndim: int = 32
    #: number of elements of one container node
    max_items: int = 100_000_000
    #: Python objects a load may build (manifest nodes, strings, table objects, dict
    #: entries, each counted at :data:`OBJECT_COST` bytes plus its text), as a
    #: multiple of the file's size, beyond :data:`EXPANSION_ALLOWANCE`
    max_expansion: int = 64


DEFAULT_LIMITS = Limits()
