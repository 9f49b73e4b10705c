"""``sp.convert`` and ``sp.scan``: import pickle, joblib and skops files audited.

The pipeline is parse -> audit -> construct -> ``sp.dump``:

1. the source is read with bounded sizes, its format found from magic bytes
   (pickle, joblib plain or compressed, zip, skops, safepoint);
2. pickle streams are parsed into an inert graph by
   :class:`~safepoint.importers.pickle_parser.PickleParser` (nothing imported,
   nothing called); skops files are audited from their ``schema.json``;
3. the audit lists every name the file needs and refuses anything outside the
   allowlist (:mod:`safepoint.importers.semantics`, the default trust set of
   :class:`~safepoint.format.trust.TrustPolicy`) and ``trusted=``;
4. only then are objects built, and written as a safepoint file.
"""

from __future__ import annotations

import hashlib
import os
import pickletools
import struct
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FormatError, LimitExceededError, SafepointError, UntrustedTypesError
from ..format import api as _format_api
from .audit import AuditResult, audit_stream, hints, trust_would_help
from .construct import Constructor
from .containers import COMPRESSIONS, decompress, read_bounded, sniff, zip_members, zip_names
from .limits import DEFAULT_CONVERT_LIMITS, ConvertLimits
from .pickle_parser import PickleParser, looks_like_pickle

__all__ = ["ConversionReport", "ScanResult", "ScanResults", "convert", "scan"]

from .._types import Trusted

_PICKLE_EXTENSIONS = (".pkl", ".pickle", ".pck", ".p", ".joblib", ".sav", ".dat")


#: the opcodes of protocols 0 and 1 (any of them can start such a stream)
_PROTOCOL0_OPCODES = frozenset(
    op.code.encode("latin-1")[0] for op in pickletools.opcodes if op.proto <= 1
)


_MAX_PROBLEMS = 50


def _maybe_protocol0(data: bytes) -> bool:
    return bool(data) and data[0] in _PROTOCOL0_OPCODES


def _pickle_name(path: str) -> bool:
    return path.lower().endswith(_PICKLE_EXTENSIONS)


@dataclass
class ConversionReport:
    """What :func:`convert` found and wrote.

    ``types`` lists every name the source needs (``name``, ``roles``, ``trusted``);
    ``verdict`` is ``"converted"`` after a successful conversion.
    """

    source: str
    destination: str
    format: str
    types: list[dict[str, Any]]
    untrusted: list[str]
    verdict: str
    root_type: str = ""
    member: str | None = None
    size: int = 0
    digest: str = ""
    source_sha256: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanResult:
    """The verdict on one file: ``"safe"`` (every opcode of every stream audited, and
    every name and call it needs is allowed with the given trust), ``"untrusted"``
    (needs types outside it), or ``"refused"`` (malformed, or a construct safepoint
    never imports, such as persistent ids, dropped calls or a second pickle).

    ``checked`` counts what was examined (``pickle_streams``, ``opcodes``, ``calls``,
    ``names``, ``skops_members``, ``zip_members``); ``not_checked`` says, in words,
    what the verdict does not cover.
    """

    path: str
    format: str
    types: list[dict[str, Any]] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)
    verdict: str = "safe"
    problems: list[str] = field(default_factory=list)
    members: list[ScanResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    not_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == "safe"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScanResults(list[ScanResult]):
    """The results of :func:`scan`, a list; ``skipped`` are the files found in folders
    that were not examined (not pickle, joblib, zip, skops or safepoint files)."""

    skipped: list[str]

    def __init__(self, results: Iterable[ScanResult] = (), skipped: Iterable[str] = ()):
        super().__init__(results)
        self.skipped = list(skipped)


#: what a "safe" verdict on a pickle does not cover
_NOT_CHECKED_PICKLE = (
    "the values themselves (array sizes against their bytes, tree and index bounds, "
    "each class's state) are validated in full only by convert"
)
_NOT_CHECKED_SAFEPOINT = (
    "only the types table was checked; buffers, digests and values are checked when "
    "the file is loaded (sp.load, or sp.verify / safepoint verify for its digests)"
)


@dataclass
class _Analysis:
    format: str
    root: Any = None
    audit: AuditResult | None = None
    member: str | None = None
    sp_untrusted: list[str] | None = None
    sp_types: list[dict[str, Any]] | None = None


def _parse_audited(
    data: bytes, pos: int, trusted: Trusted, limits: ConvertLimits
) -> tuple[PickleParser, Any, AuditResult]:
    parser = PickleParser(data, pos, joblib=True, limits=limits)
    root = parser.parse()
    result = audit_stream(
        root,
        parser.created,
        trusted,
        leftover=parser.leftover,
        open_marks=parser.open_marks,
        opcodes=parser.n_opcodes,
    )
    return parser, root, result


def _pickle_analysis(
    data: bytes, fmt_prefix: str, trusted: Trusted, limits: ConvertLimits
) -> _Analysis:
    parser, root, result = _parse_audited(data, 0, trusted, limits)
    fmt = "joblib" if parser.joblib_arrays else "pickle"
    if fmt_prefix:
        fmt = f"{fmt}+{fmt_prefix}"
    _audit_rest(data, parser.pos, trusted, limits, result)
    return _Analysis(fmt, root=root, audit=result)


def _audit_rest(
    data: bytes, pos: int, trusted: Trusted, limits: ConvertLimits, result: AuditResult
) -> None:
    """Whatever follows the first STOP: more pickle streams (each audited, so that their
    names are reported) or other bytes. Either makes the file refused: ``pickle.load``
    reads only the first stream, but a loader that reads in a loop runs them all."""
    end = len(data)
    if pos >= end:
        return
    first_end = pos
    streams = 1
    while pos < end:
        if not looks_like_pickle(data[pos : pos + 16]) and not _maybe_protocol0(
            data[pos : pos + 1]
        ):
            result.problems.append(
                f"{end - pos} byte(s) after the end of the pickle stream"
                + (f" {streams}" if streams > 1 else "")
                + f" (from byte {pos}) that are not a pickle: not checked; refused"
            )
            break
        try:
            parser, _, more = _parse_audited(data, pos, trusted, limits)
        except SafepointError as exc:
            result.problems.append(
                f"{end - pos} byte(s) after the end of the pickle stream (from byte {pos}) "
                f"that do not parse as a pickle ({exc}): not checked; refused"
            )
            break
        result.merge(more)
        streams += 1
        pos = parser.pos
    if streams > 1:
        result.problems.insert(
            0,
            f"the file holds {streams} pickle streams, the second from byte {first_end}: "
            "pickle.load reads only the first, but a loader that reads in a loop runs them "
            "all (every stream was audited); refused",
        )
    if len(result.problems) > _MAX_PROBLEMS:
        # thousands of tiny crafted streams: every one audited, the first reported
        extra = len(result.problems) - _MAX_PROBLEMS
        result.problems = [*result.problems[:_MAX_PROBLEMS], f"... and {extra} more problems"]


def _analyze_stream(data: bytes, trusted: Trusted, limits: ConvertLimits) -> _Analysis:
    """A pickle or joblib stream, possibly compressed as a whole."""
    kind = sniff(data[:16])
    if kind in COMPRESSIONS:
        inner = decompress(data, kind, limits)
        if sniff(inner[:16]) != "pickle" and not _maybe_protocol0(inner):
            raise FormatError(f"the {kind}-compressed data is not a pickle or joblib stream")
        return _pickle_analysis(inner, kind, trusted, limits)
    if kind == "pickle":
        return _pickle_analysis(data, "", trusted, limits)
    if _maybe_protocol0(data):
        # a protocol 0/1 pickle may start with any of their opcodes (FLOAT, then POP,
        # then the real content): what parses as one is audited as one
        try:
            return _pickle_analysis(data, "", trusted, limits)
        except LimitExceededError:
            raise
        except SafepointError as exc:
            raise FormatError(
                f"not a pickle, joblib, skops or safepoint file (first bytes {data[:8]!r}; "
                f"read as a pickle: {exc})"
            ) from None
    if kind == "joblib-compat":
        raise FormatError(
            "this is a joblib file from joblib < 0.10 (arrays kept in separate files): "
            "re-save it with a current joblib in an environment you trust, then convert"
        )
    raise FormatError(
        f"not a pickle, joblib, skops or safepoint file (format {kind!r}, first bytes {data[:8]!r})"
    )


def _analyze(
    path: str, data: bytes, trusted: Trusted, limits: ConvertLimits
) -> _Analysis | list[tuple[str, _Analysis | SafepointError]]:
    try:
        return _analyze_unchecked(path, data, trusted, limits)
    except SafepointError:
        raise
    except RecursionError:
        raise LimitExceededError(f"{path!r} nests too deeply") from None
    except MemoryError:
        raise LimitExceededError(f"{path!r} does not fit in memory") from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, struct.error) as exc:
        # a safety net: the parsers raise FormatError themselves for what they check
        raise FormatError(
            f"{path!r} is malformed ({type(exc).__name__}: {exc}); nothing was executed"
        ) from None


def _analyze_unchecked(
    path: str, data: bytes, trusted: Trusted, limits: ConvertLimits
) -> _Analysis | list[tuple[str, _Analysis | SafepointError]]:
    kind = sniff(data[:16])
    if kind == "safepoint":
        info = _format_api.inspect(data, trusted=trusted)
        return _Analysis(
            "safepoint",
            sp_untrusted=info.untrusted,
            sp_types=[
                {"name": t["name"], "roles": [t["kind"]], "trusted": t["trusted"]}
                for t in info.types
            ],
        )
    if kind == "zip":
        members = zip_members(data, limits)
        names = [n for n, _ in members]
        if "schema.json" in names:
            from . import skops_

            root, result, unused = skops_.audit_skops(dict(members), trusted, limits)
            for name in unused:
                # a pickle hidden next to the schema: audit it too, so that its names
                # are reported (the file is refused either way)
                raw = dict(members)[name]
                if sniff(raw[:16]) in (*COMPRESSIONS, "pickle"):
                    try:
                        hidden = _analyze_stream(raw, trusted, limits)
                    except SafepointError as exc:
                        result.problems.append(f"{name}: {exc}")
                    else:
                        if hidden.audit is not None:
                            hidden.audit.problems = [f"{name}: {p}" for p in hidden.audit.problems]
                            result.merge(hidden.audit)
            return _Analysis("skops", root=root, audit=result)
        out: list[tuple[str, _Analysis | SafepointError]] = []
        for name, raw in members:
            # by magic bytes, or by name: a protocol 0/1 pickle may start with any opcode
            if sniff(raw[:16]) in (*COMPRESSIONS, "pickle", "joblib-compat") or _pickle_name(name):
                try:
                    out.append((name, _analyze_stream(raw, trusted, limits)))
                except SafepointError as exc:
                    out.append((name, exc))
        return out
    return _analyze_stream(data, trusted, limits)


def _guard(audited: AuditResult, trusted: Trusted, what: str) -> Any:
    """The load-time guard around construction: imports only from the packages of the
    audited names (those of the default trust set may import at run time)."""
    from ..format.guard import guarded
    from ..format.trust import TrustPolicy

    policy = TrustPolicy(trusted)
    packages = {name.partition(".")[0] for name in audited.needed}
    libraries = {
        name.partition(".")[0] for name in audited.needed if not policy.trusted_by_caller(name)
    }
    return guarded(what, packages=packages, libraries=libraries)


def _types_and_untrusted(a: _Analysis) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    if a.audit is not None:
        return a.audit.types(), a.audit.untrusted, a.audit.problems
    return a.sp_types or [], a.sp_untrusted or [], []


# -- convert ----------------------------------------------------------------------
def convert(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    trusted: Trusted = (),
    compress: str | None = None,
    limits: ConvertLimits | None = None,
) -> ConversionReport:
    """See :func:`safepoint.convert` (the public entry point)."""
    lim = limits or DEFAULT_CONVERT_LIMITS
    src = os.fspath(src_path)
    dst = os.fspath(dst_path)
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise FormatError("the destination is the source file: choose another path")
    data = read_bounded(src, lim)
    digest = hashlib.sha256(data).hexdigest()
    found = _analyze(src, data, trusted, lim)
    member = None
    if isinstance(found, list):
        streams = [(n, a) for n, a in found]
        if len(streams) != 1:
            listed = ", ".join(n for n, _ in streams) or "none"
            raise FormatError(
                f"the zip archive holds {len(streams)} pickle/joblib members ({listed}) and "
                "no skops schema: extract the one to convert and convert it alone"
            )
        member, got = streams[0]
        if isinstance(got, SafepointError):
            raise got
        analysis = got
        analysis.format = f"zip[{analysis.format}]"
    else:
        analysis = found
    if analysis.format == "safepoint":
        raise FormatError(f"{src!r} is already a safepoint file: load it with sp.load")
    types, untrusted, problems = _types_and_untrusted(analysis)
    if problems:
        raise FormatError(
            f"refusing to import {src!r}: "
            + "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    if untrusted:
        advice = (
            "If you trust the file's author and these names, pass them: "
            f"sp.convert(src, dst, trusted={untrusted!r}) (CLI: --trust NAME)."
            if trust_would_help(untrusted)
            else " ".join(f"Note: {h}." for h in hints(untrusted))
        )
        raise UntrustedTypesError(
            untrusted,
            f"refusing to import {src!r}: it needs {len(untrusted)} type(s) outside the "
            f"allowlist: {', '.join(untrusted)}. Nothing was imported or executed. {advice}",
        )
    assert analysis.audit is not None
    with warnings.catch_warnings(record=True) as caught:
        # e.g. scikit-learn's "Trying to unpickle estimator ... from version X": kept in
        # the report (and re-issued once) since it says the model came from another version
        warnings.simplefilter("always")
        with _guard(analysis.audit, trusted, f"converting {src!r}"):
            obj = Constructor(analysis.audit, lim, trusted).build(analysis.root)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for w in {str(w.message): w for w in caught}.values():
        warnings.warn(w.message, stacklevel=2)
    meta = {
        "converted_from": {
            "file": os.path.basename(src),
            "format": analysis.format,
            "sha256": digest,
            **({"member": member} if member else {}),
        }
    }
    res = _format_api.dump(obj, dst, compress=compress, metadata=meta)
    t = type(obj)
    return ConversionReport(
        source=src,
        destination=dst,
        format=analysis.format,
        types=types,
        untrusted=[],
        verdict="converted",
        root_type=f"{t.__module__}.{t.__qualname__}",
        member=member,
        size=res.size,
        digest=res.digest,
        source_sha256=digest,
        warnings=notes,
    )


# -- scan -------------------------------------------------------------------------
def _result(path: str, a: _Analysis) -> ScanResult:
    types, untrusted, problems = _types_and_untrusted(a)
    verdict = "refused" if problems else "untrusted" if untrusted else "safe"
    res = ScanResult(path, a.format, types, untrusted, verdict, problems, notes=hints(untrusted))
    if a.audit is not None:
        res.checked = {**a.audit.checked, "names": len(types)}
        res.not_checked = [_NOT_CHECKED_PICKLE]
    else:
        res.checked = {"names": len(types)}
        res.not_checked = [_NOT_CHECKED_SAFEPOINT]
    return res


def _scan_one(path: str, trusted: Trusted, limits: ConvertLimits) -> ScanResult:
    try:
        data = read_bounded(path, limits)
        found = _analyze(path, data, trusted, limits)
    except SafepointError as exc:
        return ScanResult(
            path,
            "unknown",
            verdict="refused",
            problems=[str(exc)],
            not_checked=["the file could not be examined past this problem"],
        )
    if not isinstance(found, list):
        return _result(path, found)
    top = ScanResult(path, "zip")
    listed = zip_names(data)
    examined = {name for name, _ in found}
    skipped = [name for name in listed if name not in examined]
    if skipped:
        top.not_checked.append(
            f"{len(skipped)} zip member(s) that are not pickle or joblib streams: "
            + ", ".join(skipped[:10])
            + (", ..." if len(skipped) > 10 else "")
        )
    if not found:
        top.verdict = "refused"
        top.problems.append("the zip archive holds no pickle, joblib or skops data")
    names: dict[str, dict[str, Any]] = {}
    for name, got in found:
        sub_path = f"{path}::{name}"
        if isinstance(got, SafepointError):
            sub = ScanResult(sub_path, "unknown", verdict="refused", problems=[str(got)])
        else:
            sub = _result(sub_path, got)
        top.members.append(sub)
        for t in sub.types:
            names.setdefault(t["name"], t)
        top.problems += [f"{name}: {p}" for p in sub.problems]
        top.untrusted = sorted(set(top.untrusted) | set(sub.untrusted))
        for k, v in sub.checked.items():
            top.checked[k] = top.checked.get(k, 0) + v
    top.checked["zip_members"] = len(found)
    if found:
        top.not_checked.append(_NOT_CHECKED_PICKLE)
    top.types = [names[n] for n in sorted(names)]
    top.notes = hints(top.untrusted)
    if top.problems:
        top.verdict = "refused"
    elif top.untrusted:
        top.verdict = "untrusted"
    return top


def _expand(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for folder, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    out.append((os.path.join(folder, f), True))
        else:
            out.append((p, False))
    return out


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    trusted: Trusted = (),
    limits: ConvertLimits | None = None,
) -> ScanResults:
    """See :func:`safepoint.scan` (the public entry point)."""
    lim = limits or DEFAULT_CONVERT_LIMITS
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    results = ScanResults()
    for path, from_dir in _expand(paths):
        if from_dir:
            try:
                with open(path, "rb") as f:
                    head = f.read(16)
            except OSError:
                results.skipped.append(path)
                continue
            kind = sniff(head)
            # protocol 0/1 pickles have no magic (and may start with any opcode): inside
            # folders, a file named like a pickle is always examined, other files only
            # when their first bytes are those of a model file
            if not _pickle_name(path) and (
                kind == "unknown" or (kind == "pickle" and head[:1] != b"\x80")
            ):
                results.skipped.append(path)
                continue
        results.append(_scan_one(path, trusted, lim))
    return results
