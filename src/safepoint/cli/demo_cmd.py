"""``safepoint demo``: the README's main job."""

from __future__ import annotations

import os

import click

from ._common import emit_json, json_option, quiet_option


@click.command()
@click.option(
    "--dir",
    "workdir",
    default="safepoint-demo",
    show_default=True,
    help="Folder for the demo's files and its local store.",
)
@quiet_option
@json_option
def demo(workdir: str, quiet: bool, as_json: bool) -> None:
    """Train, save, inspect and load a model safely; refuse a crafted file; store,
    resume a workflow and a killed search, score exactly once.

    Exit 1 if any part's own check fails. With --json, what each part did as JSON.
    """
    from .. import demo as demo_mod

    try:
        said = demo_mod.run(workdir, quiet=quiet or as_json)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a part's check failed: say which, exit 1
            raise click.ClickException(exc.code) from None
        raise
    if as_json:
        emit_json({"dir": os.path.abspath(workdir), "parts": said, "ok": True})


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [demo]
