"""``safepoint ui``: the web console."""

from __future__ import annotations

import sys

import click

from ._common import allowed_host_option, emit_json, json_option, require_extra, secret_arg


@click.command()
@click.option(
    "--store", metavar="URL", help="Store URL or folder (default $SAFEPOINT_STORE or .safepoint)."
)
@click.option(
    "--metadata",
    metavar="URL",
    envvar="SAFEPOINT_METADATA",
    help="Catalog URL (sqlite:///..., postgresql://...); default $SAFEPOINT_METADATA.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option(
    "--allow-writes", is_flag=True, help="Allow moving aliases from the page (needs --token)."
)
@click.option(
    "--token",
    metavar="env:VAR|file:PATH",
    help="Token for writes, and for every page when binding beyond localhost.",
)
@allowed_host_option
@json_option
def ui(
    store: str | None,
    metadata: str | None,
    host: str,
    port: int,
    allow_writes: bool,
    token: str | None,
    allowed_hosts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Browse models, versions, lineage, audits, runs and live scoring in a browser.

    Needs the [ui] extra. Serves until interrupted; with --json the address is
    printed as JSON on stdout once the console is ready to start.
    """
    require_extra("ui", "starlette", "uvicorn", "jinja2", "python_multipart|multipart", "plotly")
    import uvicorn

    from .._http import check_bind, host_names
    from ..stores import Store, default_store_url
    from ..ui import create_app

    secret = secret_arg(token, "--token")
    check_bind(host, secret)
    # a mistyped --store is an error, never a new empty store served as if it were the one
    st = Store(store or default_store_url(), metadata=metadata, create=False)
    from ipaddress import ip_address

    try:
        public = not ip_address(host).is_loopback
    except ValueError:
        public = host != "localhost"
    names = host_names(host, allowed_hosts)
    app = create_app(
        st,
        allow_writes=allow_writes,
        token=secret,
        require_token_for_reads=public,
        allowed_hosts=names,
    )
    url = f"http://{host}:{port}"
    if as_json:
        emit_json(
            {
                "url": url,
                "store": st.url,
                "writes": allow_writes,
                "token_required": public,
                "allowed_hosts": sorted(names or ["*"]),
            }
        )
        sys.stdout.flush()
    else:
        click.echo(
            f"safepoint console for {st.url} on {url}"
            + (" (writes enabled)" if allow_writes else " (read-only)"),
            err=True,
        )
    uvicorn.run(app, host=host, port=port, log_level="warning")


#: what ``cli/main.py`` registers on the root group
COMMANDS: list[click.Command] = [ui]
