"""``safepoint ls|show|put|get|alias|edit|rm|copy|log|gc|runs|check|recover``: the store.

Every command takes ``--store URL`` (default ``$SAFEPOINT_STORE`` or ``.safepoint``) and
``--metadata URL`` (default ``$SAFEPOINT_METADATA``; the catalog database) and ``--json``.
A model is named ``NAME[@VERSION|@ALIAS]``, e.g. ``fraud/scorer@production``.

    safepoint put model.sp fraud/scorer --alias staging --metric auc=0.93
    safepoint ls
    safepoint show fraud/scorer@staging
    safepoint alias fraud/scorer production 3 --expected 2
    safepoint get fraud/scorer@production out.sp
    safepoint copy fraud/scorer@production --to s3://team/models --to-metadata postgresql://db/m
    safepoint gc --keep-last 5 --dry-run
    safepoint check --repair
    safepoint recover
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._common import emit_json, json_option, open_store, parse_model_ref, store_options

if TYPE_CHECKING:
    from ..stores.store import ModelVersion, Store

F = TypeVar("F", bound=Callable[..., Any])

#: what the audit log records (``safepoint log --action``; ``stores.store.AUDIT_ACTIONS``,
#: spelled out so that ``--help`` imports no database driver: a test keeps the two equal)
AUDIT_ACTIONS = ("put", "alias", "unalias", "edit", "delete", "copy", "copy-out", "gc", "recover")
#: the kinds of run safepoint's own workflows record (users may add their own)
RUN_KINDS = ("steps", "search", "scoring")
#: ``safepoint.stores.runs.STATUSES``, spelled out so that ``--help`` imports no database
#: driver (a test keeps the two equal)
STATUSES = ("running", "succeeded", "failed", "interrupted")


def _known(value: str | None, choices: tuple[str, ...], param: Any, ctx: Any) -> str | None:
    if value is not None and value not in choices:
        raise click.BadParameter(
            f"{value!r} is not one of {', '.join(choices)}", ctx=ctx, param=param
        )
    return value


def _run_kinds(store: Store) -> set[str]:
    """The kinds of run recorded in ``store`` (custom kinds included)."""
    with store.catalog.tx() as conn:
        return store.catalog.run_kinds(conn)


def _kv(items: tuple[str, ...], what: str, number: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"use KEY=VALUE, not {item!r}", param_hint=what)
        if number:
            try:
                out[k] = float(v)
            except ValueError:
                raise click.BadParameter(f"{k}: {v!r} is not a number", param_hint=what) from None
        else:
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
    return out


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print_version(mv: ModelVersion) -> None:
    click.echo(f"{mv.ref}" + (f"  ({', '.join(mv.aliases)})" if mv.aliases else ""))
    click.echo(f"  type      {mv.root_type}")
    click.echo(f"  size      {_human(mv.size)}   digest {mv.digest}")
    click.echo(f"  created   {mv.created:%Y-%m-%d %H:%M:%S %Z} by {mv.created_by} on {mv.host}")
    pk = ", ".join(f"{k} {v}" for k, v in mv.environment.get("packages", {}).items())
    click.echo(f"  python    {mv.environment.get('python', '?')}: {pk}")
    for label, value in (
        ("about", mv.description),
        ("metrics", mv.metrics),
        ("metadata", mv.metadata),
        ("tags", mv.tags),
        ("parents", mv.parents),
        ("data", mv.data_digest),
        ("code", mv.code_digest),
        ("run", mv.run_id),
    ):
        if value:
            click.echo(f"  {label:<9} {value}")


@click.command("ls")
@click.argument("prefix", required=False)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also list outputs of step workflows and checkpointers (search ledgers, ...).",
)
@store_options
@json_option
def ls_cmd(
    prefix: str | None,
    show_all: bool,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """List the models in the store (optionally those under PREFIX/).

    Outputs of step workflows and checkpointers are listed with --all (column KIND).
    """
    store = open_store(store_url, metadata_url)
    rows = store.summary(kind=None if show_all else "model")
    if show_all:
        rows += _checkpointer_rows(store)
        rows.sort(key=lambda r: r["name"])
    hidden = 0 if show_all else len(store.models()) - len(rows)
    if prefix:
        p = prefix.rstrip("/") + "/"
        rows = [r for r in rows if r["name"].startswith(p)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(
            f"no models in {store.url}" + (f" ({hidden} step output(s): --all)" if hidden else "")
        )
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        aliases = " ".join(f"{a}=@{v}" for a, v in r.get("aliases", {}).items())
        if r["kind"] == "checkpointer" or r["kind"] == "search-ledger":
            click.echo(
                f"{r['name']:<{width}}  {r['kind']:<13} {r['versions']:>3} key(s)  "
                f"{_human(r['bytes']):>10}  {r['updated'][:19]}"
            )
            continue
        kind = f"{r['kind']:<13} " if show_all else ""
        click.echo(
            f"{r['name']:<{width}}  {kind}v{r['latest']:<4} {r['versions']:>3} version(s)  "
            f"{_human(r['bytes']):>10}  {r['updated'][:19]}  {aliases}"
        )
    if hidden:
        click.echo(f"({hidden} step output(s) not shown: --all lists them)")


def _checkpointer_rows(store: Store) -> list[dict[str, Any]]:
    """One row per checkpointer: kind ``search-ledger`` or ``checkpointer``, keys, bytes."""
    with store.catalog.tx() as conn:
        rows = store.catalog.list_checkpointers(conn)
    from datetime import UTC, datetime

    return [
        {
            "name": r.name,
            "kind": "search-ledger" if r.ledger else "checkpointer",
            "versions": int(r.n),
            "bytes": int(r.bytes or 0),
            "updated": datetime.fromtimestamp(float(r.updated or r.created_at), UTC).isoformat(),
            "aliases": {},
        }
        for r in rows
    ]


@click.command()
@click.argument("ref")
@store_options
@json_option
def show(ref: str, store_url: str | None, metadata_url: str | None, as_json: bool) -> None:
    """Show a model's versions (NAME) or one version (NAME@VERSION or NAME@ALIAS)."""
    name, sel = parse_model_ref(ref)
    store = open_store(store_url, metadata_url)
    if sel is None and "@" not in ref:
        versions = store.versions(name)
        if as_json:
            emit_json({"name": name, "versions": [v.to_dict() for v in versions]})
            return
        for v in versions:
            click.echo(
                f"{v.ref:<30} {v.created:%Y-%m-%d %H:%M:%S}  {_human(v.size):>10}  "
                f"{v.root_type}  {' '.join(v.aliases)}"
            )
        return
    mv = store.info(name, sel)
    if as_json:
        emit_json(mv.to_dict())
    else:
        _print_version(mv)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("name")
@click.option("--alias", help="Point this alias at the new version.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata entry (JSON value).")
@click.option("--metric", multiple=True, metavar="NAME=NUMBER", help="A metric of this version.")
@click.option("--tag", multiple=True, help="A tag.")
@click.option("--parent", multiple=True, metavar="REF", help="Lineage: a parent model or run.")
@store_options
@json_option
def put(
    file: str,
    name: str,
    alias: str | None,
    meta: tuple[str, ...],
    metric: tuple[str, ...],
    tag: tuple[str, ...],
    parent: tuple[str, ...],
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Store a safepoint FILE as the next version of NAME (validated, never loaded)."""
    store = open_store(store_url, metadata_url, create=True)
    mv = store.put_file(
        name,
        file,
        metadata=_kv(meta, "--meta"),
        metrics=_kv(metric, "--metric", number=True),
        tags=list(tag),
        alias=alias,
        parents=list(parent),
    )
    if as_json:
        emit_json(mv.to_dict())
    else:
        click.echo(f"stored {mv.ref} ({_human(mv.size)}, digest {mv.digest[:12]})")


@click.command()
@click.argument("ref")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@store_options
@json_option
def get(
    ref: str, out: str, force: bool, store_url: str | None, metadata_url: str | None, as_json: bool
) -> None:
    """Write the safepoint file of NAME[@VERSION|@ALIAS] to OUT (checked on the way)."""
    from .._io import check_replaceable, temp_beside
    from ..errors import IntegrityError, NotAFileError, SafepointError
    from ..format.reader import problems_against

    try:
        check_replaceable(out)
    except NotAFileError as exc:
        raise click.UsageError(str(exc)) from None
    if os.path.exists(out) and not force:
        raise click.UsageError(f"{out} exists; pass --force to overwrite it")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise click.BadParameter(
            f"the folder {os.path.dirname(os.path.abspath(out))} does not exist; create it "
            "first or choose another OUT",
            param_hint="OUT",
        )
    name, sel = parse_model_ref(ref)
    store = open_store(store_url, metadata_url)
    mv = store.info(name, sel)
    folder = os.path.dirname(os.path.abspath(out))
    try:
        fd, tmp = temp_beside(out, f".{os.path.basename(out)}.")
    except OSError as exc:
        raise click.UsageError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        # the descriptor first: it is closed whatever opening the blob raises
        with os.fdopen(fd, "wb") as dst, store.blobs.open(mv.digest) as src:
            shutil.copyfileobj(src, dst, 8 << 20)
        problems = problems_against(tmp, mv.digest)
        if problems:
            raise IntegrityError(f"the blob of {mv.ref} is damaged: " + "; ".join(problems))
        os.replace(tmp, out)
    except (SafepointError, OSError):
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if as_json:
        emit_json({"ref": mv.ref, "path": out, "digest": mv.digest, "size": mv.size})
    else:
        click.echo(f"wrote {mv.ref} to {out} ({_human(mv.size)})")


@click.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False, metavar="[VERSION|latest]")
@click.option(
    "--expected",
    type=int,
    metavar="V",
    help="The version ALIAS points at now (required to move an existing alias).",
)
@click.option(
    "--delete",
    "remove",
    is_flag=True,
    help="Remove ALIAS (with --expected: only if it still points at V).",
)
@store_options
@json_option
def alias(
    name: str,
    alias: str,
    version: str | None,
    expected: int | None,
    remove: bool,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Point NAME@ALIAS at VERSION (compare-and-swap with --expected), or remove it."""
    store = open_store(store_url, metadata_url)
    if remove:
        if version is not None:
            raise click.UsageError("--delete takes no VERSION (use --expected V to check it)")
        was = store.delete_alias(name, alias, expected=expected)
        if as_json:
            emit_json({"name": name, "alias": alias, "deleted": True, "version": was})
        else:
            click.echo(f"removed {name}@{alias} (it pointed at version {was})")
        return
    if version is None:
        raise click.UsageError("give VERSION (a number or 'latest'), or --delete")
    if version != "latest" and not version.isdigit():
        raise click.BadParameter("a version number or 'latest'", param_hint="VERSION")
    mv = store.set_alias(
        name, alias, version if version == "latest" else int(version), expected=expected
    )
    if as_json:
        emit_json(mv.to_dict())
    else:
        click.echo(f"{name}@{alias} -> version {mv.version}")


@click.command()
@click.argument("ref")
@click.option("--metric", multiple=True, metavar="NAME=NUMBER", help="Set a metric.")
@click.option("--tag", multiple=True, metavar="TAG[=VALUE]", help="Add a tag.")
@click.option("--remove-metric", multiple=True, metavar="NAME", help="Drop a metric.")
@click.option("--remove-tag", multiple=True, metavar="TAG", help="Drop a tag.")
@click.option("--description", metavar="TEXT", help="Replace the description.")
@store_options
@json_option
def edit(
    ref: str,
    metric: tuple[str, ...],
    tag: tuple[str, ...],
    remove_metric: tuple[str, ...],
    remove_tag: tuple[str, ...],
    description: str | None,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Change the metrics, tags or description of NAME[@VERSION|@ALIAS] (audited)."""
    name, sel = parse_model_ref(ref)
    if not (metric or tag or remove_metric or remove_tag or description is not None):
        raise click.UsageError(
            "nothing to change: give --metric, --tag, --remove-*, or --description"
        )
    tags = {}
    for t in tag:
        k, _, v = t.partition("=")
        tags[k] = v
    store = open_store(store_url, metadata_url)
    mv = store.edit(
        name,
        sel,
        metrics=_kv(metric, "--metric", number=True),
        tags=tags,
        remove_metrics=remove_metric,
        remove_tags=remove_tag,
        description=description,
    )
    if as_json:
        emit_json(mv.to_dict())
    else:
        click.echo(f"edited {mv.ref}")
        _print_version(mv)


@click.command("rm")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Also remove aliases pointing at it.")
@store_options
@json_option
def rm_cmd(
    ref: str, force: bool, store_url: str | None, metadata_url: str | None, as_json: bool
) -> None:
    """Delete NAME@VERSION (or every version of NAME); blobs go at the next gc."""
    name, sel = parse_model_ref(ref)
    store = open_store(store_url, metadata_url)
    deleted = store.delete(name, sel, force=force)
    if as_json:
        emit_json({"name": name, "deleted": deleted})
    else:
        click.echo(f"deleted {name} version(s) {', '.join(map(str, deleted))}")


@click.command()
@click.argument("ref")
@click.option("--to", "to_url", required=True, metavar="URL", help="The target store.")
@click.option("--to-metadata", metavar="URL", help="The target store's catalog URL.")
@click.option("--as", "new_name", metavar="NAME", help="Name in the target store.")
@click.option("--alias", help="Point this alias at the copy in the target store.")
@store_options
@json_option
def copy(
    ref: str,
    to_url: str,
    to_metadata: str | None,
    new_name: str | None,
    alias: str | None,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Copy NAME[@VERSION|@ALIAS] (blob, metadata, lineage) to another store."""
    name, sel = parse_model_ref(ref)
    store = open_store(store_url, metadata_url)
    target = open_store(to_url, to_metadata, create=True)
    src = store.info(name, sel)
    had = target.find_copy(src, new_name)
    mv = store.copy(name, src.version, to=target, new_name=new_name, alias=alias)
    if as_json:
        emit_json({**mv.to_dict(), "copied": had is None})
    elif had is not None:
        click.echo(f"{target.url} already has {src.ref} as {mv.ref} (same content): nothing copied")
    else:
        click.echo(f"copied {src.ref} to {target.url} as {mv.ref}")


@click.command()
@click.argument("name", required=False)
@click.option(
    "--action",
    callback=lambda ctx, param, value: _known(value, AUDIT_ACTIONS, param, ctx),
    metavar="|".join(AUDIT_ACTIONS),
    help="Only this action.",
)
@click.option("--limit", default=50, show_default=True, type=int)
@store_options
@json_option
def log(
    name: str | None,
    action: str | None,
    limit: int,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """The audit log, newest first: who put, moved, deleted or copied what, when, where."""
    store = open_store(store_url, metadata_url)
    entries = store.log(name, action=action, limit=limit)
    if as_json:
        emit_json([e.to_dict() for e in entries])
        return
    for e in entries:
        ref = e.name + (f"@{e.version}" if e.version is not None else "")
        detail = " ".join(f"{k}={v}" for k, v in e.detail.items() if k not in ("digest",))
        click.echo(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor}@{e.host}  {e.action:<8} {ref}  {detail}")


@click.command()
@click.option("--keep-last", type=int, metavar="N", help="Keep the newest N versions per model.")
@click.option(
    "--keep-best", metavar="METRIC:max|min", help="Also keep the best version by a metric."
)
@click.option("--no-keep-aliases", is_flag=True, help="Aliased versions may be deleted too.")
@click.option(
    "--grace", type=float, metavar="SECONDS", help="Keep orphans younger than this (1 hour)."
)
@click.option("--dry-run", is_flag=True, help="Report what would go; change nothing.")
@store_options
@json_option
def gc(
    keep_last: int | None,
    keep_best: str | None,
    no_keep_aliases: bool,
    grace: float | None,
    dry_run: bool,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Apply retention and remove unreferenced blobs and abandoned uploads."""
    best: tuple[str, str] | None = None
    if keep_best:
        metric, _, mode = keep_best.partition(":")
        if mode not in ("max", "min") or not metric:
            raise click.BadParameter("use METRIC:max or METRIC:min", param_hint="--keep-best")
        best = (metric, mode)
    store = open_store(store_url, metadata_url)
    rep = store.gc(
        keep_last=keep_last,
        keep_best=best,
        keep_aliases=not no_keep_aliases,
        dry_run=dry_run,
        grace=grace,
    )
    if as_json:
        emit_json(rep.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {len(rep.deleted_versions)} version(s), {len(rep.deleted_blobs)} blob(s), "
        f"{rep.deleted_temps} abandoned upload(s): {_human(rep.freed_bytes)}"
    )
    for ref in rep.deleted_versions:
        click.echo(f"  {ref}")


@click.command()
@click.option(
    "--kind",
    metavar="|".join(RUN_KINDS),
    help="Only runs of this kind (or a kind of your own runs in this store).",
)
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--limit", default=50, show_default=True, type=int)
@store_options
@json_option
def runs(
    kind: str | None,
    status: str | None,
    limit: int,
    store_url: str | None,
    metadata_url: str | None,
    as_json: bool,
) -> None:
    """Runs recorded in the store: workflows, searches, scoring jobs."""
    store = open_store(store_url, metadata_url)
    if kind is not None and kind not in RUN_KINDS and kind not in _run_kinds(store):
        raise click.BadParameter(
            f"{kind!r} is not a kind of run in {store.url} (known: "
            f"{', '.join(sorted(set(RUN_KINDS) | _run_kinds(store)))})",
            param_hint="--kind",
        )
    rows = store.runs.list(kind=kind, status=status, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    for r in rows:
        prog = "" if r.progress is None else f"{100 * r.progress:5.1f}%"
        stale = " (stale)" if r.stale else ""
        click.echo(
            f"{r.id[:12]}  {r.kind:<8} {r.name:<30} {r.status}{stale:<8} {prog:>6}  "
            f"{r.started:%Y-%m-%d %H:%M:%S}  {r.user}@{r.host}  {r.message[:60]}"
        )


@click.command()
@click.option("--repair", is_flag=True, help="Apply the safe fixes (see docs/store.md).")
@click.option("--quick", is_flag=True, help="Check that blobs exist; do not read and verify them.")
@store_options
@json_option
def check(
    repair: bool, quick: bool, store_url: str | None, metadata_url: str | None, as_json: bool
) -> None:
    """Check the store: blobs against their digests, the catalog against the version
    records and journal; report missing, orphaned and damaged items (exit 1 if any)."""
    store = open_store(store_url, metadata_url, warn=False)
    rep = store.check(repair=repair, verify_blobs=not quick)
    if as_json:
        emit_json(rep.to_dict())
    else:
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in rep.checked.items())
        click.echo(f"checked {store.url}: {counts or 'nothing'}")
        for f in rep.findings:
            done = " [repaired]" if f.repaired else (f" (--repair: {f.fix})" if f.fix else "")
            click.echo(f"  {f.kind:<16} {f.item}: {f.problem}{done}")
        for line in rep.skipped:
            click.echo(f"  not checked: {line}")
        click.echo(
            "OK"
            if rep.ok
            else "problems found" + ("" if repair else "; see --repair and `safepoint recover`")
        )
    if not rep.ok:
        raise SystemExit(1)


@click.command()
@click.option(
    "--force", is_flag=True, help="Replace another store's catalog, or drop damaged server tables."
)
@click.option("--dry-run", is_flag=True, help="Report what would be restored; change nothing.")
@store_options
@json_option
def recover(
    force: bool, dry_run: bool, store_url: str | None, metadata_url: str | None, as_json: bool
) -> None:
    """Rebuild a lost, emptied or damaged catalog from the version records and journal
    kept beside the blobs; say what could not be restored."""
    store = open_store(store_url, metadata_url, warn=False)
    rep = store.recover(force=force, dry_run=dry_run)
    if as_json:
        emit_json(rep.to_dict())
        return
    verb = "would restore" if dry_run else "restored"
    click.echo(f"{verb} into {store.url}: {rep.summary()}")
    if rep.moved_aside:
        click.echo(f"the damaged catalog was moved to {rep.moved_aside}")
    for line in rep.not_restored:
        click.echo(f"  not restored: {line}")


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [
    ls_cmd,
    show,
    put,
    get,
    alias,
    edit,
    rm_cmd,
    copy,
    log,
    gc,
    runs,
    check,
    recover,
]
