"""``safepoint demo``: the README's main job."""

from __future__ import annotations

import click

from ._common import quiet_option
from .main import cli


@cli.command()
@click.option(
    "--dir",
    "workdir",
    default="safepoint-demo",
    show_default=True,
    help="Folder for the demo's files and its local store.",
)
@quiet_option
def demo(workdir: str, quiet: bool) -> None:
    """Train, save, inspect and load a model safely; refuse a crafted file."""
    from .. import demo as demo_mod

    demo_mod.run(workdir, quiet=quiet)
