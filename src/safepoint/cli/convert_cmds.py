"""``safepoint convert`` and ``safepoint scan``: audited import of pickle/joblib/skops files."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from typing import Any

import click

from ..errors import FormatError, UntrustedTypesError
from .main import cli, emit_json, json_option

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
    from ..convert.limits import DEFAULT_CONVERT_LIMITS

    changes: dict[str, int] = {}
    if max_ratio is not None:
        changes["max_compression_ratio"] = max_ratio
    if max_nodes is not None:
        changes["max_nodes"] = max_nodes
    return dataclasses.replace(DEFAULT_CONVERT_LIMITS, **changes)


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--trust", multiple=True, metavar="NAME", help="Allow this type name as well.")
@click.option("--compress", type=click.Choice(["zstd"]), default=None, help="Compress buffers.")
@_limit_options
@json_option
def convert(
    src: str,
    dst: str,
    trust: tuple[str, ...],
    compress: str | None,
    max_ratio: int | None,
    max_nodes: int | None,
    as_json: bool,
) -> None:
    """Import a pickle, joblib or skops file SRC as the safepoint file DST.

    SRC is parsed, never unpickled: every type it needs is audited, and files
    that need types outside the allowlist (plus --trust NAME) are refused
    with the list of names. Exit 0 on success, 1 if refused.
    """
    from ..convert import convert as do_convert

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
                    "error": str(exc),
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


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--trust", multiple=True, metavar="NAME", help="Treat this type name as trusted.")
@_limit_options
@json_option
def scan(
    paths: tuple[str, ...],
    trust: tuple[str, ...],
    max_ratio: int | None,
    max_nodes: int | None,
    as_json: bool,
) -> None:
    """Audit model files without loading them: format, types needed, verdict.

    Folders are walked. Exit 0 if every file is safe to import, 1 if any
    needs untrusted types or is malformed (for CI).
    """
    from ..convert import scan as do_scan

    results = do_scan(list(paths), trusted=trust, limits=_limits(max_ratio, max_nodes))
    if as_json:
        emit_json([r.to_dict() for r in results])
    else:
        if not results:
            click.echo("no model files found")
        for r in results:
            style = _VERDICT_STYLE.get(r.verdict, "red")
            click.echo(f"{click.style(r.verdict.upper(), fg=style)}  {r.path}  [{r.format}]")
            if r.checked:
                click.echo(f"    checked: {_counts(r.checked)}")
            for t in r.types:
                mark = "" if t["trusted"] else "  <- untrusted"
                click.echo(f"    {t['name']} ({', '.join(t['roles'])}){mark}")
            for p in r.problems:
                click.echo(f"    problem: {p}")
            for n in r.notes:
                click.echo(f"    note: {n}")
            for n in r.not_checked:
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
