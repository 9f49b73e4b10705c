"""An attacker's toolkit: decode a safepoint file, change anything, write it back.

The xxh3 checksums of the format detect corruption, not an attacker, who can
recompute them; this module does exactly that, so that the tests exercise the
*validation* of the reader and the handlers rather than the checksums. It parses
files with its own code (``struct`` + ``json``), independently of
``safepoint.format.reader``, so a bug in the reader cannot hide itself here.

Example::

    c = Crafted.from_bytes(sp.dumps(model))
    tree = c.find("Tree")[0]                      # the node of the first sklearn Tree
    nodes = c.array(tree["s"]["s"]["nodes"])      # its node array, decoded
    nodes["left_child"][0] = 10**6                # out of range
    c.set_array(tree["s"]["s"]["nodes"], nodes)
    sp.loads(c.to_bytes())                        # -> FormatError
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import xxhash
import zstandard

MAGIC = b"\x89SPT\r\n\x1a\n"
END_MAGIC = b"SPTEND\x00\x01"
HEADER = struct.Struct("<8sHHI48x")
FOOTER = struct.Struct("<QQQQQIHHI4x8s")
ALIGN = 64
FLAG_MANIFEST_ZSTD = 1


def pad(n: int) -> int:
    return (-n) % ALIGN


def zstd_frame(fcs: int | None, blocks: list[tuple[int, bytes, int]]) -> bytes:
    """A hand-made zstd frame: ``blocks`` are (type, payload, size) with type 0 = raw
    (payload of ``size`` bytes) or 1 = RLE (one byte repeated ``size`` times, at most
    128 KiB). ``fcs`` is the declared content size, which may lie."""
    if fcs is None:
        out = struct.pack("<I", 0xFD2FB528) + bytes([0x00, 0x58])  # window 2**27, no FCS
    else:
        out = struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", fcs)
    for i, (kind, payload, size) in enumerate(blocks):
        last = 1 if i == len(blocks) - 1 else 0
        out += (last | (kind << 1) | (size << 3)).to_bytes(3, "little") + payload
    return out


def rle_bomb(raw_size: int) -> bytes:
    """A real zstd bomb: ``raw_size`` zero bytes from 4 bytes per 128 KiB."""
    block = 128 * 1024
    n, rest = divmod(raw_size, block)
    blocks = [(1, b"\0", block)] * n + ([(1, b"\0", rest)] if rest else [])
    return zstd_frame(raw_size, blocks)


class Crafted:
    """A decoded file: ``manifest`` (a JSON dict without its buffer table) and the
    stored ``payloads`` with their ``codecs`` and decoded sizes ``raw_lengths``."""

    def __init__(
        self,
        manifest: dict[str, Any],
        payloads: list[bytes],
        codecs: list[str],
        raw_lengths: list[int],
        version: tuple[int, int] = (1, 0),
        auth: bytes | None = None,
    ) -> None:
        self.manifest = manifest
        self.payloads = payloads
        self.codecs = codecs
        self.raw_lengths = raw_lengths
        self.version = version
        self.auth = auth

    # -- parsing ---------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> Crafted:
        magic, major, minor, _ = HEADER.unpack_from(data, 0)
        assert magic == MAGIC
        mo, ml, mr, _mc, ao, al, _maj, _min, flags, end = FOOTER.unpack_from(data, len(data) - 64)
        assert end == END_MAGIC
        body = data[mo : mo + ml]
        if flags & FLAG_MANIFEST_ZSTD:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=mr)
        manifest = json.loads(body)
        table = manifest.pop("buffers")
        payloads = [data[row[0] : row[0] + row[1]] for row in table]
        auth = data[ao : ao + al] if al else None
        return cls(
            manifest,
            payloads,
            [row[3] for row in table],
            [row[2] for row in table],
            (major, minor),
            auth,
        )

    # -- buffers ---------------------------------------------------------------
    def raw(self, index: int) -> bytes:
        data = self.payloads[index]
        if self.codecs[index] == "zstd":
            return zstandard.ZstdDecompressor().decompress(
                data, max_output_size=self.raw_lengths[index]
            )
        return data

    def set_raw(self, index: int, data: bytes, codec: str = "raw") -> None:
        """Replace a buffer (stored uncompressed unless ``codec="zstd"``)."""
        if codec == "zstd":
            self.payloads[index] = zstandard.ZstdCompressor().compress(data)
        else:
            self.payloads[index] = bytes(data)
        self.codecs[index] = codec
        self.raw_lengths[index] = len(data)

    def add_buffer(self, payload: bytes, codec: str = "raw", raw_length: int | None = None) -> int:
        self.payloads.append(payload)
        self.codecs.append(codec)
        self.raw_lengths.append(len(payload) if raw_length is None else raw_length)
        return len(self.payloads) - 1

    def array(self, node: dict[str, Any]) -> np.ndarray[Any, Any]:
        """A writable copy of the array of an ``nd`` node."""
        dt = dtype_of(node["d"])
        return np.frombuffer(self.raw(node["b"]), dtype=dt).reshape(node["s"]).copy()

    def set_array(self, node: dict[str, Any], arr: np.ndarray[Any, Any]) -> None:
        """Store ``arr`` in the buffer of ``node`` and make the node describe it."""
        arr = np.ascontiguousarray(arr)
        node["s"] = list(arr.shape)
        node["d"] = dtype_json(arr.dtype)
        node.pop("f", None)
        self.set_raw(node["b"], arr.tobytes())

    def edit_rows(
        self, column: dict[str, Any], k: int, fn: Callable[[np.ndarray[Any, Any]], Any]
    ) -> None:
        """Apply ``fn`` to a copy of object ``k``'s rows of an object table's array
        column (``d``/``s``/``l``/``b``) and store them back in place."""
        nd = {"d": column["d"], "s": [sum(column["l"]), *column["s"]], "b": column["b"]}
        whole = self.array(nd)
        start = sum(column["l"][:k])
        part = whole[start : start + column["l"][k]].copy()
        fn(part)
        whole[start : start + column["l"][k]] = part
        self.set_array(nd, whole)

    # -- navigation ------------------------------------------------------------
    def walk(self) -> Iterator[dict[str, Any]]:
        """Every node (dict with an ``@`` tag) in root, shared and golden."""
        stack: list[Any] = [
            self.manifest.get("root"),
            self.manifest.get("shared"),
            self.manifest.get("golden"),
        ]
        while stack:
            x = stack.pop()
            if isinstance(x, dict):
                if "@" in x:
                    yield x
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)

    def type_row(self, node: dict[str, Any]) -> list[str]:
        return self.manifest["types"][node["t"]]

    def find(self, qualname: str) -> list[dict[str, Any]]:
        """Object nodes whose type's qualname is ``qualname``, in manifest order."""
        out = []
        for node in self.walk():
            if node.get("@") in ("obj", "red", "pyx") and self.type_row(node)[1] == qualname:
                out.append(node)
        out.reverse()  # walk() is a stack: restore document order
        return out

    def deref(self, node: Any) -> Any:
        """Follow a ``memo`` reference to its shared node."""
        while isinstance(node, dict) and node.get("@") == "memo":
            node = self.manifest["shared"][node["i"]]
        return node

    # -- writing ---------------------------------------------------------------
    def to_bytes(
        self,
        *,
        table_hook: Callable[[list[list[Any]]], None] | None = None,
        manifest_bytes: bytes | None = None,
        zstd_manifest: bool = False,
        header_version: tuple[int, int] | None = None,
        footer_version: tuple[int, int] | None = None,
        key: bytes | None = None,
        auth: bytes | None = None,
        digests: bool | None = None,
    ) -> bytes:
        """A file with fresh offsets and checksums (what an attacker can always do).

        ``table_hook`` may edit the buffer table after it was computed;
        ``manifest_bytes`` replaces the JSON entirely (any bytes). ``key`` signs the
        result with HMAC (an attacker who stole the key); ``auth`` sets the signature
        block verbatim (e.g. copied from the original file).
        """
        if digests is None:
            digests = key is not None or self.auth is not None
        out = bytearray(HEADER.pack(MAGIC, *(header_version or self.version), 0))
        table: list[list[Any]] = []
        for payload, codec, raw_len in zip(
            self.payloads, self.codecs, self.raw_lengths, strict=True
        ):
            out += bytes(pad(len(out)))
            row: list[Any] = [
                len(out),
                len(payload),
                raw_len,
                codec,
                xxhash.xxh3_64_hexdigest(payload),
            ]
            if digests:
                row.append(hashlib.blake2b(payload, digest_size=32).hexdigest())
            table.append(row)
            out += payload
        if table_hook is not None:
            table_hook(table)
        if manifest_bytes is None:
            manifest = dict(self.manifest)
            manifest["buffers"] = table
            raw = json.dumps(manifest, separators=(",", ":")).encode()
        else:
            raw = manifest_bytes
        body = zstandard.ZstdCompressor().compress(raw) if zstd_manifest else raw
        out += bytes(pad(len(out)))
        mo = len(out)
        out += body
        if key is not None:
            sig = hmac.new(key, body, hashlib.sha256).hexdigest()
            auth = json.dumps({"alg": "hmac-sha256", "sig": sig}).encode()
        ao = al = 0
        if auth is not None:
            ao, al = len(out), len(auth)
            out += auth
        out += FOOTER.pack(
            mo,
            len(body),
            len(raw),
            xxhash.xxh3_64_intdigest(body),
            ao,
            al,
            *(footer_version or header_version or self.version),
            FLAG_MANIFEST_ZSTD if zstd_manifest else 0,
            END_MAGIC,
        )
        return bytes(out)


def dtype_of(spec: Any) -> np.dtype[Any]:
    if isinstance(spec, str):
        return np.dtype(spec)
    if "fields" in spec:
        return np.dtype(
            {
                "names": [f[0] for f in spec["fields"]],
                "formats": [dtype_of(f[1]) for f in spec["fields"]],
                "offsets": [f[2] for f in spec["fields"]],
                "itemsize": spec["size"],
            }
        )
    return np.dtype((dtype_of(spec["sub"]), tuple(spec["shape"])))


def dtype_json(dt: np.dtype[Any]) -> Any:
    if dt.fields is not None:
        return {
            "fields": [[n, dtype_json(dt.fields[n][0]), dt.fields[n][1]] for n in dt.names or ()],
            "size": dt.itemsize,
        }
    if dt.subdtype is not None:
        return {"sub": dtype_json(dt.subdtype[0]), "shape": list(dt.subdtype[1])}
    return dt.str


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges [start, end) of header, buffers, manifest, auth block and footer."""
    mo, ml, _mr, _mc, ao, al, *_ = FOOTER.unpack_from(data, len(data) - 64)
    out = {"header": (0, 64), "buffers": (64, mo), "manifest": (mo, mo + ml)}
    if al:
        out["auth"] = (ao, ao + al)
    out["footer"] = (len(data) - 64, len(data))
    return out
