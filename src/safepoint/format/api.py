"""The public functions of the format: dump, load, dumps, loads, inspect, verify.

Reading is one call on :class:`~safepoint.format.file.SafepointFile` (the handle
:func:`safepoint.format.open` returns); writing is here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any, BinaryIO

from .._gc import paused
from .._io import fsync_dir, is_stream, replacing
from .._types import EnvPolicy, Source, Trusted
from ..errors import (
    FormatError,
    SerializationError,
)
from . import spec
from .encoder import Encoder
from .environment import capture_json, signature_of
from .file import GOLDEN_METHODS, Inspection, VerifyReport, golden_outputs
from .file import open as open_file
from .integrity import make_signer
from .trust import type_name
from .writer import BufferSink, WriteResult

__all__ = [
    "GOLDEN_METHODS",
    "Inspection",
    "VerifyReport",
    "dump",
    "dumps",
    "golden_outputs",
    "inspect",
    "load",
    "loads",
    "untrusted_types",
    "verify",
]


# -- writing ------------------------------------------------------------------------
def _check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise SerializationError("metadata must be a dict with str keys (JSON-like values)")
    try:
        json.dumps(metadata, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"metadata must be JSON-serializable (str, numbers, lists, dicts): {exc}"
        ) from None
    return metadata


def _write(
    obj: Any,
    f: BinaryIO,
    *,
    compress: str | None,
    metadata: Any,
    golden: Any,
    key: Any,
) -> WriteResult:
    # the collector stays paused until the footer is written: the manifest, the
    # golden outputs and the environment record allocate while every container the
    # encoding made is still alive, and a collection then would walk them all
    with paused():
        return _write_paused(obj, f, compress, metadata, golden, key)


def _write_paused(
    obj: Any, f: BinaryIO, compress: str | None, metadata: Any, golden: Any, key: Any
) -> WriteResult:
    meta = _check_metadata(metadata)
    signer = make_signer(key)
    sink = BufferSink(f, compress=compress, signer=signer)
    enc = Encoder(sink)
    root = enc.encode(obj)
    manifest: dict[str, Any] = {
        "format": [spec.FORMAT_MAJOR, spec.FORMAT_MINOR],
        "root": root,
    }
    if golden is not None:
        outputs = golden_outputs(obj, golden)
        if not outputs:
            raise SerializationError(
                "golden= was given but the object has no predict/predict_proba/"
                "decision_function/transform that runs on it"
            )
        manifest["golden"] = {
            "X": enc.encode_child(golden, "<golden X>"),
            "outputs": {k: enc.encode_child(v, f"<golden {k}>") for k, v in outputs.items()},
        }
    t = type(obj)
    manifest["shared"] = enc.shared
    manifest["types"] = enc.types
    manifest["root_type"] = type_name(t.__module__, t.__qualname__)
    # then "env", the environment record: written as JSON text made once per process
    tail: dict[str, Any] = {}
    sig = signature_of(obj, golden)
    if sig:
        tail["signature"] = sig
    if meta:
        tail["metadata"] = meta
    tail["signed"] = signer.kind if signer else None
    return sink.finish(manifest, env=capture_json(enc.packages), tail=tail)


def dump(
    obj: Any,
    file: str | os.PathLike[str] | BinaryIO,
    *,
    compress: str | None = None,
    metadata: dict[str, Any] | None = None,
    golden: Any = None,
    key: Any = None,
    durable: bool = False,
) -> WriteResult:
    """Write ``obj`` to a safepoint file.

    Args:
        obj: a model, array, DataFrame or any tree of supported types.
        file: a path (written atomically: a temporary file renamed into place;
            an existing character device or named pipe such as ``/dev/null``, or a
            descriptor's path such as ``/dev/stdout``, is written into; a symlink at
            the path is replaced, not followed; a folder raises
            :class:`NotAFileError`) or a binary file object (written in one
            streaming pass).
        compress: ``"zstd"`` compresses each buffer that shrinks; others stay raw.
        metadata: JSON-like dict stored in the manifest (``sp.inspect`` shows it).
        golden: a few input rows; the model's outputs on them are stored so that
            ``sp.verify`` can detect drift after loading elsewhere.
        key: bytes (HMAC-SHA256 with BLAKE2b buffer digests) or an Ed25519 private key.
        durable: fsync the file (and its directory) before returning.

    Returns:
        :class:`WriteResult` with the size and a content digest.

    Example:
        >>> import safepoint as sp, numpy as np
        >>> res = sp.dump({"w": np.arange(3)}, "/tmp/w.sp")
        >>> sp.load("/tmp/w.sp")["w"]
        array([0, 1, 2])
    """
    if isinstance(file, str | os.PathLike):
        path = os.fspath(file)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SerializationError(f"cannot write {path!r}: folder {folder!r} does not exist")
        if is_stream(path):
            # /dev/null, /dev/stdout, a named pipe: written into, as pickle.dump would;
            # a rename over it would replace the device by a regular file
            with open(path, "wb") as stream:
                return _dump_stream(obj, stream, compress, metadata, golden, key, durable)
        with replacing(path, ".sp-", buffering=1 << 20, durable=durable) as f:
            res = _write(obj, f, compress=compress, metadata=metadata, golden=golden, key=key)
        if durable:
            fsync_dir(folder)
        return res
    if not hasattr(file, "write"):
        raise SerializationError(
            f"file must be a path or a binary file object, not {type(file).__name__}"
        )
    if isinstance(file, io.TextIOBase):
        raise SerializationError("the file object must be opened in binary mode ('wb')")
    return _dump_stream(obj, file, compress, metadata, golden, key, durable)


def _dump_stream(
    obj: Any,
    file: BinaryIO,
    compress: str | None,
    metadata: Any,
    golden: Any,
    key: Any,
    durable: bool,
) -> WriteResult:
    res = _write(obj, file, compress=compress, metadata=metadata, golden=golden, key=key)
    if durable:
        file.flush()
        with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
            os.fsync(file.fileno())
    return res


def dumps(
    obj: Any,
    *,
    compress: str | None = None,
    metadata: dict[str, Any] | None = None,
    golden: Any = None,
    key: Any = None,
    durable: bool = False,
) -> bytes:
    """Like :func:`dump`, returning the file's bytes."""
    bio = io.BytesIO()
    _dump_stream(obj, bio, compress, metadata, golden, key, durable)
    return bio.getvalue()


# -- reading ------------------------------------------------------------------------
def load(
    file: Source,
    *,
    trusted: Trusted = (),
    mmap: bool = False,
    env: EnvPolicy = "warn",
    key: Any = None,
    limits: spec.Limits | None = None,
    verify_mapped: bool = False,
) -> Any:
    """Load an object from a safepoint file without executing code from the file.

    The file is parsed and validated, every type it names is audited against the
    trust policy (scikit-learn, numpy, scipy, pandas by default, plus ``trusted``),
    and only then are objects built.

    Args:
        file: a path, a binary file object or bytes.
        trusted: extra type names to trust (``"mypkg.models.MyEstimator"``).
        mmap: memory-map large arrays read-only instead of reading them.
        env: what to do when library versions differ from the file's:
            ``"warn"``, ``"error"`` or ``"ignore"``.
        key: HMAC key (bytes) or Ed25519 public key: verify the signature (and,
            with ``mmap=True``, the digests of the mapped buffers: one read pass).
        limits: safety limits (sizes, depth); see :class:`safepoint.Limits`.
        verify_mapped: with ``mmap=True``, read every mapped buffer once to check its
            checksum before returning (arrays read into memory are always checked;
            mapped ones otherwise only by :func:`verify`).

    Raises:
        UntrustedTypesError: the file needs types that are not trusted.
        FormatError: the file is not valid (truncated, corrupt, crafted).
        IntegrityError: a checksum or signature does not match.
    """
    with open_file(file, limits=limits) as f:
        return f.load(trusted=trusted, env=env, key=key, mmap=mmap, verify_mapped=verify_mapped)


def loads(data: bytes | bytearray | memoryview, **kwargs: Any) -> Any:
    """Like :func:`load`, from bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError(f"loads() takes bytes, not {type(data).__name__}")
    return load(data, **kwargs)


def inspect(
    file: Source,
    *,
    trusted: Trusted = (),
    limits: spec.Limits | None = None,
    key: Any = None,
) -> Inspection:
    """Describe a file (types, trust, sizes, environment, digests, metadata).

    Reads the header, the footer and the manifest only: nothing is imported,
    constructed or read from the data buffers. ``signed`` is set only when ``key``
    (HMAC bytes or an Ed25519 public key) verifies the manifest's signature;
    ``signature_claimed`` says what an unverified signature block claims.

    Raises:
        IntegrityError: ``key`` was given and the signature does not match it.
    """
    with open_file(file, limits=limits) as f:
        return f.inspect(trusted, key=key)


def untrusted_types(
    file: Source,
    *,
    trusted: Trusted = (),
) -> list[str]:
    """Names of the types in ``file`` that :func:`load` would refuse."""
    with open_file(file) as f:
        return f.untrusted_types(trusted)


def verify(
    file: Source,
    *,
    key: Any = None,
    trusted: Trusted = (),
) -> VerifyReport:
    """Check every buffer's checksum (and signature with ``key``), then, if the file
    has golden data, load the model and compare its outputs with the stored ones.
    """
    with open_file(file) as f:
        return f.verify(key=key, trusted=trusted)
