"""``safepoint score`` (batch, exactly once) and ``safepoint serve`` (HTTP)."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    allowed_host_option,
    emit_json,
    json_option,
    metadata_option,
    quiet_option,
    require_extra,
    secret_arg,
    show_progress,
    starting,
    trust_options,
)

if TYPE_CHECKING:
    from ..stores.store import Store

#: ``safepoint.workflows.scoring.model.METHODS``, spelled out so that ``--help`` does not
#: import pandas (a test keeps the two equal)
METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")


def _store_arg(model: str, store: str | None, metadata: str | None) -> Any:
    """What ``--store``/``--metadata`` name, for a store reference (a file needs no store)."""
    if metadata is None or os.path.isfile(model):
        return store
    from ..stores import Store, default_store_url

    return Store(store or default_store_url(), metadata=metadata)


def _schema_arg(spec: str | None) -> str | None:
    if spec and os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            return f.read()
    return spec


@click.command()
@click.option(
    "--model",
    "-m",
    required=True,
    metavar="NAME[@ALIAS|@VERSION]|FILE.sp",
    help="The model: a store reference or a .sp file.",
)
@click.option(
    "--store", metavar="URL", help="Store URL or folder (default $SAFEPOINT_STORE or .safepoint)."
)
@metadata_option
@click.option(
    "--input",
    "-i",
    "input_",
    required=True,
    metavar="PATH|-",
    help="Parquet/CSV/JSON-lines file, a folder of them, or - for stdin (JSON lines).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="PATH|-",
    help="A .parquet/.csv/.jsonl file, a folder (parts), or - for stdout.",
)
@click.option(
    "--schema",
    metavar="SCHEMA|FILE",
    help="Output schema, e.g. 'id: Int! @key, prediction: Float!' or a file.",
)
@click.option("--batch-size", default=10_000, show_default=True, type=int)
@click.option("--input-format", type=click.Choice(["parquet", "csv", "jsonl"]))
@click.option("--output-format", type=click.Choice(["parquet", "csv", "jsonl"]))
@click.option(
    "--on-error",
    type=click.Choice(["dead_letter", "skip", "raise"]),
    default="dead_letter",
    show_default=True,
)
@click.option("--dead-letter", metavar="PATH", help="Where bad records go (JSON lines).")
@click.option("--follow", is_flag=True, help="Keep watching a folder for new files.")
@click.option("--idle-timeout", type=float, help="With --follow: stop after this many idle s.")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="predict",
    show_default=True,
    help="The model method: predict_proba and decision_function give one column per class.",
)
@trust_options
@click.option(
    "--restart",
    is_flag=True,
    help="Delete what earlier runs wrote to --output and score the whole input again.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="spark: score a Parquet dataset on Spark (mapInPandas), exactly once per row group.",
)
@click.option(
    "--spark-master",
    metavar="URL",
    default="local[*]",
    show_default=True,
    help="With --engine spark: the Spark master when no session is active.",
)
@quiet_option
@json_option
def score(
    model: str,
    store: str | None,
    metadata: str | None,
    input_: str,
    output: str,
    schema: str | None,
    batch_size: int,
    input_format: str | None,
    output_format: str | None,
    on_error: str,
    dead_letter: str | None,
    follow: bool,
    idle_timeout: float | None,
    method: str,
    trust: tuple[str, ...],
    restart: bool,
    engine: str,
    spark_master: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Score records with a model from the store, exactly once for files and folders.

    A killed job, run again with the same arguments, resumes where it stopped:
    no record is lost or written twice. Run again on a finished output, it says
    so and does nothing; --restart scores everything again. stdin/stdout are best
    effort. The job is recorded in the store's runs table whatever the model is: a
    .sp file's job goes to --store, or to $SAFEPOINT_STORE when set.

    With --engine spark, --input is a Parquet dataset (a folder or file) and --output
    a folder; the model comes from the store and is loaded once per Spark worker.
    """
    if engine == "spark":
        _score_on_spark(
            model, _store_arg(model, store, metadata), input_, output, _schema_arg(schema),
            batch_size, input_format, output_format, on_error, dead_letter, follow, method,
            trust, restart, spark_master, quiet, as_json,
        )  # fmt: skip
        return

    with starting():
        from ..workflows.scoring import ScoringPipeline

        p = ScoringPipeline(
            model,
            # a .sp file's run is recorded in --store, or in $SAFEPOINT_STORE when set
            store=_store_arg(model, store or os.environ.get("SAFEPOINT_STORE") or None, metadata),
            batch_size=batch_size,
            on_error=on_error,
            trusted=trust,
            quiet=not show_progress(quiet, as_json),
        )
        stream = p.apply(
            p.read(input_, format=input_format, follow=follow, idle_timeout=idle_timeout),
            method=method,
        )
        p.write(
            stream,
            output,
            schema=_schema_arg(schema),
            format=output_format,
            dead_letter=dead_letter,
        )
    report = p.run(restart=restart)
    summary = {
        "read": report.read,
        "written": report.written,
        "bad": report.bad,
        "duplicates": report.duplicates,
        "batches": report.batches,
        "versions": report.versions,
        "resumed_from": report.resumed_from,
        "records_per_second": round(report.records_per_second, 1),
        "exactly_once": report.exactly_once,
        "already_complete": report.already_complete,
        "committed": report.committed,
        "offsets": report.offsets,
    }
    if as_json:
        if output == "-":
            print(json.dumps(summary), file=sys.stderr)
        else:
            emit_json(summary)
    elif report.already_complete:
        from ..workflows.scoring.pipeline import complete_message

        click.echo(
            f"{complete_message(report)} in {output}; nothing to do "
            "(--restart scores the input again)",
            err=output == "-",
        )
    elif not quiet:
        click.echo(
            f"read {report.read:,}, wrote {report.written:,}, bad {report.bad:,}, "
            f"duplicates {report.duplicates:,} with model version(s) "
            f"{', '.join(report.versions) or '-'}",
            err=output == "-",
        )


def _score_on_spark(
    model: str,
    store: Store,
    input_: str,
    output: str,
    schema: str | None,
    batch_size: int,
    input_format: str | None,
    output_format: str | None,
    on_error: str,
    dead_letter: str | None,
    follow: bool,
    method: str,
    trust: tuple[str, ...],
    restart: bool,
    master: str,
    quiet: bool,
    as_json: bool,
) -> None:
    from pathlib import Path

    refused = [
        flag
        for flag, given in (
            ("--follow", follow),
            ("--dead-letter (dead letters go to OUTPUT/_dead/)", dead_letter is not None),
            ("--input-format other than parquet", input_format not in (None, "parquet")),
            ("--output-format other than parquet", output_format not in (None, "parquet")),
            ("--input -", input_ == "-"),
            ("--output -", output == "-"),
            ("--output FILE.parquet (give a folder)", Path(output).suffix != ""),
        )
        if given
    ]
    if refused:
        raise click.UsageError(
            f"--engine spark reads a Parquet dataset and writes a folder of parts; "
            f"it does not take {', '.join(refused)}"
        )
    if os.path.isfile(model) or model.endswith(".sp"):
        raise click.UsageError(
            "--engine spark takes the model from the store (--model NAME[@ALIAS|@VERSION]): "
            "every Spark worker loads it from there; 'safepoint put' the file first"
        )
    from ..workflows.scoring.spark_engine import score_on_spark
    from ..workflows.scoring.spark_scoring import ensure_session

    spark = ensure_session(master, quiet=not show_progress(quiet, as_json))
    r = score_on_spark(
        spark,
        model,
        store,
        input_,
        output,
        schema=schema,
        batch_size=batch_size,
        on_error=on_error,
        trusted=trust,
        method=method,
        restart=restart,
    )
    summary = {
        "read": r.read,
        "written": r.written,
        "bad": r.bad,
        "duplicates": r.duplicates,
        "row_groups": r.units,
        "row_groups_skipped": r.units_skipped,
        "row_groups_total": r.units_total,
        "version": r.version,
        "model_loads": {str(k): v for k, v in r.model_loads.items()},
        "committed": r.committed,
        "already_complete": r.already_complete,
        "engine": "spark",
    }
    if as_json:
        emit_json(summary)
    elif r.already_complete:
        click.echo(
            f"already complete: {r.committed.get('read', 0):,} records in "
            f"{r.units_total} row groups of {output}; nothing to do "
            "(--restart scores the input again)"
        )
    elif not quiet:
        click.echo(
            f"read {r.read:,}, wrote {r.written:,}, bad {r.bad:,}, duplicates "
            f"{r.duplicates:,} in {r.units} row group(s) ({r.units_skipped} committed "
            f"before) with model version {r.version}, loaded by {len(r.model_loads)} "
            "Spark worker(s)"
        )


@click.command()
@click.option("--model", "-m", required=True, metavar="NAME[@ALIAS|@VERSION]|FILE.sp")
@click.option(
    "--store", metavar="URL", help="Store URL or folder (default $SAFEPOINT_STORE or .safepoint)."
)
@metadata_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--token",
    metavar="env:VAR|file:PATH",
    help="Bearer token required by /predict and /model; needed to bind beyond localhost.",
)
@click.option(
    "--reload-interval",
    default=2.0,
    show_default=True,
    type=float,
    help="Seconds between checks whether the alias moved.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="predict",
    show_default=True,
    help="The default model method (a request may ask for another with ?method=).",
)
@allowed_host_option
@trust_options
@quiet_option
@json_option
def serve(
    model: str,
    store: str | None,
    metadata: str | None,
    host: str,
    port: int,
    token: str | None,
    reload_interval: float,
    method: str,
    allowed_hosts: tuple[str, ...],
    trust: tuple[str, ...],
    quiet: bool,
    as_json: bool,
) -> None:
    """Serve JSON predictions over HTTP until interrupted.

    POST /predict, GET /model, GET /openapi.json, GET /health, GET /ready.
    Needs the [serve] extra. Requests and reloads are logged on stderr (-q: only
    problems); with --json the address and model are printed as JSON on stdout
    once the model is loaded.
    """
    with starting():
        require_extra("serve", "starlette", "uvicorn", "pydantic")
        from .._http import check_bind, host_names
        from ..workflows.scoring.model import open_model
        from ..workflows.scoring.serve import serve as run_server

        secret = secret_arg(token, "--token")
        check_bind(host, secret)
        handle = open_model(model, store=_store_arg(model, store, metadata), trusted=trust)
        handle.check_method(method)
    _log_to_stderr(quiet)
    url = f"http://{host}:{port}"
    if as_json:
        emit_json(
            {
                "url": url,
                "model": handle.label,
                "version": handle.version,
                "methods": handle.methods(),
                "method": method,
                "token_required": secret is not None,
                "allowed_hosts": sorted(host_names(host, allowed_hosts) or ["*"]),
            }
        )
        sys.stdout.flush()
    elif not quiet:
        click.echo(f"serving {handle.label} version {handle.version} on {url}", err=True)
    run_server(
        handle,
        host=host,
        port=port,
        token=secret,
        reload_interval=reload_interval,
        method=method,
        allowed_hosts=allowed_hosts,
    )


def _log_to_stderr(quiet: bool) -> None:
    """``safepoint.*`` loggers (requests, reloads) to stderr; problems only with -q."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("safepoint")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [score, serve]
