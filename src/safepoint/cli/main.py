"""The root command group, and the registration of every command module's commands.

Unix habits: ``--help`` everywhere, ``--json`` for scripts, errors on stderr,
non-zero exit on failure (1: the operation failed, 2: bad usage or input). What
every command shares lives in :mod:`._common`.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__
from . import _common
from ._common import SafepointGroup, emit_json, json_option, quiet_option

__all__ = ["cli", "emit_json", "json_option", "main", "quiet_option"]


@click.group(cls=SafepointGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="safepoint")
def cli() -> None:
    """Save, version, checkpoint and serve machine-learning models, safely and fast.

    Environment: SAFEPOINT_STORE (default --store), SAFEPOINT_METADATA (default
    --metadata), SAFEPOINT_USER (who the audit log names), SAFEPOINT_HOME (where the catalog of
    a remote store without --metadata is kept), SAFEPOINT_CACHE_DIR and SAFEPOINT_CACHE_SIZE
    (the read cache of remote stores, see `safepoint cache`), SAFEPOINT_QUIET=1 (no progress).
    """


#: the modules that define the commands, each listing them in ``COMMANDS``; a command
#: module imports click and :mod:`._common` only (never this module, nor another command
#: module: tests/cli/test_cli_structure.py), so this is the one place that knows them all
COMMAND_MODULES = (
    "format_cmds",
    "store_cmds",
    "cache_cmds",
    "workflow_cmds",
    "convert_cmds",
    "scoring_cmds",
    "ui_cmds",
    "demo_cmd",
)


def _register_commands() -> None:
    """Add every command module's ``COMMANDS`` to :func:`cli` (again: no effect)."""
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            # a command module left out of a trimmed install; a missing dependency
            # of one that is there is an error
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        for command in module.COMMANDS:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """The ``safepoint`` program (its console script and ``python -m safepoint.cli``)."""
    _common.OWN_PROCESS = True
    _register_commands()
    cli.main(args=argv, prog_name="safepoint")
