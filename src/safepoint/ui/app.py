"""The web console: Starlette + Jinja2 templates + Plotly, on top of a Store.

Safe by default: it binds to 127.0.0.1 (any other address needs a token, and
then every page asks for it) and answers only its own host names (DNS
rebinding); it is read-only unless started with ``allow_writes`` and a token,
and a write (moving an alias) also needs the token in the form, a CSRF token
matching the page's cookie, a same-origin request and the compare-and-swap of
the store. Model names go through the store's name validation (no path
traversal). Pages read manifests and the catalog only: nothing is deserialised
to be shown.

Everything a page shows from the store (names, metrics, tags, parameters, run
state) is text: templates escape it, data for scripts travels as JSON in
``<script type="application/json">`` blocks with ``<``, ``>`` and ``&`` escaped,
the console's script (``static/console.js``) builds the DOM with ``textContent``,
and a Content-Security-Policy allows scripts from the console itself only (no
inline script runs, whatever a page contains).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .._http import HostCheck
from ..errors import AliasConflictError, InvalidNameError, NotFoundError, SafepointError
from . import data

if TYPE_CHECKING:
    from ..stores.store import Store

__all__ = ["CSP", "PAGE_SIZE", "create_app", "routes"]

#: models per page of the list
PAGE_SIZE = 100
#: versions a compare page shows side by side
MAX_COMPARE = 8

#: scripts only from the console itself (Plotly and console.js): no inline script, no
#: eval; Plotly sets inline styles, so styles may be inline
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _filesize(n: Any) -> str:
    try:
        x = float(n)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


def _ts(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.isoformat()[:19]
    try:
        return datetime.fromtimestamp(float(value), UTC).isoformat()[:19]
    except (TypeError, ValueError):
        return str(value)


@dataclass
class Console:
    """What every route needs: the store, the templates and the console's settings."""

    store: Store
    templates: Any
    allow_writes: bool
    token: str | None
    require_token_for_reads: bool


class SecurityHeaders:
    """ASGI middleware: the CSP and its companions on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0] not in dict(_HEADERS)),
                    *_HEADERS,
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- helpers -------------------------------------------------------------------------------
def _console(request: Any) -> Console:
    console: Console = request.app.state.console
    return console


def _page(request: Any, template: str, status: int = 200, **ctx: Any) -> Any:
    c = _console(request)
    csrf = request.cookies.get("sp_csrf") or secrets.token_urlsafe(24)
    response = c.templates.TemplateResponse(
        request,
        template,
        {
            "store_url": c.store.url,
            "writes": c.allow_writes,
            "csrf": csrf,
            "token_required": bool(c.token),
            **ctx,
        },
        status_code=status,
    )
    response.set_cookie("sp_csrf", csrf, httponly=True, samesite="strict")
    return response


def _check_read(request: Any) -> None:
    from starlette.exceptions import HTTPException

    c = _console(request)
    if not c.require_token_for_reads or c.token is None:
        return
    got = request.cookies.get("sp_token") or request.headers.get("authorization", "")[7:]
    if not hmac.compare_digest(got.encode(), c.token.encode()):
        raise HTTPException(401, "this console needs its token: open /login")


def _versions_arg(request: Any) -> list[int]:
    """``?v=1&v=2&v=3`` (or the older ``?a=1&b=2``) as version numbers."""
    raw = request.query_params.getlist("v") or [
        x for x in (request.query_params.get("a"), request.query_params.get("b")) if x
    ]
    try:
        versions = list(dict.fromkeys(int(x) for x in raw))
    except ValueError:
        raise InvalidNameError("compare takes version numbers: ?v=1&v=2&v=3") from None
    if len(versions) < 2:
        raise InvalidNameError("compare needs two or more versions: ?v=1&v=2&v=3")
    if len(versions) > MAX_COMPARE:
        raise InvalidNameError(f"compare shows at most {MAX_COMPARE} versions at once")
    return versions


# -- routes --------------------------------------------------------------------------------
async def models(request: Any) -> Any:
    _check_read(request)
    store = _console(request).store
    q = request.query_params.get("q", "")
    sort = request.query_params.get("sort", "updated")
    tag = request.query_params.get("tag", "").strip()
    metric = request.query_params.get("metric", "").strip()
    show_all = request.query_params.get("all", "") in ("1", "on", "true")
    rows, details = data.filter_models(
        store, data.models(store, q, sort, show_all=show_all), tag, metric
    )
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    try:
        page_no = min(max(1, int(request.query_params.get("page", "1"))), pages)
    except ValueError:
        page_no = 1
    shown = rows[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
    missing = [r["name"] for r in shown if r["name"] not in details]
    if missing:
        details.update(data.latest_details(store, missing))
    # one url_for, not one per row: names are validated paths, safe in a URL
    base = str(request.url_for("model", name="x"))[:-1]
    return _page(
        request,
        "models.html",
        rows=shown,
        details=details,
        q=q,
        sort=sort,
        tag=tag,
        metric=metric,
        show_all=show_all,
        total=len(rows),
        pages=pages,
        page_no=page_no,
        model_base=base,
    )


async def model(request: Any) -> Any:
    _check_read(request)
    store = _console(request).store
    name = request.path_params["name"]
    versions = sorted(store.versions(name), key=lambda v: -v.version)
    if not versions:
        raise NotFoundError(f"model {name!r} has no versions")
    return _page(
        request,
        "model.html",
        name=name,
        versions=versions,
        aliases=store.aliases(name),
        figure=data.metrics_figure(versions),
    )


async def version(
    request: Any, message: str = "", message_class: str = "", status: int = 200
) -> Any:
    _check_read(request)
    store = _console(request).store
    name = request.path_params["name"]
    view = data.version_view(store, name, request.path_params["version"])
    run = None
    if view.mv.run_id:
        try:
            run = store.runs.get(view.mv.run_id)
        except SafepointError:
            run = None  # the run row was deleted: the id is still shown
    return _page(
        request,
        "version.html",
        status=status,
        mv=view.mv,
        info=view.inspection,
        env_rows=view.env_rows,
        lineage=view.lineage,
        verify=view.verify,
        params=view.params,
        run=run,
        aliases=store.aliases(name),
        message=message,
        message_class=message_class,
    )


async def ref(request: Any) -> Any:
    from starlette.responses import RedirectResponse

    from ..stores.names import parse_ref

    _check_read(request)
    name, sel = parse_ref(request.path_params["ref"])
    mv = _console(request).store.info(name, sel)
    return RedirectResponse(request.url_for("version", name=name, version=mv.version))


async def compare(request: Any) -> Any:
    _check_read(request)
    store = _console(request).store
    name = request.path_params["name"]
    views = [data.version_view(store, name, v) for v in _versions_arg(request)]
    rows: list[tuple[str, list[Any]]] = [
        ("created", [v.mv.created.isoformat()[:19] for v in views]),
        ("size", [_filesize(v.mv.size) for v in views]),
        ("type", [v.inspection.root_type for v in views]),
        ("aliases", [", ".join(v.mv.aliases) for v in views]),
        ("run", [v.mv.run_id or "—" for v in views]),
    ]
    for section, get in (
        ("param", lambda v: v.params),
        ("metric", lambda v: v.mv.metrics),
        ("metadata", lambda v: v.mv.metadata),
        ("tag", lambda v: v.mv.tags),
    ):
        keys = sorted({k for v in views for k in get(v)})
        for key in keys:
            rows.append((f"{section} {key}", [get(v).get(key, "—") for v in views]))
    envs = [{r[0]: r[1] for r in v.env_rows} for v in views]
    for key in sorted({k for e in envs for k in e}):
        rows.append((f"env {key}", [e.get(key, "—") for e in envs]))
    return _page(request, "compare.html", name=name, views=views, rows=rows)


async def move_alias(request: Any) -> Any:
    from starlette.exceptions import HTTPException

    c = _console(request)
    name = request.path_params["name"]
    if not c.allow_writes:
        raise HTTPException(403, "this console is read-only (start it with --allow-writes)")
    form = await request.form()
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin write refused")
    cookie = request.cookies.get("sp_csrf", "")
    if not cookie or not hmac.compare_digest(str(form.get("csrf", "")), cookie):
        raise HTTPException(403, "CSRF check failed: reload the page and try again")
    if not hmac.compare_digest(str(form.get("token", "")).encode(), (c.token or "").encode()):
        raise HTTPException(401, "wrong token")
    try:
        target = int(str(form.get("version", "")))
        expected_raw = str(form.get("expected", "")).strip()
        expected = int(expected_raw) if expected_raw else None
    except ValueError:
        raise InvalidNameError("version and expected must be version numbers") from None
    alias = str(form.get("alias", ""))
    request.path_params["version"] = target
    try:
        c.store.set_alias(name, alias, target, expected=expected)
    except AliasConflictError as exc:
        return await version(request, message=f"Refused: {exc}", message_class="bad", status=409)
    return await version(
        request, message=f"Moved {alias} to version {target}.", message_class="good"
    )


async def audit(request: Any) -> Any:
    _check_read(request)
    return _page(request, "audit.html", entries=_console(request).store.log(limit=500))


async def runs(request: Any) -> Any:
    _check_read(request)
    return _page(request, "runs.html", rows=_console(request).store.runs.list(limit=200))


async def run(request: Any) -> Any:
    _check_read(request)
    store = _console(request).store
    info = store.runs.get(request.path_params["run_id"])
    search = data.search_results(store, info) if info.kind == "search" else None
    steps = data.steps_rows(info) if info.kind == "steps" else None
    return _page(
        request,
        "run.html",
        run=info,
        search=search,
        steps=steps,
        outputs=data.run_outputs(store, info.id),
        state=data.rounded(info.state),
    )


async def api_run(request: Any) -> Any:
    from starlette.responses import JSONResponse

    _check_read(request)
    info = _console(request).store.runs.get(request.path_params["run_id"])
    return JSONResponse(
        {
            "id": info.id,
            "kind": info.kind,
            "status": info.status,
            "progress": info.progress,
            "state": data.rounded(info.state),
            "now": time.time(),
        }
    )


async def checkpointers(request: Any) -> Any:
    _check_read(request)
    store = _console(request).store
    selected = request.query_params.get("name")
    keys = data.checkpointer_keys(store, selected) if selected else []
    return _page(
        request,
        "checkpointers.html",
        namespaces=data.checkpointer_namespaces(store),
        selected=selected,
        keys=keys,
    )


async def login(request: Any) -> Any:
    from starlette.responses import RedirectResponse, Response

    token = _console(request).token
    got = request.query_params.get("token", "")
    if token is None or not hmac.compare_digest(got.encode(), token.encode()):
        return Response("open /login?token=... with the console's token", status_code=401)
    response = RedirectResponse(request.url_for("models"))
    response.set_cookie("sp_token", got, httponly=True, samesite="strict")
    return response


async def plotly_js(request: Any) -> Any:
    from plotly.offline import get_plotlyjs
    from starlette.responses import Response

    return Response(
        get_plotlyjs(),
        media_type="application/javascript",
        headers={"cache-control": "max-age=86400"},
    )


async def on_safepoint_error(request: Any, exc: Exception) -> Any:
    status = 404 if isinstance(exc, NotFoundError) else 400
    return _error_page(request, status, str(exc))


async def on_http_error(request: Any, exc: Exception) -> Any:
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, exc.detail)


def _error_page(request: Any, status: int, message: str) -> Any:
    c = _console(request)
    return c.templates.TemplateResponse(
        request,
        "error.html",
        {"store_url": c.store.url, "writes": c.allow_writes, "status": status, "message": message},
        status_code=status,
    )


def routes(static_dir: str) -> list[Any]:
    """The console's routes: every endpoint is a module-level function of this module,
    reading the store and settings of its app from ``request.app.state.console``."""
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    return [
        Route("/", models, name="models"),
        Route("/model/{name:path}", model, name="model"),
        Route("/version/{version:int}/{name:path}", version, name="version"),
        Route("/ref/{ref:path}", ref, name="ref"),
        Route("/compare/{name:path}", compare, name="compare"),
        Route("/alias/{name:path}", move_alias, methods=["POST"], name="move_alias"),
        Route("/audit", audit, name="audit"),
        Route("/runs", runs, name="runs"),
        Route("/runs/{run_id}", run, name="run"),
        Route("/api/runs/{run_id}", api_run, name="api_run"),
        Route("/checkpointers", checkpointers, name="checkpointers"),
        Route("/login", login, name="login"),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=static_dir), name="static"),
    ]


def create_app(
    store: Store,
    *,
    allow_writes: bool = False,
    token: str | None = None,
    require_token_for_reads: bool = False,
    allowed_hosts: set[str] | None = None,
) -> Any:
    """The ASGI app for ``store`` (a :class:`~safepoint.stores.Store`).

    ``allowed_hosts``: the ``Host`` names answered (``safepoint ui`` passes the bound
    host's names, see :func:`safepoint._http.host_names`); None answers any.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.templating import Jinja2Templates

    if allow_writes and not token:
        raise InvalidNameError(
            "--allow-writes needs a token (--token env:VAR): every write asks for it"
        )
    pkg = resources.files("safepoint.ui")
    templates = Jinja2Templates(directory=str(pkg / "templates"))
    templates.env.autoescape = True  # every page: store content is text, never markup
    templates.env.filters["filesize"] = _filesize
    templates.env.filters["ts"] = _ts
    templates.env.filters["num"] = data.fmt
    app = Starlette(
        routes=routes(str(pkg / "static")),
        middleware=[Middleware(HostCheck, names=allowed_hosts), Middleware(SecurityHeaders)],
        exception_handlers={SafepointError: on_safepoint_error, HTTPException: on_http_error},
    )
    # the one place a route finds its store and settings: two apps in one process
    # (two stores) never share them
    app.state.console = Console(store, templates, allow_writes, token, require_token_for_reads)
    return app
