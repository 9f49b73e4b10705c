"""``safepoint inspect`` and ``safepoint verify`` for files."""

from __future__ import annotations

from typing import Any

import click

from ..format import api
from ._common import emit_json, json_option, store_for_ref, store_options, trust_options


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_inspection(info: api.Inspection) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    out.print(
        f"[bold]{info.root_type}[/bold]  format {info.format_version}, "
        f"{_human_bytes(info.size)} ({info.n_buffers} buffers, "
        f"{_human_bytes(info.data_bytes)} of data"
        + (f", {info.compressed_buffers} compressed" if info.compressed_buffers else "")
        + ")"
    )
    out.print(
        f"digest {info.digest}"
        + (f", signature {info.signed} valid" if info.signed else "")
        + (
            f", has a signature block ({info.signature_claimed}; not verified: `verify --key`)"
            if info.signature_claimed and not info.signed
            else ""
        )
    )
    table = Table("type", "kind", "trusted")
    for t in info.types:
        table.add_row(t["name"], t["kind"], "yes" if t["trusted"] else "[red]NO[/red]")
    if info.types:
        out.print(table)
    if info.untrusted:
        out.print(
            f"[red]untrusted:[/red] {', '.join(info.untrusted)} "
            "(if you trust them: --trust NAME for each; from Python, trusted=[...])"
        )
    env = info.environment
    pk = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    out.print(f"written with Python {env.get('python', '?')} on {env.get('platform', '?')}: {pk}")
    for d in info.environment_diff:
        out.print(f"[yellow]differs here:[/yellow] {d}")
    if info.signature:
        out.print(f"signature: {info.signature}")
    if info.metadata:
        out.print(f"metadata: {info.metadata}")
    if info.golden:
        out.print(f"golden outputs: {', '.join(info.golden)} (check with `safepoint verify`)")


def _key_arg(key: str | None) -> Any:
    if key is None:
        return None
    import os

    if key.startswith("env:"):
        value = os.environ.get(key[4:])
        if value is None:
            raise click.BadParameter(
                f"environment variable {key[4:]} is not set", param_hint="--key"
            )
        return value.encode()
    if key.startswith("file:"):
        with open(key[5:], "rb") as f:
            return f.read().strip()
    raise click.BadParameter(
        "use env:VAR or file:PATH (keys never go on the command line)", param_hint="--key"
    )


@click.command()
@click.argument("target")
@trust_options
@store_options
@json_option
def inspect(
    target: str,
    trust: tuple[str, ...],
    as_json: bool,
    store_url: str | None = None,
    metadata_url: str | None = None,
) -> None:
    """Describe a safepoint FILE (or store model NAME[@VERSION|@ALIAS]) without loading it."""
    store = store_for_ref(target, store_url, metadata_url)
    if store is not None:
        info = store.inspect(target, trusted=trust)
    else:
        info = api.inspect(target, trusted=trust)
    if as_json:
        emit_json(info.to_dict())
    else:
        print_inspection(info)


@click.command()
@click.argument("target")
@click.option("--key", metavar="env:VAR|file:PATH", help="HMAC key to check the signature.")
@trust_options
@store_options
@json_option
def verify(
    target: str,
    key: str | None,
    trust: tuple[str, ...],
    as_json: bool,
    store_url: str | None = None,
    metadata_url: str | None = None,
) -> None:
    """Check checksums (and signature) of FILE (or store model NAME[@VERSION|@ALIAS]) and
    re-run its golden outputs.

    Exits 1 if anything is wrong.
    """
    store = store_for_ref(target, store_url, metadata_url)
    if store is not None:
        report = store.verify(target, key=_key_arg(key), trusted=trust)
    else:
        report = api.verify(target, key=_key_arg(key), trusted=trust)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(
            f"{'OK' if report.ok else 'FAILED'}: {report.checked_buffers} buffers checked"
            + (f", signature {report.signed} valid" if report.signed else "")
        )
        for name, verdict in report.golden.items():
            click.echo(f"  golden {name}: {verdict}")
        for d in report.environment_diff:
            click.echo(f"  environment differs: {d}")
        for p in report.problems:
            click.echo(f"  problem: {p}", err=True)
    if not report.ok:
        raise SystemExit(1)


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [inspect, verify]
