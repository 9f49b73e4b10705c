"""``safepoint convert`` and ``safepoint scan``: audited import of pickle/joblib/skops files."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import Any

import click

from ..errors import FormatError, UntrustedTypesError
from ._common import cli_phrasing, emit_json, json_option, trust_option, trust_options

_VERDICT_STYLE = {"safe": "green", "untrusted": "red", "refused": "red"}


def _limit_options(f: Any) -> Any:
    f = click.option(
        "--max-ratio",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Refuse compressed data that expands more than N times beyond 64 MiB "
        "(decompression bombs; default 200).",
    )(f)
    return click.option(
        "--max-nodes",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Refuse a pickle that creates more than N objects (default 10,000,000).",
    )(f)


def _limits(max_ratio: int | None, max_nodes: int | None) -> Any:
    from ..importers.limits import DEFAULT_CONVERT_LIMITS

    changes: dict[str, int] = {}
    if max_ratio is not None:
        changes["max_compression_ratio"] = max_ratio
    if max_nodes is not None:
        changes["max_nodes"] = max_nodes
    return dataclasses.replace(DEFAULT_CONVERT_LIMITS, **changes)


@click.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@trust_options
@click.option("--compress", type=click.Choice(["zstd"]), default=None, help="Compress buffers.")
@_limit_options
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@json_option
def convert(
    src: str,
    dst: str,
    trust: tuple[str, ...],
    compress: str | None,
    max_ratio: int | None,
    max_nodes: int | None,
    force: bool,
    as_json: bool,
) -> None:
    """Import a pickle, joblib or skops file SRC as the safepoint file DST.

    SRC is parsed, never unpickled: every type it needs is audited, and files
    that need types outside the allowlist (plus --trust NAME) are refused
    with the list of names. DST is not overwritten unless --force. Exit 0 on
    success, 1 if refused, 2 on bad usage.
    """
    from ..importers import convert as do_convert

    if os.path.exists(dst) and not force:
        raise click.UsageError(f"{dst} exists; pass --force to overwrite it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # listed in the report below
            report = do_convert(
                src, dst, trusted=trust, compress=compress, limits=_limits(max_ratio, max_nodes)
            )
    except (UntrustedTypesError, FormatError) as exc:
        if as_json:
            emit_json(
                {
                    "source": src,
                    "destination": dst,
                    "verdict": "untrusted" if isinstance(exc, UntrustedTypesError) else "refused",
                    "untrusted": getattr(exc, "types", []),
                    "error": cli_phrasing(str(exc), exc),
                }
            )
            sys.exit(1)
        raise
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(
        f"converted {src} ({report.format}) -> {dst}: {report.root_type}, {report.size} bytes"
    )
    click.echo("types: " + ", ".join(t["name"] for t in report.types))
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@trust_option
@_limit_options
@click.option("--verbose", "-v", is_flag=True, help="List every file and every type it needs.")
@json_option
def scan(
    paths: tuple[str, ...],
    trust: tuple[str, ...],
    max_ratio: int | None,
    max_nodes: int | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Audit model files without loading them: format, types needed, verdict.

    Folders are walked. Prints a summary line, then only the files that need
    attention (untrusted types, malformed) and why; -v lists every file and
    type. Exit 0 if every file is safe to import, 1 if any is not (for CI).
    """
    from ..importers import scan as do_scan

    results = do_scan(list(paths), trusted=trust, limits=_limits(max_ratio, max_nodes))
    if as_json:
        emit_json([r.to_dict() for r in results])
    elif not results:
        click.echo("no model files found")
    else:
        counts = {v: sum(r.verdict == v for r in results) for v in ("safe", "untrusted", "refused")}
        click.echo(
            f"scanned {len(results)} file(s): {counts['safe']} safe, "
            f"{counts['untrusted']} need untrusted types, {counts['refused']} refused"
        )
        # what no scan checks is said once; what was not checked in one file, with the file
        common = set.intersection(*(set(r.not_checked) for r in results))
        for n in sorted(common):
            click.echo(f"not checked: {n}")
        for r in results:
            own = [n for n in r.not_checked if n not in common]
            if r.ok and not own and not verbose:
                continue  # nothing to act on
            style = _VERDICT_STYLE.get(r.verdict, "red")
            click.echo(f"{click.style(r.verdict.upper(), fg=style)}  {r.path}  [{r.format}]")
            if r.checked:
                click.echo(f"    checked: {_counts(r.checked)}")
            for t in r.types:
                if t["trusted"] and not verbose:
                    continue
                mark = "" if t["trusted"] else "  <- untrusted"
                click.echo(f"    {t['name']} ({', '.join(t['roles'])}){mark}")
            for p in r.problems:
                click.echo(f"    problem: {p}")
            for n in r.notes:
                click.echo(f"    note: {n}")
            for n in own:
                click.echo(f"    not checked: {n}")
        if results.skipped:
            click.echo(
                f"skipped {len(results.skipped)} file(s) in folders that are not pickle, "
                "joblib, zip, skops or safepoint files (name one explicitly to scan it)"
            )
    if not all(r.ok for r in results):
        sys.exit(1)


_COUNT_WORDS = {
    "zip_members": "zip member(s)",
    "skops_members": "skops member(s)",
    "pickle_streams": "pickle stream(s)",
    "opcodes": "opcode(s)",
    "calls": "call(s)",
    "names": "name(s)",
}


def _counts(checked: dict[str, int]) -> str:
    order = [k for k in _COUNT_WORDS if k in checked] + sorted(set(checked) - set(_COUNT_WORDS))
    return ", ".join(f"{checked[k]} {_COUNT_WORDS.get(k, k)}" for k in order)


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [convert, scan]
