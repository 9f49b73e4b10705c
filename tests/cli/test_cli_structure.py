"""How the CLI's modules fit together, checked on their source (AST).

A command module defines its commands and lists them in ``COMMANDS``; ``main.py``
registers them. What two command modules share lives in ``_common.py``: a command
module imports neither ``main`` nor another command module, and no cli module
imports a private name from another.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import click

import safepoint.cli as cli_pkg
from safepoint.cli.main import COMMAND_MODULES, _register_commands, cli

CLI_DIR = Path(cli_pkg.__file__).parent
MODULES = sorted(p.stem for p in CLI_DIR.glob("*.py"))


def _cli_imports(name: str) -> list[tuple[str, str, int]]:
    """(cli module imported, name imported, line) for each import of a cli module."""
    tree = ast.parse((CLI_DIR / f"{name}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            target = node.module or ""
        elif node.level == 0 and (node.module or "").startswith("safepoint.cli"):
            target = (node.module or "").removeprefix("safepoint.cli").lstrip(".")
        else:
            continue
        for alias in node.names:
            if target:
                out.append((target, alias.name, node.lineno))
            else:  # from . import x: x is a module
                out.append((alias.name, "*", node.lineno))
    return out


def test_the_scan_sees_imports() -> None:
    assert ("_common", "emit_json") in {(m, n) for m, n, _ in _cli_imports("store_cmds")}


def test_no_cli_module_imports_a_private_name_of_another() -> None:
    offenders = [
        f"{name}.py:{line} imports {attr} from {target}"
        for name in MODULES
        for target, attr, line in _cli_imports(name)
        if attr.startswith("_") and target != name
    ]
    assert offenders == []


def test_command_modules_import_only_common() -> None:
    """Not main (main imports them), not each other: shared helpers go to _common."""
    offenders = [
        f"{name}.py:{line} imports {target}"
        for name in COMMAND_MODULES
        for target, _, line in _cli_imports(name)
        if target != "_common"
    ]
    assert offenders == []


def test_main_registers_every_command_each_module_defines() -> None:
    assert set(COMMAND_MODULES) == {m for m in MODULES if m.endswith(("_cmds", "_cmd"))}, (
        "a command module main.py does not know"
    )
    _register_commands()
    _register_commands()  # twice: no effect
    registered = dict(cli.commands)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"safepoint.cli.{name}")
        commands = [v for v in vars(module).values() if isinstance(v, click.Command)]
        # a group's subcommands (``steps status``) are registered with their group
        sub = {id(c) for g in commands if isinstance(g, click.Group) for c in g.commands.values()}
        defined = {id(c) for c in commands} - sub
        listed = {id(c) for c in module.COMMANDS}
        assert defined == listed, f"{name}: a command not in COMMANDS"
        for command in module.COMMANDS:
            assert registered[command.name] is command
