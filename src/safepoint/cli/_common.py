"""What every command shares: ``--json``, ``--quiet``, ``--trust``/``--path``, error
reporting and progress.

Unix habits, the same for every command:

* results go to stdout; errors, warnings and progress go to stderr;
* progress is shown only when stderr is a terminal, and never with ``--json``,
  ``--quiet`` or ``$SAFEPOINT_QUIET`` (so ``safepoint score ... --json | jq`` works);
* exit codes: 0 success, 1 the operation failed, 2 bad usage or input;
* with ``--json`` an error is a JSON object on stderr,
  ``{"error": "...", "type": "NotFoundError", "exit_code": 1}``, with the same exit code.

>>> cli_phrasing("alias m@prod already points at version 2; pass expected=2 to move it")
'alias m@prod already points at version 2; pass --expected 2 to move it'
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import SafepointError, UntrustedTypesError

if TYPE_CHECKING:
    from ..stores.store import Store

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "SafepointGroup",
    "allowed_host_option",
    "cli_phrasing",
    "emit_json",
    "json_option",
    "metadata_option",
    "open_store",
    "parse_model_ref",
    "quiet_option",
    "report_error",
    "require_extra",
    "secret_arg",
    "show_progress",
    "starting",
    "stderr_console",
    "store_for_ref",
    "store_options",
    "trust_option",
    "trust_options",
    "wants_json",
]


# -- options ---------------------------------------------------------------------------------
def json_option(f: F) -> F:
    """``--json``: results as JSON on stdout, errors as JSON on stderr, no progress."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts (errors too, on stderr)."
    )(f)


def quiet_option(f: F) -> F:
    """``--quiet/-q``: no progress output (also ``$SAFEPOINT_QUIET=1``)."""
    return click.option(
        "--quiet", "-q", is_flag=True, help="No progress output (also $SAFEPOINT_QUIET=1)."
    )(f)


def _add_paths(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    # before any --trust name is imported: a folder given twice is added once
    for folder in reversed(value):
        path = os.path.abspath(folder)
        if path not in sys.path:
            sys.path.insert(0, path)


def trust_option(f: F) -> F:
    """``--trust NAME`` (repeatable), for commands that only audit names (``scan``)."""
    return click.option(
        "--trust",
        multiple=True,
        metavar="NAME",
        help="Treat this type name (module.Class) as trusted.",
    )(f)


def trust_options(f: F) -> F:
    """``--trust NAME`` (repeatable) and ``--path DIR`` (where NAME's module is found).

    Trusting ``mypkg.models.Scorer`` means loading may construct it, so its module must be
    importable: installed, in ``$PYTHONPATH``, or in a folder given with ``--path``.
    """
    f = click.option(
        "--path",
        "import_paths",
        multiple=True,
        metavar="DIR",
        type=click.Path(exists=True, file_okay=False),
        callback=_add_paths,
        expose_value=False,
        is_eager=True,
        help="Add DIR to the import path, so that --trust names from your own code import.",
    )(f)
    f = click.option(
        "--trust",
        multiple=True,
        metavar="NAME",
        help="Trust this type name too (module.Class; its module must be importable, see --path).",
    )(f)
    return f


# -- output ----------------------------------------------------------------------------------
def emit_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (datetimes and paths as strings)."""
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=True))


def show_progress(quiet: bool = False, as_json: bool = False) -> bool:
    """Whether a command may draw progress: on a terminal stderr, not asked to be quiet."""
    if quiet or as_json or os.environ.get("SAFEPOINT_QUIET"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def stderr_console() -> Any:
    """A rich console on stderr (progress and notes never mix with a command's output)."""
    from rich.console import Console

    return Console(stderr=True)


def secret_arg(spec: str | None, option: str) -> str | None:
    """A secret named on the command line as ``env:VAR`` or ``file:PATH`` (never itself)."""
    if spec is None:
        return None
    if spec.startswith("env:"):
        value = os.environ.get(spec[4:])
        if not value:
            raise click.BadParameter(
                f"environment variable {spec[4:]} is not set", param_hint=option
            )
        return value
    if spec.startswith("file:"):
        try:
            with open(spec[5:], encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {spec[5:]}: {exc.strerror}", param_hint=option
            ) from None
    raise click.BadParameter(
        "use env:VAR or file:PATH (secrets never go on the command line)", param_hint=option
    )


#: set by :func:`safepoint.cli.main.main`: the command owns its process (not a test's
#: ``CliRunner`` or another caller of ``cli.main`` in a process of its own)
OWN_PROCESS = False


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """A scoring command's start-up (its imports, the model's load) without Python's
    cyclic garbage collector; when it owns its process, what start-up built is then
    moved out of the collector's reach (:func:`gc.freeze`).

    A cold ``safepoint score`` imports pandas, scikit-learn and scipy: some 1,700
    modules and 140,000 objects that live as long as the process. With the collector
    on, start-up pays three full collections that walk them all and free nothing
    (0.1-0.3 s of a 1 s start, docs/benchmarks.md), and a server pays more of them
    later, between requests. Frozen, they are never walked again. A collector
    resumed without the freeze would walk them all soon after (every object allocated
    meanwhile counts toward the next collection): the freeze is only skipped where
    the process is not the command's (whatever cyclic garbage start-up left is
    frozen too, a few hundred KB at most: fine once per process, not once per test).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if OWN_PROCESS:
            gc.freeze()
    finally:
        if enabled:
            gc.enable()


def require_extra(extra: str, *modules: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``extra`` if a module is missing."""
    import importlib

    from ..errors import MissingDependencyError

    for name in modules:
        alternatives = name.split("|")  # python-multipart: new and old import names
        for i, alt in enumerate(alternatives):
            try:
                importlib.import_module(alt)
                break
            except ModuleNotFoundError:
                if i == len(alternatives) - 1:
                    raise MissingDependencyError(extra, alternatives[0]) from None


def metadata_option(f: F) -> F:
    """``--metadata URL`` (default ``$SAFEPOINT_METADATA``): the store's catalog database."""
    return click.option(
        "--metadata",
        metavar="URL",
        envvar="SAFEPOINT_METADATA",
        help="Catalog database URL, e.g. postgresql://host/db (default $SAFEPOINT_METADATA, "
        "else the store's own).",
    )(f)


def allowed_host_option(f: F) -> F:
    """``--allowed-host NAME`` (repeatable): a ``Host`` name to answer besides the bound ones."""
    return click.option(
        "--allowed-host",
        "allowed_hosts",
        multiple=True,
        metavar="NAME",
        help="Also answer requests for this host name (a DNS name, a proxy's; '*': any). "
        "Other Host headers are refused (DNS rebinding).",
    )(f)


# -- errors ----------------------------------------------------------------------------------
#: how the library spells a fix (Python arguments) -> how the CLI spells it (options)
_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bexpected=<current version>"), "--expected <current version>"),
    (re.compile(r"\bexpected=(\d+)"), r"--expected \1"),
    (re.compile(r"\bforce=True\b"), "--force"),
    (re.compile(r"\bmetadata='([^']*)'"), r"--metadata \1"),
    (
        re.compile(r"pass format='parquet'\|'csv'\|'jsonl' \(CLI: --input-format\)"),
        "pass --input-format parquet|csv|jsonl",
    ),
    (re.compile(r"\bload with env='warn'"), "load it with env='warn' from Python"),
    (
        re.compile(r"install the package the model was trained with"),
        "install the package the model was trained with, or pass --path DIR (the folder "
        "that holds it)",
    ),
]


def cli_phrasing(message: str, exc: BaseException | None = None) -> str:
    """A library message with its Python spellings (``expected=2``, ``force=True``)
    replaced by the command-line options that do the same."""
    if isinstance(exc, UntrustedTypesError) and exc.types:
        flags = " ".join(f"--trust {t}" for t in exc.types)
        message = re.sub(r"sp\.\w+\([^()]*trusted=\[.*?\]\) \(CLI: --trust NAME\)", flags, message)
    for pattern, repl in _PHRASES:
        message = pattern.sub(repl, message)
    return message


def report_error(message: str, kind: str, code: int, as_json: bool) -> None:
    """Print an error on stderr: one ``safepoint: error:`` line, or a JSON object."""
    if as_json:
        click.echo(
            json.dumps({"error": message, "type": kind, "exit_code": code}, default=str), err=True
        )
    else:
        click.echo(f"safepoint: error: {message}", err=True)


def _os_message(exc: OSError) -> str:
    where = exc.filename
    what = exc.strerror or str(exc)
    if where is None:
        return what
    hint = ""
    if exc.errno == errno.ENOENT:
        folder = os.path.dirname(os.path.abspath(os.fspath(where)))
        if not os.path.isdir(folder):
            hint = f" (the folder {folder} does not exist)"
    return f"{what}: {os.fspath(where)}{hint}"


def wants_json(args: Sequence[str]) -> bool:
    """Whether ``--json`` is among the options (before a ``--``)."""
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


class SafepointGroup(click.Group):
    """The root group: every error, usage errors included, is reported the same way
    (one line on stderr, or JSON with ``--json``) with exit code 1 or 2; no traceback
    for errors the user can fix."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        as_json = wants_json(argv)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            report_error("interrupted", "Abort", 1, as_json)
            sys.exit(1)
        except click.ClickException as exc:
            if as_json or not isinstance(exc, click.UsageError):
                kind = type(exc).__name__
                report_error(exc.format_message(), kind, exc.exit_code, as_json)
            else:
                exc.show()  # the usage line and the hint to --help
            sys.exit(exc.exit_code)
        except SafepointError as exc:
            report_error(cli_phrasing(str(exc), exc), type(exc).__name__, 1, as_json)
            sys.exit(1)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `safepoint ls | head`: the reader went away
                from click.utils import PacifyFlushWrapper

                sys.stdout = PacifyFlushWrapper(sys.stdout)  # type: ignore[operator]
                sys.exit(1)
            report_error(_os_message(exc), type(exc).__name__, 1, as_json)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


# -- the store the options name ---------------------------------------------------------
def store_options(f: F) -> F:
    """Add ``--store`` and ``--metadata`` (passed as ``store_url``, ``metadata_url``)."""
    f = click.option(
        "--metadata",
        "metadata_url",
        metavar="URL",
        envvar="SAFEPOINT_METADATA",
        help="Catalog database URL, e.g. postgresql://host/db (default: the store's own).",
    )(f)
    f = click.option(
        "--store",
        "store_url",
        metavar="URL",
        envvar="SAFEPOINT_STORE",
        help="Store folder or URL (s3://bucket/prefix); default $SAFEPOINT_STORE or .safepoint.",
    )(f)
    return f


def open_store(
    store_url: str | None,
    metadata_url: str | None,
    create: bool = False,
    warn: bool = True,
) -> Store:
    """The store named by the CLI options (its warnings go to stderr once).

    Only ``put`` and the target of ``copy`` create a missing store: every other command
    opens an existing one, so that a mistyped ``--store`` is an error, not a new store.
    ``warn=False``: do not repeat that the catalog needs ``recover`` (check, recover).
    """
    import warnings

    from ..errors import SafepointWarning
    from ..stores.opening import open_store as open_store_like

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SafepointWarning)
        store = open_store_like(store_url, metadata=metadata_url, create=create)
    for w in caught:
        if warn or store.problem is None or store.problem not in str(w.message):
            click.echo(f"safepoint: warning: {w.message}", err=True)
    return store


def store_for_ref(text: str, store_url: str | None, metadata_url: str | None) -> Store | None:
    """The store to read ``text`` from, if it is a ``NAME[@VERSION|@ALIAS]`` and not an
    existing file, and the store exists; else None (then ``text`` is a file path)."""
    from ..errors import InvalidNameError, NotFoundError

    if os.path.exists(text):
        return None
    try:
        parse_model_ref(text)
    except InvalidNameError:
        return None
    try:
        return open_store(store_url, metadata_url)
    except NotFoundError:
        return None


def parse_model_ref(text: str) -> tuple[str, int | str | None]:
    """``NAME[@VERSION|@ALIAS]`` -> (name, version or alias or None)."""
    from ..stores.names import parse_ref

    return parse_ref(text)
