"""Safety limits of the importer, checked before memory is allocated."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CONVERT_LIMITS", "ConvertLimits"]


@dataclass(frozen=True)
class ConvertLimits:
    """Bounds on what an imported file may declare.

    Every length in a pickle stream is checked against the bytes that remain
    (a declared length can never make the parser allocate more than the file
    holds); these limits bound the rest::

        sp.convert("big.joblib", "big.sp", limits=ConvertLimits(max_bytes=2**38))
    """

    #: size of the (decompressed) stream; decompression stops when it is exceeded
    max_bytes: int = 2**35
    #: decompressed / compressed size beyond the first 64 MiB (decompression bombs):
    #: a compressed file can make the import hold at most this multiple of its size
    max_compression_ratio: int = 200
    #: nesting of the object graph while it is audited and built
    max_depth: int = 200
    #: number of dimensions of one array
    max_ndim: int = 32
    #: digits of a protocol-0 integer, bytes of a LONG4 integer
    max_int_bytes: int = 1 << 16
    #: members of a zip container that are examined
    max_zip_members: int = 10_000
    #: objects one pickle stream may create (containers, calls, names, MARKs) and
    #: values it may memoise; each takes ~100-200 bytes while parsing and auditing,
    #: so this bounds that memory (about 2 GB at the default) whatever the file's size
    max_nodes: int = 10_000_000


DEFAULT_CONVERT_LIMITS = ConvertLimits()
