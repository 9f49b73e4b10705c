"""``safepoint cache info|clear``: the local read cache of remote stores (stores/cache.py)."""

from __future__ import annotations

import click

from ._common import emit_json, json_option

__all__ = ["cache"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _dir_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "folder",
        metavar="DIR",
        help="The cache folder (default $SAFEPOINT_CACHE_DIR, else the user cache folder).",
    )(f)


@click.group()
def cache() -> None:
    """The local read cache of remote stores (s3://, gs://, ...).

    Each blob read from a remote store is downloaded once per machine into this folder
    (verified by its digest), then read or memory-mapped from there. Environment:
    SAFEPOINT_CACHE_DIR (the folder), SAFEPOINT_CACHE_SIZE (the bound, e.g. 10G; 0 turns
    the cache off).
    """


@cache.command()
@_dir_option
@json_option
def info(folder: str | None, as_json: bool) -> None:
    """Where the cache is, how many entries and bytes it holds, and its size bound."""
    from ..stores.cache import BlobCache

    data = BlobCache(folder).info()
    if as_json:
        emit_json(data)
        return
    click.echo(f"folder   {data['folder']}")
    n = data["entries"]
    click.echo(f"holds    {n} {'entry' if n == 1 else 'entries'}, {_human(data['bytes'])}")
    click.echo(f"limit    {_human(data['limit'])}")
    if data["temporary_files"]:
        click.echo(f"filling  {data['temporary_files']} temporary file(s)")


@cache.command()
@_dir_option
@json_option
def clear(folder: str | None, as_json: bool) -> None:
    """Remove every cached blob (the next read downloads it again; open readers go on)."""
    from ..stores.cache import BlobCache

    data = BlobCache(folder).clear()
    if as_json:
        emit_json(data)
        return
    click.echo(
        f"removed {data['removed']} entr{'y' if data['removed'] == 1 else 'ies'} "
        f"({_human(data['freed_bytes'])}) from {data['folder']}"
    )


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [cache]
