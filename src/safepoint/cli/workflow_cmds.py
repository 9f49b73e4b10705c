"""``safepoint steps status|outputs``: resumable step workflows saved in a store."""

from __future__ import annotations

import click

from ._common import emit_json, json_option, metadata_option
from .main import cli


def _store(url: str | None, metadata: str | None) -> object:
    # reading a workflow's state never creates a store
    from .store_cmds import open_store

    return open_store(url, metadata, create=False)


def _store_options(f: click.decorators.FC) -> click.decorators.FC:
    f = metadata_option(f)
    f = click.option(
        "--version",
        "-v",
        "version",
        default="1",
        show_default=True,
        metavar="N",
        help="The workflow version (each version keeps its own outputs).",
    )(f)
    f = click.option(
        "--store",
        metavar="URL",
        help="Store URL or folder (default $SAFEPOINT_STORE or .safepoint).",
    )(f)
    return f


def _version(text: str) -> int | str:
    return int(text) if text.isdigit() else text


@cli.group()
def steps() -> None:
    """Resumable step workflows (sp.Steps / sp.Workflow) saved in a store."""


@steps.command("status")
@click.argument("name")
@_store_options
@click.option(
    "--workflow",
    "code",
    metavar="SCRIPT.py:CLASS|MODULE:CLASS",
    help="The workflow's code, so that code changes are detected too (this imports it).",
)
@json_option
def status_cmd(
    name: str,
    store: str | None,
    version: str,
    metadata: str | None,
    code: str | None,
    as_json: bool,
) -> None:
    """Show each step of workflow NAME: cached, stale or missing, and why.

    Without --workflow the steps' code is not compared: a step is stale when an
    output it read changed since it ran. Parameters are known only to the script.
    """
    from ..workflows.steps import saved_status

    st = saved_status(_store(store, metadata), name, _version(version), code=code)
    if as_json:
        emit_json(st.to_dict())
    else:
        click.echo(str(st))


@steps.command("outputs")
@click.argument("name")
@_store_options
@json_option
def outputs_cmd(
    name: str, store: str | None, version: str, metadata: str | None, as_json: bool
) -> None:
    """List the saved output of each step of NAME (type, size, digest); loads nothing."""
    from ..errors import NotFoundError
    from ..workflows.steps import saved_outputs

    rows = saved_outputs(_store(store, metadata), name, _version(version))
    if not rows:
        raise NotFoundError(
            f"workflow {name!r} v{version} has no saved outputs; check the name, --version "
            "and --store"
        )
    if as_json:
        emit_json(rows)
        return
    width = max(len(r["step"]) for r in rows)
    twidth = max(len(r["type"]) for r in rows)
    for r in rows:
        click.echo(
            f"{r['step']:<{width}}  @{r['version']:<4} {r['type']:<{twidth}}  "
            f"{r['size']:>12,} B  {r['digest'][:16]}  {r['created'][:19]}"
        )
