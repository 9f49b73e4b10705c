"""An open safepoint file: :func:`open` and :class:`SafepointFile`.

The handle on a file whose header, footer and manifest were read and checked, and
from which nothing was imported or built yet (safetensors' ``safe_open`` is the
model). :func:`safepoint.load`, :func:`~safepoint.inspect` and
:func:`~safepoint.verify` are one call on it; open it yourself to do several things
with one read of the manifest, or to look before you load::

    >>> import safepoint as sp, numpy as np
    >>> data = sp.dumps({"w": np.arange(3)}, metadata={"run": 7})
    >>> with sp.format.open(data) as f:
    ...     f.metadata, f.inspect().untrusted
    ...     f.load()["w"]
    ({'run': 7}, [])
    array([0, 1, 2])
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .._gc import paused
from .._types import EnvPolicy, KeyLike, Source, Trusted
from ..errors import (
    ClosedFileError,
    FormatError,
    IntegrityError,
    SafepointError,
    UntrustedTypesError,
)
from . import spec
from .decoder import Decoder
from .environment import _version, check, compare
from .guard import guarded
from .integrity import claimed_signature, verify_auth_block
from .reader import Reader, open_reader
from .trust import TrustPolicy, default_policy, resolve, type_name

__all__ = [
    "GOLDEN_METHODS",
    "Inspection",
    "SafepointFile",
    "VerifyReport",
    "golden_outputs",
    "open",
]

GOLDEN_METHODS = ("predict", "predict_proba", "decision_function", "transform")


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


def _construct(
    reader: Reader,
    node: Any,
    *,
    trusted: Any,
    env: EnvPolicy | str,  # checked by environment.check (EnvPolicyError)
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
            if _may_warn_of_version(reader):
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


def _may_warn_of_version(reader: Reader) -> bool:
    """Whether a type of the file may run scikit-learn's __setstate__, which warns when
    a state's ``_sklearn_version`` is not the installed version. Not when the file
    records the installed scikit-learn: every state holds the version it was written
    with. (A file that records one version and holds states of another only shows
    scikit-learn's warning: nothing is hidden that should not be.)"""
    if all(m.partition(".")[0] in _NO_VERSION_WARNING for m, _, _ in reader.types):
        return False
    env = reader.manifest.get("env")
    packages = env.get("packages") if type(env) is dict else None
    recorded = packages.get("scikit-learn") if type(packages) is dict else None
    return recorded is None or recorded != _version("sklearn")


def _policy(trusted: Any) -> TrustPolicy:
    """The trust policy for ``trusted=``: the default one is built once per process."""
    if trusted is None or (type(trusted) is tuple and not trusted):
        return default_policy()
    return TrustPolicy(trusted)


def _guard(reader: Reader, policy: TrustPolicy, what: str) -> Any:
    """The load-time guard for a file: it may import from the packages its audited
    types name; those the default trust set names may import at run time too."""
    packages: set[str] = set()
    libraries: set[str] = set()
    for m, q, _ in reader.types:
        top = m.partition(".")[0]
        packages.add(top)
        if not policy.trusted_by_caller(type_name(m, q)):
            libraries.add(top)
    return guarded(f"{what} {reader.describe()}", packages=packages, libraries=libraries)


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
    #: the algorithm whose signature was *verified* (``inspect(..., key=)``); None
    #: without a key: a signature is reported only by checking it
    signed: str | None
    golden: list[str] = field(default_factory=list)
    #: what the file's signature block claims (well-formed, naming the manifest's
    #: algorithm); anyone can write a claim: not verified, shown as such
    signature_claimed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _golden_names(golden: Any) -> list[str]:
    # a crafted manifest may hold anything here: names are shown, never trusted
    outputs = golden.get("outputs") if isinstance(golden, dict) else None
    return sorted(str(k) for k in outputs) if isinstance(outputs, dict) else []


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


# -- the handle ----------------------------------------------------------------------
class SafepointFile:
    """A safepoint file, open: header, footer and manifest read and checked.

    Made by :func:`open` (use it as a context manager, or call :meth:`close`). Opening
    reads the header, the footer and the manifest only, within ``limits``: nothing is
    imported, constructed or read from the data buffers until :meth:`load` (which
    audits the types first) or :meth:`verify`.

    >>> import safepoint as sp
    >>> data = sp.dumps([1.5, "a"])
    >>> with sp.format.open(data) as f:
    ...     (f.format_version, f.root_type, len(f.digest))
    ...     f.load()
    ('1.1', 'builtins.list', 32)
    [1.5, 'a']
    >>> f.load()
    Traceback (most recent call last):
    ...
    safepoint.errors.ClosedFileError: this safepoint file (a file of ... bytes) is closed: ...
    """

    def __init__(self, src: Source, *, limits: spec.Limits | None = None) -> None:
        self._reader: Reader | None = open_reader(src, limits or spec.DEFAULT_LIMITS)
        self._what = self._reader.describe()

    # -- life cycle ---------------------------------------------------------------
    def close(self) -> None:
        """Close the file (arrays a ``mmap=True`` load mapped stay valid)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    @property
    def closed(self) -> bool:
        return self._reader is None

    def __enter__(self) -> SafepointFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._reader is None else f"digest={self._reader.digest[:16]}..."
        return f"<SafepointFile {self._what} {state}>"

    def _live(self) -> Reader:
        if self._reader is None:
            raise ClosedFileError(
                f"this safepoint file ({self._what}) is closed: use it inside its `with "
                "safepoint.format.open(...)` block, or open it again"
            )
        return self._reader

    # -- what the header, footer and manifest say ----------------------------------
    @property
    def digest(self) -> str:
        """The file's digest (``blake2b`` of the manifest, which holds every buffer's
        checksum): the same bytes, the same digest."""
        return self._live().digest

    @property
    def format_version(self) -> str:
        major, minor = self._live().version[:2]
        return f"{major}.{minor}"

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return int(self._live().source.size)

    @property
    def root_type(self) -> str:
        """The type of the saved object, as recorded (``"sklearn...Pipeline"``)."""
        return str(self._live().manifest.get("root_type", "?"))

    @property
    def header(self) -> dict[str, Any]:
        """The fixed-size facts: format version, size, digest, buffer count, signature
        claim (what the file says; :meth:`verify` with ``key=`` checks it)."""
        reader = self._live()
        return {
            "format_version": self.format_version,
            "size": self.size,
            "digest": reader.digest,
            "n_buffers": len(reader.buffers),
            # a claim, named as one: only verify/load with key= check a signature
            "signature_claimed": claimed_signature(
                reader.auth_block, reader.manifest.get("signed")
            ),
        }

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The parsed manifest (read-only view; its nodes describe, they are not
        objects yet)."""
        return MappingProxyType(self._live().manifest)

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``metadata=`` given to :func:`safepoint.dump` (a copy)."""
        m = self._live().manifest.get("metadata")
        return dict(m) if isinstance(m, dict) else {}

    @property
    def types(self) -> list[tuple[str, str, str]]:
        """The types table: ``(module, qualname, node kind)`` of every type named."""
        return [tuple(t) for t in self._live().types]  # type: ignore[misc]

    def untrusted_types(self, trusted: Trusted = ()) -> list[str]:
        """Names of the types that :meth:`load` would refuse (with ``trusted``)."""
        return TrustPolicy(trusted).untrusted(self._live().types)

    def inspect(self, trusted: Trusted = (), *, key: KeyLike = None) -> Inspection:
        """What the file holds (see :func:`safepoint.inspect`); reads no data buffer.

        ``signed`` only when ``key`` verifies the signature (``IntegrityError`` if not)."""
        reader = self._live()
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
            # reported signed only when checked with the key (IntegrityError otherwise);
            # the block's claim alone is state from the file, shown as a claim
            signed=verify_auth_block(reader.auth_block, reader.manifest_bytes, key),
            golden=_golden_names(golden),
            signature_claimed=claimed_signature(reader.auth_block, reader.manifest.get("signed")),
        )

    def verify(
        self, *, key: KeyLike = None, trusted: Trusted = (), golden: bool = True
    ) -> VerifyReport:
        """Check every buffer's checksum (and the signature with ``key``); then, if the
        file has golden data and ``golden`` is true, load the model and compare its
        outputs with the stored ones (see :func:`safepoint.verify`)."""
        reader = self._live()
        problems: list[str] = []
        golden_result: dict[str, str] = {}
        signed = None
        if key is not None:
            try:
                signed = verify_auth_block(reader.auth_block, reader.manifest_bytes, key)
                reader.strong = True
            except IntegrityError as exc:
                problems.append(str(exc))
        problems += reader.verify_all()
        diffs = compare(reader.manifest.get("env"))
        stored = reader.manifest.get("golden")
        if golden and isinstance(stored, dict) and not problems:
            node = {
                "@": "list",
                "v": [
                    reader.manifest.get("root"),
                    stored.get("X"),
                    {"@": "dict", "s": stored.get("outputs")},
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

    def load(
        self,
        *,
        trusted: Trusted = (),
        env: EnvPolicy = "warn",
        key: KeyLike = None,
        mmap: bool = False,
        verify_mapped: bool = False,
    ) -> Any:
        """Build the saved object, without executing code from the file (see
        :func:`safepoint.load` for the arguments). The types are audited first:
        :class:`~safepoint.UntrustedTypesError` names those to pass as ``trusted=``.
        ``mmap`` maps large arrays only when the file was opened from a path."""
        reader = self._live()
        return _construct(
            reader,
            reader.manifest.get("root"),
            trusted=trusted,
            env=env,
            key=key,
            mmap=mmap and reader.source.path is not None,
            verify_mapped=verify_mapped,
        )


def open(src: Source, *, limits: spec.Limits | None = None) -> SafepointFile:
    """Open a safepoint file: a path, a binary file object, or its bytes.

    Reads and checks the header, the footer and the manifest (within ``limits``, see
    :class:`safepoint.Limits`); raises :class:`~safepoint.FormatError` for anything
    that is not a valid safepoint file. Use the handle as a context manager.

    >>> import safepoint as sp
    >>> with sp.format.open(sp.dumps({"a": 1})) as f:
    ...     f.untrusted_types(), f.verify().ok, f.load()
    ([], True, {'a': 1})
    """
    return SafepointFile(src, limits=limits)
