"""Root command group, shared options and error handling.

Unix habits: ``--help`` everywhere, ``--json`` for scripts, errors on stderr,
non-zero exit on failure (1: the operation failed, 2: bad usage or input).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import __version__
from ..errors import SafepointError

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def quiet_option(f: F) -> F:
    return click.option("--quiet", "-q", is_flag=True, help="No progress output.")(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=True))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"safepoint: error: {message}", err=True)
    sys.exit(code)


class SafepointGroup(click.Group):
    """Turns SafepointError into a one-line message on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SafepointError as exc:
            click.echo(f"safepoint: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=SafepointGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="safepoint")
def cli() -> None:
    """Save, version, checkpoint and serve machine-learning models, safely and fast."""


def _register_commands() -> None:
    # each module adds its commands to `cli` when imported
    from . import format_cmds  # noqa: F401

    for name in (
        "store_cmds",
        "workflow_cmds",
        "convert_cmds",
        "scoring_cmds",
        "ui_cmds",
        "demo_cmd",
    ):
        try:
            __import__(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise


def main(argv: list[str] | None = None) -> None:
    _register_commands()
    cli.main(args=argv, prog_name="safepoint")
