"""``safepoint steps status|outputs|export``: resumable step workflows saved in a store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import emit_json, json_option, metadata_option, open_store

if TYPE_CHECKING:
    from ..stores import Store


def _store(url: str | None, metadata: str | None) -> Store:
    # reading a workflow's state never creates a store
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


@click.group()
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


@steps.command("export")
@click.argument("name")
@click.argument("folder", type=click.Path(file_okay=False))
@_store_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["sp", "pickle", "joblib"]),
    default="sp",
    show_default=True,
    help="sp: the safepoint files as stored (load with sp.load, no code runs). "
    "pickle/joblib: for tools that need them; loading them runs code.",
)
@click.option("--step", "only", multiple=True, metavar="STEP", help="Only this step (repeatable).")
@click.option("--trust", multiple=True, metavar="NAME", help="Trust this type (pickle export).")
@click.option("--force", is_flag=True, help="Replace files that exist in FOLDER.")
@json_option
def export_cmd(
    name: str,
    folder: str,
    store: str | None,
    version: str,
    metadata: str | None,
    fmt: str,
    only: tuple[str, ...],
    trust: tuple[str, ...],
    force: bool,
    as_json: bool,
) -> None:
    """Write the saved output of each step of NAME into FOLDER, one file per step.

    By default the files are the safepoint files the store holds (step_1.sp, ...):
    sp.load("step_1.sp") reads one anywhere, without the store, and runs no code.
    --format pickle (or joblib) writes pickles for tools that need them: loading a
    pickle runs code, so keep them for yourself.
    """
    import warnings

    from ..errors import SafepointWarning
    from ..workflows.steps import PICKLE_WARNING, FilesExistError, export_outputs

    if fmt != "sp":
        click.echo(f"safepoint: warning: {PICKLE_WARNING}", err=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SafepointWarning)  # said above, once
            rows = export_outputs(
                _store(store, metadata),
                name,
                folder,
                _version(version),
                format=fmt,
                steps=list(only) or None,
                trusted=list(trust),
                overwrite=force,
            )
    except FilesExistError as exc:
        raise click.UsageError(
            f"{', '.join(exc.paths)} already exist(s); pass --force to overwrite "
            "(nothing was written)"
        ) from None
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['step']}: {r['ref']} -> {r['path']} ({r['size']:,} B, {r['type']})")


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [steps]
