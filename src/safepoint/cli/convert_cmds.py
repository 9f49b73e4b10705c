"""``safepoint convert`` and ``safepoint scan``: audited import of pickle/joblib/skops files."""

from __future__ import annotations

import os
import sys
import warnings

import click

from ..errors import FormatError, UntrustedTypesError
from ._common import cli_phrasing, emit_json, json_option, trust_option, trust_options
from .main import cli

_VERDICT_STYLE = {"safe": "green", "untrusted": "red", "refused": "red"}


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@trust_options
@click.option("--compress", type=click.Choice(["zstd"]), default=None, help="Compress buffers.")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@json_option
def convert(
    src: str, dst: str, trust: tuple[str, ...], compress: str | None, force: bool, as_json: bool
) -> None:
    """Import a pickle, joblib or skops file SRC as the safepoint file DST.

    SRC is parsed, never unpickled: every type it needs is audited, and files
    that need types outside the allowlist (plus --trust NAME) are refused
    with the list of names. DST is not overwritten unless --force. Exit 0 on
    success, 1 if refused, 2 on bad usage.
    """
    from ..convert import convert as do_convert

    if os.path.exists(dst) and not force:
        raise click.UsageError(f"{dst} exists; pass --force to overwrite it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # listed in the report below
            report = do_convert(src, dst, trusted=trust, compress=compress)
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


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@trust_option
@click.option("--verbose", "-v", is_flag=True, help="List every file and every type it needs.")
@json_option
def scan(paths: tuple[str, ...], trust: tuple[str, ...], verbose: bool, as_json: bool) -> None:
    """Audit model files without loading them: format, types needed, verdict.

    Folders are walked. Prints a summary line, then only the files that need
    attention (untrusted types, malformed) and why; -v lists every file and
    type. Exit 0 if every file is safe to import, 1 if any is not (for CI).
    """
    from ..convert import scan as do_scan

    results = do_scan(list(paths), trusted=trust)
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
        for r in results:
            if r.ok and not verbose:
                continue
            style = _VERDICT_STYLE.get(r.verdict, "red")
            click.echo(f"{click.style(r.verdict.upper(), fg=style)}  {r.path}  [{r.format}]")
            for t in r.types:
                if t["trusted"] and not verbose:
                    continue
                mark = "" if t["trusted"] else "  <- untrusted"
                click.echo(f"    {t['name']} ({', '.join(t['roles'])}){mark}")
            for p in r.problems:
                click.echo(f"    problem: {p}")
            for n in r.notes:
                click.echo(f"    note: {n}")
    if not all(r.ok for r in results):
        sys.exit(1)
