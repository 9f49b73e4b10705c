"""The public functions of the format: dump, load, dumps, loads, inspect, verify."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

import numpy as np

from .._gc import paused
from .._io import fsync_dir
from ..adapters import registry as _adapters  # noqa: F401 - declares the framework adapters
from ..errors import (
    FormatError,
    IntegrityError,
    SafepointError,
    SerializationError,
    UntrustedTypesError,
)
from . import handlers as _handlers  # noqa: F401 - registers the type handlers
from . import migrations as _migrations  # noqa: F401 - registers the version migrations
from . import spec
from .decoder import Decoder
from .encoder import Encoder
from .environment import capture, check, compare, signature_of
from .guard import guarded
from .integrity import claimed_signature, make_signer, verify_auth_block
from .reader import Reader, open_reader
from .trust import TrustPolicy, default_policy, resolve, type_name
from .writer import BufferSink, WriteResult

__all__ = [
    "Inspection",
    "VerifyReport",
    "dump",
    "dumps",
    "inspect",
    "load",
    "loads",
    "untrusted_types",
    "verify",
]

GOLDEN_METHODS = ("predict", "predict_proba", "decision_function", "transform")


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


def golden_outputs(model: Any, X: Any) -> dict[str, Any]:
    """Run the model's prediction methods on ``X`` (those that exist and succeed)."""
    out = {}
    for name in GOLDEN_METHODS:
        method = getattr(model, name, None)
        if method is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = method(X)
        except Exception:  # a method that does not apply to this model (e.g. transform)
            continue
    return out


def _write(
    obj: Any,
    f: BinaryIO,
    *,
    compress: str | None,
    metadata: Any,
    golden: Any,
    key: Any,
) -> WriteResult:
    meta = _check_metadata(metadata)
    signer = make_signer(key)
    sink = BufferSink(f, compress=compress, signer=signer)
    enc = Encoder(sink)
    with paused():
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
    manifest["env"] = capture(enc.packages)
    sig = signature_of(obj, golden)
    if sig:
        manifest["signature"] = sig
    if meta:
        manifest["metadata"] = meta
    manifest["signed"] = signer.kind if signer else None
    return sink.finish(manifest)


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
        file: a path (written atomically: a temporary file renamed into place)
            or a binary file object (written in one streaming pass).
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
        fd, tmp = tempfile.mkstemp(prefix=".sp-", suffix=".tmp", dir=folder)
        try:
            # mkstemp makes the file private (0600); a saved model gets the mode any
            # new file would get here (0666 less the umask)
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                res = _write(obj, f, compress=compress, metadata=metadata, golden=golden, key=key)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if durable:
            fsync_dir(folder)
        return res
    if not hasattr(file, "write"):
        raise SerializationError(
            f"file must be a path or a binary file object, not {type(file).__name__}"
        )
    if isinstance(file, io.TextIOBase):
        raise SerializationError("the file object must be opened in binary mode ('wb')")
    res = _write(obj, file, compress=compress, metadata=metadata, golden=golden, key=key)
    if durable:
        file.flush()
        with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
            os.fsync(file.fileno())
    return res


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, racing other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def dumps(obj: Any, **kwargs: Any) -> bytes:
    """Like :func:`dump`, returning the file's bytes."""
    bio = io.BytesIO()
    dump(obj, bio, **kwargs)
    return bio.getvalue()


# -- reading ------------------------------------------------------------------------
@contextlib.contextmanager
def _opened(file: Any, limits: spec.Limits | None) -> Iterator[Reader]:
    reader = open_reader(file, limits or spec.DEFAULT_LIMITS)
    try:
        yield reader
    finally:
        reader.close()


def _construct(
    reader: Reader,
    node: Any,
    *,
    trusted: Any,
    env: str,
    key: Any,
    mmap: bool,
    verify_mapped: bool = False,
) -> Any:
    if key is not None:
        verify_auth_block(reader.auth_block, reader.manifest_bytes, key)
        reader.strong = True
    policy = _policy(trusted)
    bad = policy.untrusted(reader.types)
    if bad:
        raise UntrustedTypesError(bad)
    check(reader.manifest.get("env"), env)
    try:
        with _guard(reader, policy, "loading"):
            resolved = [resolve(m, q, k) for m, q, k in reader.types]
            dec = Decoder(reader, resolved, policy=policy, mmap=mmap)
            if any(m.partition(".")[0] not in _NO_VERSION_WARNING for m, _, _ in reader.types):
                with warnings.catch_warnings():
                    # scikit-learn's __setstate__ (also that of a class trusted by name
                    # that derives from BaseEstimator) warns of a version change:
                    # safepoint explains version differences itself (env=)
                    warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator.*")
                    with paused():
                        value = dec.decode(node)
            else:
                # nothing else warns so (catch_warnings costs more than a small load)
                with paused():
                    value = dec.decode(node)
        if reader.mapped and (verify_mapped or key is not None):
            # a signed file's mapped buffers must match their digests too
            reader.check_mapped()
        return value
    except SafepointError:
        raise
    except RecursionError:
        raise FormatError("the object tree nests too deeply") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        raise FormatError(
            f"the file's contents do not rebuild a valid object ({type(exc).__name__}: {exc}); "
            "it is corrupt, crafted, or was written by an incompatible library version"
        ) from None


#: packages whose types never run scikit-learn's __setstate__ (no version warning to hide)
_NO_VERSION_WARNING = frozenset({"builtins", "numpy", "scipy", "pandas", "collections"})


def _policy(trusted: Any) -> TrustPolicy:
    """The trust policy for ``trusted=``: the default one is built once per process."""
    if trusted is None or (type(trusted) is tuple and not trusted):
        return default_policy()
    return TrustPolicy(trusted)


def _guard(reader: Reader, policy: TrustPolicy, what: str) -> Any:
    """The load-time guard for a file: it may import from the packages its audited
    types name; those the default trust set names may import at run time too."""
    packages = {m.partition(".")[0] for m, _, _ in reader.types}
    libraries = {
        m.partition(".")[0]
        for m, q, _ in reader.types
        if not policy.trusted_by_caller(type_name(m, q))
    }
    return guarded(f"{what} {reader.describe()}", packages=packages, libraries=libraries)


Source = str | os.PathLike[str] | BinaryIO | bytes | bytearray | memoryview


def load(
    file: Source,
    *,
    trusted: Iterable[Any] | str | type | None = (),
    mmap: bool = False,
    env: str = "warn",
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
    with _opened(file, limits) as reader:
        return _construct(
            reader,
            reader.manifest.get("root"),
            trusted=trusted,
            env=env,
            key=key,
            mmap=mmap and reader.source.path is not None,
            verify_mapped=verify_mapped,
        )


def loads(data: bytes | bytearray | memoryview, **kwargs: Any) -> Any:
    """Like :func:`load`, from bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError(f"loads() takes bytes, not {type(data).__name__}")
    return load(data, **kwargs)


# -- inspection ---------------------------------------------------------------------
@dataclass
class Inspection:
    """What a file holds, read from header, footer and manifest only."""

    format_version: str
    size: int
    root_type: str
    types: list[dict[str, Any]]
    untrusted: list[str]
    n_buffers: int
    data_bytes: int
    stored_bytes: int
    compressed_buffers: int
    environment: dict[str, Any]
    environment_diff: list[str]
    signature: dict[str, Any] | None
    metadata: dict[str, Any]
    digest: str
    signed: str | None
    golden: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inspect_reader(reader: Reader, trusted: Any = ()) -> Inspection:
    policy = TrustPolicy(trusted)
    m = reader.manifest
    types = [
        {"name": type_name(mod, q), "kind": k, "trusted": policy.is_trusted(mod, q, k)}
        for mod, q, k in reader.types
    ]
    golden = m.get("golden")
    env = m.get("env") if isinstance(m.get("env"), dict) else {}
    return Inspection(
        format_version=f"{reader.version[0]}.{reader.version[1]}",
        size=reader.source.size,
        root_type=str(m.get("root_type", "?")),
        types=types,
        untrusted=sorted({str(t["name"]) for t in types if not t["trusted"]}),
        n_buffers=len(reader.buffers),
        data_bytes=sum(b.raw_length for b in reader.buffers),
        stored_bytes=sum(b.length for b in reader.buffers),
        compressed_buffers=sum(b.codec != "raw" for b in reader.buffers),
        environment=env or {},
        environment_diff=compare(env),
        signature=m.get("signature") if isinstance(m.get("signature"), dict) else None,
        metadata=dict(m["metadata"]) if isinstance(m.get("metadata"), dict) else {},
        digest=reader.digest,
        # what the file claims (a well-formed block naming the manifest's algorithm);
        # only verify/load with key= check the signature itself
        signed=claimed_signature(reader.auth_block, reader.manifest.get("signed")),
        golden=_golden_names(golden),
    )


def _golden_names(golden: Any) -> list[str]:
    # a crafted manifest may hold anything here: names are shown, never trusted
    outputs = golden.get("outputs") if isinstance(golden, dict) else None
    return sorted(str(k) for k in outputs) if isinstance(outputs, dict) else []


def inspect(
    file: Source,
    *,
    trusted: Iterable[Any] | str | type | None = (),
    limits: spec.Limits | None = None,
) -> Inspection:
    """Describe a file (types, trust, sizes, environment, digests, metadata).

    Reads the header, the footer and the manifest only: nothing is imported,
    constructed or read from the data buffers.
    """
    with _opened(file, limits) as reader:
        return _inspect_reader(reader, trusted)


def untrusted_types(
    file: Source,
    *,
    trusted: Iterable[Any] | str | type | None = (),
) -> list[str]:
    """Names of the types in ``file`` that :func:`load` would refuse."""
    with _opened(file, None) as reader:
        return TrustPolicy(trusted).untrusted(reader.types)


# -- verification ------------------------------------------------------------------
@dataclass
class VerifyReport:
    """The outcome of :func:`verify`; ``ok`` is False if anything is wrong."""

    ok: bool
    checked_buffers: int
    problems: list[str]
    golden: dict[str, str]
    environment_diff: list[str]
    signed: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compare_outputs(name: str, want: Any, got: Any) -> str:
    try:
        # sparse outputs (TfidfVectorizer.transform) compare densely
        a = np.asarray(want.toarray() if hasattr(want, "toarray") else want)
        b = np.asarray(got.toarray() if hasattr(got, "toarray") else got)
        if a.shape != b.shape:
            return f"shape changed {a.shape} -> {b.shape}"
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            if np.allclose(a.astype(float), b.astype(float), rtol=1e-7, atol=1e-12, equal_nan=True):
                return "identical" if np.array_equal(a, b, equal_nan=True) else "within 1e-7"
            diff = np.nanmax(np.abs(a.astype(float) - b.astype(float)))
            return f"DRIFT: max abs difference {diff:.3g}"
        if np.array_equal(a, b):
            return "identical"
        return f"DRIFT: {int(np.sum(a != b))} of {a.size} outputs differ"
    except Exception as exc:
        return f"DRIFT: cannot compare ({exc})"


def verify(
    file: Source,
    *,
    key: Any = None,
    trusted: Iterable[Any] | str | type | None = (),
) -> VerifyReport:
    """Check every buffer's checksum (and signature with ``key``), then, if the file
    has golden data, load the model and compare its outputs with the stored ones.
    """
    problems: list[str] = []
    golden_result: dict[str, str] = {}
    with _opened(file, None) as reader:
        signed = None
        if key is not None:
            try:
                signed = verify_auth_block(reader.auth_block, reader.manifest_bytes, key)
                reader.strong = True
            except IntegrityError as exc:
                problems.append(str(exc))
        problems += reader.verify_all()
        diffs = compare(reader.manifest.get("env"))
        golden = reader.manifest.get("golden")
        if isinstance(golden, dict) and not problems:
            node = {
                "@": "list",
                "v": [
                    reader.manifest.get("root"),
                    golden.get("X"),
                    {"@": "dict", "s": golden.get("outputs")},
                ],
            }
            try:
                model, X, outputs = _construct(
                    reader, node, trusted=trusted, env="ignore", key=None, mmap=False
                )
            except SafepointError as exc:
                problems.append(f"cannot load the model to check golden outputs: {exc}")
            else:
                # the loaded model runs as any caller would run it (outside the load's
                # guard: predict may legitimately ask the OS for its CPU count, say)
                now = golden_outputs(model, X)
                for name, want in (outputs or {}).items():
                    if name not in now:
                        golden_result[name] = "DRIFT: the method no longer runs"
                    else:
                        golden_result[name] = _compare_outputs(name, want, now[name])
        drift = [f"{k}: {v}" for k, v in golden_result.items() if v.startswith("DRIFT")]
        return VerifyReport(
            ok=not problems and not drift,
            checked_buffers=len(reader.buffers),
            problems=problems + drift,
            golden=golden_result,
            environment_diff=diffs,
            signed=signed,
        )
