"""What safepoint's HTTP servers (``serve`` and the console) share: where they may
listen, and which ``Host`` names they answer.

Both bind to 127.0.0.1 by default; another address needs a token. Both refuse a
request whose ``Host`` header is not one of the server's own names, so that a web
page whose DNS name was rebound to 127.0.0.1 (DNS rebinding) cannot read them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from .errors import SchemaError

__all__ = ["HostCheck", "check_bind", "host_names"]


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not _loopback(host) and not token:
        raise SchemaError(
            f"refusing to serve on {host} without a token: anyone who can reach it could use "
            "the model. Pass --token env:VAR (clients send 'Authorization: Bearer <token>'), "
            "or bind to 127.0.0.1"
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- Host header (DNS rebinding) ----------------------------------------------------------------
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_names(bind: str, allowed: Iterable[str] = ()) -> set[str] | None:
    """The ``Host`` names a server bound to ``bind`` answers (None: any).

    Loopback binds answer ``localhost``, ``127.0.0.1`` and ``::1`` only, so that a web page
    whose DNS name was rebound to 127.0.0.1 cannot read the server; a specific address
    answers itself and this machine's names; a wildcard bind (``0.0.0.0``) answers this
    machine's names and addresses. ``allowed`` adds names (a DNS name, a proxy's); ``"*"``
    turns the check off.

    >>> sorted(host_names("127.0.0.1"))
    ['127.0.0.1', '::1', 'localhost']
    >>> host_names("127.0.0.1", ["*"]) is None
    True
    """
    extra = {h.strip().lower().strip("[]") for h in allowed if h.strip()}
    if "*" in extra:
        return None
    names = set(_LOOPBACK_NAMES) | extra
    if _loopback(bind):
        return names
    names.add(bind.lower().strip("[]"))
    with contextlib.suppress(OSError):
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        if bind in ("0.0.0.0", "::"):
            names |= set(socket.gethostbyname_ex(hostname)[2])
    return names


def _host_of(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8080
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


class HostCheck:
    """ASGI middleware: refuse (400) an HTTP request whose ``Host`` is not in ``names``."""

    def __init__(self, app: Any, names: set[str] | None) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.names is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = _host_of(headers.get(b"host", b"").decode("latin-1"))
        if host in self.names:
            await self.app(scope, receive, send)
            return
        from starlette.responses import PlainTextResponse

        response = PlainTextResponse(
            f"unknown Host {host!r}: this server answers {', '.join(sorted(self.names))} "
            "(start it with --allowed-host NAME to add one)",
            status_code=400,
        )
        await response(scope, receive, send)
