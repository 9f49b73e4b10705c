"""``safepoint score`` (batch, exactly once) and ``safepoint serve`` (HTTP)."""

from __future__ import annotations

import json
import os
import sys

import click

from .main import cli, emit_json, json_option, quiet_option


def _token(spec: str | None) -> str | None:
    if spec is None:
        return None
    if spec.startswith("env:"):
        value = os.environ.get(spec[4:])
        if not value:
            raise click.BadParameter(
                f"environment variable {spec[4:]} is not set", param_hint="--token"
            )
        return value
    if spec.startswith("file:"):
        with open(spec[5:], encoding="utf-8") as f:
            return f.read().strip()
    raise click.BadParameter(
        "use env:VAR or file:PATH (secrets never go on the command line)", param_hint="--token"
    )


def _schema_arg(spec: str | None) -> str | None:
    if spec and os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            return f.read()
    return spec


@cli.command()
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
@click.option("--trust", multiple=True, metavar="NAME", help="Trust this type name.")
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
    from ..workflows.scoring import ScoringPipeline

    if engine == "spark":
        _score_on_spark(
            model, store, input_, output, _schema_arg(schema), batch_size, input_format,
            output_format, on_error, dead_letter, follow, trust, restart, spark_master,
            quiet, as_json,
        )  # fmt: skip
        return

    p = ScoringPipeline(
        model,
        # a .sp file's run is recorded in --store, or in $SAFEPOINT_STORE when set
        store=store or os.environ.get("SAFEPOINT_STORE") or None,
        batch_size=batch_size,
        on_error=on_error,
        trusted=trust,
        quiet=quiet or output == "-",
    )
    stream = p.apply(p.read(input_, format=input_format, follow=follow, idle_timeout=idle_timeout))
    p.write(
        stream, output, schema=_schema_arg(schema), format=output_format, dead_letter=dead_letter
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
        from ..workflows.scoring.pipeline import _complete_message

        click.echo(
            f"{_complete_message(report)} in {output}; nothing to do "
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
    store: str | None,
    input_: str,
    output: str,
    schema: str | None,
    batch_size: int,
    input_format: str | None,
    output_format: str | None,
    on_error: str,
    dead_letter: str | None,
    follow: bool,
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

    spark = ensure_session(master, quiet=quiet or as_json or not sys.stderr.isatty())
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


@cli.command()
@click.option("--model", "-m", required=True, metavar="NAME[@ALIAS|@VERSION]|FILE.sp")
@click.option("--store", metavar="URL", help="Store URL or folder.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--token",
    metavar="env:VAR|file:PATH",
    help="Bearer token required by /predict; needed to bind beyond localhost.",
)
@click.option(
    "--reload-interval",
    default=2.0,
    show_default=True,
    type=float,
    help="Seconds between checks whether the alias moved.",
)
@click.option("--trust", multiple=True, metavar="NAME", help="Trust this type name.")
def serve(
    model: str,
    store: str | None,
    host: str,
    port: int,
    token: str | None,
    reload_interval: float,
    trust: tuple[str, ...],
) -> None:
    """Serve JSON predictions over HTTP (POST /predict, GET /health, GET /ready)."""
    from ..workflows.scoring.model import open_model
    from ..workflows.scoring.serve import check_bind
    from ..workflows.scoring.serve import serve as run_server

    secret = _token(token)
    check_bind(host, secret)
    handle = open_model(model, store=store, trusted=trust)
    click.echo(f"serving {handle.label} version {handle.version} on http://{host}:{port}", err=True)
    run_server(handle, host=host, port=port, token=secret, reload_interval=reload_interval)
