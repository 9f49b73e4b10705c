"""``safepoint ui``: the web console."""

from __future__ import annotations

import click

from .main import cli


@cli.command()
@click.option(
    "--store", metavar="URL", help="Store URL or folder (default $SAFEPOINT_STORE or .safepoint)."
)
@click.option("--metadata", metavar="URL", help="Catalog URL (sqlite:///..., postgresql://...).")
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
def ui(
    store: str | None,
    metadata: str | None,
    host: str,
    port: int,
    allow_writes: bool,
    token: str | None,
) -> None:
    """Browse models, versions, lineage, audits, runs and live scoring in a browser."""
    import uvicorn

    from ..stores import Store, default_store_url
    from ..ui import create_app
    from ..workflows.scoring.serve import check_bind
    from .scoring_cmds import _token

    secret = _token(token)
    check_bind(host, secret)
    # a mistyped --store is an error, never a new empty store served as if it were the one
    st = Store(store or default_store_url(), metadata=metadata, create=False)
    from ipaddress import ip_address

    try:
        public = not ip_address(host).is_loopback
    except ValueError:
        public = host != "localhost"
    app = create_app(st, allow_writes=allow_writes, token=secret, require_token_for_reads=public)
    click.echo(
        f"safepoint console for {st.url} on http://{host}:{port}"
        + (" (writes enabled)" if allow_writes else " (read-only)"),
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
